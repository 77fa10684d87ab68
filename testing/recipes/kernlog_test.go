//go:build linux

package recipes

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netprocbeat/netprocbeat/testing/beatrun"
)

// TestRecipeNftablesLog: the nftables recipe. An nft table of the test's
// logs every new connection to nginx's port on loopback with the recipe's
// prefix; an rsyslogd of the test's (foreground, its own configuration,
// stopped by PID) writes the kernel log to a file in RSYSLOG_FileFormat;
// the beats tail that file. One-shot clients request from nginx. Truth:
// nginx's access log names each client end's request, and so the client's
// PID; the destination should be the worker that served it ($pid).
func TestRecipeNftablesLog(t *testing.T) {
	needRoot(t)
	nft := needProgram(t, "nft", "nftables")
	rsyslogd := needProgram(t, "rsyslogd", "rsyslog")
	if pid := processNamed("rsyslogd"); pid != 0 {
		t.Skipf("rsyslogd (PID %d) already runs and reads the kernel log; this test starts its own and needs it to itself", pid)
	}
	ngx := startNginx(t)

	prefix := fmt.Sprintf("rcnft%d ", os.Getpid())
	table := fmt.Sprintf("rcrecipes%d", os.Getpid())
	nftTable(t, nft, table, fmt.Sprintf(`oifname "lo" tcp dport %d ct state new log prefix "%s"`, ngx.Port, prefix))

	dir := t.TempDir()
	kernLog := filepath.Join(dir, "kern.log")
	startRsyslogd(t, rsyslogd, dir, kernLog)
	// A connection of the test's own, to see rsyslogd write the firewall's
	// lines; its line is left out of the count.
	probe := probeUntilLogged(t, fmt.Sprintf("127.0.0.1:%d", ngx.Port), kernLog)

	logCfg, readCfg := recipeConfigs(t, "nftables", "/var/log/kern.log", kernLog, "['nftnew ']", "['"+prefix+"']")
	p := startPair(t, logCfg, readCfg)

	n := clientCount()
	runs := driveNginx(t, ngx, "nft", n)
	served := servedBy(t, ngx, runs)
	mine := func(ev beatrun.Event) bool {
		return strings.Contains(ev.Str("message"), prefix) && ev.Num("source.port") != probe
	}
	p.collect(t, "nftables log via rsyslog", n, mine, byClientEnd(runs, served))
}

// processNamed returns the PID of a process whose comm is name, or 0.
func processNamed(name string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm")); err == nil && strings.TrimSpace(string(b)) == name {
			return pid
		}
	}
	return 0
}

// startRsyslogd runs rsyslogd in the foreground with a configuration that
// writes kernel messages to kernLog, and stops it (SIGTERM, then SIGKILL,
// by PID) at cleanup.
func startRsyslogd(t *testing.T, bin, dir, kernLog string) {
	t.Helper()
	conf := filepath.Join(dir, "rsyslog.conf")
	work := filepath.Join(dir, "rsyslog-work")
	if err := os.Mkdir(work, 0o700); err != nil {
		t.Fatal(err)
	}
	err := os.WriteFile(conf, []byte(fmt.Sprintf(`global(workDirectory=%q)
module(load="imklog")
kern.* action(type="omfile" file=%q template="RSYSLOG_FileFormat")
`, work, kernLog)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	out := &lockedBuf{}
	cmd := exec.Command(bin, "-n", "-f", conf, "-i", filepath.Join(dir, "rsyslogd.pid"))
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start rsyslogd: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	time.Sleep(100 * time.Millisecond)
	select {
	case <-exited:
		t.Fatalf("rsyslogd exited at start: %s", out)
	default:
	}
}

// probeUntilLogged connects to addr once and waits up to 10 s for its line
// in file (probeUntilLoggedFor); it returns the connection's local port.
func probeUntilLogged(t *testing.T, addr, file string) int {
	t.Helper()
	var logged bool
	port := probeUntilLoggedFor(t, addr, file, 10*time.Second, &logged)
	if !logged {
		t.Fatalf("the connection from local port %d to %s is not in %s within 10s", port, addr, file)
	}
	return port
}

// probeUntilLoggedFor connects to addr once and waits up to wait for a line
// of file to hold " sport=P " or " SPT=P " of its local port P; it sets
// *logged and returns P.
func probeUntilLoggedFor(t *testing.T, addr, file string, wait time.Duration, logged *bool) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	port := c.LocalAddr().(*net.TCPAddr).Port
	c.Close()
	deadline := time.Now().Add(wait)
	for {
		b, _ := os.ReadFile(file)
		if strings.Contains(string(b), fmt.Sprintf(" SPT=%d ", port)) || strings.Contains(string(b), fmt.Sprintf(" sport=%d ", port)) {
			*logged = true
			return port
		}
		if time.Now().After(deadline) {
			return port
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// nftTable creates inet table name with one output-hook chain holding rule,
// and deletes it at cleanup.
func nftTable(t *testing.T, nft, name, rule string) {
	t.Helper()
	run := func(args ...string) error {
		out, err := exec.Command(nft, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("nft %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := run("add", "table", "inet", name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := run("delete", "table", "inet", name); err != nil {
			t.Error(err)
		}
	})
	if err := run("add", "chain", "inet", name, "out", "{ type filter hook output priority 0; }"); err != nil {
		t.Fatal(err)
	}
	if err := run("add rule inet " + name + " out " + rule); err != nil {
		t.Fatal(err)
	}
}
