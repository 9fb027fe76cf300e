package mux

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
)

// recordConn records each Write it is given.
type recordConn struct {
	net.Conn
	writes [][]byte
}

func (c *recordConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func yamuxHeader(typ byte, length uint32) []byte {
	h := make([]byte, yamuxHeaderSize)
	h[1] = typ
	binary.BigEndian.PutUint32(h[4:], 7)
	binary.BigEndian.PutUint32(h[8:], length)
	return h
}

func TestFrameWriter_MergesDataHeaderWithBody(t *testing.T) {
	body := func(n int) []byte { return bytes.Repeat([]byte{0xab}, n) }
	big := body(maxMergedWrite + 100)
	for _, tc := range []struct {
		name   string
		in     [][]byte
		writes []int // lengths of the writes that reach the connection
	}{
		{"data frame", [][]byte{yamuxHeader(0, 5), body(5)}, []int{17}},
		{"two data frames", [][]byte{yamuxHeader(0, 5), body(5), yamuxHeader(0, 3), body(3)}, []int{17, 15}},
		{"window update passes", [][]byte{yamuxHeader(1, 0), yamuxHeader(1, 9)}, []int{12, 12}},
		{"empty data frame passes", [][]byte{yamuxHeader(0, 0), yamuxHeader(1, 0)}, []int{12, 12}},
		{"body of another length", [][]byte{yamuxHeader(0, 5), body(4)}, []int{12, 4}},
		{"large body", [][]byte{yamuxHeader(0, uint32(len(big))), big}, []int{maxMergedWrite, 100 + yamuxHeaderSize}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := &recordConn{}
			w := &frameWriter{Conn: rc}
			var want []byte
			for _, p := range tc.in {
				n, err := w.Write(p)
				if err != nil || n != len(p) {
					t.Fatalf("Write(%d bytes): got %d, %v", len(p), n, err)
				}
				want = append(want, p...)
			}
			var got []byte
			var lens []int
			for _, p := range rc.writes {
				got = append(got, p...)
				lens = append(lens, len(p))
			}
			if !bytes.Equal(got, want) {
				t.Errorf("bytes on the wire differ from the bytes written")
			}
			if len(lens) != len(tc.writes) {
				t.Fatalf("writes: got lengths %v, want %v", lens, tc.writes)
			}
			for i := range lens {
				if lens[i] != tc.writes[i] {
					t.Errorf("writes: got lengths %v, want %v", lens, tc.writes)
				}
			}
		})
	}
}
