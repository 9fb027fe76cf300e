package clidoc

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// testApp is a small program in the shape of tunnel's: global flags, a
// command with flags, a command with a subcommand, and Install's additions.
func testApp(out *bytes.Buffer) *cli.App {
	app := &cli.App{
		Name:            "prog",
		Usage:           "a test program",
		HideHelpCommand: true,
		Writer:          out,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "server", EnvVars: []string{"PROG_SERVER"}, Usage: "where to connect"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, EnvVars: []string{"PROG_QUIET"}, Usage: "say less"},
		},
		Action: func(*cli.Context) error { return nil },
		Commands: []*cli.Command{
			{Name: "http", Usage: "expose", Action: func(*cli.Context) error { return nil },
				Flags: []cli.Flag{&cli.StringFlag{Name: "name", EnvVars: []string{"PROG_NAME"},
					Usage: "a name: exact, or prefix-*/*-suffix"}}},
			{Name: "token", Usage: "tokens", Subcommands: []*cli.Command{
				{Name: "add", Usage: "add one", Action: func(*cli.Context) error { return nil }},
			}},
		},
	}
	Install(app, 1)
	return app
}

// complete runs the app as a completion script would and returns the
// offered words.
func complete(t *testing.T, args ...string) []string {
	t.Helper()
	var out bytes.Buffer
	app := testApp(&out)
	args = append(append([]string{"prog"}, args...), completeFlag)
	saved := os.Args
	os.Args = args // Complete reads them, as urfave/cli's completer does
	t.Cleanup(func() { os.Args = saved })
	if err := app.Run(args); err != nil {
		t.Fatalf("run %q: %v", args, err)
	}
	return strings.Fields(out.String())
}

func TestComplete(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"commands", []string{""}, "http token completion"},
		{"partial command", []string{"ht"}, "http token completion"}, // the shell filters
		{"global flags", []string{"-"}, "--server --quiet -q --help -h --version -v"},
		{"command flags", []string{"http", "-"}, "--name --help -h"},
		{"after a flag's name, its value", []string{"--server", ""}, ""},
		{"after a bool flag, commands", []string{"--quiet", ""}, "http token completion"},
		{"after --flag=value, commands", []string{"--server=x", ""}, "http token completion"},
		{"subcommands", []string{"token", ""}, "add"},
		{"a command's arguments", []string{"http", ""}, ""},
		{"completion's argument", []string{"completion", ""}, "bash zsh fish"},
		{"completion's flags", []string{"completion", "-"}, "--help -h"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := strings.Join(complete(t, tt.args...), " ")
			if got != tt.want {
				t.Errorf("prog %s<TAB>: got %q, want %q", strings.Join(tt.args, " "), got, tt.want)
			}
		})
	}
}

func TestCompletionCommand(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		t.Run(shell, func(t *testing.T) {
			var out bytes.Buffer
			if err := testApp(&out).Run([]string{"prog", "completion", shell}); err != nil {
				t.Fatal(err)
			}
			want := map[string]string{
				"bash": "complete -o bashdefault -o default -F _prog_complete prog\n",
				"zsh":  "compdef _prog_complete prog\n",
				"fish": "complete -c prog -n '__fish_prog_no_subcommand' -f -l server",
			}[shell]
			if !strings.Contains(out.String(), want) {
				t.Errorf("script lacks %q:\n%s", want, out.String())
			}
			if strings.Contains(out.String(), "'man'") {
				t.Errorf("fish script offers the hidden man command:\n%s", out.String())
			}
		})
	}
	var out bytes.Buffer
	if err := testApp(&out).Run([]string{"prog", "completion", "tcsh"}); err == nil || !strings.Contains(err.Error(), `unknown shell "tcsh"`) {
		t.Errorf("completion tcsh: got %v, want an unknown shell error", err)
	}
}

func TestMan(t *testing.T) {
	var out bytes.Buffer
	if err := testApp(&out).Run([]string{"prog", "man"}); err != nil {
		t.Fatal(err)
	}
	page := out.String()
	for _, want := range []string{
		".TH prog 1",
		".SH ENVIRONMENT",
		"\\fBPROG_SERVER\\fP\n--server: where to connect",
		"\\fBPROG_NAME\\fP\nhttp --name: a name: exact, or prefix-*/*-suffix",
		"exact, or prefix-*/*-suffix", // in OPTIONS too, not in italics
	} {
		if !strings.Contains(page, want) {
			t.Errorf("man page lacks %q:\n%s", want, page)
		}
	}
	if strings.Contains(page, "completion\n.PP\nprint") && strings.Contains(page, ".SH man") {
		t.Errorf("man page lists the hidden man command:\n%s", page)
	}
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if err := testApp(&out).Run([]string{"prog", "--version"}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out.String(), "\n")
	if len(lines) < 4 || !strings.HasPrefix(lines[0], "prog version ") || !strings.HasPrefix(lines[1], "commit: ") ||
		!strings.HasPrefix(lines[2], "built:  ") || !strings.HasPrefix(lines[3], "go:     go") {
		t.Errorf("prog --version printed:\n%s", out.String())
	}
}

func TestEscapeStars(t *testing.T) {
	in := "**--name**: prefix-*/*-suffix, * any\n```\nkeep * here\n```\n"
	want := "**--name**: prefix-\\*/\\*-suffix, \\* any\n```\nkeep * here\n```\n"
	if got := escapeStars(in); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
