package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/tunnelhq/tunnel/internal/certpool"
	"github.com/tunnelhq/tunnel/pkg/certs"
	"github.com/tunnelhq/tunnel/pkg/edge"
)

// certFiles sorts --cert values into directories and files, pairing the
// files with --key in order.
func certFiles(paths, keys []string) (certs.Files, error) {
	var files certs.Files
	var plain []string
	for _, c := range paths {
		if fi, err := os.Stat(c); err == nil && fi.IsDir() {
			files.Dirs = append(files.Dirs, c)
		} else {
			plain = append(plain, c)
		}
	}
	if len(plain) != len(keys) {
		return files, fmt.Errorf("--cert and --key go together: %d certificate files, %d keys (a --cert directory needs no --key)", len(plain), len(keys))
	}
	for i := range plain {
		files.Pairs = append(files.Pairs, certs.Pair{Cert: plain[i], Key: keys[i]})
	}
	return files, nil
}

// certConfig sets the static certificates and ACME of a production
// (non --dev) server. Without ACME the static certificates must cover
// every name tunneld serves, the domain and *.domain: otherwise visitors
// would get a TLS alert, and only /readyz would say why.
func certConfig(c *cli.Context, cfg *edge.Config, files certs.Files) error {
	if len(files.Pairs)+len(files.Dirs) > 0 {
		if !c.Bool("acme") {
			files.Require = []string{cfg.Domain, "*." + cfg.Domain}
		}
		static, err := certs.LoadStatic(files)
		if err != nil {
			return certAdvice(err, cfg.Domain)
		}
		cfg.StaticCerts = static
	}
	if !c.Bool("acme") {
		return nil
	}
	acme := &certs.ACMEConfig{
		CacheDir:     c.String("cert-cache"),
		DirectoryURL: c.String("acme-directory"),
		Email:        c.String("acme-email"),

		OrdersPerWeek:         c.Int("acme-orders-per-week"),
		OrdersPerOwnerPerWeek: c.Int("acme-orders-per-owner"),
	}
	if acme.OrdersPerWeek <= 0 || acme.OrdersPerOwnerPerWeek <= 0 {
		return errors.New("--acme-orders-per-week and --acme-orders-per-owner must be positive")
	}
	if acme.CacheDir == "" {
		dir, err := defaultCertCache()
		if err != nil {
			return err
		}
		acme.CacheDir = dir
	}
	if file := c.String("acme-ca-root"); file != "" {
		pool, err := certpool.WithFile(file)
		if err != nil {
			return fmt.Errorf("--acme-ca-root: %w", err)
		}
		acme.RootCAs = pool
	}
	cfg.ACME = acme
	return nil
}

// certAdvice adds what to do to an error that says the certificates do
// not cover the names tunneld serves; other errors it returns as they are.
func certAdvice(err error, domain string) error {
	var nc *certs.NotCoveredError
	if !errors.As(err, &nc) {
		return err
	}
	return fmt.Errorf("%w; give tunneld a certificate for %s and *.%s (--cert and --key, or a --cert directory), "+
		"or leave --acme on (the default) to get certificates for the names they lack", err, domain, domain)
}

// defaultCertCache is $STATE_DIRECTORY/autocert under systemd
// (StateDirectory=), else autocert under the user's XDG state directory.
func defaultCertCache() (string, error) {
	if dir := os.Getenv("STATE_DIRECTORY"); dir != "" {
		// systemd may list several, separated by ':'; ours is the first.
		return filepath.Join(strings.Split(dir, ":")[0], "autocert"), nil
	}
	state := os.Getenv("XDG_STATE_HOME")
	if state == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no --cert-cache and no home directory for its default: %w", err)
		}
		state = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(state, "tunneld", "autocert"), nil
}

// parsePrefix reads a CIDR or a single address (as a /32 or /128).
func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}
