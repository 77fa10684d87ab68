package procs

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/elastic/elastic-agent-libs/logp/logptest"
)

// verifyingEngine is fakeEngine with an OwnerVerifier: holders says which
// process instance holds each socket inode now, and at which descriptor;
// gone lists instances that exited.
type verifyingEngine struct {
	*fakeEngine
	mu      sync.Mutex
	holders map[uint64]holder
	gone    map[procKey]bool
	handles map[int]procKey
	execs   map[procKey]ExecID // the program each instance runs now (zero if unset)
	next    int
	checks  atomic.Int32
	pinned  atomic.Int32
	// execChecks counts ExecOf calls.
	execChecks atomic.Int32
}

type holder struct {
	k  procKey
	fd int32
}

func newVerifyingEngine() *verifyingEngine {
	return &verifyingEngine{fakeEngine: &fakeEngine{}, holders: map[uint64]holder{}, gone: map[procKey]bool{}, handles: map[int]procKey{}, execs: map[procKey]ExecID{}}
}

// table sets the socket table and makes every owned socket held by its
// owner at descriptor 10+inode.
func (v *verifyingEngine) table(socks []Socket, procs ...*Process) {
	for i := range socks {
		socks[i].FD = int32(10 + socks[i].Inode)
		if socks[i].PID > 0 {
			v.hold(socks[i].Inode, procKey{socks[i].PID, socks[i].StartKey}, socks[i].FD)
		}
	}
	v.set(socks, procs...)
}

func (v *verifyingEngine) hold(inode uint64, k procKey, fd int32) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.holders[inode] = holder{k, fd}
}

func (v *verifyingEngine) exit(k procKey) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.gone[k] = true
}

func (v *verifyingEngine) PinProcess(pid int, start uint64) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	k := procKey{pid, start}
	if v.gone[k] {
		return -1, errors.New("exited")
	}
	v.next++
	v.handles[v.next] = k
	v.pinned.Add(1)
	return v.next, nil
}

func (v *verifyingEngine) HoldsSocket(h int, task, fd int32, inode uint64) bool {
	v.checks.Add(1)
	v.mu.Lock()
	defer v.mu.Unlock()
	k, ok := v.handles[h]
	if !ok || v.gone[k] {
		return false
	}
	got, ok := v.holders[inode]
	return ok && got.k == k && got.fd == fd
}

func (v *verifyingEngine) ExecOf(h int, _ int32) ExecID {
	v.execChecks.Add(1)
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.execs[v.handles[h]]
}

// execInto makes process k run another program: prog describes it from
// now on, with the identity exec.
func (v *verifyingEngine) execInto(prog *Process, exec ExecID) {
	cp := *prog
	cp.exec = exec
	k := procKey{prog.PID, prog.StartKey}
	v.mu.Lock()
	v.execs[k] = exec
	v.mu.Unlock()
	v.fakeEngine.mu.Lock()
	v.fakeEngine.procs[k] = &cp
	v.fakeEngine.mu.Unlock()
}

func (v *verifyingEngine) UnpinProcess(h int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.handles, h)
	v.pinned.Add(-1)
}

// fakeClock is a ChangeClock the test bumps.
type fakeClock struct {
	port [65536]atomic.Uint32
	proc [65536]atomic.Uint32
}

func (c *fakeClock) PortEpoch(_ Transport, port uint16) uint32 { return c.port[port].Load() }
func (c *fakeClock) ProcEpoch(pid int) uint32                  { return c.proc[uint16(pid)].Load() }

var (
	t0       = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	procOld  = &Process{PID: 300, StartKey: 3, Name: "old", Start: t0}
	procNew  = &Process{PID: 400, StartKey: 4, Name: "new", Start: t0.Add(time.Hour)}
	procPeer = &Process{PID: 500, StartKey: 5, Name: "peer", Start: t0}
	remote1  = netip.MustParseAddrPort("10.9.9.9:5555")
)

