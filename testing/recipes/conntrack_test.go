//go:build linux

package recipes

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/netprocbeat/netprocbeat/testing/beatrun"
)

// TestRecipeConntrack: the conntrack recipe. conntrack -E -e NEW -o
// timestamp, limited to nginx's port, writes its lines to a file the beats
// tail; an nft table of the test's with a ct rule makes sure connection
// tracking is on for loopback. One-shot clients request from nginx. Truth
// as in the nftables recipe: nginx's access log.
func TestRecipeConntrack(t *testing.T) {
	needRoot(t)
	nft := needProgram(t, "nft", "nftables")
	conntrack := needProgram(t, "conntrack", "conntrack")
	ngx := startNginx(t)
	nftTable(t, nft, fmt.Sprintf("rcrecipesct%d", os.Getpid()), fmt.Sprintf(`oifname "lo" tcp dport %d ct state new counter`, ngx.Port))

	ctLog := filepath.Join(t.TempDir(), "conntrack-new.log")
	f, err := os.Create(ctLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	errs := &lockedBuf{}
	cmd := exec.Command(conntrack, "-E", "-e", "NEW", "-p", "tcp", "--dport", strconv.Itoa(int(ngx.Port)), "-o", "timestamp")
	cmd.Stdout, cmd.Stderr = f, errs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start conntrack -E: %v", err)
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
	// conntrack -E subscribes after it starts: connect until a line shows.
	var probes []int
	deadline := time.Now().Add(10 * time.Second)
	for logged := false; !logged; {
		select {
		case <-exited:
			t.Fatalf("conntrack -E exited: %s", errs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("conntrack -E wrote no line for the test's connections to port %d within 10s: %s", ngx.Port, errs)
		}
		probes = append(probes, probeUntilLoggedFor(t, fmt.Sprintf("127.0.0.1:%d", ngx.Port), ctLog, 500*time.Millisecond, &logged))
	}

	logCfg, readCfg := recipeConfigs(t, "conntrack", "/var/log/conntrack-new.log", ctLog)
	p := startPair(t, logCfg, readCfg)

	n := clientCount()
	runs := driveNginx(t, ngx, "conntrack", n)
	served := servedBy(t, ngx, runs)
	mine := func(ev beatrun.Event) bool {
		for _, probe := range probes {
			if ev.Num("source.port") == probe {
				return false
			}
		}
		return ev.Num("destination.port") == int(ngx.Port)
	}
	p.collect(t, "conntrack -E", n, mine, byClientEnd(runs, served))
}
