//go:build windows

package procs

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"unsafe"

	"github.com/elastic/go-sysinfo"
	"golang.org/x/sys/windows"
)

// The IP Helper entry points, resolved on first use. Lazy procs are the one
// accepted piece of package state: they are immutable once found and safe
// for concurrent use.
var (
	modiphlpapi             = windows.NewLazySystemDLL("iphlpapi.dll")
	procGetExtendedTcpTable = modiphlpapi.NewProc("GetExtendedTcpTable")
	procGetExtendedUdpTable = modiphlpapi.NewProc("GetExtendedUdpTable")
)

const (
	// Table classes from iprtrmib.h: the _ALL TCP class includes listeners,
	// which are what most lookups of server traffic hit.
	tcpTableOwnerPIDAll = 5 // TCP_TABLE_OWNER_PID_ALL
	udpTableOwnerPID    = 1 // UDP_TABLE_OWNER_PID

	// minTableBuf is large enough for a quiet host's tables, so the first
	// scan usually needs no size probe.
	minTableBuf = 16 << 10
	// maxTableBuf bounds the buffer so that a bogus size from the API cannot
	// exhaust memory; it holds millions of rows.
	maxTableBuf = 256 << 20
	// maxTableAttempts bounds the retries when the table grows between the
	// size the API reports and the next call.
	maxTableAttempts = 8

	// systemPID is the kernel's "System" process, which owns sockets such as
	// SMB's but cannot be opened from user mode.
	systemPID = 4
)

// windowsEngine reads the IP Helper socket tables. The tables carry only
// the PID, so Sockets adds each owner's creation time as its StartKey: the
// watcher keys its process cache by PID + StartKey, and a recycled PID must
// not hit the previous process's entry.
type windowsEngine struct {
	scan *winScanner
}

