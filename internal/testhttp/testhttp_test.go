package testhttp

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
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
