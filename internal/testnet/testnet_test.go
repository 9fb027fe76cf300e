package testnet

import (
	"io"
	"net"
	"testing"
)

func TestEcho_EchoesUntilHalfClose(t *testing.T) {
	c, err := net.Dial("tcp", Echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "ping")
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "ping" {
		t.Fatalf("got %q, %v; want ping", got, err)
	}
}