// NewEngine returns the Windows engine. hostPath must name the running
// host's root ("", "/", or either after filepath.Clean, which on Windows
// turns the default "/" into `\` and "" into "."): the IP Helper API only
// ever describes the running host.
func NewEngine(hostPath string) (Engine, error) {
	switch hostPath {
	case "", ".", "/", `\`:
	default:
		return nil, fmt.Errorf("host_path %q is only supported on Linux; remove host_path from the configuration on Windows", hostPath)
	}
	return &windowsEngine{scan: newWinScanner(readWinTable, processStartKey)}, nil
}

// Sockets appends the TCP and UDP tables of both address families to dst.
// It returns within the context's budget even while an IP Helper call is
// still running (see winScanner); on error nothing is appended.
func (e *windowsEngine) Sockets(ctx context.Context, dst []Socket) ([]Socket, error) {
	return e.scan.scan(ctx, dst)
}

// processStartKey returns pid's creation time in 100 ns units since 1601,
// or 0 when the process cannot be opened (System, protected processes, or
// already gone), in which case identity is left to Process.
func processStartKey(pid int) uint64 {
	h, err := windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION, false, uint32(pid))
	if err != nil {
		return 0
	}
	defer windows.CloseHandle(h)
	var creation, exit, kernel, user windows.Filetime
	if err := windows.GetProcessTimes(h, &creation, &exit, &kernel, &user); err != nil {
		return 0
	}
	return uint64(creation.HighDateTime)<<32 | uint64(creation.LowDateTime)
}

// readWinTable fills buf (growing it as the API asks) with table t. It
// returns the table's bytes and the possibly grown buffer for reuse.
func readWinTable(t winTable, buf []byte) (data, grown []byte, err error) {
	proc, family, class := procGetExtendedTcpTable, uint32(windows.AF_INET), uint32(tcpTableOwnerPIDAll)
	switch t {
	case winTCP6:
		family = windows.AF_INET6
	case winUDP4:
		proc, class = procGetExtendedUdpTable, udpTableOwnerPID
	case winUDP6:
		proc, family, class = procGetExtendedUdpTable, windows.AF_INET6, udpTableOwnerPID
	}
	if err := proc.Find(); err != nil {
		return nil, buf, fmt.Errorf("read %v: iphlpapi.dll!%s is unavailable: %w", t, proc.Name, err)
	}
	if len(buf) < minTableBuf {
		buf = make([]byte, minTableBuf)
	}
	for range maxTableAttempts {
		size := uint32(len(buf))
		r, _, _ := syscall.SyscallN(proc.Addr(),
			uintptr(unsafe.Pointer(&buf[0])),
			uintptr(unsafe.Pointer(&size)),
			0, // bOrder: sorting costs time and the watcher indexes rows itself
			uintptr(family),
			uintptr(class),
			0)
		runtime.KeepAlive(buf)
		switch errno := syscall.Errno(r); errno {
		case 0:
			return buf, buf, nil
		case windows.ERROR_INSUFFICIENT_BUFFER:
			if size > maxTableBuf {
				return nil, buf, fmt.Errorf("read %v: %s asks for a %d-byte buffer, over the %d-byte limit; the socket table is implausibly large", t, proc.Name, size, maxTableBuf)
			}
			// Slack for sockets opened before the next call, which would
			// otherwise cost another round trip on a busy host.
			buf = make([]byte, int(size)+int(size)/8+1024)
		case windows.ERROR_NOT_SUPPORTED:
			if family == windows.AF_INET6 {
				// A host with IPv6 removed has no IPv6 table; IPv4 still counts.
				return nil, buf, errNoFamily
			}
			return nil, buf, fmt.Errorf("read %v: %s(AF_INET, class %d) failed: %w", t, proc.Name, class, errno)
		default:
			return nil, buf, fmt.Errorf("read %v: %s(family %d, class %d) failed: %w", t, proc.Name, family, class, errno)
		}
	}
	return nil, buf, fmt.Errorf("read %v: the table kept growing across %d attempts (last buffer %d bytes); the host is opening sockets faster than they can be listed, the next rescan retries", t, maxTableAttempts, len(buf))
}

// Process describes pid through go-sysinfo. startKey 0 (a process Sockets
// could not open) accepts any instance; otherwise the creation time must
// still match, so a PID recycled since the scan is refused.
func (e *windowsEngine) Process(pid int, startKey uint64) (*Process, error) {
	sp, err := sysinfo.Process(pid)
	if err != nil {
		if pid == systemPID {
			// No user-mode process may open System, yet it owns real
			// sockets: name it rather than log a failure every rescan.
			return &Process{PID: systemPID, Name: "System"}, nil
		}
		return nil, fmt.Errorf("open process %d: %w; it has exited or this account lacks the right to query it", pid, err)
	}
	info, err := sp.Info()
	if err != nil {
		return nil, fmt.Errorf("read process %d: %w", pid, err)
	}
	key := processStartKey(pid)
	if startKey != 0 && key != startKey {
		return nil, fmt.Errorf("PID %d was reused by another process (start key %d, want %d)", pid, key, startKey)
	}
	p := &Process{
		PID:              pid,
		PPID:             info.PPID,
		Name:             winProcName(info.Name, info.Exe, info.Args),
		Args:             info.Args,
		Executable:       info.Exe,
		WorkingDirectory: info.CWD,
		Start:            info.StartTime.UTC(),
		StartKey:         key,
		JoinedArgs:       strings.Join(info.Args, " "),
	}
	// UserName stays empty: resolving a SID is an LSA round trip, possibly
	// to a domain controller, too slow for the lookup path.
	if u, err := sp.User(); err == nil {
		p.UID = u.UID
	}
	return p, nil
}

// winProcName is packetbeat's procs' Windows rule (the image's base name), except
// that go-sysinfo reports filepath.Base("") = "." when the image path is
// unreadable, where argv[0] is the better name.
func winProcName(name, exe string, args []string) string {
	if exe != "" {
		return name
	}
	if len(args) > 0 && args[0] != "" {
		return filepath.Base(args[0])
	}
	return ""
}

// LocalAddrs lists the interface addresses, unmapped and without zones, the
// form packet addresses are looked up in.
func (e *windowsEngine) LocalAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list interface addresses: %w", err)
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		var ip net.IP
		switch a := a.(type) {
		case *net.IPNet:
			ip = a.IP
		case *net.IPAddr:
			ip = a.IP
		}
		if x, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, x.Unmap())
		}
	}
	return out, nil
}
