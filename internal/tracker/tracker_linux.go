//go:build linux

package tracker

import (
	"errors"
	"fmt"
	"io"
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
	evConnect    = 1
	evAccept     = 2
	evSendRecv   = 3
	evClose      = 4
	evListen     = 5
	evExit       = 6
	evUDPConnect = 7
)

// pollInterval bounds how long an event waits in the ring buffer while
// events flow: the BPF program does not wake the reader (a wakeup costs
// the writing process more than its record), except as a safety net once
// 1 MiB (a quarter of the ring) is pending. After a poll that found nothing the reader waits twice as
// long, up to idlePollInterval (an idle beat spent most of its CPU on 100
// polls a second); the first event brings it back to pollInterval. A
// LookupAt does not wait for the poll: when the ring holds events it
// flushes the reader (see sync).
const (
	pollInterval     = 10 * time.Millisecond
	idlePollInterval = 320 * time.Millisecond
)

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

	// udpMode tells how UDP owners are recorded (udpCgroup or udpTracepoints).
	udpMode string
	// progs are the attached programs, for their run-time statistics.
	progs    []attached
	runStats io.Closer // keeps the kernel's BPF run-time statistics on; nil if refused
	loaded   time.Time

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

	// The gap counter's last reading (gapFreeSince): its value, when it
	// was read, and the reading that first showed that value (every gap
	// counted happened before gapAt; zero while none was ever seen).
	// uringAccepted is set once an accept through io_uring was seen
	// (the BPF program's uring_accepts count): such accepts leave no
	// record, so an open listener may then hide a tuple's reuse.
	uringAccepted atomic.Bool
	gapMu         sync.Mutex
	gapVal        uint64
	gapReadAt     time.Time
	gapAt         time.Time
}

// New loads the BPF programs, attaches them and starts reading their
// events. It needs root (or CAP_BPF and CAP_PERFMON) and a kernel with BTF
// (/sys/kernel/btf/vmlinux) and BTF-typed tracepoints (tp_btf). Errors wrap
// the underlying cause.
func New(opts Options) (*Tracker, error) {
	opts = opts.withDefaults()
	if err := checkPIDNamespace(); err != nil {
		return nil, err
	}
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
	if err := t.attachSockets(); err != nil {
		t.release()
		return nil, fmt.Errorf("tracker: %w", privilegeHint(err))
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
	if opts.ProgramStats {
		if st, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME); err == nil {
			t.runStats = st
		}
	}
	t.loaded = time.Now()

	t.wg.Add(2)
	go t.readLoop()
	go t.expireLoop()
	return t, nil
}

// attached is a program the tracker attached, under the name its
// statistics are published by.
type attached struct {
	name string
	prog *ebpf.Program
}

// How UDP owners are recorded (Tracker.UDPMode).
const (
	// udpCgroup: cgroup sock_addr hooks on the root cgroup v2, which run
	// only for UDP datagrams that carry an address.
	udpCgroup = "cgroup"
	// udpTracepoints: the sock_send_length / sock_recv_length tracepoints,
	// which run on every message of every protocol.
	udpTracepoints = "tracepoints"
)

// attachSockets attaches the programs that record socket owners: TCP
// state changes, accept and connect returns, and UDP's hooks.
func (t *Tracker) attachSockets() error {
	if err := ensureTracefs(); err != nil {
		return err
	}
	if err := t.attachTracing("tp_btf/inet_sock_set_state", t.objs.InetSockSetState); err != nil {
		return err
	}
	for _, p := range []attached{
		{"sys_exit_accept4", t.objs.SysExitAccept4},
		{"sys_exit_accept", t.objs.SysExitAccept},
		{"sys_exit_connect", t.objs.SysExitConnect},
	} {
		if err := t.attachSyscall(p.name, p.prog); err != nil {
			return err
		}
	}
	cgErr := t.attachUDPCgroup()
	if cgErr == nil {
		t.udpMode = udpCgroup
		return nil
	}
	for _, p := range []attached{
		{"tp_btf/sock_send_length", t.objs.SockSendLength},
		{"tp_btf/sock_recv_length", t.objs.SockRecvLength},
	} {
		if err := t.attachTracing(p.name, p.prog); err != nil {
			return fmt.Errorf("%w (UDP's cgroup hooks were not usable either: %v)", err, cgErr)
		}
	}
	t.udpMode = udpTracepoints
	return nil
}

func (t *Tracker) attachTracing(name string, prog *ebpf.Program) error {
	l, err := link.AttachTracing(link.TracingOptions{Program: prog})
	if err != nil {
		return fmt.Errorf("attaching %s: %w", name, err)
	}
	t.links = append(t.links, l)
	t.progs = append(t.progs, attached{name, prog})
	return nil
}

func (t *Tracker) attachSyscall(name string, prog *ebpf.Program) error {
	l, err := link.Tracepoint("syscalls", name, prog, nil)
	if err != nil {
		return fmt.Errorf("attaching tracepoint/syscalls/%s: %w", name, err)
	}
	t.links = append(t.links, l)
	t.progs = append(t.progs, attached{"tracepoint/syscalls/" + name, prog})
	return nil
}

// attachUDPCgroup attaches UDP's sendmsg/recvmsg hooks to the root of the
// cgroup v2 hierarchy, so that they see every process on the host. It
// fails in a cgroup namespace other than the initial one (its root is not
// the host's) and without a cgroup v2 mount.
func (t *Tracker) attachUDPCgroup() error {
	root, err := cgroup2Root()
	if err != nil {
		return err
	}
	n, np := len(t.links), len(t.progs)
	for _, p := range []struct {
		name string
		at   ebpf.AttachType
		prog *ebpf.Program
	}{
		{"cgroup/sendmsg4", ebpf.AttachCGroupUDP4Sendmsg, t.objs.Udp4Sendmsg},
		{"cgroup/sendmsg6", ebpf.AttachCGroupUDP6Sendmsg, t.objs.Udp6Sendmsg},
		{"cgroup/post_bind4", ebpf.AttachCGroupInet4PostBind, t.objs.Udp4PostBind},
		{"cgroup/post_bind6", ebpf.AttachCGroupInet6PostBind, t.objs.Udp6PostBind},
	} {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: root, Attach: p.at, Program: p.prog})
		if err != nil {
			for _, l := range t.links[n:] {
				l.Close()
			}
			t.links, t.progs = t.links[:n], t.progs[:np]
			return fmt.Errorf("attaching %s to %s: %w", p.name, root, err)
		}
		t.links = append(t.links, l)
		t.progs = append(t.progs, attached{p.name, p.prog})
	}
	return nil
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
	t.links, t.progs = nil, nil
	if t.runStats != nil {
		errs = append(errs, t.runStats.Close())
		t.runStats = nil
	}
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
	interval, idle := pollInterval, true
	for {
		// Every event submitted before start is read by the time ReadInto
		// reports the end of the ring.
		start := time.Now()
		t.rd.SetDeadline(start.Add(interval))
		err := t.rd.ReadInto(&rec)
		if err == nil {
			t.handling.Store(true)
			idle = false
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
			if idle {
				interval = min(2*interval, idlePollInterval)
			} else {
				interval = pollInterval
			}
			idle = true
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
	t.life.RLock()
	if !t.closed.Load() {
		s.Programs, s.Missed, s.CPUShare = t.programStats()
	}
	t.life.RUnlock()
	t.mu.RLock()
	s.Entries = t.nrec
	t.mu.RUnlock()
	return s
}
