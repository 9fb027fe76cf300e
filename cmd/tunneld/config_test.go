package main

import (
	"errors"
	"testing"

	"github.com/tunnelhq/tunnel/pkg/edge"
)

func TestFirstMatch(t *testing.T) {
	fileSet, err := edge.NewTokenSet([]edge.TokenEntry{{Label: "laptop", SHA256: edge.HashToken("file-token"), Names: []string{"wiki"}}})
	if err != nil {
		t.Fatal(err)
	}
	shared, err := edge.NewTokenSet([]edge.TokenEntry{edge.SharedTokenEntry("shared-token")})
	if err != nil {
		t.Fatal(err)
	}
	auth := firstMatch{fileSet, shared}
	for _, tt := range []struct {
		token, wantLabel string
	}{
		{"file-token", "laptop"},
		{"shared-token", "shared"},
		{"wrong", ""},
		{"", ""},
	} {
		id, err := auth.Authenticate(tt.token)
		if tt.wantLabel == "" {
			if !errors.Is(err, edge.ErrBadToken) {
				t.Errorf("Authenticate(%q): got %v, %v; want ErrBadToken", tt.token, id, err)
			}
			continue
		}
		if err != nil || id.Label != tt.wantLabel {
			t.Errorf("Authenticate(%q): got %v, %v; want label %q", tt.token, id, err, tt.wantLabel)
		}
	}
}
