//go:build linux

package procs

import (
	"fmt"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// The Linux engine verifies an owner through a directory descriptor of
// /proc/<pid> opened once per process instance: procfs ties it to that
// instance, so once the process exits every read through it fails, even if
// the PID is reused, and one readlinkat of fd/<n> tells whether the
// process still holds the socket at that descriptor.

// PinProcess opens /proc/<pid> and checks, through it, that pid is still
// the instance startKey names.
func (e *linuxEngine) PinProcess(pid int, startKey uint64) (int, error) {
	path := filepath.Join(e.proc, strconv.Itoa(pid))
	dirfd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("pinning process %d: %w", pid, err)
	}
	start, ok := statStartAt(dirfd)
	if !ok || (startKey != 0 && start != startKey) {
		unix.Close(dirfd)
		return -1, fmt.Errorf("pinning process %d: it is not the instance that held the socket (start %d, want %d)", pid, start, startKey)
	}
	return dirfd, nil
}

// statStartAt reads the start time from dirfd's stat with its own buffer:
// pins are taken on the lookup path, without the engine's lock.
func statStartAt(dirfd int) (uint64, bool) {
	fd, err := openatZ(dirfd, statName, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		return 0, false
	}
	defer unix.Close(fd)
	var buf [1024]byte
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, false
		}
		if m == 0 {
			break
		}
		n += m
	}
	start, err := ParseStatStart(buf[:n])
	return start, err == nil
}

// HoldsSocket is one readlinkat of fd/<fd> (task/<task>/fd/<fd> for a
// thread's table) through the pinned directory, compared with
// socket:[<inode>]. It allocates nothing.
func (e *linuxEngine) HoldsSocket(dirfd int, task, fd int32, inode uint64) bool {
	if dirfd < 0 || fd < 0 || inode == 0 {
		return false
	}
	var name [48]byte
	b := append(taskPrefix(name[:0], task), "fd/"...)
	b = strconv.AppendInt(b, int64(fd), 10)
	b = append(b, 0)
	var link [64]byte
	n, err := readlinkatZ(dirfd, b, link[:])
	if err != nil || n <= 0 || n >= len(link) {
		return false
	}
	const prefix = "socket:["
	l := link[:n]
	if len(l) < len(prefix)+2 || string(l[:len(prefix)]) != prefix || l[n-1] != ']' {
		return false
	}
	got, ok := parseDecUint(l[len(prefix) : n-1])
	return ok && got == inode
}

// taskPrefix appends "task/<task>/" for a thread's entry (task > 0) to b:
// the path under /proc/<pid> of the thread whose table was read.
func taskPrefix(b []byte, task int32) []byte {
	if task > 0 {
		b = append(b, "task/"...)
		b = strconv.AppendInt(b, int64(task), 10)
		b = append(b, '/')
	}
	return b
}

// ExecOf is one statx of exe (task/<task>/exe for a thread's entry)
// through the pinned directory: the executable file's device and inode.
// All threads share one program, and a thread's entry still reads once
// the main thread has exited. It allocates nothing.
func (e *linuxEngine) ExecOf(dirfd int, task int32) ExecID {
	if dirfd < 0 {
		return ExecID{}
	}
	var name [40]byte
	b := append(taskPrefix(name[:0], task), "exe\x00"...)
	dev, ino, err := statxInoZ(dirfd, b)
	if err != nil {
		return ExecID{}
	}
	return ExecID{Dev: dev, Ino: ino}
}

// UnpinProcess closes the directory descriptor.
func (e *linuxEngine) UnpinProcess(dirfd int) {
	if dirfd >= 0 {
		unix.Close(dirfd)
	}
}
