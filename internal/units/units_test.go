package units

import "testing"

func TestBytes(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"},
		{300, "300 B"},
		{1023, "1023 B"},
		{2048, "2.0 KiB"},
		{1<<20 - 1, "1024.0 KiB"},
		{4 << 20, "4.0 MiB"},
		{1 << 30, "1.0 GiB"},
		{3 << 39, "1.5 TiB"},
	} {
		if got := Bytes(tc.n); got != tc.want {
			t.Errorf("Bytes(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}
