//go:build linux

package deploy_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netprocbeat/netprocbeat/deploy"
)

// TestTarGzLayout checks the .tar.gz holds, under one directory, what
// Filebeat's does: the binary, netprocbeat.yml (not readable by others, as
// strict.perms wants), the reference configuration, README and licenses.
func TestTarGzLayout(t *testing.T) {
	src := sources(t)
	path, err := src.TarGz(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	base := strings.TrimSuffix(filepath.Base(path), ".tar.gz")
	got := map[string]int64{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(h.Name, base+"/") {
			t.Errorf("%s: entry %s is outside %s/", path, h.Name, base)
		}
		got[strings.TrimPrefix(h.Name, base+"/")] = h.Mode
	}
	for name, mode := range map[string]int64{
		"netprocbeat": 0o755, "netprocbeat.yml": 0o600, "netprocbeat.reference.yml": 0o644,
		"README.md": 0o644, "LICENSE-beats.txt": 0o644, "NOTICE.txt": 0o644,
	} {
		if m, ok := got[name]; !ok {
			t.Errorf("%s: no %s/%s", path, base, name)
		} else if m != mode {
			t.Errorf("%s: %s has mode %o, want %o", path, name, m, mode)
		}
	}
}

// TestDebInstall installs the .deb with dpkg on this machine, checks the
// installed layout, runs `netprocbeat test config` and a short run from the
// installed paths (the wrapper script and the systemd unit's command line)
// that enriches an event about a real connection, and removes the package.
func TestDebInstall(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("dpkg -i needs root")
	}
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skipf("not a Debian system (no dpkg): %v", err)
	}
	if out, _ := exec.Command("dpkg-query", "-W", "-f=${Status}", deploy.Name).Output(); strings.Contains(string(out), "installed") {
		t.Skipf("a %s package is already installed here (%s); not replacing it", deploy.Name, out)
	}
	for _, dir := range []string{deploy.PkgData, deploy.PkgLogs, deploy.PkgConfig, deploy.PkgHome} {
		if _, err := os.Stat(dir); err == nil {
			t.Fatalf("%s exists but no %s package is installed: left over from an earlier run? Remove it and run again", dir, deploy.Name)
		}
	}
	src := sources(t)
	deb, err := src.Deb(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}

	dpkg(t, "-i", deb)
	t.Cleanup(func() {
		if out, err := dpkgRun("--purge", deploy.Name); err != nil {
			t.Errorf("dpkg --purge %s: %v\n%s", deploy.Name, err, out)
		}
		// Files the beat wrote (registry, meta.json) are not the package's.
		os.RemoveAll(deploy.PkgData)
		os.RemoveAll(deploy.PkgLogs)
	})

	for path, mode := range map[string]os.FileMode{
		deploy.PkgBinary:                                0o755,
		deploy.PkgWrapper:                               0o755,
		deploy.PkgConfig + "/netprocbeat.yml":           0o600,
		deploy.PkgConfig + "/netprocbeat.reference.yml": 0o644,
		deploy.PkgUnit:                                  0o644,
		deploy.PkgHome + "/README.md":                   0o644,
		deploy.PkgHome + "/NOTICE.txt":                  0o644,
		deploy.PkgData:                                  os.ModeDir | 0o750,
		deploy.PkgLogs:                                  os.ModeDir | 0o750,
	} {
		st, err := os.Stat(path)
		if err != nil {
			t.Errorf("after dpkg -i: %v", err)
		} else if st.Mode()&(os.ModeDir|os.ModePerm) != mode {
			t.Errorf("after dpkg -i: %s has mode %v, want %v", path, st.Mode(), mode)
		}
	}

	// test config, through the wrapper script.
	if out, err := exec.Command(deploy.PkgWrapper, "test", "config").CombinedOutput(); err != nil || !strings.Contains(string(out), "Config OK") {
		t.Fatalf("%s test config: %v\n%s", deploy.PkgWrapper, err, out)
	}

	// The same with the systemd unit's command line and environment.
	unitCmd := unitCommand(t)
	if out, err := exec.Command(unitCmd[0], append(unitCmd[1:], "test", "config")...).CombinedOutput(); err != nil || !strings.Contains(string(out), "Config OK") {
		t.Fatalf("the unit's ExecStart %v test config: %v\n%s", unitCmd, err, out)
	}

	// A short run from the installed paths: the packaged configuration with
	// its connection-log input reading a directory of this test, and the
	// console as output. The event is about a real loopback connection of
	// this process.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	src4, dst4 := conn.LocalAddr().(*net.TCPAddr), ln.Addr().(*net.TCPAddr)
	events := t.TempDir()
	line := fmt.Sprintf(`{"message":"deb-run","source":{"ip":"127.0.0.1","port":%d},"destination":{"ip":"127.0.0.1","port":%d},"network":{"transport":"tcp"}}`+"\n", src4.Port, dst4.Port)
	if err := os.WriteFile(filepath.Join(events, "c.ndjson"), []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(unitCmd[0], append(unitCmd[1:], "-e",
		"-E", "netprocbeat.inputs.0.paths=["+filepath.Join(events, "*.ndjson")+"]",
		"-E", "output.elasticsearch.enabled=false",
		"-E", "output.console.enabled=true")...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	evc := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var ev map[string]any
			if json.Unmarshal(sc.Bytes(), &ev) == nil && ev["message"] == "deb-run" {
				evc <- ev
			}
		}
		close(evc)
	}()
	var ev event
	select {
	case e, ok := <-evc:
		if !ok {
			_ = cmd.Wait()
			t.Fatalf("the installed netprocbeat exited without the event:\n%s", tail(stderr.String(), 30))
		}
		ev = e
	case <-time.After(90 * time.Second):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("no event from the installed netprocbeat in 90s:\n%s", tail(stderr.String(), 30))
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Errorf("the installed netprocbeat did not stop within 30s of SIGINT")
	}
	self := os.Getpid()
	for field, want := range map[string]any{
		"source.process.pid":      self,
		"destination.process.pid": self,
		"source.process.name":     comm(t, self),
		"agent.type":              deploy.Name,
	} {
		if got := jsonString(ev.get(field)); got != jsonString(want) {
			t.Errorf("installed run: %s = %s, want %s", field, got, jsonString(want))
		}
	}
	// State went to the packaged data path.
	if _, err := os.Stat(filepath.Join(deploy.PkgData, "meta.json")); err != nil {
		t.Errorf("the run kept no state in %s: %v", deploy.PkgData, err)
	}

	// dpkg -r removes the program and keeps the configuration; --purge (in
	// the cleanup) removes that too.
	dpkg(t, "-r", deploy.Name)
	if _, err := os.Stat(deploy.PkgBinary); !os.IsNotExist(err) {
		t.Errorf("after dpkg -r: %s still there (%v)", deploy.PkgBinary, err)
	}
	if _, err := os.Stat(deploy.PkgConfig + "/netprocbeat.yml"); err != nil {
		t.Errorf("after dpkg -r: the configuration should be kept until purge: %v", err)
	}
}

