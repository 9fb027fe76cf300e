package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// leakHelperEnv, when set, lets TestLeakCheck_Helper run: it leaks a
// goroutine on purpose, for TestLeakCheck_FailsThePackage to run in a
// child process.
const leakHelperEnv = "TUNNEL_E2E_LEAK_HELPER"

// TestLeakCheck_FailsThePackage runs this test binary again with only a
// test that leaks a goroutine, and checks that the package then fails and
// names the leaked function: the leak check in TestMain is only worth
// something if it can fail.
func TestLeakCheck_FailsThePackage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestLeakCheck_Helper$", "-test.count=1")
	cmd.Env = append(baseEnv(), leakHelperEnv+"=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		t.Fatalf("child test binary: got %v, want a non-zero exit\n%s", err, out.String())
	}
	if code := exitErr.ExitCode(); code != 1 {
		t.Fatalf("child test binary exited %d, want 1\n%s", code, out.String())
	}
	for _, want := range []string{"goleak", "leakForTheLeakCheck"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("child output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestLeakCheck_Helper leaks one goroutine that blocks until the process
// ends. It is skipped unless TestLeakCheck_FailsThePackage runs it.
func TestLeakCheck_Helper(t *testing.T) {
	if os.Getenv(leakHelperEnv) == "" {
		t.Skip("run by TestLeakCheck_FailsThePackage in a child process")
	}
	go leakForTheLeakCheck(make(chan struct{}))
}

// leakForTheLeakCheck blocks forever on a channel nobody closes.
func leakForTheLeakCheck(never <-chan struct{}) { <-never }
