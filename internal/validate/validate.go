// Package validate holds the checks that every configuration's Validate
// repeats, so that each reads as one line per setting and all say the same
// thing the same way. Errors are values to collect with errors.Join, which
// drops the nils a passing check returns.
package validate

import "fmt"

// Positive returns an error naming the setting when v is zero or below, and
// nil otherwise: "NAME must be positive, got V". It takes counts, sizes and
// time.Duration alike.
func Positive[T ~int | ~int64 | ~uint32](name string, v T) error {
	if v > 0 {
		return nil
	}
	return fmt.Errorf("%s must be positive, got %v", name, v)
}
