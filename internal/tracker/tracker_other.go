//go:build !linux

package tracker

import (
	"net/netip"
	"time"
)

// Tracker is unavailable on this operating system.
type Tracker struct{}

// New returns ErrUnsupported on this operating system.
func New(Options) (*Tracker, error) { return nil, ErrUnsupported }

// Lookup never finds anything on this operating system.
func (*Tracker) Lookup(Proto, netip.AddrPort, netip.AddrPort) (Record, bool) {
	return Record{}, false
}

// LookupSync never finds anything on this operating system.
func (*Tracker) LookupSync(Proto, netip.AddrPort, netip.AddrPort) (Record, bool) {
	return Record{}, false
}

// LookupAt never finds anything on this operating system.
func (*Tracker) LookupAt(Proto, netip.AddrPort, netip.AddrPort, time.Time) (Record, bool) {
	return Record{}, false
}

// Epochs is unavailable on this operating system.
type Epochs struct{}

// Port returns 0 on this operating system.
func (*Epochs) Port(Proto, uint16) uint32 { return 0 }

// PID returns 0 on this operating system.
func (*Epochs) PID(int) uint32 { return 0 }

// ForkSeq returns 0 on this operating system.
func (*Epochs) ForkSeq() uint32 { return 0 }

// LastFork returns 0 on this operating system.
func (*Epochs) LastFork(int) uint32 { return 0 }

// Epochs returns nil on this operating system.
func (*Tracker) Epochs() *Epochs { return nil }

// EpochsErr returns ErrUnsupported on this operating system.
func (*Tracker) EpochsErr() error { return ErrUnsupported }

// Stats returns zero counters on this operating system.
func (*Tracker) Stats() Stats { return Stats{} }

// Close does nothing on this operating system.
func (*Tracker) Close() error { return nil }

// LookupBy never finds anything on this operating system.
func (*Tracker) LookupBy(time.Time, Proto, netip.AddrPort, netip.AddrPort, time.Time) (Record, bool) {
	return Record{}, false
}
