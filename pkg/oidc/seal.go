package oidc

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
)

// What a sealed value is for: each purpose has its own key, derived from
// the cookie key, and is the AEAD's additional data, so a state cannot be
// passed off as a ticket or a session cookie, nor the other way round.
type purpose string

const (
	purposeState   purpose = "state"
	purposeTicket  purpose = "ticket"
	purposeSession purpose = "session"
)

// maxSealed bounds a sealed value taken from a visitor: the largest we
// make (a state with a maxPath path) is under 2 KiB, and a longer one is
// refused before it is decoded.
const maxSealed = 4096

// maxEmail bounds the email an issuer may give: the longest valid address.
const maxEmail = 254

var errSealed = errors.New("sealed value not valid")

// sealer seals values with AES-256-GCM: the visitor can neither read nor
// change them (an email in a cookie stays private, a host in a ticket
// stays the one we wrote). Safe for concurrent use.
type sealer struct {
	aead map[purpose]cipher.AEAD
}

func newSealer(key []byte) *sealer {
	s := &sealer{aead: make(map[purpose]cipher.AEAD)}
	for _, p := range []purpose{purposeState, purposeTicket, purposeSession} {
		m := hmac.New(sha256.New, key)
		m.Write([]byte("tunnel oidc " + p))
		block, err := aes.NewCipher(m.Sum(nil))
		if err != nil {
			panic(err) // a 32-byte key is always valid
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			panic(err)
		}
		s.aead[p] = aead
	}
	return s
}

// seal returns v as JSON, sealed for p, in base64url.
func (s *sealer) seal(p purpose, v any) (string, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("seal %s: %w", p, err)
	}
	aead := s.aead[p]
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	rand.Read(nonce)
	return base64.RawURLEncoding.EncodeToString(aead.Seal(nonce, nonce, plain, []byte(p))), nil
}

// open reads into v a value sealed for p; errSealed for anything else.
func (s *sealer) open(p purpose, sealed string, v any) error {
	if sealed == "" || len(sealed) > maxSealed {
		return errSealed
	}
	b, err := base64.RawURLEncoding.DecodeString(sealed)
	aead := s.aead[p]
	if err != nil || len(b) < aead.NonceSize()+aead.Overhead() {
		return errSealed
	}
	plain, err := aead.Open(nil, b[:aead.NonceSize()], b[aead.NonceSize():], []byte(p))
	if err != nil {
		return errSealed
	}
	if json.Unmarshal(plain, v) != nil {
		return errSealed
	}
	return nil
}
