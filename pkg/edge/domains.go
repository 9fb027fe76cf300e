package edge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/tunnelhq/tunnel/pkg/domain"
	"github.com/tunnelhq/tunnel/pkg/name"
	"github.com/tunnelhq/tunnel/pkg/proto"
	"github.com/tunnelhq/tunnel/pkg/token"
)

// Custom domains (package domain has the rules and the DNS check). A
// session's custom domain is claimed in the Registry as one more name of
// the session, so the table that keeps two clients from serving one name
// (and a cluster's etcd table, across nodes) keeps them from serving one
// domain too. A domain never collides with a tunnel name: it has at least
// two labels, so it holds a '.', which no name does. Holds apply to it as
// to the session's names.

// defaultDomainRecheck is Config.DomainRecheck's zero.
const defaultDomainRecheck = 10 * time.Minute

// validateDomains refuses, permanently, a custom domain
// (TunnelRequest.Domain) that is not a valid domain, that the token id may
// not claim (an anonymous client, id nil, may claim none), or that this
// server does not serve custom domains at all.
func (s *Server) validateDomains(id *token.Identity, hello *proto.Hello) *proto.Error {
	var seen []string
	for _, t := range hello.Tunnels {
		switch {
		case t.Domain == "":
			continue
		case domain.Validate(t.Domain) != nil:
			return &proto.Error{Code: proto.CodeDomainNotAllowed, Message: domain.Validate(t.Domain).Error()}
		case s.cfg.Domains == nil:
			return &proto.Error{Code: proto.CodeDomainNotAllowed, Message: "this server serves no custom domains"}
		case id == nil:
			return &proto.Error{Code: proto.CodeDomainNotAllowed, Message: "an anonymous client may not claim a custom domain"}
		case !id.MayClaimDomain(t.Domain):
			return &proto.Error{Code: proto.CodeDomainNotAllowed, Message: fmt.Sprintf("this token may not claim the domain %q", t.Domain)}
		case t.Domain == s.cfg.Domain || strings.HasSuffix(t.Domain, "."+s.cfg.Domain):
			// The tunnel domain's names are the server's to give out.
			return &proto.Error{Code: proto.CodeDomainNotAllowed, Message: fmt.Sprintf("%q is under the tunnel domain: ask for a name instead", t.Domain)}
		}
		for _, d := range seen {
			if d == t.Domain {
				return &proto.Error{Code: proto.CodeDomainNotAllowed, Message: fmt.Sprintf("domain %q asked for twice", t.Domain)}
			}
		}
		seen = append(seen, t.Domain)
	}
	return nil
}

// verifyDomains checks the DNS of every custom domain sess's tunnels ask
// for (sess.Names drawn, sess.domains set), refusing with the retryable
// CodeDomainNotVerified while one does not point at its tunnel yet.
func (s *Server) verifyDomains(ctx context.Context, sess *Session) *proto.Error {
	for d, tunnel := range sess.domains {
		if err := s.cfg.Domains.Check(ctx, d, tunnel+"."+s.cfg.Domain, sess.Label); err != nil {
			return &proto.Error{Code: proto.CodeDomainNotVerified, Message: err.Error()}
		}
	}
	return nil
}

// domainsOf maps the custom domains of hello's tunnels to their names
// (names in hello's order); nil if none asks for one.
func domainsOf(hello *proto.Hello, names []string) map[string]string {
	var m map[string]string
	for i, t := range hello.Tunnels {
		if t.Domain == "" {
			continue
		}
		if m == nil {
			m = make(map[string]string)
		}
		m[t.Domain] = names[i]
	}
	return m
}

// customDomain returns the custom domain a Host header or SNI value names
// (port and one trailing dot dropped, ASCII lowercased), if it is a valid
// domain at all; whether a tunnel serves it is the registry's to say.
// Only call it for a host that is not under the tunnel domain.
func customDomain(host string) (string, bool) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	d := strings.TrimSuffix(name.Lower(host), ".")
	if domain.Validate(d) != nil {
		return "", false
	}
	return d, true
}

// domainHost is the host in a custom domain's public URL: the domain, with
// the public port unless that is the default one.
func (s *Server) domainHost(d string) string {
	return d + s.portSuffix
}

// routeHost resolves a visitor's Host (or SNI) to what the registry knows
// it by and the tunnel name its streams carry: a name under the tunnel
// domain stands for itself, a custom domain for the name of the tunnel
// that claimed it. key is "" for the apex. err wraps name.ErrForeignHost
// or name.ErrMalformedHost for a host that is neither.
func (s *Server) routeHost(host string) (key, public string, err error) {
	label, err := name.FromHost(host, s.cfg.Domain)
	if err == nil {
		if label == "" {
			return "", "", nil
		}
		return label, s.publicHost(label), nil
	}
	if errors.Is(err, name.ErrForeignHost) && !errors.Is(err, name.ErrMalformedHost) {
		if d, ok := customDomain(host); ok {
			return d, s.domainHost(d), nil
		}
	}
	return "", "", err
}

