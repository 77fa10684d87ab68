//go:build linux

package packetbeat

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// moduleRoot returns the directory holding go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		t.Fatalf("not inside the netprocbeat module: %v", err)
	}
	return filepath.Dir(gomod)
}

// packetBinary returns $NETPROCBEAT_PACKET_BIN, or builds
// ./cmd/netprocbeat-packet into the test's temp dir.
func packetBinary(t *testing.T, root string) string {
	t.Helper()
	if bin := os.Getenv("NETPROCBEAT_PACKET_BIN"); bin != "" {
		if !filepath.IsAbs(bin) {
			bin = filepath.Join(root, bin)
		}
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("NETPROCBEAT_PACKET_BIN: %v", err)
		}
		return bin
	}
	bin := filepath.Join(t.TempDir(), "netprocbeat-packet")
	cmd := exec.Command("go", "build", "-tags", "packetbeat", "-o", bin, "./cmd/netprocbeat-packet")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags packetbeat ./cmd/netprocbeat-packet (needs gcc and libpcap-dev): %v\n%s", err, out)
	}
	return bin
}

// referenceProcessors returns the processors of netprocbeat-packet.yml,
// after checking that it turns packetbeat.procs off: the test runs the
// processors users copy.
func referenceProcessors(t *testing.T, root string) []any {
	t.Helper()
	path := filepath.Join(root, "netprocbeat-packet.yml")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ref map[string]any
	if err := yaml.Unmarshal(b, &ref); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if v, ok := ref["packetbeat.procs.enabled"]; !ok || v != false {
		t.Fatalf("%s: packetbeat.procs.enabled is %v, want false", path, v)
	}
	procs, ok := ref["processors"].([]any)
	if !ok || len(procs) == 0 {
		t.Fatalf("%s: no processors list", path)
	}
	return procs
}

// beatConfig is the configuration both runs share: pcap on lo, only the
// test's port, http on it, flows reported once each, when they time out,
// events to a file. procs or processors is added per run.
func beatConfig(dir string, port int) map[string]any {
	return map[string]any{
		"packetbeat.interfaces.device":     "lo",
		"packetbeat.interfaces.bpf_filter": fmt.Sprintf("tcp port %d", port),
		"packetbeat.flows":                 map[string]any{"timeout": "5s", "period": "-1s"},
		"packetbeat.protocols":             []any{map[string]any{"type": "http", "ports": []int{port}}},
		"output.file": map[string]any{
			"path": filepath.Join(dir, "out"), "filename": "events",
			"rotate_every_kb": 512 * 1024, "number_of_files": 2,
		},
		"path.home":         dir,
		"path.data":         filepath.Join(dir, "data"),
		"path.logs":         filepath.Join(dir, "logs"),
		"logging.level":     "info",
		"logging.to_stderr": true,
		"http.enabled":      false,
		"setup.ilm.enabled": false,
	}
}

// beat is one running Packetbeat.
type beat struct {
	name string
	dir  string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

// startBeat writes cfg under dir and runs bin with it.
func startBeat(t *testing.T, bin, dir, name string, cfg map[string]any) *beat {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "packetbeat.yml")
	if err := os.WriteFile(conf, b, 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "stderr.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "-c", conf, "--path.home", dir, "-e")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s (%s): %v", name, bin, err)
	}
	bt := &beat{name: name, dir: dir, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(bt.done) }()
	t.Cleanup(func() { bt.stop() })
	return bt
}

// stop stops the beat (SIGTERM: it publishes what it holds, then exits).
func (b *beat) stop() {
	select {
	case <-b.done:
		return
	default:
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(30 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.done
	}
}

// exited says whether the beat has exited.
func (b *beat) exited() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

// logTail returns the end of the beat's log.
func (b *beat) logTail(n int) string {
	data, _ := os.ReadFile(b.log)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// events reads every event the beat has written so far.
func (b *beat) events(t *testing.T) []map[string]any {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(b.dir, "out", "events*"))
	var out []map[string]any
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			var ev map[string]any
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				continue // a line being written
			}
			out = append(out, ev)
		}
	}
	return out
}

// field returns the value at a dotted path, or nil.
func field(ev map[string]any, path string) any {
	var cur any = ev
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		if v, ok := m[k]; ok {
			cur = v
			continue
		}
		return nil
	}
	return cur
}

// intField returns a numeric field as an int, 0 when absent.
func intField(ev map[string]any, path string) int {
	if f, ok := field(ev, path).(float64); ok {
		return int(f)
	}
	return 0
}

func strField(ev map[string]any, path string) string {
	s, _ := field(ev, path).(string)
	return s
}
