//go:build linux

package tracker

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Event types and owner sources, mirrored from bpf/tracker.bpf.c.
const (
	evConnect  = 1
	evAccept   = 2
	evSendRecv = 3
	evClose    = 4
	evListen   = 5
	evExit     = 6

	srcListener = 2
)

// pollInterval bounds how long an event waits in the ring buffer: the BPF
// program wakes the reader only when 64 KiB are pending, so that a burst of
// connections costs one wakeup rather than one per event.
const pollInterval = 10 * time.Millisecond

// btfPath is where the kernel exposes its BTF; CO-RE relocations need it.
const btfPath = "/sys/kernel/btf/vmlinux"

// Tracker attributes TCP connections and UDP sockets to processes from
// kernel events. It is safe for concurrent use.
type Tracker struct {
	opts  Options
	objs  trackerObjects
	links []link.Link
	rd    *ringbuf.Reader

	mu    sync.RWMutex
	table map[key][]Record // per key the last historyLen records, oldest first
	nrec  int              // records in table
	// exits holds when processes exited (kept Retention): an open record
	// of an exited process ended then, whoever holds the socket now.
	exits map[owner]time.Time
	// nsRefs counts the table's records per network namespace, so a lookup
	// knows which namespaces to probe for a tuple.
	nsRefs map[uint32]int
	// ownNS is the tracker's own network namespace: where a tuple is held
	// in several namespaces, its record wins, as the procs snapshot prefers
	// the host's socket.
	ownNS uint32
	comms map[[16]int8]string // interned command names; reader goroutine only

	events, evicted, expired, ambiguous, unsure atomic.Uint64

	epochs    *Epochs // nil when the counters are unavailable
	epochsErr error   // why they are

	// life orders lookups against Close: a lookup holds it shared, Close
	// takes it to set closed, so no lookup touches the ring once it is
	// being closed.
	life   sync.RWMutex
	closed atomic.Bool

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error

	now func() time.Time // tests
	// bootWall is the wall-clock time of boot in Unix nanoseconds: kernel
	// times (CLOCK_BOOTTIME) plus bootWall are wall-clock times. Refreshed
	// by the expiry loop, as the wall clock is adjusted.
	bootWall atomic.Int64

	// drained is closed (and replaced) each time the reader has consumed
	// everything in the ring, so Recall can wait for events still in flight.
	drainMu sync.Mutex
	drained chan struct{}
	// drainedAt (Unix ns) is a time before which every event submitted to
	// the ring has been applied to the table; handling is set while the
	// reader applies an event it has taken from the ring.
	drainedAt atomic.Int64
	handling  atomic.Bool
}

// New loads the BPF programs, attaches them and starts reading their
// events. It needs root (or CAP_BPF and CAP_PERFMON) and a kernel with BTF
// (/sys/kernel/btf/vmlinux) and BTF-typed tracepoints (tp_btf). Errors wrap
// the underlying cause.
func New(opts Options) (*Tracker, error) {
	opts = opts.withDefaults()
	if _, err := os.Stat(btfPath); err != nil {
		return nil, fmt.Errorf("tracker: kernel BTF is not available (CONFIG_DEBUG_INFO_BTF): %w", err)
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones
	// ignore it and RemoveMemlock does nothing.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("tracker: %w", privilegeHint(err))
	}

	t := &Tracker{
		opts:    opts,
		table:   make(map[key][]Record),
		exits:   make(map[owner]time.Time),
		nsRefs:  make(map[uint32]int),
		ownNS:   ownNetNS(),
		comms:   make(map[[16]int8]string),
		stop:    make(chan struct{}),
		now:     time.Now,
		drained: make(chan struct{}),
	}
	t.refreshBootWall()
	if err := loadTrackerObjects(&t.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("tracker: the kernel's verifier rejected the BPF program: %w", err)
		}
		return nil, fmt.Errorf("tracker: loading BPF objects: %w", privilegeHint(err))
	}
	for _, p := range []struct {
		name string
		prog *ebpf.Program
	}{
		{"tp_btf/inet_sock_set_state", t.objs.InetSockSetState},
		{"tp_btf/sock_send_length", t.objs.SockSendLength},
		{"tp_btf/sock_recv_length", t.objs.SockRecvLength},
	} {
		l, err := link.AttachTracing(link.TracingOptions{Program: p.prog})
		if err != nil {
			t.release()
			return nil, fmt.Errorf("tracker: attaching %s: %w", p.name, privilegeHint(err))
		}
		t.links = append(t.links, l)
	}
	rd, err := ringbuf.NewReader(t.objs.Events)
	if err != nil {
		t.release()
		return nil, fmt.Errorf("tracker: opening the ring buffer: %w", err)
	}
	t.rd = rd
	if t.epochs, err = t.attachEpochs(); err != nil {
		t.epochsErr = fmt.Errorf("tracker: change counters unavailable: %w", privilegeHint(err))
	}

	t.wg.Add(2)
	go t.readLoop()
	go t.expireLoop()
	return t, nil
}

