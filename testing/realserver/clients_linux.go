package realserver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Client is a distro HTTP client RunClient can run.
type Client string

// The clients RunClient knows. Each makes one request on one connection
// and exits; the connection is made by the process RunClient starts (no
// wrapper, no child), so its PID is the client end's owner.
const (
	Curl   Client = "curl"
	Wget   Client = "wget"
	Python Client = "python3" // urllib.request
	Bash   Client = "bash"    // /dev/tcp, HTTP/1.0, bash's own read builtin
)

// AllClients lists every Client, in the order tests use them round-robin.
var AllClients = []Client{Curl, Wget, Python, Bash}

// Path returns the client's executable, or an error saying what to install.
func (c Client) Path() (string, error) {
	if c == Python {
		return PythonPath()
	}
	p, err := exec.LookPath(string(c))
	if err != nil {
		return "", fmt.Errorf("%s not found in PATH: install the distro package %s", c, c)
	}
	return p, nil
}

// PythonPath returns the distro's python3 (/usr/bin/python3) when present,
// else python3 from PATH, or an error saying what to install.
func PythonPath() (string, error) {
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		return "/usr/bin/python3", nil
	}
	p, err := exec.LookPath("python3")
	if err != nil {
		return "", fmt.Errorf("python3 not found: install the distro package python3")
	}
	return p, nil
}

// ClientRun is one finished client run.
type ClientRun struct {
	Client Client
	PID    int // the process that owned the client end of the connection
	// LocalPort is the client end's port when the client reports it
	// (curl); 0 when it does not: take it from the server's log.
	LocalPort uint16
	Start     time.Time
	End       time.Time
}

const bashGet = `exec 3<>"/dev/tcp/$1/$2" || exit 1
printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$3" "$4" >&3
IFS= read -r -d '' -u 3 resp
case "$resp" in "HTTP/1."?" 200 "*) exit 0 ;; *) printf '%s' "$resp" >&2; exit 1 ;; esac`

const pythonGet = `import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
    r.read()
`

// RunClient makes one GET request to rawURL (http://host:port/path, host an
// IP literal) with client c and waits for it to exit. A request that does
// not get 200 is an error.
func RunClient(ctx context.Context, c Client, rawURL string) (ClientRun, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "http" || u.Port() == "" {
		return ClientRun{}, fmt.Errorf("RunClient: URL %q: want http://ip:port/path", rawURL)
	}
	path, err := c.Path()
	if err != nil {
		return ClientRun{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var cmd *exec.Cmd
	switch c {
	case Curl:
		cmd = exec.CommandContext(ctx, path, "-gsSf", "--max-time", "10", "-o", "/dev/null", "-w", "%{local_port}", rawURL)
	case Wget:
		cmd = exec.CommandContext(ctx, path, "-q", "-O", "/dev/null", "-T", "10", "-t", "1", rawURL)
	case Python:
		cmd = exec.CommandContext(ctx, path, "-c", pythonGet, rawURL)
	case Bash:
		cmd = exec.CommandContext(ctx, path, "-c", bashGet, "bash", u.Hostname(), u.Port(), u.RequestURI(), u.Host)
	default:
		return ClientRun{}, fmt.Errorf("RunClient: unknown client %q: use one of %v", c, AllClients)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	r := ClientRun{Client: c, Start: time.Now()}
	if err := cmd.Start(); err != nil {
		return r, fmt.Errorf("start %s: %w", c, err)
	}
	r.PID = cmd.Process.Pid
	err = cmd.Wait()
	r.End = time.Now()
	if err != nil {
		return r, fmt.Errorf("%s %s (pid %d): %v: %s", c, rawURL, r.PID, err, strings.TrimSpace(errb.String()))
	}
	if c == Curl {
		if p, err := strconv.ParseUint(strings.TrimSpace(out.String()), 10, 16); err == nil {
			r.LocalPort = uint16(p)
		}
	}
	return r, nil
}

// KeepAlive is a python3 http.client connection held open across requests.
type KeepAlive struct {
	PID   int            // the python3 process owning the client end
	Local netip.AddrPort // the client end of the connection

	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
	once  sync.Once
}

const pythonKeepAlive = `import sys, json, http.client
c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=10)
c.connect()
l = c.sock.getsockname()
print(json.dumps({"local": "[%s]:%d" % (l[0], l[1]) if ":" in l[0] else "%s:%d" % (l[0], l[1])}), flush=True)
for line in sys.stdin:
    c.request("GET", line.strip())
    r = c.getresponse()
    r.read()
    print(json.dumps({"status": r.status}), flush=True)
c.close()
`

// StartKeepAlive connects to ip:port with python3's http.client and keeps
// the connection until Close. Close it (or let the process be killed at
// the caller's cleanup) when done.
func StartKeepAlive(ip netip.Addr, port uint16) (*KeepAlive, error) {
	py, err := PythonPath()
	if err != nil {
		return nil, err
	}
	k := &KeepAlive{cmd: exec.Command(py, "-c", pythonKeepAlive, ip.String(), strconv.Itoa(int(port)))}
	k.cmd.Stderr = os.Stderr
	if k.stdin, err = k.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	o, err := k.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	k.out = bufio.NewReader(o)
	if err := k.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start python3 keep-alive client: %w", err)
	}
	k.PID = k.cmd.Process.Pid
	var r struct{ Local string }
	if err := k.read(&r); err != nil {
		k.Close()
		return nil, err
	}
	if k.Local, err = netip.ParseAddrPort(r.Local); err != nil {
		k.Close()
		return nil, fmt.Errorf("keep-alive client reported local address %q: %w", r.Local, err)
	}
	return k, nil
}

func (k *KeepAlive) read(v any) error {
	type res struct {
		line string
		err  error
	}
	ch := make(chan res, 1)
	go func() { l, err := k.out.ReadString('\n'); ch <- res{l, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			return fmt.Errorf("keep-alive client (pid %d): %w", k.PID, r.err)
		}
		if err := json.Unmarshal([]byte(r.line), v); err != nil {
			return fmt.Errorf("keep-alive client (pid %d) wrote %q: %w", k.PID, r.line, err)
		}
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("keep-alive client (pid %d): no answer within 30s", k.PID)
	}
}

// Get sends one GET for path on the held connection and waits for the
// response; a status other than 200 is an error.
func (k *KeepAlive) Get(path string) error {
	if _, err := fmt.Fprintln(k.stdin, path); err != nil {
		return fmt.Errorf("keep-alive client (pid %d): %w", k.PID, err)
	}
	var r struct{ Status int }
	if err := k.read(&r); err != nil {
		return err
	}
	if r.Status != 200 {
		return fmt.Errorf("keep-alive client (pid %d): GET %s: status %d", k.PID, path, r.Status)
	}
	return nil
}

// Close closes the connection and waits for the client to exit (killing it
// after 10 s).
func (k *KeepAlive) Close() {
	k.once.Do(func() {
		k.stdin.Close()
		done := make(chan struct{})
		go func() { _ = k.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = k.cmd.Process.Kill()
			<-done
		}
	})
}
