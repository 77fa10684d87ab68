//go:build linux

package procs

// Whether a trusted process still holds the sockets its fd table listed:
// one readlinkat per socket descriptor, at most every verifyEvery, or when
// the change clock says its descriptors changed.

import (
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// checkedRecently reports whether p's socket descriptors need no re-check
// in this walk: the change clock, where there is one, proves that pid
// closed or replaced no descriptor since the last check; without one, a
// whole-table walk checked them less than verifyEvery ago.
func (e *linuxEngine) checkedRecently(pid int, p *procFds, now time.Time) bool {
	var skip bool
	if e.clock != nil {
		skip = e.clock.ProcEpoch(pid) == p.epoch
	} else {
		skip = e.walkWhole && now.Sub(p.checkedAt) < verifyEvery
	}
	if skip {
		e.stats.verifySkipped++
	}
	return skip
}

func (e *linuxEngine) procEpoch(pid int) uint32 {
	if e.clock == nil {
		return 0
	}
	return e.clock.ProcEpoch(pid)
}

// verify reports whether every descriptor through which p held a socket of
// the current table still refers to that socket: one readlinkat each.
func (e *linuxEngine) verify(procfd, pid int, p *procFds) bool {
	fdfd := -1
	defer func() {
		if fdfd >= 0 {
			unix.Close(fdfd)
		}
	}()
	for j, inode := range p.inodes {
		if _, ok := e.byInode[inode]; !ok {
			continue // not a socket of the table: nobody asks about it
		}
		if fdfd < 0 {
			e.pathBuf = append(append(strconv.AppendInt(e.pathBuf[:0], int64(pid), 10), "/fd"...), 0)
			var err error
			if fdfd, err = openatZ(procfd, e.pathBuf, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC); err != nil {
				return false
			}
		}
		e.pathBuf = append(strconv.AppendInt(e.pathBuf[:0], int64(p.fdNums[j]), 10), 0)
		e.stats.verified++
		e.recheckLeft--
		if got, ok := e.socketInode(fdfd, e.pathBuf); !ok || got != inode {
			e.stats.verifyFailed++
			return false
		}
	}
	return true
}

// maxRechecksPerWalk caps the descriptors one walk re-checks (verifyEvery):
// at ~4 µs a readlinkat, re-checking the 200k sockets of a busy host on one
// walk would take most of a second and push the rescan past
// rescan_timeout. Processes beyond the cap are trusted for this walk and
// come first in the next ones (the others were checked just now), so every
// process is re-checked at least every verifyEvery + (sockets /
// maxRechecksPerWalk) walks. Answers never depend on it: each is verified
// when given (docs/add_network_process.md, "When an answer is given").
const maxRechecksPerWalk = 16384
