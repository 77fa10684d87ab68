//go:build linux

package tracker

// Which namespaces the tracker can work from.

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Inode numbers of the initial namespaces (PROC_PID_INIT_INO and
// PROC_CGROUP_INIT_INO in the kernel's include/linux/proc_ns.h): fixed
// since Linux 3.8 and 4.6.
const (
	initPIDNSIno    = 0xEFFFFFFC
	initCgroupNSIno = 0xEFFFFFFB
)

// ErrPIDNamespace is wrapped by New's error when the process runs in a PID
// namespace other than the host's.
var ErrPIDNamespace = errors.New("tracker: running in a PID namespace other than the host's")

// checkPIDNamespace refuses a PID namespace other than the initial one:
// the kernel names processes by their host PIDs in the tracker's records
// and change counters, which mean other processes (or none) inside.
func checkPIDNamespace() error {
	ino, err := nsInode("/proc/self/ns/pid")
	if err != nil {
		return fmt.Errorf("%w? reading /proc/self/ns/pid failed (%v), so the tracker cannot tell whether its records' host PIDs are this process's PIDs: mount this kernel's procfs at /proc", ErrPIDNamespace, err)
	}
	if ino != initPIDNSIno {
		return fmt.Errorf("%w (pid namespace inode %d, the host's is %d): the kernel records host PIDs, which name other processes here; run in the host's PID namespace (Kubernetes hostPID: true, Docker --pid=host) to use the eBPF tracker", ErrPIDNamespace, ino, uint64(initPIDNSIno))
	}
	return nil
}

func nsInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// cgroup2Root returns the mount point of the cgroup v2 hierarchy when it
// shows the host's root cgroup: this process is in the initial cgroup
// namespace, and the mount is of the hierarchy's root.
func cgroup2Root() (string, error) {
	ino, err := nsInode("/proc/self/ns/cgroup")
	if err != nil {
		return "", fmt.Errorf("reading the cgroup namespace: %w", err)
	}
	if ino != initCgroupNSIno {
		return "", fmt.Errorf("in a cgroup namespace other than the host's (inode %d): its root cgroup is not the host's", ino)
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options ... - fstype source superopts
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(fields) || len(fields) < 5 {
			continue
		}
		if fields[sep+1] == "cgroup2" && fields[3] == "/" {
			return unescapeMount(fields[4]), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", errors.New("no cgroup v2 hierarchy is mounted at its root")
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range []byte(s[i+1 : i+4]) {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + c - '0'
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
