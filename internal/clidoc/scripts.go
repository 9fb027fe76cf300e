package clidoc

import (
	"fmt"
	"os"
	"strings"

	"github.com/cpuguy83/go-md2man/v2/md2man"
	"github.com/urfave/cli/v2"
)

// completionCommand is "PROGRAM completion bash|zsh|fish".
func completionCommand(program string) *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print the shell completion script for bash, zsh or fish",
		ArgsUsage: "bash|zsh|fish",
		Description: "Packages install the scripts already; for a binary installed by hand:\n\n" +
			"  bash:  " + program + " completion bash > ~/.local/share/bash-completion/completions/" + program + "\n" +
			"  zsh:   " + program + " completion zsh > \"${fpath[1]}/_" + program + "\"\n" +
			"  fish:  " + program + " completion fish > ~/.config/fish/completions/" + program + ".fish",
		HideHelpCommand: true,
		BashComplete: func(c *cli.Context) {
			if n := len(os.Args); n >= 3 && strings.HasPrefix(os.Args[n-2], "-") {
				Complete(c)
				return
			}
			fmt.Fprintln(c.App.Writer, "bash\nzsh\nfish")
		},
		Action: func(c *cli.Context) error {
			if c.Args().Len() != 1 {
				return fmt.Errorf("completion: want one shell, bash, zsh or fish (see %s completion --help)", program)
			}
			script, err := Script(c.App, c.Args().First())
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(c.App.Writer, script)
			return err
		},
	}
}

// Script returns app's completion script for shell: "bash", "zsh" or
// "fish".
func Script(app *cli.App, shell string) (string, error) {
	switch shell {
	case "bash":
		return strings.NewReplacer("PROGRAM", app.Name, "FUNC", funcName(app.Name)).Replace(bashScript), nil
	case "zsh":
		return strings.NewReplacer("PROGRAM", app.Name, "FUNC", funcName(app.Name)).Replace(zshScript), nil
	case "fish":
		s, err := app.ToFishCompletion()
		if err != nil {
			return "", fmt.Errorf("completion: fish: %w", err)
		}
		return s, nil
	}
	return "", fmt.Errorf("completion: unknown shell %q: want bash, zsh or fish", shell)
}

// funcName is a shell function name for program's completer.
func funcName(program string) string {
	return "_" + strings.NewReplacer("-", "_", ".", "_").Replace(program) + "_complete"
}

// bashScript asks the program (see the package doc). With the
// bash-completion package loaded, _get_comp_words_by_ref keeps "--flag=value"
// and "host:port" as one word; without it COMP_WORDS serves.
const bashScript = `# bash completion for PROGRAM; made by "PROGRAM completion bash".
# Each TAB asks PROGRAM itself which commands and flags fit.
FUNC() {
	local cur words cword
	if declare -F _get_comp_words_by_ref >/dev/null; then
		_get_comp_words_by_ref -n =: cur words cword
	else
		cur=${COMP_WORDS[COMP_CWORD]}
		words=("${COMP_WORDS[@]}")
		cword=$COMP_CWORD
	fi
	local w
	for w in "${words[@]:1:cword-1}"; do
		# After "--" only arguments follow, and PROGRAM would run for real.
		[[ $w == -- ]] && return 0
	done
	local partial=
	[[ $cur == -* ]] && partial=-
	local prog=${words[0]/#\~/$HOME} IFS=$'\n'
	COMPREPLY=($(compgen -W "$("$prog" "${words[@]:1:cword-1}" "$partial" --generate-bash-completion 2>/dev/null)" -- "$cur"))
}
complete -o bashdefault -o default -F FUNC PROGRAM
`

