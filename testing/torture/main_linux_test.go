//go:build linux

package torture

import (
	"fmt"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		helperMain(mode)
		return
	}
	if os.Geteuid() != 0 {
		fmt.Println("torture: skipped, needs root (namespaces, veths, eBPF, other users' /proc/<pid>/fd)")
		os.Exit(0)
	}
	os.Exit(m.Run())
}
