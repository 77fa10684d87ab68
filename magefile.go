//go:build mage

// netprocbeat build tasks. Run them without installing mage: go run mage.go <target>
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/magefile/mage/mg"
	"github.com/magefile/mage/sh"
)

const (
	binary     = "build/netprocbeat"
	mainPkg    = "./cmd/netprocbeat"
	demoConfig = "netprocbeat.yml"
)

// Build compiles Filebeat with add_network_process into build/netprocbeat.
func Build() error {
	if err := run(nil, mg.GoCmd(), "build", "-o", binary, mainPkg); err != nil {
		return err
	}
	abs, err := filepath.Abs(binary)
	if err != nil {
		abs = binary
	}
	fmt.Println("built", abs)
	return nil
}

// Test sets up and runs every test: installs missing Debian packages (as root, with apt), runs wintest, starts dockerd for the run (stopped at the end), builds the static binary once, then go test ./... and go test -race over internal/ and processor/. A part that cannot be had prints one SKIP line.
func Test() error {
	setup, err := ensureSetup()
	if err != nil {
		return err
	}
	// The Windows tests run first, before the load tests, in a network
	// namespace of their own (testing/wine/exec.sh).
	if setup.have["wine"] {
		if err := Wintest(); err != nil {
			return err
		}
	}

	env := map[string]string{}
	if setup.have["docker"] {
		stop, err := startDockerd()
		if err != nil {
			return err
		}
		defer stop()
	} else {
		env[skipDockerEnv] = setup.skipped["docker"]
	}

	// One static build serves the image, the packages and the e2e tests
	// (the binary the packages ship is the one the e2e tests run).
	dist, err := filepath.Abs(filepath.Join(distDir, "netprocbeat"))
	if err != nil {
		return err
	}
	if os.Getenv("NETPROCBEAT_DIST_BIN") == "" || os.Getenv("NETPROCBEAT_BIN") == "" {
		if err := Dist(); err != nil {
			return err
		}
	}
	env["NETPROCBEAT_DIST_BIN"] = envOr("NETPROCBEAT_DIST_BIN", dist)
	env["NETPROCBEAT_BIN"] = envOr("NETPROCBEAT_BIN", dist)

	if setup.have["packet"] {
		if err := packetTestEnv(env); err != nil {
			return err
		}
	}

	// -count=1: these tests read the live kernel (sockets, namespaces, eBPF);
	// a cached pass from another day proves nothing about this machine.
	testErr := run(env, mg.GoCmd(), "test", "-count=1", "./...")
	if !setup.have["cc"] {
		return testErr // the race run's SKIP line was printed by the set-up
	}
	// The race run goes ahead after a failure above, so that one failing
	// package does not hide what the race detector finds.
	// It needs cgo (a C compiler); ask for it explicitly so a missing
	// compiler fails loudly instead of as "-race requires cgo".
	env["CGO_ENABLED"] = "1"
	raceErr := run(env, mg.GoCmd(), "test", "-count=1", "-race", "./internal/...", "./processor/...")
	if testErr != nil {
		return fmt.Errorf("go test ./...: %w", testErr)
	}
	return raceErr
}

// Golden regenerates the golden files: go test ./testing/golden -update.
func Golden() error {
	return run(nil, mg.GoCmd(), "test", "./testing/golden", "-update")
}

// Check runs gofmt -l, go vet, and windows/amd64 and darwin/arm64 cross builds.
func Check() error {
	fmt.Println("+ gofmt -l .")
	out, err := sh.Output("gofmt", "-l", ".")
	if err != nil {
		return fmt.Errorf("gofmt: %w\n%s", err, out)
	}
	if files := strings.Fields(out); len(files) > 0 {
		sort.Strings(files)
		return fmt.Errorf("these files are not gofmt-ed (run gofmt -w on them):\n  %s", strings.Join(files, "\n  "))
	}

	if err := run(nil, mg.GoCmd(), "vet", "./..."); err != nil {
		return err
	}

	// Cross builds: pure Go (CGO_ENABLED=0), as a release build would be.
	// The whole module builds for both targets; beats' filebeat and libbeat
	// cross-compile to darwin/arm64 without cgo, so no package restriction
	// is needed there.
	for _, target := range []struct{ goos, goarch string }{
		{"windows", "amd64"},
		{"darwin", "arm64"},
	} {
		env := map[string]string{"GOOS": target.goos, "GOARCH": target.goarch, "CGO_ENABLED": "0"}
		if err := run(env, mg.GoCmd(), "build", "./..."); err != nil {
			return err
		}
	}
	return nil
}

// BenchPipeline measures what add_network_process costs a pipeline (NDJSON file to output.file: no processor, the processor, add_fields with its fields) and prints the table of docs/benchmarks.md; ~10 minutes.
func BenchPipeline() error {
	return run(map[string]string{"NETPROCBEAT_BENCH_PIPELINE": "1"},
		mg.GoCmd(), "test", "-count=1", "-run", "^TestPipelineCost$", "-v", "-timeout", "60m", "./testing/bench/pipeline/")
}

// Demo builds, then runs build/netprocbeat -e -c netprocbeat.yml from the repository root (Ctrl-C stops it).
func Demo() error {
	mg.Deps(Build)
	if _, err := os.Stat(demoConfig); err != nil {
		return fmt.Errorf("demo needs %s in the repository root: %w", demoConfig, err)
	}
	return run(nil, "./"+binary, "-e", "-c", demoConfig)
}

// run prints the command (with any environment overrides) and runs it,
// streaming its stdout and stderr.
func run(env map[string]string, cmd string, args ...string) error {
	var prefix []string
	for k, v := range env {
		prefix = append(prefix, k+"="+v)
	}
	sort.Strings(prefix)
	line := append(prefix, cmd)
	line = append(line, args...)
	fmt.Println("+", strings.Join(line, " "))
	return sh.RunWithV(env, cmd, args...)
}
