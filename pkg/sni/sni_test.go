package sni_test

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"testing/iotest"

	"go.uber.org/goleak"

	"github.com/tunnelhq/tunnel/pkg/sni"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clientHello is the first flight of a real crypto/tls client for
// serverName ("" or an IP address: no SNI), as one or more records.
func clientHello(t testing.TB, serverName string) []byte {
	t.Helper()
	c, s := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		cfg := &tls.Config{ServerName: serverName, InsecureSkipVerify: serverName == ""}
		tls.Client(c, cfg).Handshake() // fails once s closes
	}()
	var hdr [5]byte
	if _, err := io.ReadFull(s, hdr[:]); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, binary.BigEndian.Uint16(hdr[3:]))
	if _, err := io.ReadFull(s, body); err != nil {
		t.Fatal(err)
	}
	s.Close()
	<-done
	return append(hdr[:], body...)
}

// refragment splits the handshake bytes of the records in b into records
// of at most size bytes, as a client (or a middlebox) may.
func refragment(t testing.TB, b []byte, size int) []byte {
	t.Helper()
	var msg []byte
	for len(b) > 0 {
		n := int(binary.BigEndian.Uint16(b[3:5]))
		msg = append(msg, b[5:5+n]...)
		b = b[5+n:]
	}
	var out []byte
	for len(msg) > 0 {
		n := min(size, len(msg))
		out = append(out, 22, 3, 1, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

func TestRead_RealClientHellos(t *testing.T) {
	hello := clientHello(t, "secure.tunnel.test")
	tests := []struct {
		name string
		r    io.Reader
		in   []byte
	}{
		{"one record", bytes.NewReader(hello), hello},
		{"one byte per read (many TCP segments)", iotest.OneByteReader(bytes.NewReader(hello)), hello},
		{"ten-byte records", nil, refragment(t, hello, 10)},
		{"one-byte records", nil, refragment(t, hello, 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.r
			if r == nil {
				r = iotest.HalfReader(bytes.NewReader(tt.in))
			}
			// What follows the hello must stay unread.
			r = io.MultiReader(r, bytes.NewReader([]byte("NEXT")))
			name, read, err := sni.Read(r)
			if err != nil || name != "secure.tunnel.test" {
				t.Fatalf("got %q, %v; want secure.tunnel.test", name, err)
			}
			if !bytes.Equal(read, tt.in) {
				t.Fatalf("read %d bytes, want exactly the %d of the hello", len(read), len(tt.in))
			}
			if rest, _ := io.ReadAll(r); string(rest) != "NEXT" {
				t.Fatalf("left %q unread, want NEXT", rest)
			}
		})
	}
}

func TestRead_NoSNI(t *testing.T) {
	for _, sn := range []string{"", "127.0.0.1"} {
		hello := clientHello(t, sn)
		name, read, err := sni.Read(bytes.NewReader(hello))
		if err != nil || name != "" || !bytes.Equal(read, hello) {
			t.Fatalf("ServerName %q: got %q, %v, %d bytes; want no name, no error, the whole hello", sn, name, err, len(read))
		}
	}
}

func TestRead_Truncated(t *testing.T) {
	hello := refragment(t, clientHello(t, "secure.tunnel.test"), 100)
	for n := 1; n < len(hello); n++ {
		name, read, err := sni.Read(bytes.NewReader(hello[:n]))
		if err == nil {
			t.Fatalf("cut at %d: got %q and no error", n, name)
		}
		if !bytes.Equal(read, hello[:n]) {
			t.Fatalf("cut at %d: read %d bytes, want all %d for replay", n, len(read), n)
		}
	}
}

func TestRead_Oversized(t *testing.T) {
	// A handshake header announcing more than MaxHelloSize is refused at
	// once, before the body is read.
	hdr := []byte{22, 3, 1, 0, 4, 1, 0x10, 0, 0}
	_, read, err := sni.Read(bytes.NewReader(append(hdr, make([]byte, 1<<20)...)))
	if !errors.Is(err, sni.ErrTooLarge) || len(read) != len(hdr) {
		t.Fatalf("got %v after %d bytes, want ErrTooLarge after the %d of the header", err, len(read), len(hdr))
	}
	// So is a stream of records that never ends the hello.
	big := []byte{22, 3, 1, 0x40, 0, 1, 0xff, 0xff, 0xff}
	big = append(big, make([]byte, 0x4000-4)...)
	var in []byte
	for range 8 {
		in = append(in, big...)
		in = append(in, 22, 3, 1, 0x40, 0)
		in = append(in, make([]byte, 0x4000)...)
	}
	if _, read, err := sni.Read(bytes.NewReader(in)); !errors.Is(err, sni.ErrTooLarge) && !errors.Is(err, sni.ErrMalformed) || len(read) > sni.MaxHelloSize+5*8+0x4000 {
		t.Fatalf("got %v after %d bytes, want a refusal before much more than MaxHelloSize", err, len(read))
	}
}

func TestRead_NotTLS(t *testing.T) {
	for _, in := range []string{"GET / HTTP/1.1\r\n\r\n", "\x17\x03\x03\x00\x05hello", "\x16\x03\x01\x00\x04\x02\x00\x00\x00"} {
		_, read, err := sni.Read(bytes.NewReader([]byte(in)))
		if !errors.Is(err, sni.ErrNotTLS) {
			t.Fatalf("%q: got %v, want ErrNotTLS", in, err)
		}
		if !bytes.HasPrefix([]byte(in), read) {
			t.Fatalf("%q: read %q, want a prefix of the input", in, read)
		}
	}
}

func FuzzRead(f *testing.F) {
	hello := clientHello(f, "secure.tunnel.test")
	f.Add(hello)
	f.Add(refragment(f, hello, 7))
	f.Add(clientHello(f, ""))
	f.Add(hello[:len(hello)/2])
	f.Add([]byte{22, 3, 1, 0, 4, 1, 0x10, 0, 0})
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		name, read, err := sni.Read(bytes.NewReader(in))
		if !bytes.HasPrefix(in, read) {
			t.Fatalf("read %d bytes that are not the input's first", len(read))
		}
		if err != nil {
			return
		}
		if len(name) > 253 {
			t.Fatalf("accepted a server name of %d bytes", len(name))
		}
		// Accepted: the same bytes one at a time give the same answer.
		name2, read2, err2 := sni.Read(iotest.OneByteReader(bytes.NewReader(in)))
		if err2 != nil || name2 != name || !bytes.Equal(read2, read) {
			t.Fatalf("one byte at a time: got %q, %v, %d bytes; want %q, nil, %d", name2, err2, len(read2), name, len(read))
		}
	})
}
