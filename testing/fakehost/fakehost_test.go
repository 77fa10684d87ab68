package fakehost

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/elastic/go-sysinfo"
	"github.com/prometheus/procfs"
)

// testHost is the host every test here materialises. It keeps the default
// boot time because go-sysinfo caches the first boot time it reads.
const testHost = `
addresses: [10.1.2.3, "fd00::2", "fe80::1"]
users: {1000: alice}
sockets:
  - {proto: tcp, local: "127.0.0.1:80", inode: 12345}
  - {proto: tcp, local: "10.1.2.3:443", remote: "10.9.9.9:50000", inode: 12346, uid: 1000}
  - {proto: tcp, local: "10.1.2.3:443", remote: "10.9.9.8:50001", state: TIME_WAIT}
  - {proto: tcp6, local: "[::]:22", inode: 200}
  - {proto: tcp6, local: "127.0.0.1:8080", remote: "127.0.0.1:40000", inode: 201}
  - {proto: tcp, local: "[::ffff:10.0.0.1]:81", inode: 202}
  - {proto: tcp, local: "[fd00::2]:443", remote: "[2001:db8::7]:1234", state: SYN_RECV, inode: 203}
  - {proto: udp, local: "0.0.0.0:53", inode: 300}
  - {proto: udp, local: "10.1.2.3:5353", remote: "10.1.2.4:5353", inode: 301}
  - {proto: udp6, local: "[::1]:123", inode: 400}
processes:
  - {pid: 1, ppid: 0, comm: systemd, args: [/sbin/init, splash], exe: /usr/lib/systemd/systemd, cwd: /, start_ticks: 1}
  - pid: 4242
    ppid: 1
    comm: nginx
    args: ["nginx: worker process"]
    exe: /usr/sbin/nginx
    cwd: /var/www
    start_ticks: 123456
    uid: 1000
    sockets: [12345, 12346]
  - {pid: 77, ppid: 1, comm: a-very-long-process-name, args: [/opt/x/a-very-long-process-name, -v], start_ticks: 250}
  - {pid: 88, ppid: 1, comm: hidden, unreadable_fd: true}
`

// materialise loads testHost from a file, as callers do, and writes it
// into a fresh directory.
func materialise(t *testing.T) (*Host, string) {
	t.Helper()
	dir := t.TempDir()
	yml := filepath.Join(dir, "host.yml")
	if err := os.WriteFile(yml, []byte(testHost), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := Load(yml)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	if err := h.Write(root); err != nil {
		t.Fatal(err)
	}
	return h, root
}

func TestSysinfoProcess(t *testing.T) {
	h, root := materialise(t)
	boot := time.Unix(DefaultBootTime, 0)
	tests := []struct {
		pid                 int
		name, exe, cwd, uid string
		ppid                int
		args                []string
		start               time.Time
	}{
		{pid: 1, name: "systemd", ppid: 0, args: []string{"/sbin/init", "splash"}, exe: "/usr/lib/systemd/systemd", cwd: "/", uid: "0",
			start: boot.Add(10 * time.Millisecond)},
		{pid: 4242, name: "nginx", ppid: 1, args: []string{"nginx: worker process"}, exe: "/usr/sbin/nginx", cwd: "/var/www", uid: "1000",
			start: boot.Add(1234*time.Second + 560*time.Millisecond)},
		// The kernel keeps 15 bytes of comm; no exe or cwd link reads as "".
		{pid: 77, name: "a-very-long-pro", ppid: 1, args: []string{"/opt/x/a-very-long-process-name", "-v"}, uid: "0",
			start: boot.Add(2500 * time.Millisecond)},
		// No args: cmdline is empty, as for a kernel thread.
		{pid: 88, name: "hidden", ppid: 1, uid: "0", start: boot},
	}
	if h.BootTime != DefaultBootTime {
		t.Fatalf("BootTime = %d, want default %d", h.BootTime, DefaultBootTime)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := sysinfo.Process(tc.pid, sysinfo.WithHostFS(root))
			if err != nil {
				t.Fatal(err)
			}
			info, err := p.Info()
			if err != nil {
				t.Fatal(err)
			}
			if info.Name != tc.name || info.PID != tc.pid || info.PPID != tc.ppid || info.Exe != tc.exe || info.CWD != tc.cwd {
				t.Errorf("Info() = %+v, want name %q pid %d ppid %d exe %q cwd %q", info, tc.name, tc.pid, tc.ppid, tc.exe, tc.cwd)
			}
			if len(info.Args) != 0 || len(tc.args) != 0 {
				if !slices.Equal(info.Args, tc.args) {
					t.Errorf("Args = %q, want %q", info.Args, tc.args)
				}
			}
			if !info.StartTime.Equal(tc.start) {
				t.Errorf("StartTime = %v, want %v", info.StartTime, tc.start)
			}
			u, err := p.User()
			if err != nil {
				t.Fatal(err)
			}
			if u.UID != tc.uid || u.EUID != tc.uid {
				t.Errorf("User() = %+v, want uid %s", u, tc.uid)
			}
		})
	}
}

