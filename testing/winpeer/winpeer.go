// Package winpeer runs a second real process that holds real sockets, for
// the tests of the Windows engine and processor under Windows or Wine.
//
// The peer is the test binary itself, re-executed with an environment
// variable set (a Go toolchain is not available inside Wine to build a
// separate program): the test package calls MainIfPeer from init, and the
// test calls Start. The peer dials out over TCP to the addresses it is
// given, binds UDP sockets, reports what it holds as one JSON line on
// stdout, and keeps the sockets open until its stdin closes.
//
// Nothing in it is Windows-specific except reading the process's user SID,
// so it builds, and works, on every platform.
package winpeer

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// envVar carries the peer's Spec as JSON; its presence makes a test binary
// a peer.
const envVar = "NETPROCBEAT_WINPEER"

// Spec says which sockets the peer opens.
type Spec struct {
	// DialTCP lists "host:port" addresses to connect to over TCP.
	DialTCP []string
	// BindUDP lists "host:port" addresses to bind UDP sockets to; port 0
	// picks a free one.
	BindUDP []string
}

// Report is what the peer says about itself once its sockets are open.
type Report struct {
	PID  int
	Exe  string
	Args []string
	Dir  string
	// SID is the peer's user SID on Windows, "" elsewhere.
	SID string
	// TCP lists the outgoing connections, in DialTCP's order.
	TCP []Conn
	// UDP lists the bound addresses, in BindUDP's order.
	UDP []string
}

// Conn is one TCP connection's endpoints as the peer sees them.
type Conn struct{ Local, Remote string }

// peerArg is an argument the peer is started with; it carries no meaning
// to the test binary (it follows -test.run), but the tests look for it in
// the command line the engine reports.
const peerArg = "netprocbeat-winpeer"

// PeerArg is the marker argument every peer's command line carries.
func PeerArg() string { return peerArg }

// MainIfPeer returns at once unless this process was started by Start; then
// it runs the peer and exits. Call it first thing in the test binary (an
// init function in a _test.go file, or TestMain).
func MainIfPeer() {
	v, ok := os.LookupEnv(envVar)
	if !ok {
		return
	}
	if err := runPeer(v, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stdout, "ERR", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func runPeer(specJSON string, stdin io.Reader, stdout io.Writer) error {
	var spec Spec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		return fmt.Errorf("peer spec %q: %w", specJSON, err)
	}
	r := Report{PID: os.Getpid(), Args: os.Args, SID: userSID()}
	var err error
	if r.Exe, err = os.Executable(); err != nil {
		return err
	}
	if r.Dir, err = os.Getwd(); err != nil {
		return err
	}
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	for _, a := range spec.DialTCP {
		c, err := net.Dial("tcp", a)
		if err != nil {
			return fmt.Errorf("dial tcp %s: %w", a, err)
		}
		closers = append(closers, c)
		r.TCP = append(r.TCP, Conn{Local: c.LocalAddr().String(), Remote: c.RemoteAddr().String()})
	}
	for _, a := range spec.BindUDP {
		c, local, err := bindUDP(a)
		if err != nil {
			return fmt.Errorf("bind udp %s: %w", a, err)
		}
		closers = append(closers, c)
		r.UDP = append(r.UDP, local)
	}
	line, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(stdout, "%s\n", line); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, stdin) // hold the sockets until stdin closes
	return nil
}

// startTimeout bounds the peer's start. Process creation under Wine takes
// seconds on a loaded machine; this is a hang detector, not a timing claim.
const startTimeout = 2 * time.Minute

// Start runs this test binary as a peer in dir ("" for the test's working
// directory) and returns its report once its sockets are open. The peer
// exits, closing them, at test cleanup.
func Start(t testing.TB, dir string, spec Spec) Report {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	specJSON, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$", peerArg)
	cmd.Env = append(os.Environ(), envVar+"="+string(specJSON))
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start peer %s: %v", exe, err)
	}
	t.Cleanup(func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("peer %d: %v", cmd.Process.Pid, err)
		}
	})
	type result struct {
		line string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		ch <- result{line, err}
	}()
	var res result
	select {
	case res = <-ch:
	case <-time.After(startTimeout):
		cmd.Process.Kill()
		t.Fatalf("peer %d printed nothing within %v", cmd.Process.Pid, startTimeout)
	}
	if res.err != nil || strings.HasPrefix(res.line, "ERR") {
		t.Fatalf("peer %d failed: %q %v", cmd.Process.Pid, res.line, res.err)
	}
	var r Report
	if err := json.Unmarshal([]byte(res.line), &r); err != nil {
		t.Fatalf("peer %d report %q: %v", cmd.Process.Pid, res.line, err)
	}
	if r.PID != cmd.Process.Pid {
		t.Fatalf("peer reports PID %d, but it was started as %d", r.PID, cmd.Process.Pid)
	}
	return r
}