// TestAnswerRules: each rule of "When an answer is given", on the watcher
// with a verifying fake engine, with and without a ChangeClock.
func TestAnswerRules(t *testing.T) {
	type step struct {
		do   func(v *verifyingEngine, c *fakeClock)
		at   time.Time
		want int // PID, 0 = no answer
	}
	lst := func(k *Process, inode uint64) Socket {
		return Socket{Transport: TCP, Local: server, Listen: true, Inode: inode, PID: k.PID, StartKey: k.StartKey}
	}
	cases := []struct {
		name   string
		socks  []Socket
		procs  []*Process
		local  netip.AddrPort
		remote netip.AddrPort
		steps  []step
		stat   func(Stats) uint64 // the counter the case is about
		wantN  uint64
	}{
		{
			name:  "verified listener answers",
			socks: []Socket{lst(procOld, 1)}, procs: []*Process{procOld},
			local: server, remote: remote1,
			steps: []step{{want: 300}, {want: 300}},
			stat:  func(s Stats) uint64 { return s.VerifyFailures }, wantN: 0,
		},
		{
			name:  "listener restart: the exited listener is never named",
			socks: []Socket{lst(procOld, 1)}, procs: []*Process{procOld},
			local: server, remote: remote1,
			steps: []step{{want: 300}, {do: func(v *verifyingEngine, c *fakeClock) {
				v.exit(procKey{300, 3})
				c.port[server.Port()].Add(1)
				c.proc[300].Add(1)
			}, want: 0}, {want: 0}},
			stat: func(s Stats) uint64 { return s.UnansweredVerify }, wantN: 1, // the second is a negative-cache hit
		},
		{
			name:  "passed socket: the sender that closed its fd is not named",
			socks: []Socket{{Transport: TCP, Local: client, Remote: server, Inode: 2, PID: 300, StartKey: 3}}, procs: []*Process{procOld, procPeer},
			local: client, remote: server,
			steps: []step{{want: 300}, {do: func(v *verifyingEngine, c *fakeClock) {
				v.hold(2, procKey{500, 5}, 3) // now the receiver's
				c.proc[300].Add(1)
			}, want: 0}},
			stat: func(s Stats) uint64 { return s.VerifyFailures }, wantN: 1,
		},
		{
			name:  "SO_REUSEPORT group: no listener answer",
			socks: []Socket{lst(procOld, 1), lst(procPeer, 2)}, procs: []*Process{procOld, procPeer},
			local: server, remote: remote1,
			steps: []step{{want: 0}, {want: 0}},
			stat:  func(s Stats) uint64 { return s.UnansweredAmbiguous }, wantN: 1, // the second is a negative-cache hit
		},
		{
			name:  "owner started after the event",
			socks: []Socket{lst(procNew, 1)}, procs: []*Process{procNew},
			local: server, remote: remote1,
			steps: []step{{at: t0.Add(30 * time.Minute), want: 0}, {at: t0.Add(time.Hour + 50*time.Millisecond), want: 400}, {want: 400}},
			stat:  func(s Stats) uint64 { return s.UnansweredStartedAfter }, wantN: 1,
		},
	}
	for _, c := range cases {
		for _, withClock := range []bool{false, true} {
			name := c.name + map[bool]string{false: "/procfs", true: "/clock"}[withClock]
			t.Run(name, func(t *testing.T) {
				v := newVerifyingEngine()
				socks := append([]Socket(nil), c.socks...)
				v.table(socks, c.procs...)
				clock := &fakeClock{}
				cfg := Config{MinRescanInterval: time.Hour, NegativeTTL: time.Hour}
				if withClock {
					cfg.Changes = clock
				}
				w := newVerifyingWatcher(t, v, cfg)
				for i, s := range c.steps {
					if s.do != nil {
						s.do(v, clock)
					}
					got := 0
					if p := w.LookupAt(s.at, TCP, c.local, c.remote); p != nil {
						got = p.PID
					}
					if got != s.want {
						t.Fatalf("step %d: PID %d, want %d (stats %+v)", i, got, s.want, w.Stats())
					}
				}
				if n := c.stat(w.Stats()); n != c.wantN {
					t.Errorf("counter = %d, want %d (stats %+v)", n, c.wantN, w.Stats())
				}
			})
		}
	}
}

