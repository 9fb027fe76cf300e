package main

// Bounds on what tunneld sends that the client prints, through
// mux.Printable: names and URLs are at most 253 bytes in the protocol,
// messages 1 KiB.
const (
	maxPrintedName = 253
	maxPrintedText = 512
)
