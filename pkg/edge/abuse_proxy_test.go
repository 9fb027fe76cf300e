package edge_test

// proxyHostileRows attack the proxy: pooled streams, forwarded headers, aborted responses.
func proxyHostileRows() []hostileRow {
	return nil
}
