//go:build mage

package main

// The test command's set-up: the Debian packages the tests need (installed
// with apt when missing and run as root), a dockerd for the run, and the
// binaries the tests share. A part that cannot be had prints one "SKIP" line
// saying what to install, and the tests that need it are not run (or skip
// with that line): never a silent pass.

import (
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// setupDryRunEnv, when set to a non-empty value, makes the set-up report
// what it would install instead of installing it.
const setupDryRunEnv = "NETPROCBEAT_SETUP_DRY_RUN"

// skipDockerEnv is read by testing/deploy: when set, the tests that need a
// running dockerd skip with its value instead of failing.
const skipDockerEnv = "NETPROCBEAT_SKIP_DOCKER"

// debPackage is one Debian package and how to tell it is installed from
// what the tests use (commands on PATH, files), not from dpkg's database, so
// that a tool installed another way counts too.
type debPackage struct {
	name    string
	present func() bool
}

func onPath(names ...string) func() bool {
	return func() bool {
		for _, n := range names {
			if _, err := exec.LookPath(n); err != nil {
				return false
			}
		}
		return true
	}
}

func anyFile(paths ...string) func() bool {
	return func() bool {
		for _, p := range paths {
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				return true
			}
		}
		return false
	}
}

// staticBusybox: the container tests copy busybox into an image with
// nothing else in it, so a dynamically linked one does not do.
func staticBusybox() bool {
	p, err := exec.LookPath("busybox")
	if err != nil {
		return false
	}
	f, err := elf.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// setupPart is a group of tests and the packages they need.
type setupPart struct {
	key      string // short name used by the test target
	tests    string // what runs only when the part is there
	packages []debPackage
	root     bool // the tests need root as well
}

// setupParts lists every system dependency of go run mage.go test. nginx,
// python3 and curl are the real server and clients of the real-traffic
// tests; libpcap-dev (with gcc) builds Packetbeat.
func setupParts() []setupPart {
	gcc := debPackage{"gcc", onPath("gcc")}
	libc := debPackage{"libc6-dev", anyFile("/usr/include/stdio.h")}
	return []setupPart{
		{key: "net", tests: "the network-namespace, socket-owner and privilege tests", packages: []debPackage{
			{"iproute2", onPath("ss", "ip")},
			{"util-linux", onPath("setpriv")},
		}},
		{key: "cc", tests: "go test -race and the C test programs", packages: []debPackage{gcc, libc}},
		{key: "wine", tests: "the Windows tests under Wine (go run mage.go wintest)", packages: []debPackage{
			{"wine64", anyFile(wineCandidates("wine64")...)},
			{"wine", anyFile(wineCandidates("wineserver")...)},
			{"gcc-mingw-w64-x86-64-win32", onPath(mingwGCC)},
		}},
		{key: "docker", tests: "the container tests in testing/deploy", root: true, packages: []debPackage{
			{"docker.io", onPath("dockerd", "docker")},
			{"busybox-static", staticBusybox},
		}},
		{key: "nat", tests: "the NAT tests (nftables rules, conntrack table)", root: true, packages: []debPackage{
			{"nftables", onPath("nft")},
			{"conntrack", onPath("conntrack")},
		}},
		{key: "packet", tests: "the Packetbeat build and its real-traffic test (testing/packetbeat)", root: true, packages: []debPackage{
			gcc, libc,
			{"libpcap-dev", anyFile("/usr/include/pcap/pcap.h", "/usr/include/pcap.h")},
			{"nginx-light", onPath("nginx")},
			{"python3", onPath("python3")},
			{"curl", onPath("curl")},
		}},
		{key: "recipes", tests: "the recipe tests in testing/recipes (docs/recipes.md)", root: true, packages: []debPackage{
			{"nginx-light", onPath("nginx")},
			{"curl", onPath("curl")},
			{"wget", onPath("wget")},
			{"python3", onPath("python3")},
			{"bsdutils", onPath("logger")},
			{"nftables", onPath("nft")},
			{"conntrack", onPath("conntrack")},
			{"rsyslog", onPath("rsyslogd")},
		}},
	}
}

// wineCandidates are where Debian's wine packages put a Wine program: on
// PATH, or in /usr/lib/wine (wine64 8.x installs only there).
func wineCandidates(name string) []string {
	c := []string{filepath.Join("/usr/lib/wine", name)}
	if p, err := exec.LookPath(name); err == nil {
		c = append(c, p)
	}
	return c
}

// missingPackages returns the names of the part's packages that are absent.
func (p setupPart) missingPackages() []string {
	var out []string
	for _, d := range p.packages {
		if !d.present() {
			out = append(out, d.name)
		}
	}
	return out
}

// setupResult says which parts are there; skipped maps the others to the
// one line that was printed for them.
type setupResult struct {
	have    map[string]bool
	skipped map[string]string
}

// Setup installs the Debian packages the tests need when they are missing (as root, with apt-get), and prints one SKIP line for each part that cannot be had. NETPROCBEAT_SETUP_DRY_RUN=1 only reports.
func Setup() error {
	_, err := ensureSetup()
	return err
}

// ensureSetup installs what is missing when it can, then reports each part.
func ensureSetup() (setupResult, error) {
	parts := setupParts()
	root := os.Geteuid() == 0
	dry := os.Getenv(setupDryRunEnv) != ""
	_, aptErr := exec.LookPath("apt-get")

	var want []string
	seen := map[string]bool{}
	for _, p := range parts {
		for _, name := range p.missingPackages() {
			if !seen[name] {
				seen[name] = true
				want = append(want, name)
			}
		}
	}
	sort.Strings(want)
	if len(want) > 0 {
		switch {
		case dry:
			fmt.Printf("# %s set: would run apt-get update and apt-get install -y --no-install-recommends %s\n", setupDryRunEnv, strings.Join(want, " "))
		case root && aptErr == nil:
			if err := aptInstall(want); err != nil {
				return setupResult{}, err
			}
		}
	}

	res := setupResult{have: map[string]bool{}, skipped: map[string]string{}}
	for _, p := range parts {
		missing := p.missingPackages()
		var why string
		switch {
		case len(missing) > 0 && dry:
			why = fmt.Sprintf("needs %s (not installed: %s is set)", strings.Join(missing, " "), setupDryRunEnv)
		case len(missing) > 0 && root && aptErr != nil:
			why = fmt.Sprintf("needs %s and there is no apt-get here: install them with the system's package manager", strings.Join(missing, " "))
		case len(missing) > 0:
			why = fmt.Sprintf("needs %s: apt-get install -y --no-install-recommends %s (or run go run mage.go test as root, which installs them)",
				strings.Join(missing, " "), strings.Join(missing, " "))
		case p.root && !root:
			why = "needs root: run go run mage.go test as root"
		}
		if why != "" {
			line := fmt.Sprintf("SKIP %s: %s", p.tests, why)
			fmt.Println(line)
			res.skipped[p.key] = line
			continue
		}
		res.have[p.key] = true
	}
	if !root {
		fmt.Println("SKIP the tests that need root (network namespaces, eBPF tracker, nftables, dpkg, other users' sockets): run go run mage.go test as root")
	}
	return res, nil
}

// aptInstall runs apt-get update once and installs pkgs without
// recommended packages and without questions.
func aptInstall(pkgs []string) error {
	env := map[string]string{"DEBIAN_FRONTEND": "noninteractive"}
	if err := run(env, "apt-get", "update", "-qq"); err != nil {
		return fmt.Errorf("apt-get update (needed to install %s): %w", strings.Join(pkgs, " "), err)
	}
	args := append([]string{"install", "-y", "-qq", "--no-install-recommends"}, pkgs...)
	if err := run(env, "apt-get", args...); err != nil {
		return fmt.Errorf("apt-get install %s: %w", strings.Join(pkgs, " "), err)
	}
	return nil
}

// dockerdLog is where a dockerd started by the test command writes.
func dockerdLog() string { return filepath.Join(os.TempDir(), "netprocbeat-test-dockerd.log") }

// startDockerd returns at once if a dockerd answers; otherwise it starts
// one in the background and waits for it. The returned stop function stops
// only the dockerd started here, by its PID.
//
// --bridge=none: no default bridge; the tests make their own network.
// --userland-proxy=false: published ports are DNAT only, with dockerd
// holding a placeholder listener (testing/deploy/nat_docker_test.go).
func startDockerd() (stop func(), err error) {
	noop := func() {}
	if dockerAnswers() {
		fmt.Println("# using the dockerd that is already running")
		return noop, nil
	}
	logPath := dockerdLog()
	logf, err := os.Create(logPath)
	if err != nil {
		return noop, err
	}
	defer logf.Close()
	fmt.Println("+ dockerd --bridge=none --userland-proxy=false >" + logPath + " 2>&1 &")
	cmd := exec.Command("dockerd", "--bridge=none", "--userland-proxy=false")
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C meant for mage reaches dockerd
	// through stop, after the tests' containers are gone, not mid-run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return noop, fmt.Errorf("starting dockerd: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	stop = func() {
		fmt.Println("# stopping dockerd, pid", cmd.Process.Pid)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return noop, fmt.Errorf("dockerd exited at start; the end of %s:\n%s", logPath, tailFile(logPath, 40))
		case <-time.After(time.Second):
		}
		if dockerAnswers() {
			out, _ := exec.Command("docker", "version", "--format", "docker client {{.Client.Version}}, server {{.Server.Version}}").Output()
			fmt.Print("# ", string(out))
			return stop, nil
		}
	}
	stop()
	return noop, fmt.Errorf("dockerd did not answer within 60s; the end of %s:\n%s", logPath, tailFile(logPath, 40))
}

func dockerAnswers() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").Run() == nil
}

// tailFile returns the last n lines of a file, or why it could not be read.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// envOr returns the environment variable's value, or def when it is unset.
func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}
