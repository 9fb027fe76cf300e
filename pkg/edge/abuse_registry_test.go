package edge_test

// registryHostileRows attack the name table, held names and ACME orders.
func registryHostileRows() []hostileRow {
	return nil
}