// TestVerificationReuse: with a ChangeClock a verification is reused until
// the port's or the process's counter moves; without one every answer is
// verified.
func TestVerificationReuse(t *testing.T) {
	for _, withClock := range []bool{false, true} {
		t.Run(map[bool]string{false: "procfs", true: "clock"}[withClock], func(t *testing.T) {
			v := newVerifyingEngine()
			v.table([]Socket{listener, conn}, procA, procB)
			clock := &fakeClock{}
			cfg := Config{MinRescanInterval: time.Hour}
			if withClock {
				cfg.Changes = clock
			}
			w := newVerifyingWatcher(t, v, cfg)
			look := func() {
				t.Helper()
				if p := w.Lookup(TCP, client, server); p == nil || p.PID != 200 {
					t.Fatalf("client side = %+v", p)
				}
			}
			look()
			before := v.checks.Load()
			for i := 0; i < 10; i++ {
				look()
			}
			checks := v.checks.Load() - before
			if withClock && checks != 0 {
				t.Errorf("%d checks with an unchanged clock, want 0", checks)
			}
			if !withClock && checks != 10 {
				t.Errorf("%d checks without a clock, want one per answer (10)", checks)
			}
			if !withClock {
				return
			}
			clock.port[client.Port()].Add(1)
			look()
			clock.proc[200].Add(1)
			look()
			clock.proc[100].Add(1) // another process: no new check
			look()
			if got := v.checks.Load() - before; got != 2 {
				t.Errorf("%d checks after two relevant counter moves, want 2", got)
			}
		})
	}
}

// TestResolveCacheAnswersAreVerified: NewResolveSource's remembered answer
// is checked every time it is given; once the owner no longer holds the
// socket, it is dropped.
func TestResolveCacheAnswersAreVerified(t *testing.T) {
	v := newVerifyingEngine()
	v.table(nil, procOld)
	sock := Socket{Transport: TCP, Local: client, Remote: server, Inode: 9, FD: 19, PID: 300, StartKey: 3}
	r := &fakeResolver{verifyingEngine: v, sock: sock}
	v.hold(9, procKey{300, 3}, 19)
	src := NewResolveSource(r, nil, 100, time.Second, time.Second)
	w := newVerifyingWatcher(t, v, Config{Fallback: src, MinRescanInterval: time.Hour, NegativeTTL: time.Nanosecond})
	for i := 0; i < 3; i++ {
		if p := w.Lookup(TCP, client, server); p == nil || p.PID != 300 {
			t.Fatalf("lookup %d = %+v, want PID 300", i, p)
		}
	}
	if n := r.calls.Load(); n != 1 {
		t.Errorf("%d engine queries, want 1 (the rest from the cache)", n)
	}
	v.hold(9, procKey{500, 5}, 4) // passed on
	time.Sleep(time.Millisecond)
	if p := w.Lookup(TCP, client, server); p != nil && p.PID == 300 {
		t.Fatalf("cached answer named PID 300 after it gave the socket away")
	}
	if st := w.Stats(); st.VerifyFailures == 0 {
		t.Errorf("no verification failure counted: %+v", st)
	}
}

type fakeResolver struct {
	*verifyingEngine
	sock  Socket
	gone  bool  // the kernel has no such socket
	err   error // the kernel cannot be asked
	calls atomic.Int32
	// goneAfter: after this many queries the kernel has no such socket
	// (0: never).
	goneAfter int32
}

