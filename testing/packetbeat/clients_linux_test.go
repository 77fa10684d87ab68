//go:build linux

package packetbeat

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
)

// endpoint is an IP address as nginx and Packetbeat print it, and a port.
type endpoint struct {
	ip   string
	port int
}

func (e endpoint) String() string { return net.JoinHostPort(e.ip, strconv.Itoa(e.port)) }

// clientConn is one client connection and the process that made it.
type clientConn struct {
	pid      int
	prog     string
	local    endpoint
	requests int
}

// urlHost returns host as it goes in a URL.
func urlHost(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }

// curlOnce runs one curl for path: one connection, one request. curl is
// exec'd directly, so the process's PID is the one that owned the socket;
// it prints its local port (-w).
func curlOnce(ip string, port int, path string) (clientConn, error) {
	cmd := exec.Command("curl", "-sS", "-g", "-o", "/dev/null", "-m", "10", "-w", "%{local_port}",
		"http://"+urlHost(ip, port)+path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return clientConn{}, fmt.Errorf("curl %s%s: %v: %s", urlHost(ip, port), path, err, stderr.String())
	}
	lport, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		return clientConn{}, fmt.Errorf("curl -w %%{local_port} printed %q", out)
	}
	return clientConn{pid: cmd.Process.Pid, prog: "curl", local: endpoint{ip, lport}, requests: 1}, nil
}

// keepAliveScript makes n requests on one HTTP/1.1 connection, a moment
// apart, and prints its own PID and local port (the interpreter may be
// started through a wrapper that is not the process owning the socket).
const keepAliveScript = `
import http.client, os, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = http.client.HTTPConnection(host, port, timeout=10)
for i in range(n):
    c.request("GET", "/keepalive")
    r = c.getresponse()
    r.read()
    if i == 0:
        print(os.getpid(), c.sock.getsockname()[1], flush=True)
    time.sleep(0.05)
c.close()
`

// python3 returns the distro's python3, else the one on PATH.
func python3() string {
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		return "/usr/bin/python3"
	}
	return "python3"
}

// keepAlive runs one python3 client making n requests on one connection.
func keepAlive(ip string, port, n int) (clientConn, error) {
	cmd := exec.Command(python3(), "-c", keepAliveScript, ip, strconv.Itoa(port), strconv.Itoa(n))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return clientConn{}, fmt.Errorf("python3 keep-alive client to %s: %v: %s", urlHost(ip, port), err, stderr.String())
	}
	fs := strings.Fields(string(out))
	if len(fs) != 2 {
		return clientConn{}, fmt.Errorf("python3 keep-alive client printed %q, want pid and port", out)
	}
	pid, err1 := strconv.Atoi(fs[0])
	lport, err2 := strconv.Atoi(fs[1])
	if err1 != nil || err2 != nil {
		return clientConn{}, fmt.Errorf("python3 keep-alive client printed %q", out)
	}
	return clientConn{pid: pid, prog: "python3", local: endpoint{ip, lport}, requests: n}, nil
}

// job is one client to run.
type job func() (clientConn, error)

// runClients runs the jobs, parallel at a time, and returns the
// connections they made, keyed by the client's endpoint, and the client
// endpoints two connections used (the kernel reuses ephemeral ports; those
// are kept with pid -1: which connection an event is about cannot be told).
func runClients(jobs []job, parallel int) (map[endpoint]clientConn, []string, []error) {
	var (
		mu     sync.Mutex
		conns  = map[endpoint]clientConn{}
		reused []string
		errs   []error
		wg     sync.WaitGroup
		next   = make(chan job)
	)
	for i := 0; i < parallel; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range next {
				c, err := j()
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else if old, dup := conns[c.local]; dup {
					// The same client port twice in one run: which
					// connection an event is about cannot be told, so
					// neither is counted.
					reused = append(reused, fmt.Sprintf("client endpoint %v used by pid %d and pid %d", c.local, old.pid, c.pid))
					old.pid = -1
					conns[c.local] = old
				} else {
					conns[c.local] = c
				}
				mu.Unlock()
			}
		}()
	}
	for _, j := range jobs {
		next <- j
	}
	close(next)
	wg.Wait()
	return conns, reused, errs
}

// tcpAnswers says whether something accepts on 127.0.0.1:port.
func tcpAnswers(port int) bool {
	c, err := net.Dial("tcp4", urlHost("127.0.0.1", port))
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// freePort returns a port in 48000-48999 on which both 127.0.0.1 and ::1
// can listen now.
func freePort(from, to int) (int, error) {
	for p := from; p <= to; p++ {
		l4, err := net.Listen("tcp4", urlHost("127.0.0.1", p))
		if err != nil {
			continue
		}
		l6, err := net.Listen("tcp6", urlHost("::1", p))
		l4.Close()
		if err != nil {
			continue
		}
		l6.Close()
		return p, nil
	}
	return 0, fmt.Errorf("no free port in %d-%d on both 127.0.0.1 and ::1", from, to)
}

// lookPath finds a program by name or checks a path.
func lookPath(p string) (string, error) {
	if strings.Contains(p, "/") {
		_, err := os.Stat(p)
		return p, err
	}
	return exec.LookPath(p)
}