func TestProcfsSocketTables(t *testing.T) {
	_, root := materialise(t)
	fs, err := procfs.NewFS(filepath.Join(root, "proc"))
	if err != nil {
		t.Fatal(err)
	}
	type sock struct {
		Local, Remote netip.AddrPort
		St            uint64
		Inode, UID    uint64
	}
	ap := netip.MustParseAddrPort
	tests := []struct {
		table string
		read  func() (procfs.NetTCP, error)
		want  []sock
	}{
		{"tcp", fs.NetTCP, []sock{
			{ap("127.0.0.1:80"), ap("0.0.0.0:0"), 0x0A, 12345, 0},
			{ap("10.1.2.3:443"), ap("10.9.9.9:50000"), 0x01, 12346, 1000},
			{ap("10.1.2.3:443"), ap("10.9.9.8:50001"), 0x06, 0, 0},
		}},
		{"tcp6", fs.NetTCP6, []sock{
			{ap("[::]:22"), ap("[::]:0"), 0x0A, 200, 0},
			// IPv4 endpoints of an AF_INET6 socket are written IPv4-mapped.
			{ap("[::ffff:127.0.0.1]:8080"), ap("[::ffff:127.0.0.1]:40000"), 0x01, 201, 0},
			{ap("[::ffff:10.0.0.1]:81"), ap("[::]:0"), 0x0A, 202, 0},
			{ap("[fd00::2]:443"), ap("[2001:db8::7]:1234"), 0x03, 203, 0},
		}},
		{"udp", func() (procfs.NetTCP, error) { u, err := fs.NetUDP(); return procfs.NetTCP(u), err }, []sock{
			{ap("0.0.0.0:53"), ap("0.0.0.0:0"), 0x07, 300, 0},
			{ap("10.1.2.3:5353"), ap("10.1.2.4:5353"), 0x01, 301, 0},
		}},
		{"udp6", func() (procfs.NetTCP, error) { u, err := fs.NetUDP6(); return procfs.NetTCP(u), err }, []sock{
			{ap("[::1]:123"), ap("[::]:0"), 0x07, 400, 0},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.table, func(t *testing.T) {
			rows, err := tc.read()
			if err != nil {
				t.Fatal(err)
			}
			var got []sock
			for _, r := range rows {
				l, _ := netip.AddrFromSlice(r.LocalAddr)
				rem, _ := netip.AddrFromSlice(r.RemAddr)
				got = append(got, sock{
					netip.AddrPortFrom(l, uint16(r.LocalPort)), netip.AddrPortFrom(rem, uint16(r.RemPort)),
					r.St, r.Inode, r.UID,
				})
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s:\n got %+v\nwant %+v", tc.table, got, tc.want)
			}
		})
	}
}

// TestExactFormat pins the bytes of the files a hand-written parser reads,
// against samples of a real kernel's output.
func TestExactFormat(t *testing.T) {
	_, root := materialise(t)
	tests := []struct {
		file string
		want []string // lines that must appear, trailing padding trimmed
	}{
		{"proc/net/tcp", []string{
			"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
			"   0: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0",
			"   1: 0302010A:01BB 0909090A:C350 01 00000000:00000000 00:00000000 00000000  1000        0 12346 1 0000000000000000 100 0 0 10 -1",
		}},
		{"proc/net/tcp6", []string{
			"   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 200 1 0000000000000000 100 0 0 10 0",
			"   1: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 201 1 0000000000000000 100 0 0 10 -1",
		}},
		{"proc/net/udp", []string{
			"   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops",
			"    0: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 300 2 0000000000000000 0",
		}},
		{"proc/net/udp6", []string{
			"    0: 00000000000000000000000001000000:007B 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 400 2 0000000000000000 0",
		}},
		{"proc/net/if_inet6", []string{
			"00000000000000000000000000000001 01 80 10 80       lo",
			"fd000000000000000000000000000002 02 40 00 80     eth0",
			"fe800000000000000000000000000001 02 40 20 80     eth0",
		}},
		{"proc/net/fib_trie", []string{"Local:", "     |-- 10.1.2.3", "     |-- 127.0.0.1", "        /32 host LOCAL"}},
		{"proc/4242/comm", []string{"nginx"}},
		{"proc/4242/status", []string{"Name:\tnginx", "PPid:\t1", "Uid:\t1000\t1000\t1000\t1000", "Gid:\t0\t0\t0\t0"}},
		{"etc/passwd", []string{"root:x:0:0::/root:/bin/sh", "alice:x:1000:1000::/home/alice:/bin/sh"}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(root, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(string(data), "\n")
			for i := range lines {
				lines[i] = strings.TrimRight(lines[i], " ")
			}
			for _, w := range tc.want {
				if !slices.Contains(lines, w) {
					t.Errorf("missing line %q in:\n%s", w, data)
				}
			}
		})
	}
	// The IPv4 tables pad every line to the kernel's fixed width.
	for file, width := range map[string]int{"proc/net/tcp": tcpWidth, "proc/net/udp": udpWidth} {
		data, _ := os.ReadFile(filepath.Join(root, file))
		for _, l := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
			if len(l) != width {
				t.Errorf("%s: line %q has width %d, want %d", file, l, len(l), width)
			}
		}
	}
	stat, err := os.ReadFile(filepath.Join(root, "proc/4242/stat"))
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(string(stat)); len(f) != 52 || f[21] != "123456" || f[1] != "(nginx)" {
		t.Errorf("proc/4242/stat has %d fields, comm %q, starttime %q: %s", len(f), f[1], f[21], stat)
	}
	cmd, _ := os.ReadFile(filepath.Join(root, "proc/77/cmdline"))
	if string(cmd) != "/opt/x/a-very-long-process-name\x00-v\x00" {
		t.Errorf("cmdline = %q", cmd)
	}
}

