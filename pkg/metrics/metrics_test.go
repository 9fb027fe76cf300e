package metrics_test

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/tunnelhq/tunnel/pkg/metrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// value is the value of the one sample of name whose labels include want:
// a counter's or gauge's value, a histogram's sample count. ok is false
// when there is no such sample.
func value(t *testing.T, m *metrics.Set, name string, want map[string]string) (v float64, ok bool) {
	t.Helper()
	fams, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, s := range f.GetMetric() {
			for k, v := range want {
				if !hasLabel(s, k, v) {
					continue next
				}
			}
			switch {
			case s.Counter != nil:
				return s.GetCounter().GetValue(), true
			case s.Gauge != nil:
				return s.GetGauge().GetValue(), true
			case s.Histogram != nil:
				return float64(s.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func hasLabel(s *dto.Metric, k, v string) bool {
	for _, lp := range s.GetLabel() {
		if lp.GetName() == k && lp.GetValue() == v {
			return true
		}
	}
	return false
}

// mustValue is value for a sample that must exist.
func mustValue(t *testing.T, m *metrics.Set, name string, labels map[string]string) float64 {
	t.Helper()
	v, ok := value(t, m, name, labels)
	if !ok {
		t.Fatalf("%s%v missing", name, labels)
	}
	return v
}

// TestSet_SeriesFromTheStart: the README's names (those without a label
// value that only use creates) are there, at zero, before anything is
// recorded, and so are the Go runtime and process collectors.
func TestSet_SeriesFromTheStart(t *testing.T) {
	m := metrics.New()
	for _, c := range []struct {
		name   string
		labels map[string]string
	}{
		{"tunneld_sessions", nil},
		{"tunneld_sessions_total", nil},
		{"tunneld_tunnels", nil},
		{"tunneld_auth_failures_total", nil},
		{"tunneld_requests_total", map[string]string{"code": "1xx"}},
		{"tunneld_requests_total", map[string]string{"code": "2xx"}},
		{"tunneld_requests_total", map[string]string{"code": "3xx"}},
		{"tunneld_requests_total", map[string]string{"code": "4xx"}},
		{"tunneld_requests_total", map[string]string{"code": "5xx"}},
		{"tunneld_requests_in_flight", nil},
		{"tunneld_request_bytes_total", nil},
		{"tunneld_response_bytes_total", nil},
		{"tunneld_request_duration_seconds", nil},
		{"tunneld_stream_open_seconds", map[string]string{"result": "ok"}},
		{"tunneld_stream_open_seconds", map[string]string{"result": "error"}},
		{"tunneld_cert_issuance_total", map[string]string{"result": "ok"}},
		{"tunneld_cert_issuance_total", map[string]string{"result": "error"}},
	} {
		if got := mustValue(t, m, c.name, c.labels); got != 0 {
			t.Errorf("%s%v = %v, want 0", c.name, c.labels, got)
		}
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if _, ok := value(t, m, name, nil); !ok {
			t.Errorf("%s missing", name)
		}
	}
	// Not the global registry: nothing of ours is there.
	fams, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == "tunneld_sessions" {
			t.Error("tunneld_sessions is in the global registry")
		}
	}
}

func TestSet_Recorders(t *testing.T) {
	m := metrics.New()
	m.SessionUp(2)
	m.SessionUp(1)
	m.SessionDown(2)
	m.Refused("bad_token", true)
	m.Refused("name_taken", false)
	m.Refused("name_taken", false)
	m.StreamOpened(time.Millisecond, nil)
	m.StreamOpened(time.Millisecond, nil)
	m.StreamOpened(time.Second, errors.New("reset"))
	m.RateLimited("handshake")
	m.CertIssued(nil)
	m.CertIssued(errors.New("acme: 429"))
	m.CertIssued(errors.New("acme: 429"))

	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"tunneld_sessions", nil, 1},
		{"tunneld_sessions_total", nil, 2},
		{"tunneld_tunnels", nil, 1},
		{"tunneld_sessions_refused_total", map[string]string{"code": "bad_token"}, 1},
		{"tunneld_sessions_refused_total", map[string]string{"code": "name_taken"}, 2},
		{"tunneld_auth_failures_total", nil, 1},
		{"tunneld_stream_open_seconds", map[string]string{"result": "ok"}, 2},
		{"tunneld_stream_open_seconds", map[string]string{"result": "error"}, 1},
		{"tunneld_rate_limited_total", map[string]string{"kind": "handshake"}, 1},
		{"tunneld_cert_issuance_total", map[string]string{"result": "ok"}, 1},
		{"tunneld_cert_issuance_total", map[string]string{"result": "error"}, 2},
	} {
		if got := mustValue(t, m, c.name, c.labels); got != c.want {
			t.Errorf("%s%v: got %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

// TestSet_NilRecorders: a part of tunneld handed no Set may still report.
func TestSet_NilRecorders(t *testing.T) {
	var m *metrics.Set
	m.RateLimited("handshake")
	m.CertIssued(nil)
}

func TestSet_GaugeFunc(t *testing.T) {
	m := metrics.New()
	n := 41.0
	if err := m.GaugeFunc("slow_reader_bytes", "test gauge", func() float64 { return n }); err != nil {
		t.Fatal(err)
	}
	n++
	if got := mustValue(t, m, "tunneld_slow_reader_bytes", nil); got != 42 {
		t.Errorf("got %v, want 42 (the value at scrape time)", got)
	}

	err := m.GaugeFunc("slow_reader_bytes", "test gauge", func() float64 { return -1 })
	var are prometheus.AlreadyRegisteredError
	if !errors.As(err, &are) {
		t.Fatalf("second registration: got %v, want AlreadyRegisteredError", err)
	}
	if got := mustValue(t, m, "tunneld_slow_reader_bytes", nil); got != 42 {
		t.Errorf("after a refused registration: got %v, want 42 from the first gauge", got)
	}
}
