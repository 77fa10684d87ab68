//go:build linux

package tracker

// A minimal io_uring client over raw system calls, for the change
// counters' tests: one IORING_OP_CLOSE.

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// io_uring's uapi (include/uapi/linux/io_uring.h).
const (
	ioringOpClose      = 19
	ioringOffSQRing    = 0
	ioringOffCQRing    = 0x8000000
	ioringOffSQEs      = 0x10000000
	ioringEnterGetEvts = 1
)

type ioSQRingOffsets struct {
	Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1 uint32
	UserAddr                                                        uint64
}

type ioCQRingOffsets struct {
	Head, Tail, RingMask, RingEntries, Overflow, CQEs, Flags, Resv1 uint32
	UserAddr                                                        uint64
}

type ioUringParams struct {
	SQEntries, CQEntries, Flags, SQThreadCPU, SQThreadIdle, Features, WQFd uint32
	Resv                                                                   [3]uint32
	SQOff                                                                  ioSQRingOffsets
	CQOff                                                                  ioCQRingOffsets
}

// uringClose closes fd through io_uring (IORING_OP_CLOSE), not close(2),
// and returns the operation's result. The ring's own descriptor is left
// open (closing it would be a close(2) the counters see): the helper
// process exits with it.
func uringClose(fd int) error {
	var p ioUringParams
	rfd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return fmt.Errorf("io_uring_setup: %w", errno)
	}
	ring := int(rfd)
	sq, err := unix.Mmap(ring, ioringOffSQRing, int(p.SQOff.Array+p.SQEntries*4), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("mapping the submission ring: %w", err)
	}
	defer unix.Munmap(sq)
	sqes, err := unix.Mmap(ring, ioringOffSQEs, int(p.SQEntries*64), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("mapping the submission entries: %w", err)
	}
	defer unix.Munmap(sqes)
	cq, err := unix.Mmap(ring, ioringOffCQRing, int(p.CQOff.CQEs+p.CQEntries*16), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("mapping the completion ring: %w", err)
	}
	defer unix.Munmap(cq)

	u32 := func(b []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }
	tail := atomic.LoadUint32(u32(sq, p.SQOff.Tail))
	idx := tail & *u32(sq, p.SQOff.RingMask)
	sqe := sqes[idx*64 : idx*64+64]
	clear(sqe)
	sqe[0] = ioringOpClose
	*(*int32)(unsafe.Pointer(&sqe[4])) = int32(fd)
	*(*uint64)(unsafe.Pointer(&sqe[32])) = 0x22
	*u32(sq, p.SQOff.Array+idx*4) = idx
	atomic.StoreUint32(u32(sq, p.SQOff.Tail), tail+1)
	if _, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(ring), 1, 1, ioringEnterGetEvts, 0, 0); errno != 0 {
		return fmt.Errorf("io_uring_enter: %w", errno)
	}
	head := atomic.LoadUint32(u32(cq, p.CQOff.Head))
	if head == atomic.LoadUint32(u32(cq, p.CQOff.Tail)) {
		return fmt.Errorf("io_uring: no completion")
	}
	ci := head & *u32(cq, p.CQOff.RingMask)
	res := *(*int32)(unsafe.Pointer(&cq[p.CQOff.CQEs+ci*16+8]))
	atomic.StoreUint32(u32(cq, p.CQOff.Head), head+1)
	if res < 0 {
		return fmt.Errorf("IORING_OP_CLOSE of fd %d: %w", fd, unix.Errno(-res))
	}
	return nil
}
