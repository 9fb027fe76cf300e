package testhttp

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestGet_ReturnsStatusAndBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "want GET", http.StatusMethodNotAllowed)
			return
		}
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, "short and stout "+r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	c := srv.Client()
	t.Cleanup(c.CloseIdleConnections)
	status, body := Get(t, c, srv.URL+"/pot")
	if status != http.StatusTeapot || body != "short and stout /pot" {
		t.Fatalf("got %d %q, want 418 %q", status, body, "short and stout /pot")
	}
}

func TestPacedEvents_ReadInStep(t *testing.T) {
	next := make(chan struct{})
	srv := httptest.NewServer(PacedEvents(3, next))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// The handler waits on next after each event: had it not flushed
	// them, or had ReadPacedEvents not acknowledged them, this would
	// fail on the bounded wait instead of returning.
	ReadPacedEvents(t, resp.Body, 3, next, 10*time.Second)
}