// ResolveHinted is Resolve: the fake has no search order.
func (r *fakeResolver) ResolveHinted(ctx context.Context, t Transport, local, remote netip.AddrPort, _ int) (Socket, bool, error) {
	return r.Resolve(ctx, t, local, remote)
}

func (r *fakeResolver) Resolve(context.Context, Transport, netip.AddrPort, netip.AddrPort) (Socket, bool, error) {
	n := r.calls.Add(1)
	if r.err != nil {
		return Socket{}, false, r.err
	}
	if r.goneAfter > 0 && n > r.goneAfter {
		return Socket{}, false, nil
	}
	return r.sock, !r.gone, nil
}

func newVerifyingWatcher(t *testing.T, v *verifyingEngine, cfg Config) *Watcher {
	t.Helper()
	w := New(v, cfg, logptest.NewTestingLogger(t, ""))
	t.Cleanup(func() {
		w.Close()
		if n := v.pinned.Load(); n != 0 {
			t.Errorf("%d process pins left open after Close", n)
		}
	})
	if w.pins == nil {
		t.Fatal("the watcher does not verify through the engine's OwnerVerifier")
	}
	return w
}

// TestFailedVerificationAsksTheLiveSocketFirst: once the snapshot's owner
// of a socket fails its verification, a record of who opened the socket
// (the tracker's) is not asked while the kernel still has the socket: the
// sender of a passed socket is never named. When the connection is gone,
// the record answers (it is what the tracker is for).
func TestFailedVerificationAsksTheLiveSocketFirst(t *testing.T) {
	for _, alive := range []bool{true, false} {
		t.Run(map[bool]string{true: "socket alive", false: "socket gone"}[alive], func(t *testing.T) {
			v := newVerifyingEngine()
			row := Socket{Transport: TCP, Local: client, Remote: server, Inode: 2, PID: 300, StartKey: 3}
			v.table([]Socket{row}, procOld, procPeer)
			tracker := fakeSource{sock: row, proc: procOld}
			r := &fakeResolver{verifyingEngine: v}
			if alive {
				// The receiver holds it now, as sock_diag and the owner
				// walk find.
				r.sock = Socket{Transport: TCP, Local: client, Remote: server, Inode: 2, FD: 7, PID: 500, StartKey: 5}
			} else {
				r.gone = true
			}
			src := NewResolveSource(r, tracker, 100, time.Second, time.Second)
			w := newVerifyingWatcher(t, v, Config{Fallback: src, MinRescanInterval: time.Hour})
			if p := w.Lookup(TCP, client, server); p == nil || p.PID != 300 {
				t.Fatalf("before: %+v, want the sender 300", p)
			}
			if alive {
				v.hold(2, procKey{500, 5}, 7)
			} else {
				v.hold(2, procKey{0, 0}, 0)
			}
			want := map[bool]int{true: 500, false: 300}[alive]
			got := 0
			if p := w.Lookup(TCP, client, server); p != nil {
				got = p.PID
			}
			if got != want {
				t.Errorf("after the sender gave the socket up: PID %d, want %d (%+v)", got, want, w.Stats())
			}
		})
	}
}

// TestFailedVerificationWithoutTheKernel: once the snapshot's owner failed
// its verification and the kernel cannot be asked (the exact lookup's
// budget is spent, or it failed), a record of a socket the tracker saw
// closed still answers: that socket lives no more, so nobody can hold it
// now. A record of a socket still open does not: it may have been passed on.
func TestFailedVerificationWithoutTheKernel(t *testing.T) {
	for _, closed := range []bool{true, false} {
		t.Run(map[bool]string{true: "record closed", false: "record open"}[closed], func(t *testing.T) {
			v := newVerifyingEngine()
			row := Socket{Transport: TCP, Local: client, Remote: server, Inode: 2, PID: 300, StartKey: 3}
			v.table([]Socket{row}, procOld, procPeer)
			rec := row
			rec.Recorded = !closed
			r := &fakeResolver{verifyingEngine: v, err: errors.New("budget spent")}
			src := NewResolveSource(r, fakeSource{sock: rec, proc: procOld}, 100, time.Second, time.Second)
			w := newVerifyingWatcher(t, v, Config{Fallback: src, MinRescanInterval: time.Hour})
			if p := w.Lookup(TCP, client, server); p == nil || p.PID != 300 {
				t.Fatalf("before: %+v, want 300", p)
			}
			v.hold(2, procKey{0, 0}, 0) // 300 no longer holds it
			got := 0
			if p := w.Lookup(TCP, client, server); p != nil {
				got = p.PID
			}
			want := map[bool]int{true: 300, false: 0}[closed]
			if got != want {
				t.Errorf("after the verification failed: PID %d, want %d (%+v)", got, want, w.Stats())
			}
		})
	}
}

