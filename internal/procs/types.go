package procs

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Transport is an IP protocol number; only TCP and UDP sockets are tracked.
type Transport uint8

// The transports a Watcher resolves.
const (
	TCP Transport = 6
	UDP Transport = 17
)

// String returns the lower-case protocol name used in ECS network.transport.
func (t Transport) String() string {
	switch t {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return "ip-proto-" + strconv.Itoa(int(t))
}

// ErrUnsupported is returned by NewEngine on operating systems without a
// socket-ownership engine. Callers pass events through unenriched.
var ErrUnsupported = errors.New("process lookup for network sockets is not supported on this operating system")

// Socket is one row of the host's socket table with its owner resolved.
type Socket struct {
	Transport Transport
	// Local and Remote are unmapped (IPv4-mapped IPv6 addresses appear in
	// their IPv4 form) so that lookups match either form.
	Local, Remote netip.AddrPort
	// Listen is true for a TCP listener or a UDP socket with no connected
	// peer: the socket that owns Local for any peer.
	Listen bool
	// Inode identifies the socket on Linux; 0 for sockets no file refers
	// to (TIME_WAIT) and on other systems.
	Inode uint64
	// FD is the descriptor number at which PID held the socket when its fd
	// table was read, so that one readlink re-checks the owner (see
	// OwnerVerifier). Task is the thread whose task/<tid>/fd table listed
	// it when the process's own fd/ did not (its main thread exited); 0
	// otherwise.
	FD   int32
	Task int32
	// V6Only tells whether an IPv6 socket refuses IPv4 (IPV6_V6ONLY):
	// known only from sock_diag; text tables leave it V6OnlyUnknown.
	V6Only V6Only
	// PID is a process that holds the socket open (the lowest PID among
	// its holders), 0 if none was found. When Shared is set it is not the
	// answer: see Shared.
	PID int
	// Shared marks a socket that more than one process holds open (a
	// listener inherited by pre-forked workers, a descriptor inherited
	// across fork or passed on and kept). Which of them an event is about
	// is unknown, so such a socket never answers by itself: the watcher
	// gives no answer for it, and a connection accepted from a shared
	// listener is answered by its own socket's holder.
	Shared bool
	// StartKey identifies the PID's process instance (its start time in
	// the engine's own units), so that a recycled PID is never mistaken for
	// the process that held the socket.
	StartKey uint64
	// NetNS is the inode of the socket's network namespace (Linux; 0 when
	// unknown). Foreign marks a namespace other than the host's: where the
	// same endpoint exists in several namespaces, the host's socket wins.
	NetNS   uint64
	Foreign bool
	// Recorded marks a fallback's answer from a record of a socket the
	// source believes still open (the eBPF tracker saw no close). Who
	// opened a live socket is no proof of who holds it now (it may have
	// been passed on), so the watcher asks the kernel for the current
	// holder first.
	Recorded bool

	// forkSeq is the fork clock's reading (ForkClock) before the walk that
	// found this socket's holders; 0 without a fork clock.
	forkSeq uint32
}

// V6Only is an IPv6 socket's IPV6_V6ONLY flag as far as it is known.
type V6Only uint8

// IPV6_V6ONLY states. A [::] socket answers IPv4 events only when it is
// known to be dual-stack (V6OnlyOff).
const (
	V6OnlyUnknown V6Only = iota
	V6OnlyOff
	V6OnlyOn
)

// Process is what the watcher knows of a socket's owner. A *Process is
// immutable once published: readers share it without locks.
type Process struct {
	PID              int
	PPID             int
	Name             string // packetbeat's procName rule: comm, or argv[0]'s base when comm may be truncated
	Args             []string
	Executable       string
	WorkingDirectory string
	Start            time.Time
	UID              string
	UserName         string

	// ContainerID is the container the process runs in (from its cgroup
	// path, as add_process_metadata finds it), "" for none.
	ContainerID string
	// NetNS and Foreign: the process's network namespace, as for Socket.
	NetNS   uint64
	Foreign bool

	// EntityID is Elastic's process.entity_id of this process instance
	// (see EntityID), "" when the host has no unique ID.
	EntityID string
	// Parent describes PPID's process as it was when this process was
	// described, nil when it could not be described as this process's
	// parent (it exited, or its PID names a younger process since).
	Parent *Parent

	// StartKey is the engine's identity token for this PID instance.
	StartKey uint64
	// JoinedArgs is Args joined by spaces, kept so that cmdline_grep
	// matching costs no allocation per event.
	JoinedArgs string

	// described is when the engine read this description (unix
	// nanoseconds; 0 for one no engine read, such as a record's minimal
	// description of a process that has exited): answers re-read a
	// description older than ProcessTTL (gate.go, rule 5).
	described int64

	// exec identifies the program the description was read from (the
	// executable file behind /proc/<pid>/exe, read before the rest), so a
	// verification can tell that the process has since exec'd another
	// program: the zero value when unknown.
	exec ExecID
}

// Parent is what is kept of a process's parent: read once, with the
// process, and immutable like it.
type Parent struct {
	PID        int
	Name       string // the same rule as Process.Name
	Executable string
	Start      time.Time
	EntityID   string
}

// ExecID identifies the executable file a process runs (device and inode
// of the file behind /proc/<pid>/exe on Linux). An exec keeps the PID and
// the start time but changes the program, so a description of the process
// is valid only while the ExecID it was read with still holds. The zero
// value means unknown.
type ExecID struct{ Dev, Ino uint64 }

// procName is packetbeat's naming rule: /proc/<pid>/comm holds at most 15
// bytes (TASK_COMM_LEN-1), so a 15-byte-or-longer comm may be truncated and
// the base name of argv[0] is the better name when there is one.
func procName(comm string, args []string) string {
	if len(comm) < 15 || len(args) == 0 || args[0] == "" {
		return comm
	}
	a := args[0]
	if i := strings.LastIndexByte(a, '/'); i >= 0 && i < len(a)-1 {
		a = a[i+1:]
	}
	return a
}

// PartialError reports a rescan that produced usable results despite a
// fault; the watcher uses the results and logs the error.
type PartialError struct{ Msg string }

func (e *PartialError) Error() string { return e.Msg }
