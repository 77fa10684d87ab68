//go:build linux

package procs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// openatZ and readlinkatZ take NUL-terminated names, so the walk does not
// allocate a C string per process or per descriptor.
func openatZ(dirfd int, name []byte, flags int) (int, error) {
	r, _, errno := unix.Syscall6(unix.SYS_OPENAT, uintptr(dirfd), uintptr(unsafe.Pointer(&name[0])), uintptr(flags), 0, 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}

func readlinkatZ(dirfd int, name, buf []byte) (int, error) {
	r, _, errno := unix.Syscall6(unix.SYS_READLINKAT, uintptr(dirfd), uintptr(unsafe.Pointer(&name[0])), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

// statxInoZ is statx(2) of a NUL-terminated name relative to dirfd,
// following symlinks (for a /proc magic link such as exe: the file it
// refers to), returning its device and inode. statx is the one stat call
// every Linux architecture has under one number.
func statxInoZ(dirfd int, name []byte) (dev, ino uint64, err error) {
	var st unix.Statx_t
	_, _, errno := unix.Syscall6(unix.SYS_STATX, uintptr(dirfd), uintptr(unsafe.Pointer(&name[0])), 0, uintptr(unix.STATX_INO), uintptr(unsafe.Pointer(&st)), 0)
	if errno != 0 {
		return 0, 0, errno
	}
	return uint64(st.Dev_major)<<32 | uint64(st.Dev_minor), st.Ino, nil
}

// fdReader reads a raw descriptor without os.File's allocation and poller
// registration.
type fdReader int

func (f fdReader) Read(b []byte) (int, error) {
	for {
		n, err := unix.Read(int(f), b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		if n == 0 && len(b) > 0 {
			return 0, io.EOF
		}
		return n, nil
	}
}

// readFile reads path into the engine's reusable buffer.
func (e *linuxEngine) readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return e.readAll(f)
}

func (e *linuxEngine) readAll(r io.Reader) ([]byte, error) {
	b := e.buf[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			e.buf = b
			return nil, err
		}
	}
	e.buf = b
	return b, nil
}

// direntNameOff is the offset of d_name in struct linux_dirent64.
const direntNameOff = 19

var errMalformedDirent = errors.New("malformed directory entry")

// eachDirent reads the directory fd with getdents64 into buf, which it
// reuses, and calls f with each entry's name (NUL-terminated, as openatZ and
// readlinkatZ take it) and d_type. The walk reads raw entries rather than
// os.File.ReadDir so that listing /proc and every fd/ allocates nothing.
func eachDirent(fd int, buf []byte, f func(nameZ []byte, typ byte)) error {
	return eachDirentWhile(fd, buf, func(nameZ []byte, typ byte) bool { f(nameZ, typ); return true })
}

// eachDirentWhile is eachDirent stopping once f returns false.
func eachDirentWhile(fd int, buf []byte, f func(nameZ []byte, typ byte) bool) error {
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return err
		}
		if n <= 0 {
			return nil
		}
		for b := buf[:n]; len(b) >= direntNameOff; {
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < direntNameOff || reclen > len(b) {
				return errMalformedDirent
			}
			name := b[direntNameOff:reclen] // NUL-terminated, then padding
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i+1]
			}
			typ := b[18]
			b = b[reclen:]
			if len(name) > 0 && !f(name, typ) {
				return nil
			}
		}
	}
}
