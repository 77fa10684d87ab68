//go:build linux

package tracker

import (
	"testing"
	"time"
)

// TestLookupCompleteAgreesWithLookupAt: LookupComplete answers as LookupAt
// does, and a table without a kernel reader is always complete.
func TestLookupCompleteAgreesWithLookupAt(t *testing.T) {
	tr, clk := newTable(Options{Retention: 10 * time.Second})
	feed(tr, mkEvent(evConnect, TCP, "10.0.0.1:40000", "10.0.0.2:443", 42, 123_450_000_000, "curl"))
	for _, c := range []struct {
		local, remote string
		want          bool
	}{
		{"10.0.0.1:40000", "10.0.0.2:443", true},
		{"10.0.0.1:40001", "10.0.0.2:443", false},
	} {
		r, ok, complete := tr.LookupComplete(TCP, ap(c.local), ap(c.remote), clk.t)
		r2, ok2 := tr.LookupAt(TCP, ap(c.local), ap(c.remote), clk.t)
		if ok != c.want || ok2 != ok || r.PID != r2.PID || (!ok && !complete) {
			t.Errorf("%s -> %s: LookupComplete = %d, %v, complete %v; LookupAt = %d, %v; want found %v, complete", c.local, c.remote, r.PID, ok, complete, r2.PID, ok2, c.want)
		}
	}
}

// TestLookupCompleteMissWithARecord: a miss because the tuple's record
// does not cover the event's time is not complete: the tuple had a socket.
func TestLookupCompleteMissWithARecord(t *testing.T) {
	tr, clk := newTable(Options{Retention: 10 * time.Second})
	feed(tr, mkEvent(evConnect, TCP, "10.0.0.1:40000", "10.0.0.2:443", 42, 123_450_000_000, "curl"))
	// An event stamped a minute before the connection.
	_, ok, complete := tr.LookupComplete(TCP, ap("10.0.0.1:40000"), ap("10.0.0.2:443"), clk.t.Add(-time.Minute))
	if ok || complete {
		t.Errorf("an event before the recorded connection: found %v, complete %v; want a miss that is not complete", ok, complete)
	}
}
