//go:build linux

package tracker

// The kernel's run-time statistics of the tracker's programs: what the
// tracker costs the host, as the kernel measures it.

import (
	"runtime"
	"time"
)

// programStats returns each attached program's statistics, the runs the
// kernel skipped (recursion misses) and the programs' share of the host's
// CPU time since the tracker loaded.
func (t *Tracker) programStats() ([]ProgramStats, uint64, float64) {
	out := make([]ProgramStats, 0, len(t.progs))
	var missed uint64
	var total time.Duration
	for _, p := range t.progs {
		ps, err := p.prog.Stats()
		if err != nil {
			continue
		}
		out = append(out, ProgramStats{Name: p.name, RunCount: ps.RunCount, RunTime: ps.Runtime, Missed: ps.RecursionMisses})
		missed += ps.RecursionMisses
		total += ps.Runtime
	}
	share := 0.0
	if el := time.Since(t.loaded); t.runStats != nil && el > 0 {
		share = float64(total) / (float64(el) * float64(runtime.NumCPU()))
	}
	return out, missed, share
}

// UDPMode tells how UDP sockets' owners are recorded: "cgroup" (hooks on
// the root cgroup that run only for UDP datagrams carrying an address) or
// "tracepoints" (the send and receive tracepoints, which run for every
// message of every protocol; used where the cgroup hooks cannot attach).
func (t *Tracker) UDPMode() string { return t.udpMode }
