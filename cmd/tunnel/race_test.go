//go:build race

package main

// raceEnabled reports whether this test binary was built with -race; the
// binaries under test are then built with it too.
const raceEnabled = true