// TestRecordListenerAnswersObeyListenerRules: a fallback's answer found
// through a listener (sock.Listen) is given only as the snapshot's own
// verified listener answer would be: not where the endpoint is shared by
// several processes, not for an IPv4 event where the port's only listener
// is a [::] socket not known to accept IPv4, not for a listener the
// snapshot does not know (a rescan finds it).
func TestRecordListenerAnswersObeyListenerRules(t *testing.T) {
	v6 := netip.AddrPortFrom(netip.IPv6Unspecified(), server.Port())
	cases := []struct {
		name  string
		socks []Socket
		want  int
	}{
		{"single listener", []Socket{{Transport: TCP, Local: server, Listen: true, Inode: 1, PID: 300, StartKey: 3}}, 300},
		{"reuseport group", []Socket{
			{Transport: TCP, Local: server, Listen: true, Inode: 1, PID: 300, StartKey: 3},
			{Transport: TCP, Local: server, Listen: true, Inode: 2, PID: 500, StartKey: 5}}, 0},
		{"v6only [::] only", []Socket{{Transport: TCP, Local: v6, Listen: true, Inode: 1, PID: 300, StartKey: 3, V6Only: V6OnlyOn}}, 0},
		{"dual-stack [::]", []Socket{{Transport: TCP, Local: v6, Listen: true, Inode: 1, PID: 300, StartKey: 3, V6Only: V6OnlyOff}}, 300},
		{"listener the snapshot does not know", nil, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := newVerifyingEngine()
			v.table(c.socks, procOld, procPeer)
			// The record: a connection to the listener's port from remote1,
			// which no snapshot row lists.
			rec := fakeSource{sock: Socket{Transport: TCP, Local: server, Remote: remote1, Listen: true, PID: 300, StartKey: 3}, proc: procOld}
			w := newVerifyingWatcher(t, v, Config{Fallback: rec, MinRescanInterval: time.Hour})
			w.Lookup(TCP, netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:2")) // first rescan
			got := 0
			if p := w.LookupAt(time.Time{}, TCP, server, remote1); p != nil {
				got = p.PID
			}
			// A dual-stack or single listener answers from the snapshot
			// itself (verified); the record matters where it does not.
			if got != c.want {
				t.Errorf("PID %d, want %d (%+v)", got, c.want, w.Stats())
			}
		})
	}
}