// tunnelFor returns the tunnel name a route serves under key, the name it
// was looked up by: key itself, or for a custom domain the name of the
// tunnel that claimed it.
func tunnelFor(rt Route, key string) string {
	switch r := rt.(type) {
	case *Session:
		if t, ok := r.domains[key]; ok {
			return t
		}
	case *remoteRoute:
		if r.tunnel != "" {
			return r.tunnel
		}
	}
	return key
}

// recheckDomains checks the custom domains of this node's sessions every
// Config.DomainRecheck until ctx ends; see recheckOnce.
func (s *Server) recheckDomains(ctx context.Context) {
	every := s.cfg.DomainRecheck
	if every == 0 {
		every = defaultDomainRecheck
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.recheckOnce(ctx)
		}
	}
}

// domainKey is one session's custom domain, as the re-check knows it.
type domainKey struct {
	sess   *Session
	domain string
}

// domainCheck is what the re-check remembers of one session's custom
// domain between passes, so that it logs changes, not every pass.
type domainCheck struct {
	dropped bool // taken off the registry: DNS last answered it points elsewhere
	failing bool // DNS could not answer at the last pass (logged once)
	blocked bool // points here again, but could not be claimed (logged once)
}

// recheckOnce checks the DNS of every custom domain of this node's
// sessions, served or dropped. The control protocol has no message to
// take one tunnel's domain away or give it back, so the client is not told;
// the session keeps its names throughout.
//
//   - DNS answers that the domain no longer points at its tunnel: it is
//     taken off the registry with ReleaseName (visitors get 404, no
//     certificate is ordered for it, whoever it points at now may claim it).
//   - DNS cannot answer (domain.ErrLookupFailed: a timeout, SERVFAIL, the
//     resolver out of reach): nothing changes, a served domain stays
//     served. A DNS flap must not take a domain down until its client
//     reconnects, which for a daemon may be months. Logged when it starts
//     failing and when it answers again, not at every pass.
//   - A dropped domain that points at its tunnel again is claimed again
//     with Registry.ClaimName, which takes nothing over: if another
//     session (of any owner) claimed it meanwhile, it stays dropped, and
//     that is logged once.
//
// A check the rate bound refused (domain.ErrBusy) changes nothing until
// the next pass.
func (s *Server) recheckOnce(ctx context.Context) {
	s.mu.Lock()
	var sessions []*Session
	for sess := range s.sessions {
		if len(sess.domains) > 0 {
			sessions = append(sessions, sess)
		}
	}
	s.mu.Unlock()
	next := make(map[domainKey]*domainCheck)
	for _, sess := range sessions {
		for d, tunnel := range sess.domains {
			if ctx.Err() != nil {
				return
			}
			k := domainKey{sess, d}
			st := s.rechecks[k]
			if st == nil {
				st = &domainCheck{}
			}
			if !st.dropped {
				if rt, _ := s.registry.Lookup(d); rt != Route(sess) {
					continue // the session is going, or its node serves nothing now (fenced)
				}
			}
			next[k] = st
			s.recheckDomain(ctx, sess, d, tunnel, st)
		}
	}
	s.rechecks = next // the state of sessions gone is forgotten
}

// recheckDomain checks one of sess's custom domains, d of the tunnel
// tunnel, and acts on the answer as recheckOnce says, updating st.
func (s *Server) recheckDomain(ctx context.Context, sess *Session, d, tunnel string, st *domainCheck) {
	err := s.cfg.Domains.Check(ctx, d, tunnel+"."+s.cfg.Domain, sess.Label)
	if ctx.Err() != nil || errors.Is(err, domain.ErrBusy) {
		return
	}
	log := s.log.With().Str("host", d).Str("session_id", sess.ID).Str("tunnel", tunnel).Logger()
	if errors.Is(err, domain.ErrLookupFailed) {
		if !st.failing {
			st.failing = true
			msg := "custom domain's DNS lookup failed; still served until DNS answers"
			if st.dropped {
				msg = "custom domain's DNS lookup failed; still not served until DNS answers"
			}
			log.Warn().Err(err).Msg(msg)
		}
		return
	}
	if st.failing {
		st.failing = false
		log.Info().Msg("custom domain's DNS lookup answers again")
	}
	switch {
	case err != nil && !st.dropped:
		s.registry.ReleaseName(sess, d)
		st.dropped = true
		log.Warn().Err(err).Msg("custom domain no longer points at its tunnel; not served")
	case err != nil:
		st.blocked = false // still elsewhere; a later claim failure is news
	case st.dropped:
		if cerr := s.registry.ClaimName(sess, d); cerr != nil {
			if !st.blocked {
				st.blocked = true
				log.Warn().Err(cerr).Msg("custom domain points at its tunnel again but cannot be claimed; not served")
			}
			return
		}
		st.dropped, st.blocked = false, false
		log.Info().Msg("custom domain points at its tunnel again; served again")
	}
}
