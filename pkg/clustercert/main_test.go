package clustercert_test

import (
	"testing"

	"go.uber.org/goleak"
)

// autocert revokes an order's pending authorizations from a goroutine of
// its own that may outlive the test by minutes (see ../shared TESTING.md):
// that one function, nothing broader.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("golang.org/x/crypto/acme/autocert.(*Manager).deactivatePendingAuthz"))
}
