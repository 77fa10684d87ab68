//go:build linux

package packetbeat

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nginxServer is a distro nginx (master and workers) on 127.0.0.1 and ::1,
// whose access log names, for each request, the worker's PID and the
// client's address and port: the ground truth of the server side.
type nginxServer struct {
	port      int
	accessLog string
	cmd       *exec.Cmd
}

// nginxConf is the whole configuration: everything nginx writes is under
// dir (pid file, logs, temp paths), so no distro default is touched.
const nginxConf = `daemon off;
master_process on;
worker_processes %d;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
events { worker_connections 256; }
http {
    log_format pk '$pid $remote_addr $remote_port $connection $connection_requests';
    access_log %[2]s/access.log pk;
    client_body_temp_path %[2]s/body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    keepalive_timeout 60s;
    keepalive_requests 1000;
    server {
        listen 127.0.0.1:%[3]d;
        listen [::1]:%[3]d;
        location / { return 200 "ok\n"; }
    }
}
`

// startNginx starts nginx with workers worker processes on port and stops
// it (master by PID, which stops the workers) when the test ends.
func startNginx(t *testing.T, dir string, port, workers int) *nginxServer {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		t.Fatalf("nginx not found: apt-get install -y --no-install-recommends nginx-light (go run mage.go setup does): %v", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(nginxConf, workers, dir, port)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	s := &nginxServer{port: port, accessLog: filepath.Join(dir, "access.log"), cmd: cmd}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGQUIT) // graceful: workers finish, then exit
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		if n := len(childPIDs(cmd.Process.Pid)); n >= workers && tcpAnswers(port) {
			return s
		}
		select {
		case <-done:
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx exited at start:\n%s", b)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx did not come up on port %d within 15s:\n%s", port, b)
		}
	}
}

// served is one access-log line.
type served struct {
	workerPID int
	client    endpoint
	conn      int // nginx's connection serial number
}

// readAccessLog parses the access log (format pk).
func (s *nginxServer) readAccessLog(t *testing.T) []served {
	t.Helper()
	f, err := os.Open(s.accessLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []served
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 5 {
			t.Fatalf("access log line %q: want 5 fields", sc.Text())
		}
		pid, err1 := strconv.Atoi(fs[0])
		port, err2 := strconv.Atoi(fs[2])
		conn, err3 := strconv.Atoi(fs[3])
		if err1 != nil || err2 != nil || err3 != nil {
			t.Fatalf("access log line %q: %v %v %v", sc.Text(), err1, err2, err3)
		}
		out = append(out, served{workerPID: pid, client: endpoint{ip: fs[1], port: port}, conn: conn})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// childPIDs lists the direct children of pid.
func childPIDs(pid int) []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}
