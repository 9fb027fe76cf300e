package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// InspectorRow is the request inspector's cost (issue 16): the client with
// it on (tunnel-inspect) against the client with it off (tunnel), in the
// same run, and its memory once it has recorded many requests.
type InspectorRow struct {
	// Recorded is how many exchanges the inspector had recorded when its
	// client's RSS was read (the harness sends more if the load phases
	// sent fewer than inspectRequests).
	Recorded   int64   `json:"recorded"`
	HeldMiB    float64 `json:"held_mib"`    // what the recorded exchanges hold (its --inspect-max-memory bounds it)
	CapMiB     float64 `json:"cap_mib"`     // --inspect-max-memory
	ClientMiB  float64 `json:"client_mib"`  // the client's RSS then
	SmallConns int     `json:"small_conns"` // the concurrency of the small ratios: 64 but in a smoke run
	SmallRatio float64 `json:"small_ratio_to_off"`
	P99Ratio   float64 `json:"p99_ratio_to_off"`
	BulkRatio  float64 `json:"bulk_ratio_to_off"` // one stream, down
}

// inspectRequests is how many requests the inspector must have recorded
// before its client's memory is read: the 100,000.
const inspectRequests = 100_000

// inspectorRow drives tunnel-inspect until its inspector has recorded
// inspectRequests exchanges (smoke: a few hundred), then reads the client's
// RSS and what the inspector holds.
func (e *env) inspectorRow(ctx context.Context) (*InspectorRow, error) {
	want := int64(inspectRequests)
	if e.o.Smoke {
		want = 300
	}
	rec, _, held, err := e.driveInspector(ctx, func(rec, stored, held int64) bool {
		if rec < want {
			e.logf("inspector: %d exchanges recorded, sending more until %d", rec, want)
		}
		return rec >= want
	})
	if err != nil {
		return nil, err
	}
	st := readProc(e.inspect.tunnel.pid())
	return &InspectorRow{Recorded: rec, HeldMiB: mib(held), CapMiB: 64, ClientMiB: mib(st.RSS)}, nil
}

// fillInspector drives tunnel-inspect until its inspector's store is full
// (it has forgotten an exchange to make room), so that the small phase
// measures it as make bench's later runs do: every exchange recorded
// evicts an old one. -inspect-full asks for it.
func (e *env) fillInspector(ctx context.Context) error {
	_, stored, held, err := e.driveInspector(ctx, func(rec, stored, held int64) bool {
		if rec <= stored {
			e.logf("inspector: %d exchanges stored (%.1f MiB), filling its store", stored, mib(held))
		}
		return rec > stored
	})
	if err == nil {
		e.logf("inspector: full, %d exchanges stored (%.1f MiB)", stored, mib(held))
	}
	return err
}

// driveInspector sends tunnel-inspect a second of small requests at a
// time until done, given the inspector's figures (see inspectorStats),
// says it has enough, and returns those figures.
func (e *env) driveInspector(ctx context.Context, done func(recorded, stored, held int64) bool) (recorded, stored, held int64, err error) {
	var t target
	for _, tg := range e.targets {
		if tg.inspect {
			t = tg
		}
	}
	for {
		if recorded, stored, held, err = inspectorStats(e.inspect.inspectAddr); err != nil || done(recorded, stored, held) {
			return recorded, stored, held, err
		}
		if _, err := closedLoop(ctx, t, false, 64, time.Second); err != nil {
			return 0, 0, 0, err
		}
	}
}

// inspectorStats asks the inspector's API for the newest exchange (its ID
// counts every exchange recorded), how many it stores and the bytes held.
func inspectorStats(addr string) (recorded, stored, held int64, err error) {
	resp, err := http.Get("http://" + addr + "/api/exchanges?limit=1")
	if err != nil {
		return 0, 0, 0, fmt.Errorf("inspector: %w", err)
	}
	defer resp.Body.Close()
	var l struct {
		Exchanges []struct {
			ID int64 `json:"id"`
		} `json:"exchanges"`
		Total  int64 `json:"total"`
		Memory int64 `json:"memory_bytes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		return 0, 0, 0, fmt.Errorf("inspector: %w", err)
	}
	if len(l.Exchanges) > 0 {
		recorded = l.Exchanges[0].ID
	}
	return recorded, l.Total, l.Memory, nil
}

// inspectorChecks fills in the ratios to tunnel (the inspector off) and
// the targets.
func (r *Report) inspectorChecks() []Check {
	in := r.Inspector
	if in == nil {
		return nil
	}
	var checks []Check
	// At 64 connections, the summary's; a smoke run has fewer.
	conns := 0
	for _, s := range r.Small {
		if s.Target == "tunnel-inspect" && (conns != 64 && s.Conns > conns || s.Conns == 64) {
			conns = s.Conns
		}
	}
	in.SmallConns = conns
	if on, off := r.findSmall("tunnel-inspect", "http/1.1", conns), r.findSmall("tunnel", "http/1.1", conns); on != nil && off != nil && off.ReqPerSec.Median > 0 && off.P99.Median > 0 {
		in.SmallRatio = on.ReqPerSec.Median / off.ReqPerSec.Median
		in.P99Ratio = on.P99.Median / off.P99.Median
		checks = append(checks, Check{fmt.Sprintf("inspector on: small req/s >= 0.85 of off (HTTP/1.1, %d conns)", conns),
			fmt.Sprintf("%.2f (p99 %.2fx)", in.SmallRatio, in.P99Ratio), in.SmallRatio >= 0.85})
	}
	if on, off := r.findBulk("tunnel-inspect", "down", 1, "go"), r.findBulk("tunnel", "down", 1, "go"); on != nil && off != nil && off.MBps.Median > 0 {
		in.BulkRatio = on.MBps.Median / off.MBps.Median
		checks = append(checks, Check{"inspector on: one-stream bulk down, ratio to off (no target; go client)",
			fmt.Sprintf("%.2f", in.BulkRatio), true})
	}
	checks = append(checks, Check{fmt.Sprintf("inspector on: client RSS after %s requests <= its cap + 32 MiB", groupThousands(fmt.Sprint(in.Recorded))),
		fmt.Sprintf("%.1f MiB (recordings hold %.1f MiB)", in.ClientMiB, in.HeldMiB), in.ClientMiB <= in.CapMiB+32})
	return checks
}
