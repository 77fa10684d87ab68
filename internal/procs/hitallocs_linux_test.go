//go:build linux

package procs

import (
	"testing"
	"time"

	"github.com/elastic/elastic-agent-libs/logp"
)

// TestCachedHitAllocatesNothing: an answer from a verified snapshot row
// reused through the change clock runs the whole pipeline (query, gate,
// finish) without a heap allocation.
func TestCachedHitAllocatesNothing(t *testing.T) {
	e, err := NewEngine("/")
	if err != nil {
		t.Fatal(err)
	}
	client, server, _ := realConn(t)
	w := New(e, Config{MinRescanInterval: time.Hour, SocketTTL: time.Hour, Changes: &fakeClock{}}, logp.NewNopLogger())
	t.Cleanup(func() { w.Close() })
	if w.Lookup(TCP, client, server) == nil || w.Lookup(TCP, server, client) == nil {
		t.Fatal("warm-up lookups found nothing")
	}
	start := time.Now()
	allocs := testing.AllocsPerRun(1000, func() {
		if p, _ := w.LookupBy(start, time.Time{}, TCP, client, server); p == nil {
			t.Fatal("lookup lost")
		}
	})
	if allocs != 0 {
		t.Errorf("a cached hit allocates %v times per lookup, want 0", allocs)
	}
}