func TestProcfsStatAndFDs(t *testing.T) {
	_, root := materialise(t)
	fs, err := procfs.NewFS(filepath.Join(root, "proc"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := fs.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st.BootTime != uint64(DefaultBootTime) {
		t.Errorf("btime = %d, want %d", st.BootTime, DefaultBootTime)
	}
	procs, err := fs.AllProcs()
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, p := range procs {
		pids = append(pids, p.PID)
	}
	slices.Sort(pids)
	if want := []int{1, 77, 88, 4242}; !slices.Equal(pids, want) {
		t.Errorf("AllProcs = %v, want %v", pids, want)
	}
	tests := []struct {
		pid     int
		want    []string
		wantErr bool
	}{
		{pid: 4242, want: []string{"/dev/null", "pipe:[99]", "anon_inode:[eventpoll]", "socket:[12345]", "socket:[12346]"}},
		{pid: 1, want: []string{"/dev/null", "pipe:[99]", "anon_inode:[eventpoll]"}},
		{pid: 88, wantErr: true},
	}
	for _, tc := range tests {
		p, err := fs.Proc(tc.pid)
		if err != nil {
			t.Fatal(err)
		}
		got, err := p.FileDescriptorTargets()
		if (err != nil) != tc.wantErr {
			t.Errorf("pid %d: FileDescriptorTargets error = %v, want error %v", tc.pid, err, tc.wantErr)
			continue
		}
		// procfs lists fds in directory order; the kernel's is numeric.
		slices.Sort(got)
		slices.Sort(tc.want)
		if !slices.Equal(got, tc.want) {
			t.Errorf("pid %d: fd targets = %q, want %q", tc.pid, got, tc.want)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name, yml, loadErr, writeErr string
	}{
		{name: "unknown key", yml: "sokets: []", loadErr: "field sokets not found"},
		{name: "bad proto", yml: "sockets: [{proto: sctp, local: '1.2.3.4:1'}]", writeErr: "proto"},
		{name: "bad local", yml: "sockets: [{proto: tcp, local: '1.2.3.4'}]", writeErr: "local"},
		{name: "bad state", yml: "sockets: [{proto: tcp, local: '1.2.3.4:1', state: NAPPING}]", writeErr: "state"},
		{name: "v6 remote on v4 socket", yml: "sockets: [{proto: tcp, local: '1.2.3.4:1', remote: '[::2]:3'}]", writeErr: "IPv6 remote"},
		{name: "duplicate pid", yml: "processes: [{pid: 5}, {pid: 5}]", writeErr: "twice"},
		{name: "bad address", yml: "addresses: [10.0.0.256]", writeErr: "address"},
		{name: "empty file is an empty host", yml: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			yml := filepath.Join(dir, "host.yml")
			if err := os.WriteFile(yml, []byte(tc.yml), 0o644); err != nil {
				t.Fatal(err)
			}
			h, err := Load(yml)
			if !errorMatches(err, tc.loadErr) {
				t.Fatalf("Load error = %v, want %q", err, tc.loadErr)
			}
			if err != nil {
				return
			}
			if err := h.Write(dir); !errorMatches(err, tc.writeErr) {
				t.Fatalf("Write error = %v, want %q", err, tc.writeErr)
			}
		})
	}
}

func errorMatches(err error, want string) bool {
	if want == "" {
		return err == nil
	}
	return err != nil && strings.Contains(err.Error(), want)
}
