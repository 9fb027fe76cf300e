package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/tunnelhq/tunnel/pkg/devcert"
	"github.com/tunnelhq/tunnel/pkg/token"
)

func tokenCommand() *cli.Command {
	return &cli.Command{
		Name:            "token",
		Usage:           "manage the tokens file",
		HideHelpCommand: true,
		Subcommands: []*cli.Command{{
			Name:  "add",
			Usage: "create a token, store its hash in the tokens file and print the token once",
			Description: "Prints the new token on stdout, alone on its line, and nothing else there. Only its\n" +
				"SHA-256 is stored, so it cannot be shown again: hand it to the client now (TUNNEL_TOKEN).\n\n" +
				"Example:  tunneld token add --label laptop --name wiki --name 'dev-*'",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "tokens-file", Value: "tokens.json", EnvVars: []string{"TUNNELD_TOKENS_FILE"},
					Usage: "tokens file to add to (created if missing)"},
				&cli.StringFlag{Name: "label", Required: true, EnvVars: []string{"TUNNELD_TOKEN_LABEL"},
					Usage: "unique name of the token, shown in logs"},
				&cli.StringSliceFlag{Name: "name", EnvVars: []string{"TUNNELD_TOKEN_NAMES"},
					Usage: "a name the token may claim: exact (wiki), * (any), or prefix-*/*-suffix; repeat for more; none: random names only"},
				&cli.IntFlag{Name: "max-tunnels", EnvVars: []string{"TUNNELD_TOKEN_MAX_TUNNELS"}, DefaultText: "the server's --max-tunnels",
					Usage: "tunnels this token may open at once"},
				&cli.StringSliceFlag{Name: "connect", EnvVars: []string{"TUNNELD_TOKEN_CONNECT"},
					Usage: "a TCP tunnel the token may reach with \"tunnel connect\", whoever owns it, in --name's patterns; repeat for more; none: only its own and those whose owner allows it"},
				&cli.StringSliceFlag{Name: "domain", EnvVars: []string{"TUNNELD_TOKEN_DOMAINS"},
					Usage: "a custom domain the token may claim (tunnel http --domain): exact (wiki.example.org) or *.apps.example.org (one label); repeat for more; none: no custom domains"},
				&cli.StringFlag{Name: "access", EnvVars: []string{"TUNNELD_TOKEN_ACCESS"}, DefaultText: "the client chooses",
					Usage: "visitor access rules (tunnel http --basic-auth, --allow-cidr, --deny-cidr, --oidc-allow) on the token's HTTP tunnels: require or forbid"},
				&cli.BoolFlag{Name: "pool", EnvVars: []string{"TUNNELD_TOKEN_POOL"},
					Usage: "let the token's clients share a name (tunnel --pool): visitors are spread over them"},
			},
			Action: tokenAdd,
		}},
	}
}

func tokenAdd(c *cli.Context) error {
	if c.Args().Present() {
		return fmt.Errorf("unexpected argument %q (see --help)", c.Args().First())
	}
	path := innermostString(c, "tokens-file")
	label := c.String("label")
	var access *token.AccessPolicy
	switch a := c.String("access"); a {
	case "":
	case "require":
		access = &token.AccessPolicy{Require: true}
	case "forbid":
		access = &token.AccessPolicy{Forbid: true}
	default:
		return fmt.Errorf("--access %q: want require or forbid", a)
	}
	secret, err := token.Add(path, token.Entry{
		Label:      label,
		Names:      c.StringSlice("name"),
		MaxTunnels: c.Int("max-tunnels"),
		Connect:    c.StringSlice("connect"),
		Access:     access,
		Pool:       c.Bool("pool"),
		Domains:    c.StringSlice("domain"),
	})
	if err != nil {
		return err
	}
	fmt.Println(secret)
	fmt.Fprintf(os.Stderr, "tunneld: added token %q to %s; only its SHA-256 was stored, so copy the token above now: it cannot be shown again\n",
		label, path)
	return nil
}

func certsCommand() *cli.Command {
	return &cli.Command{
		Name:  "certs",
		Usage: "make (or keep) the dev CA and certificates that --dev uses, and print the CA's path",
		Description: "Creates --certs-dir with a development CA (ca.pem, ca-key.pem) and a certificate for\n" +
			"localhost, DOMAIN and *.DOMAIN signed by it, unless they exist already. Prints the CA's path on\n" +
			"stdout. Clients trust it with: tunnel --ca PATH, curl --cacert PATH.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "certs-dir", Value: "certs", EnvVars: []string{"TUNNELD_CERTS_DIR"},
				Usage: "directory of the dev CA and certificates"},
			&cli.StringFlag{Name: "domain", Value: devDomain, EnvVars: []string{"TUNNELD_DOMAIN"},
				Usage: "domain the certificates cover"},
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return fmt.Errorf("unexpected argument %q (see --help)", c.Args().First())
			}
			dir := innermostString(c, "certs-dir")
			if err := devcert.Ensure(dir, innermostString(c, "domain")); err != nil {
				return err
			}
			fmt.Println(filepath.Join(dir, devcert.CAFile))
			return nil
		},
	}
}

// innermostString returns flag name from the innermost command where it
// was set (on the command line or by its env var), or the local default.
// Subcommands repeat some top-level flags (--tokens-file, --certs-dir) so
// that both "tunneld --certs-dir x certs" and "tunneld certs --certs-dir x"
// work; urfave/cli alone would let the subcommand's default win.
func innermostString(c *cli.Context, name string) string {
	for _, cc := range c.Lineage() {
		if cc.IsSet(name) {
			return cc.String(name)
		}
	}
	return c.String(name)
}
