//go:build linux

// Package deploy_test tests netprocbeat as it is deployed: the container
// image under a real dockerd with the documented options, the .deb installed
// with dpkg, and the agreement of the Kubernetes manifest, the Docker options
// and the docs. The image and the packages carry one static binary, built
// once per run (or taken from $NETPROCBEAT_DIST_BIN).
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
	"sync"
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
	code := m.Run()
	if distDir != "" {
		os.RemoveAll(distDir)
	}
	os.Exit(code)
}

var (
	distOnce sync.Once
	distBin  string
	distDir  string
	distErr  error
)

// sources returns the deploy sources with the static binary, building it on
// first use (NETPROCBEAT_DIST_BIN names a prebuilt one, e.g. from
// `go run mage.go dist`).
func sources(t *testing.T) deploy.Sources {
	t.Helper()
	distOnce.Do(func() {
		if bin := os.Getenv("NETPROCBEAT_DIST_BIN"); bin != "" {
			if !filepath.IsAbs(bin) {
				bin = filepath.Join(moduleRoot, bin)
			}
			_, distErr = os.Stat(bin)
			distBin = bin
			return
		}
		distDir, distErr = os.MkdirTemp("", prefix+"-dist-")
		if distErr != nil {
			return
		}
		distBin = filepath.Join(distDir, deploy.Name)
		start := time.Now()
		distErr = deploy.BuildBinary(moduleRoot, distBin, "")
		fmt.Fprintf(os.Stderr, "testing/deploy: built static %s in %v (set NETPROCBEAT_DIST_BIN to reuse one)\n", distBin, time.Since(start).Round(time.Second))
	})
	if distErr != nil {
		t.Fatalf("static netprocbeat binary: %v", distErr)
	}
	return deploy.Sources{Root: moduleRoot, Binary: distBin}
}
