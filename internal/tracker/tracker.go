// Package tracker is an optional eBPF connection tracker for Linux. It
// records, in kernel context, which process made each TCP connection and
// which process uses each UDP socket, so that an event that arrives after
// the socket closed (and vanished from /proc) still resolves to its owner.
//
// Client TCP connections are attributed to the task that called connect()
// (inet_sock_set_state), accepted ones to the task whose accept()/accept4()
// returned them (their syscall-exit tracepoints), connected UDP sockets to
// the task that connected them, bound UDP sockets to the task that bound
// them, and unconnected UDP senders to the task that sends a datagram with
// an address (cgroup post_bind and sendmsg hooks on the root cgroup, or the
// send/receive tracepoints where those cannot attach). Nothing runs per TCP
// message or per UDP datagram received. Records carry their
// lifetime by the kernel's clock, and a lookup names the owner at an
// event's time (LookupAt). Change counters (Epochs), bumped by syscall,
// sched and io_uring tracepoints, tell without a system call whether a
// port's sockets or a process's descriptors changed. New refuses to run in
// a PID namespace other than the host's. See docs/tracker.md.
package tracker

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// ErrUnsupported is returned by New on systems other than Linux.
var ErrUnsupported = errors.New("tracker: the eBPF connection tracker is only supported on Linux")

// Default option values.
const (
	DefaultRetention  = 30 * time.Second
	DefaultMaxEntries = 65536
)

// udpRefresh is how often the BPF program re-announces an active UDP socket
// (REFRESH_NS in bpf/tracker.bpf.c); UDP has no close event, so a UDP record
// lives Retention past the last announcement window.
const udpRefresh = 10 * time.Second

// userHZ is the clock-tick rate of /proc/<pid>/stat's starttime (USER_HZ,
// 100 on every Linux architecture).
const userHZ = 100

// Options configures a Tracker. The zero value selects the defaults.
type Options struct {
	// Retention is how long a record is kept after its TCP connection
	// closed, or after a UDP socket was last seen active (UDP sockets have
	// no close event). Default 30s.
	Retention time.Duration
	// MaxEntries caps the user-space table; past it the entries seen least
	// recently are evicted. Default 65536.
	MaxEntries int
	// ProgramStats turns on the kernel's run-time statistics of BPF
	// programs (BPF_ENABLE_STATS) while the tracker runs, for
	// Stats.Programs and Stats.CPUShare. They cost two clock reads per
	// program run of every BPF program on the host, so they are off by
	// default.
	ProgramStats bool
}

func (o Options) withDefaults() Options {
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultMaxEntries
	}
	return o
}

// Source tells how a record's owner was learned.
type Source uint8

const (
	// SourceConnect: the task that called connect() (a TCP client, a
	// connected UDP socket).
	SourceConnect Source = iota + 1
	// SourceListener: a lookup of a TCP connection answered by the record
	// of the listening socket on its local port (no record of the
	// connection itself): the process that called listen(), which may not
	// be the one that accepted the connection.
	SourceListener
	// SourceIO: the task that sent or received a UDP datagram on the
	// socket.
	SourceIO
	// SourceListen: the record of a TCP listening socket.
	SourceListen
	// SourceAccept: the task whose accept()/accept4() returned the TCP
	// connection (a server's worker).
	SourceAccept
)

func (s Source) String() string {
	switch s {
	case SourceConnect:
		return "connect"
	case SourceListener:
		return "listener"
	case SourceIO:
		return "io"
	case SourceListen:
		return "listen"
	case SourceAccept:
		return "accept"
	}
	return "unknown"
}

