//go:build linux

// Package deploy_test tests netprocbeat as it is deployed: the container
// image under a real dockerd with the documented options, the .deb installed
// with dpkg, and the agreement of the Kubernetes manifest, the Docker options
// and the docs. The image and the packages carry one static binary, built
// once per run before the tests start (or taken from $NETPROCBEAT_DIST_BIN).
//
//	go test ./testing/deploy/ -v -count=1
//
// Docker objects are named with $NETPROCBEAT_TEST_PREFIX (default npbtest).
package deploy_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netprocbeat/netprocbeat/deploy"
)

var (
	// moduleRoot is the directory holding go.mod.
	moduleRoot string
	// prefix names every docker image, container and network the tests create.
	prefix = "npbtest"
)

func TestMain(m *testing.M) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		fmt.Fprintln(os.Stderr, "testing/deploy: not inside the netprocbeat module:", err)
		os.Exit(1)
	}
	moduleRoot = filepath.Dir(gomod)
	if p := os.Getenv("NETPROCBEAT_TEST_PREFIX"); p != "" {
		prefix = p
	}
	// Built before m.Run, so a cold build (minutes) does not count against
	// go test's -timeout.
	if err := buildDist(); err != nil {
		fmt.Fprintln(os.Stderr, "testing/deploy: static netprocbeat binary:", err)
		os.Exit(1)
	}
	code := m.Run()
	if distDir != "" {
		os.RemoveAll(distDir)
	}
	os.Exit(code)
}

var (
	// distBin is the static binary the image and the packages carry.
	distBin string
	// distDir is the temporary directory distBin was built in, if any.
	distDir string
)

// buildDist builds the static binary once per run, or takes
// NETPROCBEAT_DIST_BIN (e.g. build/dist/netprocbeat from
// `go run mage.go dist`).
func buildDist() error {
	if bin := os.Getenv("NETPROCBEAT_DIST_BIN"); bin != "" {
		if !filepath.IsAbs(bin) {
			bin = filepath.Join(moduleRoot, bin)
		}
		distBin = bin
		_, err := os.Stat(bin)
		return err
	}
	var err error
	if distDir, err = os.MkdirTemp("", prefix+"-dist-"); err != nil {
		return err
	}
	distBin = filepath.Join(distDir, deploy.Name)
	start := time.Now()
	if err := deploy.BuildBinary(moduleRoot, distBin, ""); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "testing/deploy: built static %s in %v (set NETPROCBEAT_DIST_BIN to reuse one)\n", distBin, time.Since(start).Round(time.Second))
	return nil
}

// sources returns the deploy sources with the static binary.
func sources(t *testing.T) deploy.Sources {
	t.Helper()
	return deploy.Sources{Root: moduleRoot, Binary: distBin}
}
