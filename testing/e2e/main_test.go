//go:build linux

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netprocbeat/netprocbeat/testing/helperproc"
)

// helperEnv marks a re-executed test binary as a helper process; its value
// is ignored, the role is os.Args[2] (testing/helperproc).
const helperEnv = helperproc.EnvVar

// NETPROCBEAT_BIN, when set, names a prebuilt netprocbeat binary to test
// instead of building ./cmd/netprocbeat; a relative path is relative to the
// module root.

// helperArg is os.Args[1] of every helper, so that helpers are easy to tell
// apart in ps output and their command lines are predictable.
const helperArg = helperproc.Marker

var (
	// beatBin is the netprocbeat binary under test.
	beatBin string
	// moduleRoot is the directory holding go.mod and netprocbeat.yml.
	moduleRoot string
	// selfExe is the test binary, re-executed for helper processes.
	selfExe string
)

func TestMain(m *testing.M) {
	helperproc.Main()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if selfExe, err = os.Executable(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: cannot find the test binary:", err)
		return 1
	}
	if moduleRoot, err = findModuleRoot(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	if bin := os.Getenv("NETPROCBEAT_BIN"); bin != "" {
		// go test runs in the package directory; a relative path is taken
		// relative to the module root, where it was most likely typed.
		if !filepath.IsAbs(bin) {
			bin = filepath.Join(moduleRoot, bin)
		}
		if _, err := os.Stat(bin); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: NETPROCBEAT_BIN:", err)
			return 1
		}
		beatBin = bin
		fmt.Fprintln(os.Stderr, "e2e: using NETPROCBEAT_BIN", beatBin)
	} else {
		dir, err := os.MkdirTemp("", "netprocbeat-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		beatBin = filepath.Join(dir, "netprocbeat")
		start := time.Now()
		cmd := exec.Command("go", "build", "-o", beatBin, "./cmd/netprocbeat")
		cmd.Dir = moduleRoot
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: go build ./cmd/netprocbeat failed:", err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "e2e: built %s in %v (set NETPROCBEAT_BIN to reuse a prebuilt binary)\n", beatBin, time.Since(start).Round(time.Millisecond))
	}
	return m.Run()
}

// findModuleRoot asks the go command for the main module's go.mod.
func findModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside the netprocbeat module (go env GOMOD is %q)", gomod)
	}
	return filepath.Dir(gomod), nil
}