// zshScript works both from a file _PROGRAM on $fpath (where zsh calls the
// file's body as the function) and when sourced.
const zshScript = `#compdef PROGRAM
# zsh completion for PROGRAM; made by "PROGRAM completion zsh".
# Each TAB asks PROGRAM itself which commands and flags fit.
FUNC() {
	local -a before opts
	before=("${(@)words[1,CURRENT-1]}")
	# After "--" only arguments follow, and PROGRAM would run for real.
	if (( ${before[(Ie)--]} )); then
		_files
		return
	fi
	local partial=
	[[ ${words[CURRENT]} == -* ]] && partial=-
	opts=("${(@f)$("${before[1]}" "${(@)before[2,-1]}" "$partial" --generate-bash-completion 2>/dev/null)}")
	opts=(${opts:#})
	if (( ${#opts} )); then
		compadd -- "${opts[@]}"
	else
		_files
	fi
}
if [[ ${funcstack[1]} == _PROGRAM ]]; then
	FUNC "$@"
else
	compdef FUNC PROGRAM
fi
`

// manCommand is the hidden "PROGRAM man": the man page, in roff.
func manCommand(section int) *cli.Command {
	return &cli.Command{
		Name:   "man",
		Usage:  "print the man page (roff; read it with: man -l -)",
		Hidden: true,
		Action: func(c *cli.Context) error {
			page, err := Man(c.App, section)
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(c.App.Writer, page)
			return err
		},
	}
}

// Man returns app's man page in section: urfave/cli's page, which leaves
// out the environment variables, and an ENVIRONMENT section naming each
// flag's.
//
// urfave/cli writes the page in Markdown and renders it with go-md2man
// (App.ToManWithSection); Man does the same, but first escapes each lone
// "*" outside code blocks, which Markdown would take for emphasis: "--name"
// takes patterns such as "prefix-*", and ToManWithSection shows
// "prefix-*\/*-suffix" as "prefix-/-suffix" with the "/" in italics.
func Man(app *cli.App, section int) (string, error) {
	md, err := app.ToMarkdown()
	if err != nil {
		return "", fmt.Errorf("man page: %w", err)
	}
	page := string(md2man.Render([]byte(fmt.Sprintf("%% %s %d\n\n", app.Name, section) + escapeStars(md))))
	var b strings.Builder
	b.WriteString(strings.TrimRight(page, "\n"))
	b.WriteString("\n\n.SH ENVIRONMENT\nEach option may come from its environment variable instead; a flag on the command line wins.\n")
	seen := map[string]bool{}
	var add func(path string, flags []cli.Flag, cmds []*cli.Command)
	add = func(path string, flags []cli.Flag, cmds []*cli.Command) {
		for _, f := range flags {
			df, ok := f.(cli.DocGenerationFlag)
			if !ok || len(df.GetEnvVars()) == 0 {
				continue
			}
			if v, ok := f.(cli.VisibleFlag); ok && !v.IsVisible() {
				continue
			}
			for _, env := range df.GetEnvVars() {
				if seen[env] {
					continue
				}
				seen[env] = true
				fmt.Fprintf(&b, ".TP\n\\fB%s\\fP\n%s--%s: %s\n", roff(env), roff(path), roff(f.Names()[0]), roff(df.GetUsage()))
			}
		}
		for _, c := range cmds {
			if !c.Hidden {
				add(path+c.Name+" ", c.Flags, c.Subcommands)
			}
		}
	}
	add("", app.Flags, app.Commands)
	return b.String(), nil
}

// escapeStars puts a backslash before each "*" that is not part of "**"
// (bold, in urfave/cli's template), outside ``` code blocks.
func escapeStars(md string) string {
	lines := strings.SplitAfter(md, "\n")
	inCode := false
	for i, line := range lines {
		if strings.HasPrefix(line, "```") {
			inCode = !inCode
			continue
		}
		if inCode || !strings.Contains(line, "*") {
			continue
		}
		var b strings.Builder
		for j := 0; j < len(line); j++ {
			lone := line[j] == '*' && (j == 0 || line[j-1] != '*') && (j+1 == len(line) || line[j+1] != '*')
			if lone {
				b.WriteByte('\\')
			}
			b.WriteByte(line[j])
		}
		lines[i] = b.String()
	}
	return strings.Join(lines, "")
}

// roff escapes s for a line of roff text: backslashes, and a leading "."
// or "'" that would make it a request.
func roff(s string) string {
	s = strings.ReplaceAll(s, "\\", "\\e")
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = "\\&" + s
	}
	return s
}
