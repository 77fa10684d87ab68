//go:build linux

package procs

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/elastic/go-sysinfo"
	sysinfolinux "github.com/elastic/go-sysinfo/providers/linux"
	"golang.org/x/sys/unix"
)

func (e *linuxEngine) Process(pid int, startKey uint64) (*Process, error) {
	// The program's identity is read before the rest: an exec in between
	// leaves a description newer than its identity, which the next
	// verification finds stale and reads again (never the other way round,
	// an old description passing as the new program's).
	exec := e.execOf(pid)
	sp, err := sysinfo.Process(pid, sysinfo.WithHostFS(e.root))
	if err != nil {
		return nil, err
	}
	info, err := sp.Info()
	if err != nil {
		return nil, err
	}
	p := &Process{
		PID:              info.PID,
		PPID:             info.PPID,
		Name:             procName(info.Name, info.Args),
		Args:             info.Args,
		Executable:       info.Exe,
		WorkingDirectory: info.CWD,
		Start:            info.StartTime.UTC(),
		StartKey:         startKey,
		JoinedArgs:       strings.Join(info.Args, " "),
		exec:             exec,
	}
	if u, err := sp.User(); err == nil {
		p.UID = u.UID
		p.UserName = e.users.name(u.UID)
	}
	p.ContainerID = e.containerID(pid)
	p.NetNS, p.Foreign = e.processNS(pid)
	p.EntityID = EntityID(e.hostID(), pid, info.StartTime)
	parent, parentTicks := e.parent(info.PPID)
	// go-sysinfo read the files by path, not through a pinned dirfd: check
	// the PID still names the same process instance afterwards.
	stat, err := os.ReadFile(filepath.Join(e.proc, strconv.Itoa(pid), "stat"))
	if err != nil {
		return nil, err
	}
	now, err := ParseStatStart(stat)
	if err != nil || (startKey != 0 && now != startKey) {
		return nil, fmt.Errorf("PID %d was reused by another process during the read (start %d, want %d)", pid, now, startKey)
	}
	// The parent is kept only if it is still this process's parent after
	// it was read (not reparented meanwhile) and started no later than
	// this process: a PPID whose process exited and whose number now names
	// a younger process is not the parent, and a guess is worse than
	// nothing.
	if ppid, err := parseStatPPID(stat); parent != nil && err == nil && ppid == info.PPID && parentTicks <= now {
		p.Parent = parent
	}
	return p, nil
}

// machineID is the host's unique ID as go-sysinfo's Host().Info().UniqueID
// reads it (the machine-id file under root), "" when there is none.
func machineID(root string) string {
	id, err := sysinfolinux.MachineIDHostfs(root)
	if err != nil {
		return ""
	}
	return id
}

// execOf reads the identity of pid's executable by path: exe, or, when
// the main thread has exited (its exe no longer reads), a live thread's.
func (e *linuxEngine) execOf(pid int) ExecID {
	dir := filepath.Join(e.proc, strconv.Itoa(pid))
	var st unix.Statx_t
	if unix.Statx(unix.AT_FDCWD, filepath.Join(dir, "exe"), 0, unix.STATX_INO, &st) == nil {
		return ExecID{Dev: uint64(st.Dev_major)<<32 | uint64(st.Dev_minor), Ino: st.Ino}
	}
	tasks, err := os.ReadDir(filepath.Join(dir, "task"))
	if err != nil {
		return ExecID{}
	}
	for _, t := range tasks {
		if unix.Statx(unix.AT_FDCWD, filepath.Join(dir, "task", t.Name(), "exe"), 0, unix.STATX_INO, &st) == nil {
			return ExecID{Dev: uint64(st.Dev_major)<<32 | uint64(st.Dev_minor), Ino: st.Ino}
		}
	}
	return ExecID{}
}

// processNS returns pid's namespace and whether it is foreign, as of the
// last rescan's host namespace.
func (e *linuxEngine) processNS(pid int) (uint64, bool) {
	var buf [64]byte
	id := uint64(0)
	if n, err := unix.Readlink(filepath.Join(e.proc, strconv.Itoa(pid), "ns", "net"), buf[:]); err == nil && n > 0 {
		id = parseNSLink(buf[:n])
	}
	own, host := e.ns.ownAt.Load(), e.ns.hostAt.Load()
	if id == 0 {
		id = own
	}
	return id, id != 0 && id != host
}

// containerID reads pid's cgroup file for a container ID.
func (e *linuxEngine) containerID(pid int) string {
	f, err := os.Open(filepath.Join(e.proc, strconv.Itoa(pid), "cgroup"))
	if err != nil {
		return ""
	}
	defer f.Close()
	id, _ := ParseCgroupContainerID(f)
	return id
}
