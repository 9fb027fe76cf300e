// Package sni reads the server name of a TLS ClientHello without taking
// part in the handshake, so that tunneld can hand a TLS passthrough
// tunnel's connection, untouched, to the client that serves it: the bytes
// read are returned for replay to whoever handles the connection next
// (the edge's own TLS server, or the tunnel's local service).
//
// It reads whole TLS records, never a byte past the record that ends the
// ClientHello (a client sends nothing more before the server answers), and
// at most MaxHelloSize bytes of handshake, across as many records as the
// client split it into. Anything it does not understand is an error, with
// the bytes read so far, never a panic: the caller falls back to its own
// TLS handshake, which refuses the connection properly.
package sni

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/cryptobyte"
)

// MaxHelloSize bounds the ClientHello read, in bytes of handshake message:
// real ones are a few hundred bytes to a few KiB (post-quantum key shares
// included); 64 KiB leaves room without letting a peer make us buffer more.
const MaxHelloSize = 64 << 10

// Errors of Read. Each wraps the reason; test with errors.Is.
var (
	ErrNotTLS    = errors.New("sni: not a TLS handshake")
	ErrMalformed = errors.New("sni: malformed ClientHello")
	ErrTooLarge  = errors.New("sni: ClientHello exceeds MaxHelloSize")
)

const (
	recordHeaderLen     = 5
	recordTypeHandshake = 22
	handshakeClientHelo = 1
	extServerName       = 0
	maxRecordLen        = 16384 + 2048 // a TLSCiphertext's most; plaintext ones are smaller
)

// Read reads one ClientHello from r and returns its server name ("" when
// it names none) and every byte it read from r. On an error the bytes read
// so far are returned too, so the caller can replay them. io.EOF before any
// byte is returned as is.
func Read(r io.Reader) (serverName string, read []byte, err error) {
	var msg []byte // the handshake bytes, across records
	need := -1     // the ClientHello's length with its 4-byte header, once known
	for need < 0 || len(msg) < need {
		var hdr [recordHeaderLen]byte
		n, err := io.ReadFull(r, hdr[:])
		read = append(read, hdr[:n]...)
		if err != nil {
			if len(read) == 0 {
				return "", read, err
			}
			return "", read, fmt.Errorf("%w: record header: %v", ErrMalformed, err)
		}
		if hdr[0] != recordTypeHandshake || hdr[1] != 3 {
			return "", read, fmt.Errorf("%w: record type %d, version %d.%d", ErrNotTLS, hdr[0], hdr[1], hdr[2])
		}
		size := int(binary.BigEndian.Uint16(hdr[3:]))
		if size == 0 || size > maxRecordLen {
			return "", read, fmt.Errorf("%w: record of %d bytes", ErrMalformed, size)
		}
		if len(msg)+size > MaxHelloSize+4 {
			return "", read, ErrTooLarge
		}
		start := len(read)
		read = append(read, make([]byte, size)...)
		n, err = io.ReadFull(r, read[start:])
		read = read[:start+n]
		if err != nil {
			return "", read, fmt.Errorf("%w: record body: %v", ErrMalformed, err)
		}
		msg = append(msg, read[start:]...)
		if need < 0 && len(msg) >= 4 {
			if msg[0] != handshakeClientHelo {
				return "", read, fmt.Errorf("%w: handshake type %d", ErrNotTLS, msg[0])
			}
			need = 4 + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
			if need-4 > MaxHelloSize {
				return "", read, ErrTooLarge
			}
		}
	}
	if len(msg) != need {
		// The record that ends the ClientHello carries more handshake
		// bytes: a client never sends them before the server's answer.
		return "", read, fmt.Errorf("%w: %d bytes after the ClientHello", ErrMalformed, len(msg)-need)
	}
	name, err := serverNameOf(msg[4:need])
	return name, read, err
}

// serverNameOf parses a ClientHello body and returns its host_name.
func serverNameOf(body []byte) (string, error) {
	s := cryptobyte.String(body)
	var (
		version                   uint16
		random                    []byte
		sessionID, suites, comprs cryptobyte.String
	)
	if !s.ReadUint16(&version) || !s.ReadBytes(&random, 32) ||
		!s.ReadUint8LengthPrefixed(&sessionID) || !s.ReadUint16LengthPrefixed(&suites) ||
		!s.ReadUint8LengthPrefixed(&comprs) {
		return "", fmt.Errorf("%w: fixed fields", ErrMalformed)
	}
	if s.Empty() {
		return "", nil // no extensions, so no SNI (a TLS 1.0 hello may end here)
	}
	var exts cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&exts) || !s.Empty() {
		return "", fmt.Errorf("%w: extensions", ErrMalformed)
	}
	name := ""
	seen := false
	for !exts.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return "", fmt.Errorf("%w: extension", ErrMalformed)
		}
		if typ != extServerName {
			continue
		}
		if seen {
			return "", fmt.Errorf("%w: server_name twice", ErrMalformed)
		}
		seen = true
		var list cryptobyte.String
		if !data.ReadUint16LengthPrefixed(&list) || !data.Empty() || list.Empty() {
			return "", fmt.Errorf("%w: server_name list", ErrMalformed)
		}
		for !list.Empty() {
			var nameType uint8
			var host cryptobyte.String
			if !list.ReadUint8(&nameType) || !list.ReadUint16LengthPrefixed(&host) {
				return "", fmt.Errorf("%w: server_name entry", ErrMalformed)
			}
			if nameType == 0 && name == "" {
				if len(host) == 0 || len(host) > 253 {
					return "", fmt.Errorf("%w: host_name of %d bytes", ErrMalformed, len(host))
				}
				name = string(host)
			}
		}
	}
	return name, nil
}
