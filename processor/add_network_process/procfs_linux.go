//go:build linux

package add_network_process

import "golang.org/x/sys/unix"

// isProcfs reports whether path is a mounted procfs (not a directory tree
// that merely looks like one).
func isProcfs(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.PROC_SUPER_MAGIC
}
