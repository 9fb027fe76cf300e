package peer

import (
	"os/exec"
	"strings"
	"testing"
)

// TestPeer_Dependencies: node links never import the edge (the edge and the
// cluster registry import them) nor etcd (forwarding must work whatever
// keeps the name table), and the client never carries them.
func TestPeer_Dependencies(t *testing.T) {
	deps := func(pkg string) []string {
		out, err := exec.Command("go", "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		return strings.Fields(string(out))
	}
	for _, dep := range deps("github.com/tunnelhq/tunnel/pkg/peer") {
		if dep == "github.com/tunnelhq/tunnel/pkg/edge" || strings.HasPrefix(dep, "go.etcd.io/") {
			t.Errorf("pkg/peer imports %s", dep)
		}
	}
	for _, dep := range deps("github.com/tunnelhq/tunnel/cmd/tunnel") {
		if dep == "github.com/tunnelhq/tunnel/pkg/peer" {
			t.Errorf("the client imports %s", dep)
		}
	}
}
