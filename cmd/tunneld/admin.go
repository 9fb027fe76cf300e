package main

import (
	"fmt"
	"net"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/tunnelhq/tunnel/pkg/admin"
	"github.com/tunnelhq/tunnel/pkg/edge"
)

func adminFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "access-log", Value: edge.DefaultConfig().AccessLog, EnvVars: []string{"TUNNELD_ACCESS_LOG"},
			Usage: "log one line per visitor request (host, method, path, status, bytes, duration, visitor, tunnel); --access-log=false turns it off"},
		&cli.StringFlag{Name: "admin-listen", EnvVars: []string{"TUNNELD_ADMIN_LISTEN"}, DefaultText: "off",
			Usage: "serve /metrics, /healthz, /readyz, /api/tunnels and a status page at /, on host:port (a bare :port means 127.0.0.1:port)"},
		&cli.StringFlag{Name: "admin-token", EnvVars: []string{"TUNNELD_ADMIN_TOKEN"},
			Usage: "bearer token the admin listener requires; mandatory unless it is on a loopback address (prefer the env var over the flag)"},
		&cli.BoolFlag{Name: "admin-pprof", EnvVars: []string{"TUNNELD_ADMIN_PPROF"},
			Usage: "also serve net/http/pprof at /debug/pprof/ on the admin listener"},
	}
}

// adminAddr puts a bare ":port" on loopback: the admin listener is
// reachable from elsewhere only when asked for by address.
func adminAddr(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("--admin-listen %q: want host:port or :port", s)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// listenAdmin binds --admin-listen and builds the admin server; nil, nil
// when the flag is not set. It refuses a non-loopback address without a
// token before anything is served.
func listenAdmin(c *cli.Context, log zerolog.Logger, srv *edge.Server) (*admin.Server, net.Listener, error) {
	if c.String("admin-listen") == "" {
		return nil, nil, nil
	}
	addr, err := adminAddr(c.String("admin-listen"))
	if err != nil {
		return nil, nil, err
	}
	token := c.String("admin-token")
	refuse := fmt.Errorf("--admin-listen %s: not a loopback address, so TUNNELD_ADMIN_TOKEN is required", addr)
	if token == "" && !admin.IsLoopback(addr) {
		return nil, nil, refuse // before binding anything
	}
	adm, err := admin.New(admin.Config{Edge: srv, Logger: log, Token: token, Pprof: c.Bool("admin-pprof")})
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen on %s (--admin-listen): %w", addr, err)
	}
	if err := adm.CheckAddr(ln.Addr()); err != nil { // "localhost" may resolve elsewhere
		ln.Close()
		return nil, nil, refuse
	}
	return adm, ln, nil
}
