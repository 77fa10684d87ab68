//go:build linux

package tracker

// Change counters: two BPF array maps the kernel bumps (bpf/tracker.bpf.c,
// port_epoch and pid_epoch), mapped read-only into this process so that a
// reading costs an atomic load and no system call.

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Sizes of the counter maps (PORT_EPOCH_ENTRIES, PID_EPOCH_ENTRIES).
const (
	portEpochEntries = 2 * 65536
	pidEpochEntries  = 65536
)

// Strides of the array maps' values in uint32s: the kernel rounds a
// value's size up to 8 bytes. port_epoch and fork_clock hold one uint32,
// pid_epoch four (epoch, unusable, last_fork, pad).
const (
	slot    = 2
	pidSlot = 4
)

// tracefsPath is where classic tracepoints are listed; cilium/ebpf reads a
// tracepoint's ID there (or under /sys/kernel/debug/tracing).
const tracefsPath = "/sys/kernel/tracing"

// Epochs reads the kernel's change counters. A reading that did not move
// between two calls proves that nothing of its kind happened in between:
//
//   - Port(TCP, p) moves when a TCP socket bound to local port p (a
//     connection or a listener, tracked or not) goes to CLOSE. UDP ports
//     have no counter (no release hook without kprobes): Port(UDP, p) is
//     constant while the tracker runs.
//   - PID(pid) moves when that process (or one whose PID is equal modulo
//     65536) calls close, close_range, dup2, dup3 or connect, execs, or when
//     one of its threads exits.
//   - ForkSeq() counts forks of new processes; LastFork(pid) is its reading
//     at that process's (or one with a PID equal modulo 65536) latest fork.
//     A LastFork newer than a ForkSeq read before a walk of descriptor
//     tables means the process forked after the walk: its child may hold
//     any socket the walk found the parent alone holding.
//
// Not covered: descriptors closed by io_uring (IORING_OP_CLOSE), and
// descriptor tables shared between processes (clone CLONE_FILES without
// CLONE_THREAD) where another process closes. After the tracker is closed
// every reading differs from the previous one, so nothing is proven any
// more. Safe for concurrent use; reading costs no system call.
type Epochs struct {
	// Read-only shared mappings of the BPF maps. An array map's elements
	// are 8-byte aligned: counter i is the first uint32 of slot i.
	port, pid, fork []uint32
	maps            [][]byte // what to unmap once unreachable
	closed          *atomic.Bool
	tick            atomic.Uint32
}

// Port returns the counter of local port port of transport p.
func (e *Epochs) Port(p Proto, port uint16) uint32 {
	if e.closed.Load() {
		return e.fresh()
	}
	i := int(port)
	if p == UDP {
		i += 65536
	}
	return atomic.LoadUint32(&e.port[i*slot]) &^ freshBit
}

// PID returns the counter of process pid. While the kernel marks the
// counter unusable for pid's slot (the process is exiting, or a process of
// the slot closed a descriptor through io_uring or shares its descriptor
// table with another process), every reading differs from the previous one.
func (e *Epochs) PID(pid int) uint32 {
	if e.closed.Load() {
		return e.fresh()
	}
	i := int(uint32(pid)%pidEpochEntries) * pidSlot
	// The unusable flag is read after the epoch: a flag set after the
	// epoch was read comes with an epoch bump of its own.
	v := atomic.LoadUint32(&e.pid[i])
	if atomic.LoadUint32(&e.pid[i+1]) != 0 {
		return e.fresh()
	}
	return v &^ freshBit
}

// ForkSeq returns the fork clock: how many new processes were forked
// since the tracker loaded (0 once it is closed).
func (e *Epochs) ForkSeq() uint32 {
	if e.closed.Load() {
		return 0
	}
	return atomic.LoadUint32(&e.fork[0])
}

// LastFork returns the fork clock's reading at pid's latest fork of a new
// process (0 if none since the tracker loaded). Once the tracker is closed
// it is newer than any ForkSeq reading: nothing is proven any more.
func (e *Epochs) LastFork(pid int) uint32 {
	if e.closed.Load() {
		return 1 << 30
	}
	return atomic.LoadUint32(&e.pid[int(uint32(pid)%pidEpochEntries)*pidSlot+2])
}

// freshBit is set in readings that prove nothing and clear in counter
// readings, so that no reading of either kind equals one of the other.
const freshBit = 1 << 31