// privilegeError explains a refusal by the kernel.
type privilegeError struct{ err error }

func (e *privilegeError) Error() string {
	return e.err.Error() + " (the eBPF tracker needs root, or CAP_BPF and CAP_PERFMON)"
}
func (e *privilegeError) Unwrap() error { return e.err }

func privilegeHint(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return &privilegeError{err}
	}
	return err
}

// release detaches the programs and frees the kernel objects.
func (t *Tracker) release() error {
	var errs []error
	for _, l := range t.links {
		errs = append(errs, l.Close())
	}
	t.links = nil
	errs = append(errs, t.objs.Close())
	return errors.Join(errs...)
}

// Close detaches the programs, stops the goroutines and frees the kernel
// objects. It is safe to call more than once.
func (t *Tracker) Close() error {
	t.closeOnce.Do(func() {
		t.life.Lock()
		t.closed.Store(true)
		t.life.Unlock()
		close(t.stop)
		err := t.rd.Close() // unblocks readLoop
		t.wg.Wait()
		t.closeErr = errors.Join(err, t.release())
	})
	return t.closeErr
}

func (t *Tracker) readLoop() {
	defer t.wg.Done()
	var rec ringbuf.Record
	for {
		// Every event submitted before start is read by the time ReadInto
		// reports the end of the ring.
		start := time.Now()
		t.rd.SetDeadline(start.Add(pollInterval))
		err := t.rd.ReadInto(&rec)
		if err == nil {
			t.handling.Store(true)
		}
		if err != nil {
			if errors.Is(err, ringbuf.ErrClosed) {
				return
			}
			select {
			case <-t.stop:
				return
			default:
			}
			// Deadline or flush: the ring has been read to its end.
			t.drainedAt.Store(start.UnixNano())
			t.drainMu.Lock()
			close(t.drained)
			t.drained = make(chan struct{})
			t.drainMu.Unlock()
			continue
		}
		if len(rec.RawSample) >= int(unsafe.Sizeof(trackerEvent{})) {
			t.handle((*trackerEvent)(unsafe.Pointer(&rec.RawSample[0])))
		}
		t.handling.Store(false)
	}
}

