package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/tunnelhq/tunnel/pkg/proto"
)

func TestClientConfig_Access(t *testing.T) {
	defer func(c int) { bcryptCost = c }(bcryptCost)
	bcryptCost = bcrypt.MinCost
	dir := t.TempDir()
	file := filepath.Join(dir, "tunnels.json")
	os.WriteFile(file, []byte(`{
  "server": "file.example:443",
  "tunnels": [
    {"name": "wiki", "target": "8080", "basic_auth": ["ann:from file"], "allow_cidr": ["192.0.2.0/24"], "pass_authorization": true},
    {"name": "blog", "target": "9090"},
    {"name": "team", "target": "7070", "oidc_allow": ["Ann@Example.com", "@example.org"]}
  ]
}`), 0o600)
	tcpFile := filepath.Join(dir, "tcp.json")
	os.WriteFile(tcpFile, []byte(`{"server": "x:1", "tunnels": [{"name": "ssh", "kind": "tcp", "target": "22", "allow_cidr": ["10.0.0.0/8"]}]}`), 0o600)
	prehashed, err := bcrypt.GenerateFromPassword([]byte("pw-prehashed"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	server := map[string]string{"TUNNEL_SERVER": "x:1"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{"TUNNEL_SERVER": "x:1"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	type rules struct {
		users       []user // passwords in clear, checked against the hashes
		allow, deny []string
		pass        bool
		oidc        []string
	}
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		want    []*rules // per tunnel; nil: none
		wantErr string
	}{
		{name: "flags for every target", env: server,
			args: []string{"http", "--basic-auth", "ann:pw, with commas", "--basic-auth", "bo:x-long-password", "--allow-cidr", "10.0.0.0/8,192.0.2.1",
				"--allow-cidr", "2001:db8::/32", "--deny-cidr", "10.1.0.0/16", "wiki=8080", "blog=9090"},
			want: []*rules{
				{users: []user{{"ann", "pw, with commas"}, {"bo", "x-long-password"}}, allow: []string{"10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32"}, deny: []string{"10.1.0.0/16"}},
				{users: []user{{"ann", "pw, with commas"}, {"bo", "x-long-password"}}, allow: []string{"10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32"}, deny: []string{"10.1.0.0/16"}},
			}},
		{name: "none", env: server, args: []string{"http", "8080"}, want: []*rules{nil}},
		{name: "env", env: with("TUNNEL_BASIC_AUTH", "ann:pie,crust", "TUNNEL_DENY_CIDR", "::1, 10.0.0.0/8", "TUNNEL_PASS_AUTHORIZATION", "true"),
			args: []string{"http", "8080"},
			want: []*rules{{users: []user{{"ann", "pie,crust"}}, deny: []string{"::1/128", "10.0.0.0/8"}, pass: true}}},
		{name: "flag replaces env", env: with("TUNNEL_BASIC_AUTH", "ann:a"), args: []string{"http", "--basic-auth", "bo:banana", "8080"},
			want: []*rules{{users: []user{{"bo", "banana"}}}}},
		{name: "bare tunnel reads the env", env: with("TUNNEL_TARGETS", "wiki=8080", "TUNNEL_BASIC_AUTH", "ann:apple pie", "TUNNEL_ALLOW_CIDR", "10.0.0.0/8,192.0.2.0/24"),
			want: []*rules{{users: []user{{"ann", "apple pie"}}, allow: []string{"10.0.0.0/8", "192.0.2.0/24"}}}},
		{name: "file per tunnel", args: []string{"--config", file},
			want: []*rules{{users: []user{{"ann", "from file"}}, allow: []string{"192.0.2.0/24"}, pass: true}, nil,
				{oidc: []string{"ann@example.com", "@example.org"}}}},
		{name: "flags replace the file's", args: []string{"--config", file, "http", "--deny-cidr", "10.0.0.0/8"},
			want: []*rules{{deny: []string{"10.0.0.0/8"}}, {deny: []string{"10.0.0.0/8"}}, {deny: []string{"10.0.0.0/8"}}}},
		{name: "oidc flags", env: server, args: []string{"http", "--oidc-allow", "ann@example.com", "--oidc-allow", "@Example.org", "8080"},
			want: []*rules{{oidc: []string{"ann@example.com", "@example.org"}}}},
		{name: "oidc env", env: with("TUNNEL_OIDC_ALLOW", "ann@example.com, @example.org"), args: []string{"http", "8080"},
			want: []*rules{{oidc: []string{"ann@example.com", "@example.org"}}}},
		{name: "oidc not an email", env: server, args: []string{"http", "--oidc-allow", "example.org", "8080"},
			wantErr: `--oidc-allow "example.org": want an email address`},
		{name: "oidc too many", env: server, args: append([]string{"http"}, append(slices.Repeat([]string{"--oidc-allow", "a@b.c"}, proto.MaxAccessOIDC+1), "8080")...),
			wantErr: "17 --oidc-allow entries, at most 16"},
		{name: "targets on the command line take none of the file's", args: []string{"--config", file, "http", "wiki=8080"},
			want: []*rules{nil}},
		{name: "a hash is sent as is", env: server, args: []string{"http", "--basic-auth", "ann:" + string(prehashed), "8080"},
			want: []*rules{{users: []user{{"ann", "pw-prehashed"}}}}},

		{name: "http tunnels only", env: with("TUNNEL_TARGETS", "web=8080 tcp://ssh=22 tls://sec=8443", "TUNNEL_ALLOW_CIDR", "10.0.0.0/8"),
			want: []*rules{{allow: []string{"10.0.0.0/8"}}, nil, nil}},
		{name: "tunnel tcp ignores them", env: with("TUNNEL_BASIC_AUTH", "ann:apple pie"), args: []string{"tcp", "--name", "ssh", "22"},
			want: []*rules{nil}},
		{name: "a file tcp tunnel with rules", args: []string{"--config", tcpFile},
			wantErr: "--config: tunnel 1: basic_auth, allow_cidr, deny_cidr and oidc_allow are for http tunnels, not tcp"},

		{name: "no colon", env: server, args: []string{"http", "--basic-auth", "ann", "8080"}, wantErr: "want USER:PASSWORD"},
		{name: "empty user", env: server, args: []string{"http", "--basic-auth", ":pw", "8080"}, wantErr: "empty USER"},
		{name: "empty password", env: server, args: []string{"http", "--basic-auth", "ann:", "8080"}, wantErr: "empty PASSWORD"},
		{name: "long password", env: server, args: []string{"http", "--basic-auth", "ann:" + strings.Repeat("p", 73), "8080"}, wantErr: "at most 72"},
		{name: "user twice", env: server, args: []string{"http", "--basic-auth", "ann:a", "--basic-auth", "ann:b", "8080"}, wantErr: `"ann" given twice`},
		{name: "too many users", env: server, args: []string{"http", "--basic-auth", "a:1", "--basic-auth", "b:1", "--basic-auth", "c:1",
			"--basic-auth", "d:1", "--basic-auth", "e:1", "8080"}, wantErr: "5 basic-auth users, at most 4"},
		{name: "pass alone", env: server, args: []string{"http", "--pass-authorization", "8080"}, wantErr: "--pass-authorization goes with --basic-auth"},
		{name: "pass with prefixes only", env: server, args: []string{"http", "--pass-authorization", "--allow-cidr", "10.0.0.0/8", "8080"},
			wantErr: "--pass-authorization goes with --basic-auth"},
		{name: "bad prefix", env: server, args: []string{"http", "--allow-cidr", "10.0.0.0/33", "8080"}, wantErr: `--allow-cidr "10.0.0.0/33": want a prefix`},
		{name: "host bits", env: server, args: []string{"http", "--deny-cidr", "10.1.2.3/8", "8080"}, wantErr: "did you mean 10.0.0.0/8?"},
	}
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
			cfg, err := configFrom(t, tt.env, tt.args...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Tunnels) != len(tt.want) {
				t.Fatalf("got %d tunnels, want %d", len(cfg.Tunnels), len(tt.want))
			}
			for i, w := range tt.want {
				a := cfg.Tunnels[i].Access
				if w == nil {
					if a != nil {
						t.Errorf("tunnel %d: got access %+v, want none", i, a)
					}
					continue
				}
				if a == nil {
					t.Fatalf("tunnel %d: got no access rules, want %+v", i, w)
				}
				checkAccess(t, a, w.users, w.allow, w.deny, w.pass)
				if !slices.Equal(a.OIDCAllow, w.oidc) {
					t.Errorf("tunnel %d: got oidc_allow %q, want %q", i, a.OIDCAllow, w.oidc)
				}
			}
		})
	}
}

