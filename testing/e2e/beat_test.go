//go:build linux

package e2e

import (
	"os/exec"
	"testing"
	"time"

	"github.com/netprocbeat/netprocbeat/testing/beatrun"
)

// The beat runner lives in testing/beatrun (shared with testing/recipes);
// these are its short names here.

// event is one output event, decoded from the console output's JSON lines.
type event map[string]any

func (e event) get(path string) any    { return beatrun.Event(e).Get(path) }
func (e event) num(path string) int    { return beatrun.Event(e).Num(path) }
func (e event) str(path string) string { return beatrun.Event(e).Str(path) }
func (e event) String() string         { return beatrun.Event(e).String() }

// runningBeat is a netprocbeat process writing its events to stdout.
type runningBeat struct {
	*beatrun.Beat
	cmd  *exec.Cmd
	done <-chan struct{}
	pid  int
	home string
}

// startBeat runs the beat with cfg (plus beatrun.CommonConfig) in a fresh
// path.home; see beatrun.Start.
func startBeat(t *testing.T, cfg string) *runningBeat {
	t.Helper()
	return startBeatIn(t, t.TempDir(), cfg)
}

// startBeatIn is startBeat with a given path.home.
func startBeatIn(t *testing.T, home, cfg string) *runningBeat {
	t.Helper()
	b := beatrun.Start(t, beatBin, home, cfg)
	return &runningBeat{Beat: b, cmd: b.Cmd, done: b.Done(), pid: b.PID, home: home}
}

func (b *runningBeat) logs() string         { return b.Logs() }
func (b *runningBeat) logTail(n int) string { return b.LogTail(n) }
func (b *runningBeat) stop(t *testing.T)    { b.Stop(t) }

// snapshot returns the events received so far.
func (b *runningBeat) snapshot() []event {
	evs := b.Snapshot()
	out := make([]event, len(evs))
	for i, ev := range evs {
		out[i] = event(ev)
	}
	return out
}

// waitEvent waits for an event that satisfies match.
func (b *runningBeat) waitEvent(t *testing.T, timeout time.Duration, what string, match func(event) bool) event {
	t.Helper()
	return event(b.WaitEvent(t, timeout, what, func(ev beatrun.Event) bool { return match(event(ev)) }))
}

// freePort returns a port that was free on host a moment ago.
func freePort(t *testing.T, network, host string) int {
	t.Helper()
	return beatrun.FreePort(t, network, host)
}

// netInput: see beatrun.NetInput.
func netInput(typ, host string, port int) string { return beatrun.NetInput(typ, host, port) }
