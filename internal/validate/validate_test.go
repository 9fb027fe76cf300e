package validate

import (
	"testing"
	"time"
)

func TestPositive(t *testing.T) {
	if err := Positive("idle timeout", time.Second); err != nil {
		t.Errorf("1s: got %v, want nil", err)
	}
	if err := Positive("max streams", 1); err != nil {
		t.Errorf("1: got %v, want nil", err)
	}
	for _, tt := range []struct {
		err  error
		want string
	}{
		{Positive("idle timeout", time.Duration(0)), "idle timeout must be positive, got 0s"},
		{Positive("idle timeout", -time.Second), "idle timeout must be positive, got -1s"},
		{Positive("max streams", -3), "max streams must be positive, got -3"},
		{Positive("budget", int64(0)), "budget must be positive, got 0"},
	} {
		if tt.err == nil || tt.err.Error() != tt.want {
			t.Errorf("got %v, want %q", tt.err, tt.want)
		}
	}
}