// unitCommand returns the systemd unit's ExecStart with its Environment=
// variables expanded, as systemd would run it.
func unitCommand(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(deploy.PkgUnit)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	var exec string
	for _, line := range strings.Split(string(raw), "\n") {
		switch {
		case strings.HasPrefix(line, "Environment="):
			kv := strings.Trim(strings.TrimPrefix(line, "Environment="), `"`)
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		case strings.HasPrefix(line, "ExecStart="):
			exec = strings.TrimPrefix(line, "ExecStart=")
		}
	}
	if exec == "" {
		t.Fatalf("%s: no ExecStart", deploy.PkgUnit)
	}
	// systemd splits $VAR (unbraced) at whitespace into separate words.
	var words []string
	for _, w := range strings.Fields(exec) {
		if strings.HasPrefix(w, "$") {
			words = append(words, strings.Fields(env[w[1:]])...)
		} else {
			words = append(words, w)
		}
	}
	if words[0] != deploy.PkgBinary {
		t.Errorf("%s: ExecStart runs %s, want %s", deploy.PkgUnit, words[0], deploy.PkgBinary)
	}
	return words
}

// dpkgRun runs dpkg, waiting while another dpkg or apt holds its lock.
func dpkgRun(args ...string) (string, error) {
	deadline := time.Now().Add(3 * time.Minute)
	for {
		out, err := exec.Command("dpkg", args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "lock") || time.Now().After(deadline) {
			return string(out), err
		}
		time.Sleep(2 * time.Second)
	}
}

func dpkg(t *testing.T, args ...string) {
	t.Helper()
	if out, err := dpkgRun(args...); err != nil {
		t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}
