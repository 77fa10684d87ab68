//go:build ignore

// mage.go runs the targets in magefile.go without a mage binary installed:
//
//	go run mage.go -l      # list targets
//	go run mage.go test    # run a target
//
// mage compiles magefile.go into a cache directory and runs the result. Its
// default cache is $HOME/.magefile, which `go build` creates on first use.
// When HOME is unset (some minimal CI containers) that default would be the
// relative path ".magefile", so fall back to a directory under the system
// temp dir instead. MAGEFILE_CACHE, when set, always wins.
package main

import (
	"os"
	"path/filepath"

	"github.com/magefile/mage/mage"
)

func main() {
	if os.Getenv("MAGEFILE_CACHE") == "" && os.Getenv("HOME") == "" {
		os.Setenv("MAGEFILE_CACHE", filepath.Join(os.TempDir(), "netprocbeat-magefile"))
	}
	os.Exit(mage.Main())
}
