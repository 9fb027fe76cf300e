package peer

import (
	"context"
	"fmt"
	"testing"

	"github.com/tunnelhq/tunnel/internal/testnet"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

func TestLinks_Register(t *testing.T) {
	echo := testnet.Echo(t)
	b := startNode(t, "b", services(map[string]string{"echo": echo}), nil)
	a := startNode(t, "a", nil, nil)
	figures := func(n *testNode) map[string]func() float64 {
		m := make(map[string]func() float64)
		add := func(name, help string, f func() float64) error {
			if _, dup := m[name]; dup || help == "" {
				return fmt.Errorf("%s: registered twice, or without help", name)
			}
			m[name] = f
			return nil
		}
		if err := n.Register(add, add); err != nil {
			t.Fatal(err)
		}
		return m
	}
	fa, fb := figures(a), figures(b)
	if len(fa) != 8 {
		t.Errorf("%d figures, want 8", len(fa))
	}
	conn, err := a.Open(context.Background(), "b", b.addr, &Request{Header: proto.StreamHeader{Tunnel: "echo"}})
	if err != nil {
		t.Fatal(err)
	}
	echoRoundTrip(t, conn, 1000, 12)
	for name, want := range map[string]float64{"node_links": 1, "node_streams_forwarded_total": 1, "node_link_dials_total": 1} {
		if got := fa[name](); got != want {
			t.Errorf("a: %s = %v, want %v", name, got, want)
		}
	}
	if got := fb["node_streams_served_total"](); got != 1 {
		t.Errorf("b: node_streams_served_total = %v, want 1", got)
	}
	if err := a.Register(func(string, string, func() float64) error { return fmt.Errorf("taken") }, nil); err == nil {
		t.Error("a registrar's error was lost")
	}
}
