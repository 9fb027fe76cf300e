package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestProcess_ARMClientsUnderQemu builds the client for the Raspberry Pis'
// CPUs and runs each under qemu-user (Debian's qemu-user-static) against a
// native tunneld: each serves a page. The armv6 build runs on an emulated
// ARM1176, the Pi Zero's and Pi 1's CPU, where an armv7 build dies with
// SIGILL.
func TestProcess_ARMClientsUnderQemu(t *testing.T) {
	tunneld, addr, certs := startDevTunneld(t, nil)
	backendPort := newBackend(t, "hello from a pi")
	ca := filepath.Join(certs, "ca.pem")
	for _, tt := range []struct {
		name, goarch, goarm string
		qemu                []string
	}{
		{"arm64", "arm64", "", []string{"qemu-aarch64-static"}},
		{"armv7", "arm", "7", []string{"qemu-arm-static", "-cpu", "cortex-a7"}},
		{"armv6", "arm", "6", []string{"qemu-arm-static", "-cpu", "arm1176"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			qemu, err := exec.LookPath(tt.qemu[0])
			if err != nil {
				if os.Getenv("CI") != "" {
					t.Fatalf("%s is not installed, and CI must run this test (.ci/run installs qemu-user-static)", tt.qemu[0])
				}
				t.Skipf("%s is not installed (apt-get install qemu-user-static)", tt.qemu[0])
			}
			bin := filepath.Join(t.TempDir(), "tunnel-"+tt.name)
			build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "github.com/tunnelhq/tunnel/cmd/tunnel")
			build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+tt.goarch, "GOARM="+tt.goarm)
			if out, err := build.CombinedOutput(); err != nil {
				t.Fatalf("build for %s: %v\n%s", tt.name, err, out)
			}
			args := append(tt.qemu[1:], bin, "--dev", "--server", addr, "--certs-dir", certs, "--log-format", "json",
				"http", "--name", "pi-"+tt.name, backendPort)
			client := start(t, qemu, nil, args...)
			url := client.waitLine(client.stdout, "a public URL", isURL)
			if !strings.HasPrefix(url, "https://pi-"+tt.name+".localhost:") {
				t.Fatalf("got URL %q", url)
			}
			if got, want := fetch(t, ca, addr, url+"/x"), "hello from a pi /x\n"; got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
			client.stop()
		})
	}
	tunneld.stop()
}
