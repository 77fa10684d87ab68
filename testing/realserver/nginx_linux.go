package realserver

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// NginxBinary is where Debian's nginx packages (nginx-light, nginx) install it.
const NginxBinary = "/usr/sbin/nginx"

// NginxConfig describes the server StartNginx runs.
type NginxConfig struct {
	// Workers is worker_processes (default 4).
	Workers int
	// PortLo and PortHi bound the TCP port nginx listens on, on both
	// 127.0.0.1 and [::1]; StartNginx takes the first port of the range,
	// from a random offset, that it can start on.
	PortLo, PortHi uint16
}

// Nginx is a running nginx started by StartNginx.
type Nginx struct {
	Dir       string // the prefix: nginx.conf, access.log, error.log, nginx.pid
	Port      uint16 // the listening port on 127.0.0.1 and [::1]
	MasterPID int
	Workers   []int // worker PIDs (children of the master) once all had started
	AccessLog string

	cmd *exec.Cmd
}

// URL returns http://ip:port/path for ip 127.0.0.1 or ::1.
func (n *Nginx) URL(ip netip.Addr, path string) string {
	return "http://" + netip.AddrPortFrom(ip, n.Port).String() + path
}

// NginxAvailable returns an error saying what to install when the nginx
// binary is missing.
func NginxAvailable() error {
	if _, err := os.Stat(NginxBinary); err != nil {
		return fmt.Errorf("%s not found: install the distro nginx (apt-get install nginx-light)", NginxBinary)
	}
	return nil
}

// StartNginx starts nginx in a fresh directory under t.TempDir() with the
// master in the foreground (daemon off) and cfg.Workers workers, waits until
// it accepts connections on both addresses and every worker runs, and
// stops it at cleanup (SIGTERM to the master, then SIGKILL to the master and
// the workers it had, by PID). It fails the test when nginx cannot start.
func StartNginx(t testing.TB, cfg NginxConfig) *Nginx {
	t.Helper()
	if err := NginxAvailable(); err != nil {
		t.Fatal(err)
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.PortLo == 0 || cfg.PortHi < cfg.PortLo {
		t.Fatalf("StartNginx: port range %d-%d is empty: set PortLo and PortHi", cfg.PortLo, cfg.PortHi)
	}
	span := int(cfg.PortHi-cfg.PortLo) + 1
	off := rand.Intn(span)
	var lastErr error
	for i := 0; i < span && i < 50; i++ {
		port := cfg.PortLo + uint16((off+i)%span)
		if !portFree(port) {
			continue
		}
		n, err := startNginx(t, cfg.Workers, port)
		if err == nil {
			return n
		}
		lastErr = err
		if !errors.Is(err, errAddrInUse) {
			break
		}
	}
	t.Fatalf("StartNginx: no free port in %d-%d or nginx failed: %v", cfg.PortLo, cfg.PortHi, lastErr)
	return nil
}

var errAddrInUse = errors.New("address already in use")

// portFree tells whether port can be bound on 127.0.0.1 and [::1] now.
func portFree(port uint16) bool {
	for _, a := range []string{"127.0.0.1", "::1"} {
		l, err := net.Listen("tcp", net.JoinHostPort(a, strconv.Itoa(int(port))))
		if err != nil {
			return false
		}
		l.Close()
	}
	return true
}

func startNginx(t testing.TB, workers int, port uint16) (*Nginx, error) {
	dir, err := os.MkdirTemp(t.TempDir(), "nginx")
	if err != nil {
		return nil, err
	}
	n := &Nginx{Dir: dir, Port: port, AccessLog: filepath.Join(dir, "access.log")}
	conf := nginxConf(dir, workers, port)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	// -e: the error log from the first line on (the build's default is stderr).
	n.cmd = exec.Command(NginxBinary, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"),
		"-e", filepath.Join(dir, "error.log"), "-g", "daemon off;")
	n.cmd.Stdout, n.cmd.Stderr = io.Discard, io.Discard
	if err := n.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", NginxBinary, err)
	}
	n.MasterPID = n.cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- n.cmd.Wait() }()
	t.Cleanup(func() { n.stop(exited) })

	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err // for stop
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			if strings.Contains(string(log), "Address already in use") {
				return nil, fmt.Errorf("nginx on port %d: %w", port, errAddrInUse)
			}
			return nil, fmt.Errorf("nginx exited (%v) at start; error.log:\n%s", err, log)
		default:
		}
		w := ChildPIDs(n.MasterPID)
		if len(w) == workers && dialable(port) {
			n.Workers = w
			return n, nil
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			return nil, fmt.Errorf("nginx (master %d) not ready in 20s: workers %v of %d; error.log:\n%s", n.MasterPID, w, workers, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func nginxConf(dir string, workers int, port uint16) string {
	p := func(name string) string { return filepath.Join(dir, name) }
	// No user directive: run as root, nginx starts its workers as its
	// build's default user (the stock package's shape: workers under
	// another user than the master). Temporary paths live in the prefix:
	// the build's defaults are under /var/lib/nginx.
	return fmt.Sprintf(`worker_processes %d;
pid %s;
error_log %s notice;
events { worker_connections 1024; }
http {
    log_format realserver '%s';
    access_log %s realserver;
    client_body_temp_path %s;
    proxy_temp_path %s;
    fastcgi_temp_path %s;
    uwsgi_temp_path %s;
    scgi_temp_path %s;
    keepalive_timeout 75s;
    server {
        listen 127.0.0.1:%d;
        listen [::1]:%d;
        location / { default_type text/plain; return 200 "ok\n"; }
    }
}
`, workers, p("nginx.pid"), p("error.log"), LogFormat, p("access.log"),
		p("body"), p("proxy"), p("fastcgi"), p("uwsgi"), p("scgi"), port, port)
}

func dialable(port uint16) bool {
	for _, a := range []string{"127.0.0.1", "::1"} {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(a, strconv.Itoa(int(port))), time.Second)
		if err != nil {
			return false
		}
		c.Close()
	}
	return true
}

// stop ends nginx by PID: SIGTERM (fast shutdown) to the master, then
// SIGKILL to the master and to the workers it had.
func (n *Nginx) stop(exited chan error) {
	workers := ChildPIDs(n.MasterPID)
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = n.cmd.Process.Kill()
		<-exited
	}
	for _, w := range append(workers, n.Workers...) {
		// A worker left behind by a killed master is reparented; the name
		// check keeps a reused PID from being killed.
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", w))
		if ppid, err := ParentPID(w); err == nil && (ppid == n.MasterPID || ppid == 1) && strings.TrimSpace(string(comm)) == "nginx" {
			_ = syscall.Kill(w, syscall.SIGKILL)
		}
	}
}

