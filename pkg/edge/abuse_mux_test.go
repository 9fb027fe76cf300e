package edge_test

// muxHostileRows attack the yamux session and control stream, before and after Hello.
func muxHostileRows() []hostileRow {
	return nil
}