// fresh returns a reading equal to no other reading (until 2^31 of them).
func (e *Epochs) fresh() uint32 { return freshBit | e.tick.Add(1) }

// mapEpochs maps the counter maps read-only. The mappings keep the
// kernel maps alive after their descriptors are closed, and are released
// when the Epochs becomes unreachable, so a reader racing Close never
// touches unmapped memory.
func mapEpochs(port, pid, fork *ebpf.Map, closed *atomic.Bool) (*Epochs, error) {
	e := &Epochs{closed: closed}
	for _, m := range []struct {
		m      *ebpf.Map
		n      int
		stride int
		dst    *[]uint32
	}{{port, portEpochEntries, slot, &e.port}, {pid, pidEpochEntries, pidSlot, &e.pid}, {fork, 1, slot, &e.fork}} {
		size := m.n * m.stride * 4
		if size < os.Getpagesize() {
			size = os.Getpagesize()
		}
		b, err := unix.Mmap(m.m.FD(), 0, size, unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			for _, b := range e.maps {
				_ = unix.Munmap(b)
			}
			return nil, fmt.Errorf("mapping a counter map: %w", err)
		}
		e.maps = append(e.maps, b)
		*m.dst = unsafe.Slice((*uint32)(unsafe.Pointer(&b[0])), m.n*m.stride)
	}
	runtime.AddCleanup(e, func(maps [][]byte) {
		for _, b := range maps {
			_ = unix.Munmap(b)
		}
	}, e.maps)
	return e, nil
}

// attachEpochs attaches the programs that bump pid_epoch (port_epoch is
// bumped by inet_sock_set_state, attached in New) and maps the counters.
// The syscall tracepoints are classic tracepoints, found through tracefs:
// it is mounted at /sys/kernel/tracing when neither it nor debugfs' copy is.
func (t *Tracker) attachEpochs() (*Epochs, error) {
	if err := ensureTracefs(); err != nil {
		return nil, err
	}
	if err := t.attachEpochLinks(); err != nil {
		return nil, err
	}
	return mapEpochs(t.objs.PortEpoch, t.objs.PidEpoch, t.objs.ForkClock, &t.closed)
}

// attachEpochLinks attaches the programs that bump pid_epoch (sys_exit_connect,
// attached by attachSockets, bumps it too).
func (t *Tracker) attachEpochLinks() error {
	for _, p := range []attached{
		{"sys_exit_close", t.objs.SysExitClose},
		{"sys_exit_close_range", t.objs.SysExitCloseRange},
		{"sys_exit_dup2", t.objs.SysExitDup2},
		{"sys_exit_dup3", t.objs.SysExitDup3},
	} {
		if err := t.attachSyscall(p.name, p.prog); err != nil {
			return err
		}
	}
	for _, p := range []attached{
		{"tp_btf/sched_process_exec", t.objs.SchedProcessExec},
		{"tp_btf/sched_process_exit", t.objs.SchedProcessExit},
		{"tp_btf/sched_process_free", t.objs.SchedProcessFree},
		{"tp_btf/sched_process_fork", t.objs.SchedProcessFork},
		{"tp_btf/io_uring_submit_req", t.objs.IoUringSubmitReq},
	} {
		if err := t.attachTracing(p.name, p.prog); err != nil {
			return err
		}
	}
	return nil
}

// ensureTracefs mounts tracefs at /sys/kernel/tracing unless tracefs (or
// debugfs' tracing directory) is already there.
func ensureTracefs() error {
	for _, p := range []string{tracefsPath, "/sys/kernel/debug/tracing"} {
		if _, err := os.Stat(p + "/events"); err == nil {
			return nil
		}
	}
	if err := unix.Mount("tracefs", tracefsPath, "tracefs", 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("tracefs is not mounted and mounting it at %s failed (mount it, or run as root): %w", tracefsPath, err)
	}
	return nil
}

// Epochs returns the kernel's change counters, or nil when they are
// unavailable (the syscall tracepoints could not be attached: no tracefs,
// or a kernel without CONFIG_FTRACE_SYSCALLS); the tracker works without
// them.
func (t *Tracker) Epochs() *Epochs { return t.epochs }

// EpochsErr tells why Epochs is nil (nil when the counters are available).
func (t *Tracker) EpochsErr() error { return t.epochsErr }
