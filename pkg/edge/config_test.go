package edge

import (
	"testing"

	"github.com/tunnelhq/tunnel/pkg/limit"
)

func TestConfig_ValidateLimits(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		ok   bool
	}{
		{"defaults", func(*Config) {}, true},
		{"zero handshakes", func(c *Config) { c.MaxHandshakes = 0 }, false},
		{"zero handshakes per ip", func(c *Config) { c.MaxHandshakesPerIP = 0 }, false},
		{"zero sessions per ip", func(c *Config) { c.MaxSessionsPerIP = 0 }, false},
		{"zero tunnels per token", func(c *Config) { c.MaxTunnelsPerToken = 0 }, false},
		{"zero streams per tunnel", func(c *Config) { c.MaxStreamsPerTunnel = 0 }, false},
		{"zero requests per visitor", func(c *Config) { c.MaxRequestsPerVisitor = 0 }, false},
		{"requests per visitor above streams per tunnel", func(c *Config) { c.MaxRequestsPerVisitor = c.MaxStreamsPerTunnel + 1 }, true},
		{"zero visitor idle timeout", func(c *Config) { c.VisitorIdleTimeout = 0 }, false},
		{"zero slow reader budget", func(c *Config) { c.SlowReaderBudget = 0 }, false},
		{"zero auth delay", func(c *Config) { c.AuthFailDelay = 0 }, false},
		{"max delay below delay", func(c *Config) { c.AuthFailMaxDelay = c.AuthFailDelay / 2 }, false},
		{"max delay beyond the handshake", func(c *Config) { c.AuthFailMaxDelay = c.Mux.HandshakeTimeout }, false},
	}
	for _, tt := range tests {
		c := DefaultConfig()
		c.Domain, c.TLSConfig, c.AllowAnonymous = "example.com", newEmptyTLS(), true
		tt.mod(&c)
		if err := c.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: got %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

// TestDefaultConfig_LimitsAreLimits: the edge's defaults for the bounds are
// package limit's, so the two cannot drift apart.
func TestDefaultConfig_LimitsAreLimits(t *testing.T) {
	got := limitConfig(DefaultConfig())
	got.StreamWindow, got.Linger = 0, 0 // the session's, not limit's
	if want := limit.DefaultConfig(); got != want {
		t.Errorf("limitConfig(DefaultConfig()) = %+v,\nwant limit.DefaultConfig() = %+v", got, want)
	}
}
