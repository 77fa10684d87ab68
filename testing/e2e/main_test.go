//go:build linux

package e2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/netprocbeat/netprocbeat/testing/beatrun"
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
	bin, cleanup, err := beatrun.Binary("e2e", moduleRoot)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer cleanup()
	beatBin = bin
	return m.Run()
}

// findModuleRoot asks the go command for the main module's go.mod.
func findModuleRoot() (string, error) { return beatrun.ModuleRoot() }
