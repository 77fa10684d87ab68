//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLateStampedOneShot: Filebeat stamps an event with the time it reads
// the line, seconds after a one-shot client closed its connection. With
// the default tracker (auto) the client is named for a line read 3 s after
// its close; when another process used the same tuple after the first
// closed, the line (written for the first) names neither: the read time
// cannot tell the two connections apart.
func TestLateStampedOneShot(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	server := ln.Addr().(*net.TCPAddr)

	file := filepath.Join(t.TempDir(), "late.ndjson")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	b := startBeat(t, fmt.Sprintf(`
netprocbeat.inputs:
  - type: filestream
    id: e2e-late
    paths: [%q]
    prospector.scanner.fingerprint.enabled: false
    file_identity.native: ~
    prospector.scanner.check_interval: 100ms
    parsers:
      - ndjson:
          target: ""
          add_error_key: true
`, file)+processorConfig(""))
	if strings.Contains(b.logs(), "eBPF connection tracker not used") {
		t.Skipf("the eBPF tracker cannot load here:\n%s", b.logTail(10))
	}
	waitLog(t, b, "eBPF connection tracker loaded")

	// oneShot connects from local to the server and exits; it returns the
	// client's PID once the client has exited.
	oneShot := func(local string) int {
		h := startHelper(t, "dial-from", local, server.String())
		h.stop()
		return h.pid
	}
	line := func(id string, port int) {
		rec := map[string]any{
			"message":     id,
			"network":     map[string]any{"transport": "tcp"},
			"source":      map[string]any{"ip": "127.0.0.1", "port": port},
			"destination": map[string]any{"ip": "127.0.0.1", "port": server.Port},
		}
		data, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(file, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Write(append(data, '\n')); err != nil {
			t.Fatal(err)
		}
	}
	const lag = 3 * time.Second

	for _, c := range []struct {
		name   string
		reused bool
	}{{"one-shot client", false}, {"tuple reused by another process", true}} {
		t.Run(c.name, func(t *testing.T) {
			port := freePort(t, "tcp", "127.0.0.1")
			local := fmt.Sprintf("127.0.0.1:%d", port)
			first := oneShot(local)
			closed := time.Now()
			second := 0
			if c.reused {
				time.Sleep(200 * time.Millisecond)
				second = oneShot(local)
			}
			time.Sleep(lag)
			id := fmt.Sprintf("late-%d", port)
			line(id, port)
			ev := b.waitEvent(t, 20*time.Second, "for line "+id, func(ev event) bool { return ev.str("message") == id })
			ts, err := time.Parse(time.RFC3339Nano, ev.str("@timestamp"))
			if err != nil || ts.Sub(closed) < lag {
				t.Fatalf("@timestamp %q (%v) is not %v after the client's close at %v", ev.str("@timestamp"), err, lag, closed)
			}
			got := ev.get("source.process.pid")
			switch {
			case !c.reused && (got == nil || ev.num("source.process.pid") != first):
				t.Errorf("line read %v after the client's close: source.process.pid = %v, want %d; event: %s", ts.Sub(closed).Round(time.Millisecond), got, first, ev)
			case c.reused && got != nil:
				t.Errorf("tuple used by %d, then by %d: source.process.pid = %v, want none; event: %s", first, second, got, ev)
			}
		})
	}
}
