// Package units writes byte counts for people. It exists so that the three
// places that show one (the admin status page of tunneld, the live view of
// the tunnel client, and the bench report) say sizes the same way. It is
// internal, not under pkg/edge, because the client must not import server
// code.
package units

import "fmt"

// Bytes writes n in binary units with one decimal: "300 B", "2.0 KiB",
// "1.5 GiB".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
