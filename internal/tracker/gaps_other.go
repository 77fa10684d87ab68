//go:build !linux

package tracker

// Gaps returns 0 on this operating system.
func (*Tracker) Gaps() uint64 { return 0 }
