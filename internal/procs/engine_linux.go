//go:build linux

package procs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/elastic/go-sysinfo"
	"golang.org/x/sys/unix"
)

// linuxEngine reads <root>/proc: socket tables from proc/net, owners from
// proc/<pid>/fd, details through go-sysinfo (which honours the host FS
// root). It keeps reusable buffers, so one rescan allocates little beyond
// the directory listings.
type linuxEngine struct {
	root string // host_path
	proc string // root/proc

	mu      sync.Mutex // one Sockets call at a time owns the buffers
	buf     []byte
	linkBuf []byte
	byInode map[uint64]int
	pids    []int

	users passwdCache
}

// NewEngine returns the engine for host_path root ("" or "/" for this host).
// It fails if root/proc/net/tcp cannot be read, naming the path, so a wrong
// host_path is reported at startup instead of as silent misses.
func NewEngine(root string) (Engine, error) {
	if root == "" {
		root = "/"
	}
	e := &linuxEngine{
		root:    root,
		proc:    filepath.Join(root, "proc"),
		buf:     make([]byte, 0, 64<<10),
		linkBuf: make([]byte, 256),
		byInode: map[uint64]int{},
		users:   passwdCache{path: filepath.Join(root, "etc", "passwd")},
	}
	if _, err := os.Stat(filepath.Join(e.proc, "net", "tcp")); err != nil {
		return nil, fmt.Errorf("host_path %q: cannot read the socket table: %w (set host_path to the directory that holds the host's proc/)", root, err)
	}
	return e, nil
}

var procNetFiles = []struct {
	name     string
	t        Transport
	optional bool // IPv6 tables are absent when IPv6 is disabled
}{
	{"tcp", TCP, false},
	{"tcp6", TCP, true},
	{"udp", UDP, false},
	{"udp6", UDP, true},
}

func (e *linuxEngine) Sockets(ctx context.Context, dst []Socket) ([]Socket, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var bad int
	for _, f := range procNetFiles {
		path := filepath.Join(e.proc, "net", f.name)
		data, err := e.readFile(path)
		if err != nil {
			if f.optional && errors.Is(err, os.ErrNotExist) {
				continue
			}
			return dst, fmt.Errorf("reading %s: %w", path, err)
		}
		var n int
		dst, n = ParseProcNet(data, f.t, dst)
		bad += n
	}

	clear(e.byInode)
	for i := range dst {
		if dst[i].Inode != 0 {
			e.byInode[dst[i].Inode] = i
		}
	}
	if err := e.resolveOwners(ctx, dst); err != nil {
		return dst, err
	}
	if bad > 0 {
		return dst, &PartialError{Msg: fmt.Sprintf("%d malformed rows skipped in %s/net tables", bad, e.proc)}
	}
	return dst, nil
}

// resolveOwners walks proc/<pid>/fd in ascending PID order so the first
// holder found is the lowest PID, and stops once every inode has an owner.
func (e *linuxEngine) resolveOwners(ctx context.Context, socks []Socket) error {
	want := len(e.byInode)
	if want == 0 {
		return nil
	}
	pids, err := e.listPIDs()
	if err != nil {
		return err
	}
	found := 0
	for _, pid := range pids {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("rescan budget exhausted after resolving %d of %d sockets: %w", found, want, err)
		}
		found += e.scanPID(pid, socks)
		if found >= want {
			break
		}
	}
	return nil
}

func (e *linuxEngine) listPIDs() ([]int, error) {
	d, err := os.Open(e.proc)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", e.proc, err)
	}
	e.pids = e.pids[:0]
	for _, n := range names {
		if pid, err := strconv.Atoi(n); err == nil && pid > 0 {
			e.pids = append(e.pids, pid)
		}
	}
	slices.Sort(e.pids)
	return e.pids, nil
}