// TestExecKeepsSocket: a process that execs another program keeps its PID,
// its start time and its sockets. A verification finds the program changed
// (the exec counter moved the clock, or procfs mode verifies every answer),
// and the answer names the program it runs now, described once; the next
// rescan reuses that description instead of its cached one.
func TestExecKeepsSocket(t *testing.T) {
	for _, withClock := range []bool{false, true} {
		t.Run(map[bool]string{false: "procfs", true: "clock"}[withClock], func(t *testing.T) {
			v := newVerifyingEngine()
			v.table([]Socket{listener, conn}, procA, procB)
			v.execInto(procB, ExecID{Dev: 1, Ino: 10})
			clock := &fakeClock{}
			cfg := Config{MinRescanInterval: time.Hour, NegativeTTL: time.Hour}
			if withClock {
				cfg.Changes = clock
			}
			w := newVerifyingWatcher(t, v, cfg)
			name := func() string {
				t.Helper()
				p := w.Lookup(TCP, client, server)
				if p == nil {
					return ""
				}
				if p.PID != 200 {
					t.Fatalf("PID %d, want 200", p.PID)
				}
				return p.Name
			}
			if got := name(); got != "client" {
				t.Fatalf("before exec: %q, want client", got)
			}
			v.execInto(&Process{PID: 200, StartKey: 7, Name: "sleep"}, ExecID{Dev: 1, Ino: 20})
			clock.proc[200].Add(1) // sched_process_exec
			reads := v.procRead.Load()
			for i := 0; i < 5; i++ {
				if got := name(); got != "sleep" {
					t.Fatalf("after exec, lookup %d: %q, want sleep (%+v)", i, got, w.Stats())
				}
			}
			if n := v.procRead.Load() - reads; n != 1 {
				t.Errorf("%d process reads after the exec, want 1", n)
			}
			if st := w.Stats(); st.ExecChanges != 1 || st.VerifyFailures != 0 {
				t.Errorf("ExecChanges %d, VerifyFailures %d, want 1 and 0", st.ExecChanges, st.VerifyFailures)
			}
			// The next rescan's rows carry the new description, read once.
			// (The first rescan's goroutine may still be finishing after
			// publishing its snapshot: a rescan "in flight" past its
			// deadline is not waited for, so try again.)
			var fresh *snapshot
			for i := 0; fresh == nil && i < 200; i++ {
				if fresh = w.awaitRescan(w.snap.Load(), time.Now().Add(2*time.Hour), time.Now().Add(3*time.Hour)); fresh == nil {
					time.Sleep(5 * time.Millisecond)
				}
			}
			if fresh == nil {
				t.Fatal("no rescan")
			}
			if got := name(); got != "sleep" {
				t.Fatalf("after the rescan: %q, want sleep", got)
			}
			if n := v.procRead.Load() - reads; n != 1 {
				t.Errorf("%d process reads after the rescan, want still 1", n)
			}
			// Another exec the engine cannot describe as the program that
			// runs (it exec'd again during the read): no answer.
			v.execInto(&Process{PID: 200, StartKey: 7, Name: "third"}, ExecID{Dev: 1, Ino: 30})
			v.mu.Lock()
			v.execs[procKey{200, 7}] = ExecID{Dev: 1, Ino: 40}
			v.mu.Unlock()
			clock.proc[200].Add(1)
			if got := name(); got != "" {
				t.Fatalf("program changed during the read: %q, want no answer", got)
			}
			if st := w.Stats(); st.UnansweredVerify != 1 {
				t.Errorf("UnansweredVerify %d, want 1", st.UnansweredVerify)
			}
		})
	}
}

// TestExecKeepsSocketResolveSource: the exact lookup's remembered answer
// and the recalled-owner cache do not name the program a process ran
// before it exec'd.
func TestExecKeepsSocketResolveSource(t *testing.T) {
	v := newVerifyingEngine()
	v.table(nil, procOld)
	v.execInto(procOld, ExecID{Dev: 1, Ino: 10})
	sock := Socket{Transport: TCP, Local: client, Remote: server, Inode: 9, FD: 19, PID: 300, StartKey: 3}
	r := &fakeResolver{verifyingEngine: v, sock: sock}
	v.hold(9, procKey{300, 3}, 19)
	src := NewResolveSource(r, nil, 100, time.Second, time.Second)
	w := newVerifyingWatcher(t, v, Config{Fallback: src, MinRescanInterval: time.Hour, NegativeTTL: time.Nanosecond})
	if p := w.Lookup(TCP, client, server); p == nil || p.Name != "old" {
		t.Fatalf("before exec: %+v, want old", p)
	}
	v.execInto(&Process{PID: 300, StartKey: 3, Name: "sleep"}, ExecID{Dev: 1, Ino: 20})
	for i := 0; i < 3; i++ {
		time.Sleep(time.Millisecond)
		if p := w.Lookup(TCP, client, server); p == nil || p.Name != "sleep" {
			t.Fatalf("after exec, lookup %d: %+v, want sleep (%+v)", i, p, w.Stats())
		}
	}
	if st := w.Stats(); st.ExecChanges != 1 {
		t.Errorf("ExecChanges %d, want 1", st.ExecChanges)
	}
}

