//go:build linux

package recipes

import (
	"fmt"
	"os"
	"testing"

	"github.com/netprocbeat/netprocbeat/testing/beatrun"
)

var (
	// beatBin is the netprocbeat binary under test.
	beatBin string
	// moduleRoot is the directory holding go.mod and docs/.
	moduleRoot string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if moduleRoot, err = beatrun.ModuleRoot(); err != nil {
		fmt.Fprintln(os.Stderr, "recipes:", err)
		return 1
	}
	if os.Geteuid() != 0 {
		// Nothing to build: every test skips.
		return m.Run()
	}
	bin, cleanup, err := beatrun.Binary("recipes", moduleRoot)
	if err != nil {
		fmt.Fprintln(os.Stderr, "recipes:", err)
		return 1
	}
	defer cleanup()
	beatBin = bin
	return m.Run()
}
