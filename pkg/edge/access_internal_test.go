package edge

import (
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/tunnelhq/tunnel/pkg/proto"
)

// TestAccessRules_VerifyBoundedAndRemembered: with every bcrypt slot taken
// a password is not checked (busy); a wrong password or an unknown user is
// refused; and only what was remembered is found again, without bcrypt.
func TestAccessRules_VerifyBoundedAndRemembered(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("right"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	r, err := compileAccess(&proto.Access{BasicAuth: []proto.BasicAuthUser{{User: "ann", Hash: string(hash)}}}, false)
	if err != nil {
		t.Fatal(err)
	}
	slots := make(chan struct{}, 1)
	slots <- struct{}{} // all taken
	if ok, busy := r.verify("ann", "right", slots); ok || !busy {
		t.Fatalf("slots full: got ok %v busy %v, want busy", ok, busy)
	}
	<-slots
	if ok, busy := r.verify("ann", "wrong", slots); ok || busy {
		t.Fatalf("wrong password: got ok %v busy %v, want refused", ok, busy)
	}
	if ok, busy := r.verify("bob", "right", slots); ok || busy {
		t.Fatalf("unknown user with ann's password: got ok %v busy %v, want refused", ok, busy)
	}
	if ok, busy := r.verify("ann", "right", slots); !ok || busy {
		t.Fatalf("right password: got ok %v busy %v, want ok", ok, busy)
	}
	if len(slots) != 0 {
		t.Fatalf("%d slots still taken after the checks, want 0", len(slots))
	}
	const header = "Basic YW5uOnJpZ2h0"
	if r.remembered(header) {
		t.Fatal("remembered before remember")
	}
	r.remember(header)
	long := "Basic " + strings.Repeat("A", 400) // past verifiedKey's stack buffer
	r.remember(long)
	if !r.remembered(header) || !r.remembered(long) {
		t.Fatal("not remembered after remember")
	}
	if r.remembered("Basic YW5uOndyb25n") || r.remembered(header+" ") || r.remembered(long[:len(long)-1]) {
		t.Fatal("another header value found as remembered")
	}
	other, _ := compileAccess(&proto.Access{BasicAuth: []proto.BasicAuthUser{{User: "ann", Hash: string(hash)}}}, false)
	if other.remembered(header) {
		t.Fatal("another tunnel's rules found the header remembered")
	}
}

func TestAccessRules_AddrAllowed(t *testing.T) {
	r, err := compileAccess(&proto.Access{AllowCIDR: []string{"192.0.2.0/24", "2001:db8::/32"}, DenyCIDR: []string{"192.0.2.128/25"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]bool{
		"192.0.2.1:5000":          true,
		"192.0.2.1":               true, // from X-Forwarded-For: no port
		"[::ffff:192.0.2.1]:5000": true, // an IPv4 visitor on a dual-stack socket
		"192.0.2.200:5000":        false,
		"198.51.100.1:5000":       false,
		"[2001:db8::1]:443":       true,
		"2001:db8::1":             true,
		"[fe80::1%eth0]:443":      false,
		"garbage":                 false,
		"":                        false,
	} {
		if got := r.addrAllowed(addr); got != want {
			t.Errorf("addrAllowed(%q): got %v, want %v", addr, got, want)
		}
	}
}