// TestOpenRecordAsksTheLiveSocketFirst: a fallback's record of a socket it
// believes still open (Recorded) names who opened it; while the kernel has
// the socket, its current holder is named instead (the opener may have
// passed it on), and the record answers once the kernel no longer has it.
func TestOpenRecordAsksTheLiveSocketFirst(t *testing.T) {
	for _, c := range []struct {
		name string
		live bool
		want int
	}{{"socket held by another process", true, 500}, {"socket gone", false, 300}} {
		t.Run(c.name, func(t *testing.T) {
			v := newVerifyingEngine()
			v.table(nil, procOld, procPeer)
			rec := Socket{Transport: TCP, Local: client, Remote: server, PID: 300, StartKey: 3, Recorded: true}
			src := fakeSource{sock: rec, proc: procOld}
			r := &fakeResolver{verifyingEngine: v}
			if c.live {
				r.sock = Socket{Transport: TCP, Local: client, Remote: server, Inode: 2, FD: 7, PID: 500, StartKey: 5}
				v.hold(2, procKey{500, 5}, 7)
			} else {
				r.gone = true
			}
			w := newVerifyingWatcher(t, v, Config{Fallback: NewResolveSource(r, src, 100, time.Second, time.Second), MinRescanInterval: time.Hour})
			got := 0
			if p := w.Lookup(TCP, client, server); p != nil {
				got = p.PID
			}
			if got != c.want {
				t.Errorf("PID %d, want %d (%+v)", got, c.want, w.Stats())
			}
		})
	}
}

// TestVanishedLiveHolderFallsBackToRecord: a one-shot client's record is
// still open when its line is looked up, so the kernel is asked first and
// names the client; the client closes and exits before it is described or
// verified. The lookup asks again, the kernel first: the socket is gone
// now, and the record names the client. (Before, the side stayed empty.)
func TestVanishedLiveHolderFallsBackToRecord(t *testing.T) {
	for _, c := range []struct {
		name   string
		exited bool // gone before described (else: closed before verified)
	}{{"closed before verified", false}, {"exited before described", true}} {
		t.Run(c.name, func(t *testing.T) {
			v := newVerifyingEngine()
			if c.exited {
				v.table(nil, procPeer)
			} else {
				v.table(nil, procOld, procPeer) // 300 runs, but no longer holds inode 2
			}
			rec := Socket{Transport: TCP, Local: client, Remote: server, PID: 300, StartKey: 3, Recorded: true}
			r := &fakeResolver{verifyingEngine: v, goneAfter: 1,
				sock: Socket{Transport: TCP, Local: client, Remote: server, Inode: 2, FD: 7, PID: 300, StartKey: 3}}
			w := newVerifyingWatcher(t, v, Config{Fallback: NewResolveSource(r, fakeSource{sock: rec, proc: procOld}, 100, time.Second, time.Second), MinRescanInterval: time.Hour})
			got := 0
			if p := w.Lookup(TCP, client, server); p != nil {
				got = p.PID
			}
			if got != 300 {
				t.Errorf("PID %d, want 300 from the record (%+v; %d kernel queries)", got, w.Stats(), r.calls.Load())
			}
			if n := r.calls.Load(); n != 2 {
				t.Errorf("%d kernel queries, want 2 (the second shows the socket gone)", n)
			}
		})
	}
}