// handle applies one kernel event to the table.
func (t *Tracker) handle(ev *trackerEvent) {
	t.events.Add(1)
	if ev.Type == evExit {
		t.mu.Lock()
		t.exits[owner{int(ev.Pid), time.Duration(ev.StartNs)}] = t.wallOf(ev.TsNs)
		t.mu.Unlock()
		return
	}
	proto := Proto(ev.Proto)
	if proto != TCP && proto != UDP {
		return
	}
	local := netip.AddrPortFrom(eventAddr(ev.Family, &ev.Saddr), ev.Sport)
	remote := netip.AddrPortFrom(eventAddr(ev.Family, &ev.Daddr), ev.Dport)
	if !local.Addr().IsValid() {
		return
	}
	if ev.Dport == 0 {
		// An unconnected UDP socket or a listener: it owns Local for any peer.
		remote = netip.AddrPort{}
	}
	now := t.now()
	ts := t.wallOf(ev.TsNs)
	r := Record{
		PID:           int(ev.Pid),
		StartTicks:    ev.StartNs / (1e9 / userHZ),
		StartBoottime: time.Duration(ev.StartNs),
		Start:         t.wallOf(ev.StartNs),
		Comm:          t.comm(&ev.Comm),
		NetNS:         ev.Netns,
		Opened:        ts,
		Seen:          now,
		sk:            ev.Sk,
	}
	switch ev.Type {
	case evConnect:
		r.Source = SourceConnect
	case evAccept:
		r.Source = SourceListener
	case evSendRecv:
		r.Source = SourceIO
	case evListen:
		r.Source = SourceListen
	case evClose:
		r.Closed = ts
		r.Source = SourceIO
		if ev.Source == srcListener {
			r.Source = SourceListener
		}
	default:
		return
	}
	k := key{proto, ev.Netns, local, remote}

	t.mu.Lock()
	defer t.mu.Unlock()
	h := t.table[k]
	if n := len(h); n > 0 {
		last := &h[n-1]
		if last.sk == r.sk && !last.Closed.IsZero() && ev.Type == evClose {
			// The close of a socket whose owner's tenure already ended
			// (it exited, or the socket changed hands unseen): nothing
			// new about who held it.
			return
		}
		if last.sk == r.sk && last.Closed.IsZero() {
			// The socket of the newest record: its close, a refresh, or
			// a new owner (an accepted connection served by a worker, a
			// UDP socket used by another process).
			switch {
			case ev.Type == evClose && sameOwner(last, &r):
				last.Closed, last.Seen, last.sockClosed = ts, now, true
				return
			case ev.Type == evClose:
				// Closed by an owner whose first use was not seen (lost
				// event): the old owner's tenure ended at some unknown
				// time, so neither may answer for before the close.
				last.Closed = ts
				r.Opened = ts
			case sameOwner(last, &r):
				last.Seen, last.Source = now, r.Source
				return
			default:
				last.Closed = ts // the old owner's tenure ends here
			}
			t.pushLocked(k, r, now)
			return
		}
	}
	if ev.Type == evClose {
		if ev.Sport == 0 {
			return // a connect that failed before it had a port
		}
		// Its opening was not seen (a lost event): it was open at most
		// since its owner started.
		r.Opened = r.Start
	}
	t.pushLocked(k, r, now)
}

func sameOwner(a, b *Record) bool { return a.PID == b.PID && a.StartBoottime == b.StartBoottime }

// owner identifies a process instance.
type owner struct {
	pid   int
	start time.Duration // StartBoottime
}

// wallOf converts a kernel CLOCK_BOOTTIME reading to wall-clock time.
func (t *Tracker) wallOf(ns uint64) time.Time {
	return time.Unix(0, t.bootWall.Load()+int64(ns))
}

// refreshBootWall recomputes the wall-clock time of boot.
func (t *Tracker) refreshBootWall() {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err == nil {
		t.bootWall.Store(time.Now().UnixNano() - ts.Nano())
	}
}

// ownNetNS is the inode of this process's network namespace, 0 if unknown.
func ownNetNS() uint32 {
	var st unix.Stat_t
	if unix.Stat("/proc/self/ns/net", &st) != nil {
		return 0
	}
	return uint32(st.Ino)
}

func eventAddr(family uint16, b *[16]uint8) netip.Addr {
	switch family {
	case unix.AF_INET:
		return netip.AddrFrom4([4]byte(b[:4]))
	case unix.AF_INET6:
		return netip.AddrFrom16(*b).Unmap()
	}
	return netip.Addr{}
}

// comm returns the interned string of a kernel command name.
func (t *Tracker) comm(c *[16]int8) string {
	if s, ok := t.comms[*c]; ok {
		return s
	}
	if len(t.comms) > 4096 {
		clear(t.comms)
	}
	s := commString(c)
	t.comms[*c] = s
	return s
}

