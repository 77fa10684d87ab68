package beatrun

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// BinEnv names the environment variable that, when set, names a prebuilt
// netprocbeat binary to test instead of building ./cmd/netprocbeat; a
// relative path is relative to the module root.
const BinEnv = "NETPROCBEAT_BIN"

// Binary returns the netprocbeat binary to test: $NETPROCBEAT_BIN, or a
// fresh build of ./cmd/netprocbeat in a temporary directory that cleanup
// removes. who prefixes the lines it writes to stderr (the build's output,
// the time it took). Call it from TestMain.
func Binary(who, moduleRoot string) (bin string, cleanup func(), err error) {
	if bin := os.Getenv(BinEnv); bin != "" {
		// go test runs in the package directory; a relative path is taken
		// relative to the module root, where it was most likely typed.
		if !filepath.IsAbs(bin) {
			bin = filepath.Join(moduleRoot, bin)
		}
		if _, err := os.Stat(bin); err != nil {
			return "", nil, fmt.Errorf("%s: %w", BinEnv, err)
		}
		fmt.Fprintf(os.Stderr, "%s: using %s %s\n", who, BinEnv, bin)
		return bin, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "netprocbeat-"+who+"-bin-")
	if err != nil {
		return "", nil, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	bin = filepath.Join(dir, "netprocbeat")
	start := time.Now()
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/netprocbeat")
	cmd.Dir = moduleRoot
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("go build ./cmd/netprocbeat failed: %w", err)
	}
	fmt.Fprintf(os.Stderr, "%s: built %s in %v (set %s to reuse a prebuilt binary)\n", who, bin, time.Since(start).Round(time.Millisecond), BinEnv)
	return bin, cleanup, nil
}

// ModuleRoot asks the go command for the main module's go.mod and returns
// its directory.
func ModuleRoot() (string, error) {
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
