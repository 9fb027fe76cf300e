package inspect

import (
	"errors"
	"fmt"

	"github.com/rs/zerolog"
)

// Config configures an Inspector. Start from DefaultConfig.
type Config struct {
	// Logger receives the inspector's events. Use zerolog.Nop() for silence.
	Logger zerolog.Logger
	// MaxBody is the most of each body (request or response) kept, in
	// bytes; the rest is counted and dropped. Default 1 MiB.
	MaxBody int64
	// MaxMemory bounds what the recorded exchanges hold, bodies and
	// headers, in flight or stored, in bytes; the oldest are forgotten
	// first. Default 64 MiB. It must be at least MaxBody.
	MaxMemory int64
	// Token, if set, is required of every request to the page and the API,
	// as "Authorization: Bearer TOKEN" or "?token=TOKEN". Empty: none.
	Token string
	// Version names the client in HAR exports.
	Version string
	// OnExchange, if set, is called with each exchange recorded (a
	// response complete, or a stream cut short), from the stream's
	// goroutine: it must return quickly.
	OnExchange func(Summary)
}

// DefaultConfig returns the settings tunnel uses unless told otherwise.
func DefaultConfig() Config {
	return Config{
		Logger:    zerolog.Nop(),
		MaxBody:   1 << 20,
		MaxMemory: 64 << 20,
		Version:   "dev",
	}
}

// Validate reports the settings that are out of range.
func (c Config) Validate() error {
	var errs []error
	if c.MaxBody < 0 {
		errs = append(errs, fmt.Errorf("max body %d: want 0 or more", c.MaxBody))
	}
	if c.MaxMemory <= 0 || c.MaxMemory < c.MaxBody {
		errs = append(errs, fmt.Errorf("max memory %d: want more than 0 and at least max body (%d)", c.MaxMemory, c.MaxBody))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	return nil
}