type user struct{ name, password string }

func checkAccess(t *testing.T, a *proto.Access, users []user, allow, deny []string, pass bool) {
	t.Helper()
	if !slices.Equal(a.AllowCIDR, allow) || !slices.Equal(a.DenyCIDR, deny) || a.PassAuthorization != pass {
		t.Errorf("got allow %q deny %q pass %v, want %q %q %v", a.AllowCIDR, a.DenyCIDR, a.PassAuthorization, allow, deny, pass)
	}
	if len(a.BasicAuth) != len(users) {
		t.Fatalf("got %d users, want %d", len(a.BasicAuth), len(users))
	}
	for i, u := range users {
		got := a.BasicAuth[i]
		if got.User != u.name {
			t.Errorf("user %d: got %q, want %q", i, got.User, u.name)
		}
		if strings.Contains(got.Hash, u.password) {
			t.Errorf("user %s: the password is in what is sent: %q", u.name, got.Hash)
		}
		if err := bcrypt.CompareHashAndPassword([]byte(got.Hash), []byte(u.password)); err != nil {
			t.Errorf("user %s: the hash sent does not match the password: %v", u.name, err)
		}
	}
}

func TestDescribeAccess(t *testing.T) {
	for _, tt := range []struct {
		a    *proto.Access
		want string
	}{
		{nil, ""},
		{&proto.Access{}, ""},
		{&proto.Access{BasicAuth: []proto.BasicAuthUser{{User: "ann", Hash: "$2a$10$secret"}, {User: "bo", Hash: "h"}}, PassAuthorization: true},
			"basic auth (ann, bo), Authorization passed on"},
		{&proto.Access{BasicAuth: []proto.BasicAuthUser{{User: "ann", Hash: "$2a$10$secret"}}, AllowCIDR: []string{"192.0.2.0/24", "2001:db8::/32"},
			DenyCIDR: []string{"192.0.2.66/32"}}, "basic auth (ann); allow 192.0.2.0/24, 2001:db8::/32; deny 192.0.2.66/32"},
		{&proto.Access{DenyCIDR: []string{"10.0.0.0/8"}}, "deny 10.0.0.0/8"},
		{&proto.Access{OIDCAllow: []string{"ann@example.com", "@example.org"}}, "sign-in as ann@example.com, @example.org"},
	} {
		if got := describeAccess(tt.a); got != tt.want {
			t.Errorf("describeAccess(%+v): got %q, want %q", tt.a, got, tt.want)
		}
	}
}
