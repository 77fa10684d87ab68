//go:build !linux

package procs

import (
	"fmt"
	"net/netip"
	"runtime"
)

// NewConntrack returns a Conntrack that reports itself unavailable: only
// Linux's conntrack is read.
func NewConntrack() Conntrack { return noConntrack{} }

type noConntrack struct{}

func (noConntrack) Get(Transport, netip.AddrPort, netip.AddrPort) (ConntrackEntry, bool, error) {
	return ConntrackEntry{}, false, fmt.Errorf("%w on %s", ErrConntrackUnavailable, runtime.GOOS)
}

func (noConntrack) Close() error { return nil }
