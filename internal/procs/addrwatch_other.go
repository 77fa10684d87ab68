//go:build !linux

package procs

// addrWatch: address change events are followed on Linux only; elsewhere
// the address timer re-lists them.
type addrWatch struct{}

func (w *Watcher) startAddrWatch() {}
func (w *Watcher) stopAddrWatch()  {}