// scanPID records pid as the owner of the wanted sockets it holds and
// returns how many it newly owned. Processes that exit or whose fds cannot
// be read are skipped: their sockets stay unowned rather than guessed.
func (e *linuxEngine) scanPID(pid int, socks []Socket) int {
	dir := filepath.Join(e.proc, strconv.Itoa(pid))
	// Opening the directory pins this process instance: if the PID exits
	// and is reused, reads through dirfd fail instead of describing the
	// newcomer, so stat and fd always belong to the same process.
	dirfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0
	}
	defer unix.Close(dirfd)
	start, ok := e.startKeyAt(dirfd)
	if !ok {
		return 0
	}
	fdfd, err := unix.Openat(dirfd, "fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0
	}
	fdDir := os.NewFile(uintptr(fdfd), dir+"/fd")
	defer fdDir.Close()
	names, err := fdDir.Readdirnames(-1)
	if err != nil {
		return 0
	}
	n := 0
	for _, name := range names {
		inode, ok := e.socketInode(fdfd, name)
		if !ok {
			continue
		}
		i, ok := e.byInode[inode]
		if !ok || socks[i].PID != 0 {
			continue
		}
		socks[i].PID = pid
		socks[i].StartKey = start
		n++
	}
	return n
}

func (e *linuxEngine) socketInode(dirfd int, name string) (uint64, bool) {
	n, err := unix.Readlinkat(dirfd, name, e.linkBuf)
	if err != nil || n <= 0 {
		return 0, false
	}
	link := e.linkBuf[:n]
	const prefix = "socket:["
	if len(link) < len(prefix)+2 || string(link[:len(prefix)]) != prefix || link[n-1] != ']' {
		return 0, false
	}
	return parseDecUint(link[len(prefix) : n-1])
}

func (e *linuxEngine) startKeyAt(dirfd int) (uint64, bool) {
	fd, err := unix.Openat(dirfd, "stat", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, false
	}
	f := os.NewFile(uintptr(fd), "stat")
	defer f.Close()
	data, err := e.readAll(f)
	if err != nil {
		return 0, false
	}
	_, _, start, err := ParseStatStart(data)
	return start, err == nil
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

func (e *linuxEngine) Process(pid int, startKey uint64) (*Process, error) {
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
	}
	if u, err := sp.User(); err == nil {
		p.UID = u.UID
		p.UserName = e.users.name(u.UID)
	}
	// go-sysinfo read the files by path, not through a pinned dirfd: check
	// the PID still names the same process instance afterwards.
	stat, err := os.ReadFile(filepath.Join(e.proc, strconv.Itoa(pid), "stat"))
	if err != nil {
		return nil, err
	}
	if _, _, now, err := ParseStatStart(stat); err != nil || (startKey != 0 && now != startKey) {
		return nil, fmt.Errorf("PID %d was reused by another process during the read (start %d, want %d)", pid, now, startKey)
	}
	return p, nil
}

func (e *linuxEngine) LocalAddrs() ([]netip.Addr, error) {
	var out []netip.Addr
	var errs []error
	for _, f := range []struct {
		name  string
		parse func(io.Reader) ([]netip.Addr, error)
	}{{"fib_trie", ParseFibTrie}, {"if_inet6", ParseIfInet6}} {
		path := filepath.Join(e.proc, "net", f.name)
		fh, err := os.Open(path)
		if err != nil {
			if f.name == "if_inet6" && errors.Is(err, os.ErrNotExist) {
				continue // IPv6 disabled
			}
			errs = append(errs, err)
			continue
		}
		addrs, err := f.parse(fh)
		fh.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("parsing %s: %w", path, err))
		}
		out = append(out, addrs...)
	}
	return out, errors.Join(errs...)
}

// passwdCache maps UIDs to user names from the host's etc/passwd, re-read
// when the file changes. A missing file just leaves user.name empty.
type passwdCache struct {
	path  string
	mu    sync.Mutex
	mtime int64
	size  int64
	names map[string]string
}

func (c *passwdCache) name(uid string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	fi, err := os.Stat(c.path)
	if err != nil {
		return ""
	}
	if c.names == nil || fi.ModTime().UnixNano() != c.mtime || fi.Size() != c.size {
		f, err := os.Open(c.path)
		if err != nil {
			return ""
		}
		c.names = parsePasswd(f)
		f.Close()
		c.mtime, c.size = fi.ModTime().UnixNano(), fi.Size()
	}
	return c.names[uid]
}

func parsePasswd(r io.Reader) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := bytes.SplitN(sc.Bytes(), []byte(":"), 4)
		if len(f) < 3 || len(f[0]) == 0 || f[0][0] == '#' {
			continue
		}
		if _, dup := m[string(f[2])]; !dup {
			m[string(f[2])] = string(f[0])
		}
	}
	return m
}
