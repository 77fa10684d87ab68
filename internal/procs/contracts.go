package procs

// The contracts between the watcher and what it is built from: the OS
// engine and its optional capabilities, and the owner sources it may be
// given. Optional capabilities are discovered in one place, probeEngine,
// when a watcher is built.

import (
	"context"
	"net/netip"
	"time"
)

// Engine is the OS-specific part of a Watcher: it lists sockets with their
// owners and describes processes. The Watcher owns every caching and refresh
// decision; an engine only reads the system. Tests swap it for a fake.
type Engine interface {
	// Sockets appends every TCP and UDP socket of the host to dst and returns
	// it. The context carries the rescan budget: an engine stops and returns
	// ctx.Err() when it is done.
	Sockets(ctx context.Context, dst []Socket) ([]Socket, error)
	// Process describes the process pid whose identity is startKey. It
	// returns an error if the PID is gone or now names another process.
	Process(pid int, startKey uint64) (*Process, error)
	// LocalAddrs lists the host's interface addresses.
	LocalAddrs() ([]netip.Addr, error)
}

// OwnerVerifier is implemented by engines that can re-check, with one
// system call and no allocation, that a process still holds a socket (the
// Linux engine: readlinkat through a pinned /proc/<pid> directory). The
// watcher verifies every answer it gives from a socket table through it,
// and that the answer's description is of the program the process runs
// (ExecOf: a process that exec'd since it was described is described again);
// engines without it (Windows) are answered from their tables as read.
type OwnerVerifier interface {
	// PinProcess returns a handle on the process instance pid/startKey
	// that fails every later check once that instance has exited, even if
	// the PID is reused; an error if pid no longer names that instance.
	PinProcess(pid int, startKey uint64) (handle int, err error)
	// HoldsSocket reports whether the pinned process holds socket inode at
	// descriptor fd (of thread task when task is not 0).
	HoldsSocket(handle int, task, fd int32, inode uint64) bool
	// ExecOf returns the identity of the executable the pinned process
	// runs now (through thread task's entry when task is not 0), or the
	// zero ExecID if it cannot be read. One system call, no allocation.
	ExecOf(handle int, task int32) ExecID
	// UnpinProcess releases a handle.
	UnpinProcess(handle int)
}

// OwnerSource is a fallback source of socket owners, asked when the
// snapshot has no answer: the eBPF connection tracker (owners remembered
// past the socket's life, so a connection that closed before its event was
// processed still resolves) and NewResolveSource's live single-connection
// lookup. at is the event's time (zero for "now"): a source that remembers
// the past answers with the owner of the socket that had this tuple then.
// sock carries the owner's PID and StartKey; proc is a minimal description
// for when the owner has exited (nil if there is none).
type OwnerSource interface {
	Recall(t Transport, local, remote netip.AddrPort, at time.Time) (sock Socket, proc *Process, ok bool)
}

// ChangeClock reads counters that the kernel bumps whenever a socket bound
// to a local port closes, or a process closes, replaces or re-connects a
// file descriptor, execs or exits (the eBPF tracker keeps them in memory
// shared with the kernel). Reading costs no system call. Equal readings
// before and after prove that nothing of that kind happened in between, so
// an owner verified before is still the owner: see docs/add_network_process.md,
// "When an answer is given". Counters may be shared by several ports or
// PIDs; a collision only costs an extra verification.
type ChangeClock interface {
	PortEpoch(t Transport, port uint16) uint32
	ProcEpoch(pid int) uint32
}

// ForkClock is implemented by a ChangeClock that also counts forks (the
// eBPF tracker's). A walk of descriptor tables finds a socket shared when
// another process holds it too, but a verification only asks whether the
// named process still holds it: a fork after the walk gives the child the
// socket unseen. ForkSeq is read before a walk; a LastFork(pid) newer than
// it means pid forked since, and the walk's answer for pid proves nothing
// about sharing any more. PIDs equal modulo a table size may share a
// reading: a collision costs a walk.
type ForkClock interface {
	ForkSeq() uint32
	LastFork(pid int) uint32
}

// probeForks finds whether c counts forks too.
func probeForks(c ChangeClock) ForkClock {
	f, _ := c.(ForkClock)
	return f
}

// Resolver is implemented by engines that can find the owner of one
// connection without listing every socket (the Linux engine, through a
// sock_diag exact lookup and an owner walk for that one inode).
type Resolver interface {
	Resolve(ctx context.Context, t Transport, local, remote netip.AddrPort) (s Socket, found bool, err error)
	// ResolveHinted is Resolve searching process pid first (the opener
	// that a record names); an engine without such a search may answer
	// it as Resolve.
	ResolveHinted(ctx context.Context, t Transport, local, remote netip.AddrPort, pid int) (Socket, bool, error)
}

// SocketFeed is implemented by a Fallback owner source that records, as it
// happens, every TCP connect, accept and listen and every socket's first
// send or receive on the host (the eBPF tracker), so that a TCP tuple it
// has no record of had no socket opened since it started. (A UDP socket
// has a record only once it has sent or received: UDP misses still
// rescan.)
type SocketFeed interface {
	OwnerSource
	// FeedGaps counts what the source may have missed: events the kernel
	// dropped, records evicted for room, program runs the kernel skipped.
	// While it does not change, the source's records cover every socket
	// opened since it was first read.
	FeedGaps() uint64
	// RecallComplete is Recall telling, for a miss, whether it is
	// complete: the source had applied every event the kernel submitted
	// before the event's time, and it holds no record of the tuple (nor of
	// its local endpoint) at any time. Only a complete miss shows that no
	// socket had the tuple.
	// It waits for the source to catch up no later than deadline (zero:
	// the source's own bound).
	RecallComplete(t Transport, local, remote netip.AddrPort, at, deadline time.Time) (sock Socket, proc *Process, ok, complete bool)
}

// changeClockUser is implemented by engines whose owner walk can save
// re-reading a process's descriptors while the change clock proves them
// unchanged (the Linux engine).
type changeClockUser interface{ setChangeClock(ChangeClock) }

// parentDescriber is implemented by engines that can describe a process's
// parent with it (Process.Parent).
type parentDescriber interface{ setDescribeParents(bool) }

// hostNamespacer is implemented by engines that know the host's network
// namespace (the Linux engine: PID 1's, as of the last rescan; 0 before
// it), so that a source's socket that carries only its namespace (a
// tracker record) can be told the host's or another's.
type hostNamespacer interface{ hostNetNS() uint64 }

// engineCaps is what an engine can do beyond Engine.
type engineCaps struct {
	verifier OwnerVerifier   // nil: answers are given from its tables as read (Windows)
	resolver Resolver        // nil: no single-connection lookup
	clock    changeClockUser // nil: the walk does not use a change clock
	parents  parentDescriber // nil: parents are not described
	hostNS   hostNamespacer  // nil: one namespace (Windows, fakes)
}

// probeEngine finds e's optional capabilities.
func probeEngine(e Engine) engineCaps {
	var c engineCaps
	c.verifier, _ = e.(OwnerVerifier)
	c.resolver, _ = e.(Resolver)
	c.clock, _ = e.(changeClockUser)
	c.parents, _ = e.(parentDescriber)
	c.hostNS, _ = e.(hostNamespacer)
	return c
}
