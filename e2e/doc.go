// Package e2e tests tunnel and tunneld the way a user runs them: as
// processes.
//
// The tests build both binaries once per run (go build from the module root,
// with -race when the tests themselves run with -race, so a data race in a
// real process fails the run), start them with flags and environment
// variables, wait for what they print (tunneld's "serving" log line with its
// bound address, tunnel's public URLs on stdout), fetch pages through the
// tunnel with curl and a Go client, and check exit codes after SIGTERM.
// Every wait is bounded; nothing sleeps.
//
// There is no Go code here besides the tests: this package exists so that
// "go test ./..." (make test, CI) runs them.
package e2e