// Record is what the tracker knows of a socket's owner.
type Record struct {
	// PID is the owning process (thread-group) ID.
	PID int
	// StartTicks is the process's start time in clock ticks (USER_HZ)
	// since boot, the value of /proc/<pid>/stat field 22: a recycled PID
	// has a different StartTicks.
	StartTicks uint64
	// StartBoottime is the same start time with nanosecond resolution
	// (task->start_boottime).
	StartBoottime time.Duration
	// Start is StartBoottime as wall-clock time (boot time + offset).
	Start time.Time
	// Comm is the process's command name (at most 15 bytes).
	Comm string
	// Source tells how the owner was learned.
	Source Source
	// NetNS is the inode number of the socket's network namespace.
	NetNS uint32
	// Opened is when this owner's tenure of the socket began, by the
	// kernel's clock: connect, accept, listen, or the first send/receive
	// by this process.
	Opened time.Time
	// Seen is when the tracker last heard of the socket.
	Seen time.Time
	// Closed is when the tenure ended, by the kernel's clock: the TCP
	// connection closed, or another process took the socket over (an
	// accepted connection's worker, a shared UDP socket). Zero while open,
	// and for UDP sockets until another owner is seen.
	Closed time.Time

	sk uint64 // kernel socket address: tells a new socket from an update
	// sockClosed: Closed is the socket's own close by the record's owner,
	// not the end of a tenure (an exit, a hand-over); only such a record
	// may answer an event stamped after it (quietSince).
	sockClosed bool
}

// Stats are the tracker's counters.
type Stats struct {
	Events uint64 // events read from the kernel
	Lost   uint64 // events dropped in the kernel because the ring buffer was full
	// Missed counts BPF program runs the kernel skipped because another BPF
	// program was running on the same CPU (a softirq interrupting one):
	// each may be a lost attribution (or, for inet_sock_set_state and the
	// sched programs, a change counter not bumped). Linux 5.12 and later.
	Missed  uint64
	Evicted uint64 // records evicted by the MaxEntries cap
	// Ambiguous counts lookups left unanswered because network namespaces
	// other than the tracker's own held the tuple with different owners.
	Ambiguous uint64
	Expired   uint64 // records removed after their retention
	// Unsure counts lookups left unanswered because the record that
	// covered the event time was closed and the reader could not show,
	// within its wait bound, that no newer connection was still in the
	// ring buffer.
	Unsure  uint64
	Entries int // records currently held

	// Programs are the attached BPF programs' run counts and run times as
	// the kernel measures them (BPF_ENABLE_STATS, enabled while the
	// tracker runs; zero where the kernel refused it), since they loaded.
	Programs []ProgramStats
	// CPUShare is the programs' total run time over the host's CPU time
	// since the tracker loaded (elapsed time × CPUs): 0.01 is 1 % of the
	// machine. It leaves out the tracepoints' own dispatch.
	CPUShare float64
}

// ProgramStats is one BPF program's cost as the kernel measures it.
type ProgramStats struct {
	Name     string        // attach point, e.g. "tp_btf/inet_sock_set_state"
	RunCount uint64        // runs
	RunTime  time.Duration // total run time (includes the measurement's two clock reads per run)
	Missed   uint64        // runs skipped because another BPF program was running on the CPU
}

// Proto is an IP protocol number; the tracker records TCP and UDP sockets.
type Proto uint8

// The protocols the tracker records.
const (
	TCP Proto = 6
	UDP Proto = 17
)

// key identifies a socket: its protocol, network namespace and endpoints.
// The namespace keeps identical tuples apart (two containers' loopback
// connections between the same ports are different sockets).
type key struct {
	proto         Proto
	netns         uint32
	local, remote netip.AddrPort
}

// Key is the program's name without its attach type ("inet_sock_set_state"
// for "tp_btf/inet_sock_set_state"), for metrics.
func (p ProgramStats) Key() string { return p.Name[strings.LastIndexByte(p.Name, '/')+1:] }

// SumPrograms adds up the statistics of programs of the same name (several
// trackers), sorted by name.
func SumPrograms(ps []ProgramStats) []ProgramStats {
	var out []ProgramStats
	for _, p := range ps {
		i := slices.IndexFunc(out, func(o ProgramStats) bool { return o.Name == p.Name })
		if i < 0 {
			out = append(out, p)
			continue
		}
		out[i].RunCount += p.RunCount
		out[i].RunTime += p.RunTime
		out[i].Missed += p.Missed
	}
	slices.SortFunc(out, func(a, b ProgramStats) int { return strings.Compare(a.Name, b.Name) })
	return out
}
