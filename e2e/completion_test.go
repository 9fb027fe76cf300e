package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// bashCompletionLib is the bash-completion package's library; with it
// loaded, our script reads the words through _get_comp_words_by_ref, as it
// does in a user's interactive shell.
const bashCompletionLib = "/usr/share/bash-completion/bash_completion"

// TestProcess_BashCompletion sources what "tunnel completion bash" (and
// tunneld's) print into a real bash, with the built binaries first on PATH,
// and presses TAB after some words: the script asks the program, so this
// checks the script, the --generate-bash-completion answer and the
// commands' definitions together. Each case runs in a plain bash and with
// the bash-completion package loaded.
func TestProcess_BashCompletion(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	tunneld, _ := binaries(t)
	dir := filepath.Dir(tunneld)
	for _, lib := range []string{"", bashCompletionLib} {
		name := "plain"
		if lib != "" {
			name = "bash-completion"
			if _, err := os.Stat(lib); err != nil {
				if os.Getenv("CI") != "" {
					t.Fatalf("%s is missing (apt-get install bash-completion), and CI is set", lib)
				}
				t.Logf("SKIP %s: %v", name, err)
				continue
			}
		}
		t.Run(name, func(t *testing.T) {
			for _, tt := range []struct {
				line string // the command line before the cursor
				want []string
				not  []string
			}{
				{"tunnel ", []string{"http", "completion"}, []string{"man", "help"}},
				{"tunnel ht", []string{"http"}, []string{"completion"}},
				{"tunnel --dev ", []string{"http"}, nil},
				{"tunnel --server ", nil, []string{"http"}}, // a value: file names, not commands
				{"tunnel http --na", []string{"--name"}, []string{"--targets"}},
				{"tunnel completion ", []string{"bash", "zsh", "fish"}, nil},
				{"tunneld ", []string{"token", "certs", "completion"}, []string{"man"}},
				{"tunneld token ", []string{"add"}, nil},
				{"tunneld token add --la", []string{"--label"}, nil},
			} {
				got := bashComplete(t, dir, lib, tt.line)
				for _, w := range tt.want {
					if !strings.Contains(" "+got+" ", " "+w+" ") {
						t.Errorf("%q<TAB>: got %q, want %q among them", tt.line, got, w)
					}
				}
				for _, w := range tt.not {
					if strings.Contains(" "+got+" ", " "+w+" ") {
						t.Errorf("%q<TAB>: got %q, want no %q", tt.line, got, w)
					}
				}
			}
		})
	}
}

// bashComplete returns, space-separated, what the completion script of
// line's program offers for the last word of line, with the programs in
// dir first on PATH, and lib (if any) loaded first.
func bashComplete(t *testing.T, dir, lib, line string) string {
	t.Helper()
	script := `
		[[ -n $LIB ]] && source "$LIB"
		source <("$PROG" completion bash) || exit 1
		read -ra COMP_WORDS <<<"$LINE"
		[[ $LINE == *" " ]] && COMP_WORDS+=("")
		COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
		COMP_LINE=$LINE
		COMP_POINT=${#LINE}
		"$FUNC"
		echo "${COMPREPLY[*]}"`
	prog := strings.Fields(line)[0]
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "--norc", "--noprofile", "-c", script)
	cmd.Env = append(baseEnv(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"),
		"LIB="+lib, "PROG="+prog, "LINE="+line, "FUNC=_"+prog+"_complete")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash completion of %q: %v\n%s", line, err, out)
	}
	return strings.TrimSpace(string(out))
}
