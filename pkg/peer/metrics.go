package peer

import "fmt"

// Registrar registers a figure read at each scrape, under tunneld_<name>:
// the shape of pkg/metrics' Set.GaugeFunc and Set.CounterFunc, so that this
// package reports its Stats without importing Prometheus.
type Registrar func(name, help string, f func() float64) error

// Register reports the Links' Stats with gauge (Links) and counter (every
// other figure, which only grows). The figures are read at each scrape,
// from the scraping goroutine.
func (l *Links) Register(gauge, counter Registrar) error {
	stat := func(pick func(Stats) uint64) func() float64 {
		return func() float64 { return float64(pick(l.Stats())) }
	}
	if err := gauge("node_links", "links to other nodes of the cluster, one per node reachable now",
		func() float64 { return float64(l.Stats().Links) }); err != nil {
		return fmt.Errorf("peer: %w", err)
	}
	for _, c := range []struct {
		name, help string
		f          func() float64
	}{
		{"node_streams_forwarded_total", "streams this node forwarded to the node holding the tunnel's client",
			stat(func(s Stats) uint64 { return s.StreamsOut })},
		{"node_streams_served_total", "streams other nodes forwarded to this node's clients",
			stat(func(s Stats) uint64 { return s.StreamsIn })},
		{"node_link_dials_total", "links to other nodes dialed",
			stat(func(s Stats) uint64 { return s.Dials })},
		{"node_link_dial_failures_total", "dials to other nodes that did not end in an authenticated link",
			stat(func(s Stats) uint64 { return s.DialFailures })},
		{"node_port_refused_total", "connections to the node port refused before authentication (wrong secret, not TLS, too many at once)",
			stat(func(s Stats) uint64 { return s.Refused })},
		{"node_served_bytes_sent_total", "bytes of served streams sent back to the forwarding nodes",
			stat(func(s Stats) uint64 { return s.BytesOut })},
		{"node_served_bytes_received_total", "bytes of served streams received from the forwarding nodes",
			stat(func(s Stats) uint64 { return s.BytesIn })},
	} {
		if err := counter(c.name, c.help, c.f); err != nil {
			return fmt.Errorf("peer: %w", err)
		}
	}
	return nil
}
