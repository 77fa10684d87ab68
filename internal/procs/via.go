package procs

// Via says how the watcher found the owner it answered with, so that an
// analyst can judge the answer (docs/add_network_process.md, "How an answer
// was found"). The zero value is ViaNone: no answer.
type Via uint8

// The ways an owner is found.
const (
	ViaNone Via = iota
	// ViaSocket: the connected socket of the event's exact tuple.
	ViaSocket
	// ViaListener: the listener (or unconnected UDP socket) bound to the
	// event's local endpoint, specific address or wildcard, with no
	// connected socket of the exact tuple in the snapshot.
	ViaListener
	// ViaEndpoint: the one connected socket at the local endpoint, for an
	// event that names no peer.
	ViaEndpoint
	// ViaResolve: the kernel's socket table asked for this one connection
	// (sock_diag exact lookup) before the snapshot had it.
	ViaResolve
	// ViaTracker: the eBPF tracker's record of the connection, whose
	// socket the tracker saw no close of.
	ViaTracker
	// ViaTrackerClosed: the eBPF tracker's record of a connection whose
	// socket was already closed when the event was looked up.
	ViaTrackerClosed
	// ViaNAT: the kernel's connection tracking (conntrack) showed the
	// event's tuple translated (DNAT, SNAT, masquerade), and the owner is
	// that of the translated tuple's socket.
	ViaNAT
)

// String is the value written to the event (found_by).
func (v Via) String() string {
	switch v {
	case ViaSocket:
		return "socket"
	case ViaListener:
		return "listener"
	case ViaEndpoint:
		return "endpoint"
	case ViaResolve:
		return "resolve"
	case ViaTracker, ViaTrackerClosed:
		return "tracker"
	case ViaNAT:
		return "nat"
	}
	return ""
}

// SocketClosed reports whether the answer names the owner of a socket that
// was already closed (a tracker record of a closed connection).
func (v Via) SocketClosed() bool { return v == ViaTrackerClosed }