// ReadLog returns the access log's lines so far; a last line without its
// newline (being written) is left out.
func (n *Nginx) ReadLog() ([]LogLine, error) {
	b, err := os.ReadFile(n.AccessLog)
	if err != nil {
		return nil, err
	}
	var out []LogLine
	for len(b) > 0 {
		i := strings.IndexByte(string(b), '\n')
		if i < 0 {
			break
		}
		l, err := ParseLogLine(string(b[:i]))
		if err != nil {
			return out, err
		}
		out = append(out, l)
		b = b[i+1:]
	}
	return out, nil
}

// Tail follows the access log from its start: each call to Next returns
// the next complete line, waiting for it up to a timeout.
type Tail struct {
	f   *os.File
	r   *bufio.Reader
	buf string
}

// TailLog opens the access log for following. Close it when done.
func (n *Nginx) TailLog() (*Tail, error) {
	f, err := os.Open(n.AccessLog)
	if err != nil {
		return nil, err
	}
	return &Tail{f: f, r: bufio.NewReader(f)}, nil
}

// Next returns the next line, waiting up to timeout for one; ok is false
// on timeout.
func (t *Tail) Next(timeout time.Duration) (l LogLine, ok bool, err error) {
	deadline := time.Now().Add(timeout)
	for {
		s, err := t.r.ReadString('\n')
		t.buf += s
		if err == nil {
			line := t.buf
			t.buf = ""
			l, err := ParseLogLine(line)
			return l, err == nil, err
		}
		if err != io.EOF {
			return LogLine{}, false, err
		}
		if time.Now().After(deadline) {
			return LogLine{}, false, nil
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Close closes the followed file.
func (t *Tail) Close() error { return t.f.Close() }

// ChildPIDs returns the PIDs of pid's child processes, read from
// /proc/<pid>/task/*/children, or by scanning /proc when the kernel has no
// children files.
func ChildPIDs(pid int) []int {
	var out []int
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	if err == nil && len(tasks) > 0 {
		for _, f := range tasks {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			for _, s := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(s); err == nil {
					out = append(out, c)
				}
			}
		}
		return out
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, err := ParentPID(c); err == nil && pp == pid {
			out = append(out, c)
		}
	}
	return out
}

// ParentPID reads pid's parent PID from /proc/<pid>/stat.
func ParentPID(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The name (field 2) is in parentheses and may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: %q has no name field", pid, s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0, fmt.Errorf("/proc/%d/stat: %q is short", pid, s)
	}
	return strconv.Atoi(f[1])
}
