//go:build !linux

package tracker

import "net/netip"

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

// Stats returns zero counters on this operating system.
func (*Tracker) Stats() Stats { return Stats{} }

// Close does nothing on this operating system.
func (*Tracker) Close() error { return nil }
