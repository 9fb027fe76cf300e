// Package metrics is what tunneld records: its set of Prometheus collectors
// (Set), and the HTTP instrumentation of visitor requests (Set.Instrument)
// that feeds them, a tunnel's own figures (Tunnel) and the access log.
//
// It is a package of its own because nothing in it is edge logic: it knows
// status codes, byte counts and durations, and a tunnel only as the name
// and session ID the edge hands to Routed, not sessions, routes or the name
// table. The edge records into a Set; package admin serves Set.Gatherer on
// /metrics; the rate limiter and certificate management report through
// small interfaces of their own that Set happens to satisfy (RateLimited,
// CertIssued) and a gauge callback (GaugeFunc), so none of them needs to
// import Prometheus. It must not import package edge.
//
// # One registry of our own
//
// A Set registers its collectors, with the Go runtime and process
// collectors, in a prometheus.Registry that it owns, never in the global
// default one: two Servers in one process (tests do that all the time)
// each get their own figures, a library we import cannot add series to our
// /metrics by registering globally, and registering a name twice is an
// error we see rather than a panic in an init function.
//
// # Names
//
// Every name is prefixed with tunneld_ and is listed, with its labels, in
// the README's metrics table; dashboards and alerts depend on them, so a
// name or a label changes only together with that table. Label values are
// small fixed sets (status classes, ok/error, protocol error codes, rate
// limit kinds), never names, hosts or addresses, so the number of series
// stays bounded whatever visitors send.
//
// # The access log's buffer
//
// One line per request written straight to stderr cost a write(2) each,
// 5.6 % of tunneld's CPU under load. LogBuffer gathers those lines and
// writes them at 64 KiB, every second (Run) and at the stop (Close), whole
// lines only, and bounded: a burst beyond it is written synchronously by
// the request that overflows it rather than growing the buffer. tunneld
// uses it for the access log only (edge.Config.AccessLogger); its other
// lines are rare and wanted at once.
package metrics
