//go:build !linux

package procs

// openFilesLimit is unknown here: engines on this system do not pin
// processes.
func openFilesLimit() uint64 { return 0 }
