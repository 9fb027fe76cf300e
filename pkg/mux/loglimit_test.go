package mux

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// logged is one line the logger wrote, as JSON.
type logged struct {
	Level      string
	Message    string
	Suppressed int
}

func parseLog(t *testing.T, buf *bytes.Buffer) []logged {
	t.Helper()
	var out []logged
	sc := bufio.NewScanner(buf)
	for sc.Scan() {
		var l logged
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

// Lines as yamux v0.1.2 writes them (session.go, stream.go), each with the
// level it gets and the message without the mark.
func TestYamuxLevel(t *testing.T) {
	tests := []struct {
		line  string
		ended bool
		want  zerolog.Level
		msg   string
	}{
		// The connection went away under the session: its owner logs the end.
		{"[ERR] yamux: Failed to write body: write tcp 127.0.0.1:1->127.0.0.1:2: use of closed network connection", false,
			zerolog.DebugLevel, "yamux: Failed to write body: write tcp 127.0.0.1:1->127.0.0.1:2: use of closed network connection"},
		{"[ERR] yamux: Failed to write header: write tcp 127.0.0.1:1->127.0.0.1:2: write: broken pipe", false, zerolog.DebugLevel, ""},
		{"[ERR] yamux: Failed to read header: read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer", false, zerolog.DebugLevel, ""},
		{"[ERR] yamux: Failed to read stream data: unexpected EOF", false, zerolog.DebugLevel, ""},
		{"[ERR] yamux: Failed to read header: EOF", false, zerolog.DebugLevel, ""},
		{"[WARN] yamux: failed to send ping reply: session shutdown", false, zerolog.DebugLevel, ""},
		// Anything once the session is shutting down.
		{"[ERR] yamux: keepalive failed: i/o deadline reached", true, zerolog.DebugLevel, ""},
		{"[WARN] yamux: frame for missing stream: Vsn:0 Type:0 Flags:0 StreamID:5 Length:10", true, zerolog.DebugLevel, ""},
		// The peer or the link misbehaving: warn, never error.
		{"[ERR] yamux: keepalive failed: i/o deadline reached", false, zerolog.WarnLevel, "yamux: keepalive failed: i/o deadline reached"},
		{"[WARN] yamux: frame for missing stream: Vsn:0 Type:0 Flags:0 StreamID:5 Length:10", false, zerolog.WarnLevel, ""},
		{"[ERR] yamux: receive window exceeded (stream: 3, remain: 0, recv: 10)", false, zerolog.WarnLevel, ""},
		{"[WARN] yamux: backlog exceeded, forcing connection reset", false, zerolog.WarnLevel, ""},
		{"[ERR] yamux: Invalid protocol version: 9", false, zerolog.WarnLevel, "yamux: Invalid protocol version: 9"},
		// A line without a mark is kept whole.
		{"yamux: something new", false, zerolog.WarnLevel, "yamux: something new"},
	}
	for _, tt := range tests {
		lvl, msg := yamuxLevel(tt.line, tt.ended)
		if lvl != tt.want {
			t.Errorf("%q (ended %v): got level %v, want %v", tt.line, tt.ended, lvl, tt.want)
		}
		if tt.msg != "" && msg != tt.msg {
			t.Errorf("%q: got message %q, want %q", tt.line, msg, tt.msg)
		}
		if strings.HasPrefix(msg, "[") {
			t.Errorf("%q: message %q keeps yamux's mark", tt.line, msg)
		}
	}
}

// The bridge logs at the level yamuxLevel says, within the budget, and
// lines the logger drops do not use the budget up.
func TestYamuxLog_LevelsAndBudget(t *testing.T) {
	var buf bytes.Buffer
	w := &yamuxLog{l: zerolog.New(&buf).Level(zerolog.InfoLevel)}
	const closed = "[ERR] yamux: Failed to write body: use of closed network connection"
	const missing = "[WARN] yamux: frame for missing stream: Vsn:0 Type:0 Flags:0 StreamID:5 Length:10"
	for range 100 {
		w.Write([]byte(closed + "\n")) // debug: dropped, not counted
	}
	for range 100 {
		w.Write([]byte(missing + "\n"))
	}
	w.close()
	// The budget lets logBurst through, then one a minute; every other
	// line is counted in the report.
	lines := parseLog(t, &buf)
	if len(lines) < logBurst+1 || len(lines) > logBurst+2 {
		t.Fatalf("got %d lines, want %d or %d warnings and one report: %+v", len(lines), logBurst, logBurst+1, lines)
	}
	warned := lines[:len(lines)-1]
	for _, l := range warned {
		if l.Level != "warn" || !strings.HasPrefix(l.Message, "yamux: frame for missing stream") {
			t.Errorf("got %+v, want a warning without yamux's mark", l)
		}
	}
	if last := lines[len(lines)-1]; last.Level != "warn" || last.Suppressed != 100-len(warned) {
		t.Errorf("report: got %+v, want warn with %d suppressed", last, 100-len(warned))
	}

	// At debug, the closed-connection lines are logged, and a report of
	// only such lines is at debug too.
	buf.Reset()
	w = &yamuxLog{l: zerolog.New(&buf).Level(zerolog.DebugLevel)}
	for range 10 {
		w.Write([]byte(closed + "\n"))
	}
	w.close()
	lines = parseLog(t, &buf)
	last := lines[len(lines)-1]
	if len(lines) < logBurst+1 || lines[0].Level != "debug" || last.Level != "debug" || last.Suppressed != 10-(len(lines)-1) {
		t.Fatalf("got %+v, want debug lines and a debug report of the rest", lines)
	}
}

// Once a session is closed, whatever its yamux logs is debug: it is about
// the end the session's owner reports.
func TestYamuxLog_AfterCloseIsDebug(t *testing.T) {
	var buf bytes.Buffer
	log := zerolog.New(&buf).Level(zerolog.DebugLevel)
	c, s := net.Pipe()
	defer s.Close()
	sess, err := startSession(c, testConfig(t), log, false, 1)
	if err != nil {
		t.Fatal(err)
	}
	sess.ylog.Write([]byte("[ERR] yamux: keepalive failed: i/o deadline reached\n"))
	sess.Close()
	sess.ylog.Write([]byte("[ERR] yamux: keepalive failed: i/o deadline reached\n"))
	var levels []string
	for _, l := range parseLog(t, &buf) {
		if strings.HasPrefix(l.Message, "yamux: keepalive failed") {
			levels = append(levels, l.Level)
		}
	}
	if strings.Join(levels, ",") != "warn,debug" {
		t.Fatalf("got levels %v, want warn while open, debug after Close", levels)
	}
}
