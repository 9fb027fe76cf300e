package mux

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/tunnelhq/tunnel/pkg/proto"
)

// Backoff paces RunForever's attempts to connect. Each wait is drawn
// uniformly from zero to a ceiling ("full jitter", so that many clients cut
// off at once do not come back in step); the ceiling starts at Initial and
// doubles with each failure in a row, up to Max. A zero field takes its
// default.
type Backoff struct {
	// Initial is the first ceiling: the first retry comes within it.
	// Default 1 s.
	Initial time.Duration
	// Max caps the ceiling. Default 30 s.
	Max time.Duration
	// ResetAfter is how long a session must have stayed up to count as
	// healthy: the next wait starts again from Initial. Default 1 minute.
	ResetAfter time.Duration
}

// DefaultBackoff returns the Backoff that a zero Backoff means.
func DefaultBackoff() Backoff {
	return Backoff{Initial: time.Second, Max: 30 * time.Second, ResetAfter: time.Minute}
}

func (b Backoff) withDefaults() Backoff {
	d := DefaultBackoff()
	if b.Initial <= 0 {
		b.Initial = d.Initial
	}
	if b.Max <= 0 {
		b.Max = d.Max
	}
	if b.Max < b.Initial {
		b.Max = b.Initial
	}
	if b.ResetAfter <= 0 {
		b.ResetAfter = d.ResetAfter
	}
	return b
}

// ceiling is the longest wait after failures failed attempts in a row.
func (b Backoff) ceiling(failures int) time.Duration {
	c := b.Initial
	for range failures {
		if c >= b.Max/2 {
			return b.Max
		}
		c *= 2
	}
	return c
}

// Delay is the wait before the next attempt after failures failed attempts
// in a row: uniform in [0, ceiling).
func (b Backoff) Delay(failures int) time.Duration {
	b = b.withDefaults()
	return rand.N(b.ceiling(failures))
}

// IsPermanent reports whether err, from Run or RunForever, means that
// trying again with the same settings cannot succeed: a refusal whose code
// is permanent (bad token, a name the token may not hold, ...). A name
// held by another client (name_taken) is not permanent: holds end.
func IsPermanent(err error) bool {
	var perr *proto.Error
	return errors.As(err, &perr) && perr.Code.Permanent()
}

// RunForever keeps the tunnels up until ctx ends, then stops the way Run
// does (tells tunneld, drains in-flight streams within DrainTimeout) and
// returns nil. It returns early only for a bad config, a permanent
// refusal (see IsPermanent), or a CertificateError before the first
// session has come up; everything else (no network, tunneld down or
// restarting, a lost or silently dead link, name_taken, an expired
// certificate) is retried with cfg.Backoff, forever.
//
// A CertificateError (tunneld's certificate signed by no CA the client
// trusts, or not for the host dialed) stops the first connection, because
// then it is the client's settings that do not match the server's, and
// retrying cannot mend them: the user is told at once. Once a session has
// come up, the settings are proven, and the same error is more likely a
// passing state of the server (a certificate being replaced) or of the
// network (a captive portal, a proxy intercepting TLS) that a client left
// running for months should outlast: it is logged and retried.
//
// Names are sticky: once granted, every later Hello asks for the same
// names, random ones included, so a reconnecting client keeps its URLs
// while tunneld holds them for its token. If tunneld says name_taken (the
// hold ended and another client took a name), random names are given up
// and drawn afresh on the next attempt; names the caller chose are asked
// for again until they come free.
//
// When tunneld says GoAway (it is restarting), RunForever connects a new
// session at once while the old one keeps serving its in-flight streams
// until tunneld closes it. OnReady is called after every successful
// connect.
func RunForever(ctx context.Context, cfg ClientConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	b := cfg.Backoff.withDefaults()
	log := cfg.Logger
	tunnels := slices.Clone(cfg.Tunnels)

	// Sessions that tunneld told to go away finish their streams here
	// while the loop has moved on to a new one.
	var sessions sync.WaitGroup
	defer sessions.Wait()

	failures := 0
	connected := false // a session has come up: the settings are proven
	var wait time.Duration
	for {
		if wait > 0 && !sleepCtx(ctx, wait) {
			return nil
		}
		sess, targets, err := connect(ctx, cfg, tunnels)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var cerr *CertificateError
			if IsPermanent(err) || !connected && errors.As(err, &cerr) {
				return err
			}
			var perr *proto.Error
			if errors.As(err, &perr) && perr.Code == proto.CodeNameTaken {
				forgetRandomNames(tunnels, cfg.Tunnels)
			}
			wait = b.Delay(failures)
			failures++
			log.Warn().Err(err).Dur("retry_in", wait.Round(time.Millisecond)).Int("attempt", failures).Msg("connect failed; retrying")
			continue
		}
		connected = true
		for i, t := range sess.Welcome().Tunnels {
			tunnels[i].Name = t.Name
		}
		if cfg.OnReady != nil {
			cfg.OnReady(sess.Welcome())
		}
		up := time.Now()
		served := make(chan error, 1)
		sessions.Add(1)
		go serveSession(ctx, &sessions, sess, targets, served)

		select {
		case err := <-served:
			if ctx.Err() != nil {
				return nil
			}
			if time.Since(up) >= b.ResetAfter {
				failures = 0
			}
			wait = b.Delay(failures)
			failures++
			log.Warn().Err(err).Dur("retry_in", wait.Round(time.Millisecond)).Msg("session ended; reconnecting")
		case <-sess.GoAway():
			// tunneld is draining: the old session keeps serving what is
			// in flight, and a new one is wanted now, not after a wait.
			failures, wait = 0, 0
			log.Info().Msg("server is draining; connecting a new session")
		case <-ctx.Done():
			return nil
		}
	}
}

// serveSession serves one session until it ends and closes it.
func serveSession(ctx context.Context, wg *sync.WaitGroup, sess *ClientSession, targets map[string]string, served chan<- error) {
	defer wg.Done()
	err := sess.Serve(ctx, targets)
	sess.Close()
	served <- err
}

// forgetRandomNames clears the names tunneld drew at random (those the
// caller left empty in asked), so the next Hello asks for fresh ones.
func forgetRandomNames(tunnels, asked []Tunnel) {
	for i := range tunnels {
		if asked[i].Name == "" {
			tunnels[i].Name = ""
		}
	}
}

// sleepCtx waits d or until ctx ends; it reports whether the full wait
// passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// SetPeerTimeout sets the keepalive so that a peer that went silent (a
// dead link: no FIN, no RST) is noticed within d: a ping every d/2, and
// d/2 for its answer (and for writing any one frame). d must be positive.
func (c *Config) SetPeerTimeout(d time.Duration) {
	c.KeepAliveInterval = d / 2
	c.WriteTimeout = d - d/2
}

// PeerTimeout is the bound SetPeerTimeout sets: KeepAliveInterval plus
// WriteTimeout.
func (c Config) PeerTimeout() time.Duration { return c.KeepAliveInterval + c.WriteTimeout }
