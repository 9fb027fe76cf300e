package edge_test

// slowHostileRows attack slow and stalled visitors.
func slowHostileRows() []hostileRow {
	return nil
}
