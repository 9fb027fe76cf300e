package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/tunnelhq/tunnel/pkg/mux"
)

func TestParseTargets(t *testing.T) {
	tests := []struct {
		name    string
		flag    string
		args    []string
		want    []mux.Tunnel
		wantErr string
	}{
		{name: "port", args: []string{"8080"}, want: []mux.Tunnel{{Target: "localhost:8080"}}},
		{name: "port with --name", flag: "wiki", args: []string{"8080"}, want: []mux.Tunnel{{Name: "wiki", Target: "localhost:8080"}}},
		{name: "host port", args: []string{"10.0.0.5:80"}, want: []mux.Tunnel{{Target: "10.0.0.5:80"}}},
		{name: "empty host", args: []string{":3000"}, want: []mux.Tunnel{{Target: "localhost:3000"}}},
		{name: "ipv6", args: []string{"api=[::1]:9090"}, want: []mux.Tunnel{{Name: "api", Target: "[::1]:9090"}}},
		{name: "two named", args: []string{"wiki=8080", "api=127.0.0.1:9090"},
			want: []mux.Tunnel{{Name: "wiki", Target: "localhost:8080"}, {Name: "api", Target: "127.0.0.1:9090"}}},
		{name: "named and random", args: []string{"wiki=8080", "9090"},
			want: []mux.Tunnel{{Name: "wiki", Target: "localhost:8080"}, {Target: "localhost:9090"}}},

		{name: "none", wantErr: "no TARGET"},
		{name: "name with two", flag: "wiki", args: []string{"8080", "9090"}, wantErr: "single TARGET"},
		{name: "name twice", flag: "wiki", args: []string{"api=8080"}, wantErr: "use one"},
		{name: "empty name", args: []string{"=8080"}, wantErr: "empty NAME"},
		{name: "duplicate", args: []string{"a=8080", "a=9090"}, wantErr: `"a" given twice`},
		{name: "not a port", args: []string{"http"}, wantErr: "1 to 65535"},
		{name: "port zero", args: []string{"0"}, wantErr: "1 to 65535"},
		{name: "port too big", args: []string{"localhost:70000"}, wantErr: "1 to 65535"},
		{name: "url", args: []string{"http://localhost:8080"}, wantErr: "HOST:PORT"},
		{name: "bare ipv6", args: []string{"::1:8080"}, wantErr: "HOST:PORT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseTargets(tt.flag, tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
