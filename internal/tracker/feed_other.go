//go:build !linux

package tracker

import (
	"net/netip"
	"time"
)

// Gaps returns 0 on this operating system.
func (*Tracker) Gaps() uint64 { return 0 }

// LookupComplete never finds anything on this operating system.
func (*Tracker) LookupComplete(Proto, netip.AddrPort, netip.AddrPort, time.Time) (Record, bool, bool) {
	return Record{}, false, false
}

// LookupCompleteBy never finds anything on this operating system.
func (*Tracker) LookupCompleteBy(time.Time, Proto, netip.AddrPort, netip.AddrPort, time.Time) (Record, bool, bool) {
	return Record{}, false, false
}
