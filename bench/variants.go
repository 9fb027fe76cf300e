package main

import (
	"fmt"
	"strings"
)

// benchAuth is the basic-auth user of the tunnel-basic-auth row: the
// client asks visitors for it, and every request of the load carries it.
const benchAuth = "bench:bench-password"

// VariantRow is a tunnel that differs from tunnel by one setting, through
// the same tunneld, against tunnel in the same run (issue 18's figures):
// what the setting costs a visitor.
type VariantRow struct {
	Target     string  `json:"target"`
	Setting    string  `json:"setting"`
	Conns      int     `json:"conns"`
	ReqPerSec  float64 `json:"req_per_sec"`
	SmallRatio float64 `json:"small_ratio_to_tunnel"`
	P99Ratio   float64 `json:"p99_ratio_to_tunnel"`
}

// variantSettings says what each variant target changes, and the least
// ratio to tunnel its target asks for (0: none, the figure is shown only).
var variantSettings = map[string]struct {
	setting string
	min     float64
}{
	"tunnel-basic-auth": {"basic auth (every request carries the right password)", 0.9},
	"tunnel-pool":       {"a pool of two clients (--pool) instead of one", 0},
}

// variantRows fills in the variant rows from the small rows and returns
// their checks.
func (r *Report) variantRows() []Check {
	var checks []Check
	for _, s := range r.Small {
		vs, ok := variantSettings[s.Target]
		if !ok {
			continue
		}
		row := VariantRow{Target: s.Target, Setting: vs.setting, Conns: s.Conns, ReqPerSec: s.ReqPerSec.Median}
		if off := r.findSmall("tunnel", s.Proto, s.Conns); off != nil && off.ReqPerSec.Median > 0 && off.P99.Median > 0 {
			row.SmallRatio = s.ReqPerSec.Median / off.ReqPerSec.Median
			row.P99Ratio = s.P99.Median / off.P99.Median
			label := fmt.Sprintf("%s: small req/s, ratio to tunnel (HTTP/1.1, %d conns; no target)", vs.setting, s.Conns)
			met := true
			if vs.min > 0 {
				label = fmt.Sprintf("%s: small req/s >= %.2g of tunnel (HTTP/1.1, %d conns)", vs.setting, vs.min, s.Conns)
				met = row.SmallRatio >= vs.min
			}
			checks = append(checks, Check{label, fmt.Sprintf("%.2f (p99 %.2fx)", row.SmallRatio, row.P99Ratio), met})
		}
		r.Variants = append(r.Variants, row)
	}
	return checks
}

// writeVariants writes the variants' table.
func (r *Report) writeVariants(w func(string, ...any)) {
	if len(r.Variants) == 0 {
		return
	}
	w("\n### Visitor access and pools (the same tunneld as tunnel, a tunnel with one setting changed, in the same run)\n\n")
	w("| target | setting | conns | req/s | vs tunnel | p99 vs tunnel |\n|---|---|---|---|---|---|\n")
	for _, v := range r.Variants {
		w("| %s | %s | %d | %.0f | %.2f | %.2f |\n", v.Target, strings.ReplaceAll(v.Setting, "|", "/"), v.Conns, v.ReqPerSec, v.SmallRatio, v.P99Ratio)
	}
}
