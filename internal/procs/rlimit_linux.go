//go:build linux

package procs

import "golang.org/x/sys/unix"

// openFilesLimit is the process's soft RLIMIT_NOFILE, 0 if unknown.
func openFilesLimit() uint64 {
	var r unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &r) != nil || r.Cur == unix.RLIM_INFINITY {
		return 0
	}
	return r.Cur
}
