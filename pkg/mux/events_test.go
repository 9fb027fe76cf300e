package mux

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

func TestClient_StreamEvents(t *testing.T) {
	c, s, err := session(t, transports()["tls"], hello("wiki"), nil)
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan StreamEvent, 8)
	c.onStream = func(ev StreamEvent) { events <- ev }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := serve(t, ctx, c, map[string]string{"wiki": echoServer(t)})

	// Refused: one event, closed, with the error.
	if _, err := s.Open(context.Background(), &proto.StreamHeader{Tunnel: "other"}); err == nil {
		t.Fatal("stream for an unknown tunnel was accepted")
	}
	ev := testwait.Recv(t, events, 10*time.Second)
	var perr *proto.Error
	if ev.Tunnel != "other" || !ev.Closed || !errors.As(ev.Err, &perr) || perr.Code != proto.CodeUnknownTunnel {
		t.Errorf("refused stream: got %+v", ev)
	}

	st, err := s.Open(context.Background(), &proto.StreamHeader{Tunnel: "wiki", RemoteAddr: "192.0.2.7:4000"})
	if err != nil {
		t.Fatal(err)
	}
	opened := testwait.Recv(t, events, 10*time.Second)
	if opened.Tunnel != "wiki" || opened.Closed || opened.Visitor != "192.0.2.7:4000" || opened.Err != nil {
		t.Errorf("opened: got %+v", opened)
	}
	if _, err := st.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	closeWrite(st)
	if got, err := io.ReadAll(st); err != nil || string(got) != "hello" {
		t.Fatalf("echo: got %q, %v", got, err)
	}
	st.Close()
	closed := testwait.Recv(t, events, 10*time.Second)
	if !closed.Closed || closed.StreamID != opened.StreamID || closed.BytesIn != 5 || closed.BytesOut != 5 || closed.Duration <= 0 {
		t.Errorf("closed: got %+v, want 5 bytes each way", closed)
	}
	cancel()
	testwait.Recv(t, errc, 10*time.Second)
}
