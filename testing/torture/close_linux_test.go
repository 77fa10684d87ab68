//go:build linux

package torture

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Scenario 8: Run racing Close. libbeat may run an in-flight event through
// a processor while its pipeline client closes. Nothing may panic, no event
// may be dropped, and after Close events pass unenriched. Run it with -race
// as well: a data race fails it there.
//
// A crash (the tracker faulted on an unmapped ring buffer) is not a panic
// a test can recover, so each mode runs in a child test process and the
// parent reports how it ended.
func TestS08RunRacingClose(t *testing.T) {
	for _, v := range []struct{ name, extra string }{
		{"default", ""},
		{"fast-rescan", "min_rescan_interval: 1ms"}, // many more rescans start while Close waits
	} {
		t.Run(v.name, func(t *testing.T) {
			trackers(t, func(t *testing.T, tracker string) {
				if os.Getenv(childEnv) == "" {
					runChild(t)
					return
				}
				runRacingClose(t, tracker, v.extra)
			})
		})
	}
}

func runRacingClose(t *testing.T, tracker, extra string) {
	{
		s := startHelper(t, "S", "")
		ls := s.do("listen 127.0.0.1:0")
		s.do("acceptloop %d", ls.ID)
		c := startHelper(t, "client", "")
		d := c.do("dial %s", ls.Local)
		live, srv := ap(d.Local), ap(ls.Local)

		iterations := 40
		if tracker == "auto" {
			iterations = 15 // each loads the eBPF programs
		}
		var panics []string
		var mu sync.Mutex
		caught := func(where string) {
			if r := recover(); r != nil {
				mu.Lock()
				if len(panics) < 5 {
					panics = append(panics, fmt.Sprintf("%s: %v\n%s", where, r, debug.Stack()))
				} else {
					panics = append(panics, where)
				}
				mu.Unlock()
			}
		}
		var dropped, enrichedAfter, runs atomic.Int64
		for it := 0; it < iterations; it++ {
			p := newProcessor(t, tracker, extra)
			var closed atomic.Bool
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for g := 0; g < 4; g++ {
				wg.Add(1)
				go func(g int) {
					defer wg.Done()
					defer caught(fmt.Sprintf("Run (iteration %d, goroutine %d)", it, g))
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						src, dst := missTuple(rand.IntN(1 << 20))
						if i%2 == 0 {
							src, dst = live, srv
						}
						wasClosed := closed.Load()
						ev := newEvent(src, dst, time.Now())
						out, err := p.Run(ev)
						runs.Add(1)
						if out == nil || err != nil {
							dropped.Add(1)
							continue
						}
						if wasClosed && i%2 == 0 && pidAt(out, "source.process.pid") != 0 {
							enrichedAfter.Add(1)
						}
					}
				}(g)
			}
			time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond)
			func() {
				defer caught(fmt.Sprintf("Close (iteration %d)", it))
				closeProcessor(p)
			}()
			closed.Store(true)
			time.Sleep(30 * time.Millisecond)
			close(stop)
			wg.Wait()
		}
		t.Logf("%d iterations, %d Runs: %d panics, %d dropped, %d enriched after Close", iterations, runs.Load(), len(panics), dropped.Load(), enrichedAfter.Load())
		if len(panics) > 0 {
			t.Errorf("%d panic(s) with Run racing Close; first:\n%s", len(panics), panics[0])
		}
		if dropped.Load() > 0 {
			t.Errorf("%d events dropped or failed", dropped.Load())
		}
		if enrichedAfter.Load() > 0 {
			t.Errorf("%d events run after Close returned were enriched; after Close events must pass unenriched", enrichedAfter.Load())
		}
	}
}

// childEnv marks a child test process started by runChild.
const childEnv = "NETPROCBEAT_TORTURE_CHILD"

// runChild runs the current (sub)test in a child test process, so that a
// crash fails this test instead of ending the suite.
func runChild(t *testing.T) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(t.Name(), "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	cmd := exec.Command(self, "-test.run="+strings.Join(parts, "/"), "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"=1", "NETPROCBEAT_TORTURE_ALL=1")
	out, err := cmd.CombinedOutput()
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.Contains(l, "INFO") && !strings.Contains(l, "DEBUG") {
			keep = append(keep, l)
		}
	}
	text := strings.Join(keep, "\n")
	if len(text) > 6000 {
		text = text[:6000] + "\n…"
	}
	if err != nil {
		t.Errorf("child test process failed (%v):\n%s", err, text)
		return
	}
	t.Logf("child test process:\n%s", text)
}
