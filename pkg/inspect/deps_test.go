package inspect_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestInspect_ImportsNoServerCode: the inspector ships in the client, which
// must never carry tunneld's code (README, "How it works").
func TestInspect_ImportsNoServerCode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/tunnelhq/tunnel/pkg/inspect", "github.com/tunnelhq/tunnel/cmd/tunnel").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, server := range []string{"pkg/edge", "pkg/admin", "pkg/token", "pkg/limit", "pkg/metrics", "pkg/certs", "pkg/oidc"} {
			if dep == "github.com/tunnelhq/tunnel/"+server {
				t.Errorf("the client imports %s", dep)
			}
		}
	}
}
