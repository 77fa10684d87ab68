package deploy

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// Sources are the inputs of the image and the packages.
type Sources struct {
	// Root is the repository root (README.md, _meta/config.yml, deploy/).
	Root string
	// Binary is a linux netprocbeat executable; build it with BuildBinary.
	Binary string
	// GOARCH is the binary's architecture (amd64, arm64); "" means the
	// running one's.
	GOARCH string
}

func (s Sources) goarch() string {
	if s.GOARCH == "" {
		return runtime.GOARCH
	}
	return s.GOARCH
}

// BuildBinary builds a static (CGO_ENABLED=0) linux netprocbeat into out,
// the one binary the image and both packages carry. It runs the go command
// in root.
func BuildBinary(root, out, goarch string) error {
	if goarch == "" {
		goarch = runtime.GOARCH
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, "./cmd/netprocbeat")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/netprocbeat (CGO_ENABLED=0 GOOS=linux GOARCH=%s): %w\n%s", goarch, err, b)
	}
	return nil
}

// file is one regular file, directory or symlink of an artifact.
type file struct {
	dst  string      // absolute path in the image or package, or relative in the tarball
	src  string      // file on disk; "" with data set or for a directory
	data []byte      // contents when src is ""
	mode fs.FileMode // permission bits, plus fs.ModeDir for directories
	conf bool        // a configuration file (kept on package upgrade)
}

// docFiles are the license, notice and README files shipped in the image and
// the packages, relative to the beat's home directory: the repository's
// README.md (and LICENSE, if the repository has one), and the pinned beats
// module's LICENSE.txt and NOTICE.txt, which cover the Filebeat code the
// binary is built from.
func (s Sources) docFiles() ([]file, error) {
	files := []file{{dst: "README.md", src: filepath.Join(s.Root, "README.md"), mode: 0o644}}
	if _, err := os.Stat(filepath.Join(s.Root, "LICENSE")); err == nil {
		files = append(files, file{dst: "LICENSE.txt", src: filepath.Join(s.Root, "LICENSE"), mode: 0o644})
	}
	beats, err := moduleDir(s.Root, "github.com/elastic/beats/v7")
	if err != nil {
		return nil, err
	}
	files = append(files,
		file{dst: "LICENSE-beats.txt", src: filepath.Join(beats, "LICENSE.txt"), mode: 0o644},
		file{dst: "NOTICE.txt", src: filepath.Join(beats, "NOTICE.txt"), mode: 0o644},
	)
	for _, f := range files {
		if _, err := os.Stat(f.src); err != nil {
			return nil, err
		}
	}
	return files, nil
}

// moduleDir asks the go command where a dependency's source is.
func moduleDir(root, module string) (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", module)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("go list -m %s: %w\n%s", module, err, ee.Stderr)
		}
		return "", fmt.Errorf("go list -m %s: %w", module, err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return "", fmt.Errorf("go list -m %s: module not downloaded (run go mod download)", module)
	}
	return dir, nil
}

// read returns a file's contents.
func (f file) read() ([]byte, error) {
	if f.src == "" {
		return f.data, nil
	}
	return os.ReadFile(f.src)
}
