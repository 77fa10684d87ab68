//go:build linux

package recipes

import (
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/netprocbeat/netprocbeat/testing/beatrun"
)

// TestRecipeTCPUDP: the tcp/udp recipe (the demo's inputs plus the syslog
// processor) receiving one-shot logger(1) messages, half over tcp, half over
// udp. The two beats cannot share a port, so each gets its own ports and its
// own senders. Truth: the sender's PID by the text it sent; the destination
// is the beat, which holds the input's socket.
func TestRecipeTCPUDP(t *testing.T) {
	needRoot(t)
	logger := needProgram(t, "logger", "bsdutils")
	lo, hi := portRange(t)
	var ports [2][2]int // [beat][tcp, udp]
	used := map[int]bool{}
	for b := range ports {
		for i := range ports[b] {
			start := max(lo, hi-99)
			for {
				p := freeTCPPortIn(t, "127.0.0.1", start, hi, "tcp+udp")
				if !used[p] {
					used[p], ports[b][i] = true, p
					break
				}
				start = p + 1
			}
		}
	}
	var cfgs [2]string
	for b, variant := range []string{"log", "read"} {
		tcp, udp := strconv.Itoa(ports[b][0]), strconv.Itoa(ports[b][1])
		logCfg, readCfg := recipeConfigs(t, "tcp-udp",
			`"127.0.0.1:9000"`, `"127.0.0.1:`+tcp+`"`, "destination.port: 9000", "destination.port: "+tcp,
			`"127.0.0.1:9001"`, `"127.0.0.1:`+udp+`"`, "destination.port: 9001", "destination.port: "+udp)
		cfgs[b] = map[string]string{"log": logCfg, "read": readCfg}[variant]
	}
	p := startPair(t, cfgs[0], cfgs[1])
	for b := range ports {
		waitTCP(t, fmt.Sprintf("127.0.0.1:%d", ports[b][0]))
	}
	beatPIDs := [2]int{p.logTime.PID, p.readTime.PID}

	n := clientCount()
	pids := map[string]int{} // marker -> sender PID
	var mu sync.Mutex
	var wg sync.WaitGroup
	var failures []string
	sem := make(chan struct{}, 4)
	for i := 0; i < n; i++ {
		for b := range ports {
			proto, flag, port := "tcp", "-T", ports[b][0]
			if i%2 == 1 {
				proto, flag, port = "udp", "-d", ports[b][1]
			}
			marker := fmt.Sprintf("rcrecipe-%d-%s-%d", b, proto, i)
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				cmd := exec.Command(logger, "-n", "127.0.0.1", "-P", strconv.Itoa(port), flag, "--rfc5424", marker+" end")
				out := &lockedBuf{}
				cmd.Stdout, cmd.Stderr = out, out
				err := cmd.Start()
				if err == nil {
					mu.Lock()
					pids[marker] = cmd.Process.Pid
					mu.Unlock()
					err = cmd.Wait()
				}
				if err != nil {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("logger %s: %v: %s", marker, err, out))
					mu.Unlock()
				}
			}()
		}
		time.Sleep(30 * time.Millisecond)
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d senders failed, first: %s", len(failures), failures[0])
	}
	markerRE := regexp.MustCompile(`rcrecipe-([01])-(tcp|udp)-\d+`)
	mine := func(ev beatrun.Event) bool { return markerRE.MatchString(ev.Str("message")) }
	p.collect(t, "tcp/udp inputs, logger", n, mine, func(ev beatrun.Event) (truth, bool) {
		m := markerRE.FindStringSubmatch(ev.Str("message"))
		if m == nil || ev.Str("network.transport") != m[2] {
			return truth{}, false
		}
		b, _ := strconv.Atoi(m[1])
		mu.Lock()
		defer mu.Unlock()
		return truth{src: pids[m[0]], dst: beatPIDs[b]}, pids[m[0]] != 0
	})
}