func commString(c *[16]int8) string {
	b := make([]byte, 0, len(c))
	for _, ch := range c {
		if ch == 0 {
			break
		}
		b = append(b, byte(ch))
	}
	return string(b)
}

// Stats returns the tracker's counters.
func (t *Tracker) Stats() Stats {
	s := Stats{
		Events:    t.events.Load(),
		Evicted:   t.evicted.Load(),
		Expired:   t.expired.Load(),
		Ambiguous: t.ambiguous.Load(),
		Unsure:    t.unsure.Load(),
	}
	var lost []uint64
	if err := t.objs.Stats.Lookup(uint32(0), &lost); err == nil {
		for _, v := range lost {
			s.Lost += v
		}
	}
	for _, p := range []*ebpf.Program{t.objs.InetSockSetState, t.objs.SockSendLength, t.objs.SockRecvLength, t.objs.SchedProcessExec, t.objs.SchedProcessExit} {
		if ps, err := p.Stats(); err == nil {
			s.Missed += ps.RecursionMisses
		}
	}
	t.mu.RLock()
	s.Entries = t.nrec
	t.mu.RUnlock()
	return s
}

// LookupSync is LookupAt for an event happening now.
func (t *Tracker) LookupSync(proto Proto, local, remote netip.AddrPort) (Record, bool) {
	return t.LookupAt(proto, local, remote, time.Time{})
}

// LookupAt returns the owner, at time at, of the socket with the given
// transport and endpoints (zero at: now): the record whose lifetime
// [Opened, Closed] covers at, give or take EventTimeSlack. Before it
// decides, every event the kernel submitted before at (or before the call,
// if that is earlier) is applied to the table: a newer connection on the
// tuple may still be in the ring buffer. If the reader cannot catch up
// within syncTimeout, only an open record may answer (a closed one is
// counted in Stats.Unsure). It never returns
//   - a record opened after at + slack, or closed before at - slack (the
//     event is about a connection not recorded: nothing is returned);
//   - a closed record when a newer record of the tuple covers at;
//   - a record whose process started after at + slack.
func (t *Tracker) LookupAt(proto Proto, local, remote netip.AddrPort, at time.Time) (Record, bool) {
	t.life.RLock()
	defer t.life.RUnlock()
	if t.closed.Load() {
		return Record{}, false
	}
	now := t.now()
	if at.IsZero() || at.After(now) {
		at = now
	}
	complete := t.caughtUp(at) || t.sync(syncTimeout)
	r, ok := t.lookupAt(proto, local, remote, at, complete)
	if ok && !complete && !r.Closed.IsZero() {
		t.unsure.Add(1)
		return Record{}, false
	}
	return r, ok
}

// syncTimeout bounds how long a LookupAt waits for the reader.
const syncTimeout = 20 * time.Millisecond

// caughtUp tells whether every event submitted before at has been applied
// to the table: the reader emptied the ring after at, or the ring is empty
// now and the reader is not applying an event. Two or three atomic loads.
func (t *Tracker) caughtUp(at time.Time) bool {
	if t.rd == nil {
		return true // a table without a kernel (tests)
	}
	if t.drainedAt.Load() > at.UnixNano() {
		return true
	}
	return t.rd.AvailableBytes() == 0 && !t.handling.Load()
}

// sync makes the reader consume the events already in the ring and waits
// until it has applied everything submitted before the call, at most
// timeout. It reports whether it got there.
func (t *Tracker) sync(timeout time.Duration) bool {
	start := time.Now()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		if t.caughtUp(start) {
			return true
		}
		t.drainMu.Lock()
		ch := t.drained
		t.drainMu.Unlock()
		if t.drainedAt.Load() > start.UnixNano() {
			return true
		}
		if err := t.rd.Flush(); err != nil {
			return false
		}
		select {
		case <-ch:
		case <-timer.C:
			return false
		case <-t.stop:
			return false
		}
	}
}
