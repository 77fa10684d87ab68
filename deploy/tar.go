package deploy

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"time"
)

// writeTar writes files as a tar stream, each directory before its
// contents, owned by root.
func writeTar(w io.Writer, files []file, mtime time.Time) error {
	tw := tar.NewWriter(w)
	seen := map[string]bool{}
	var mkdirs func(dir string) error
	mkdirs = func(dir string) error {
		if dir == "." || dir == "/" || dir == "" || seen[dir] {
			return nil
		}
		if err := mkdirs(path.Dir(dir)); err != nil {
			return err
		}
		seen[dir] = true
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(dir, "/") + "/", Mode: 0o755, Uname: "root", Gname: "root", ModTime: mtime, Format: tar.FormatPAX})
	}
	for _, f := range files {
		name := strings.TrimPrefix(f.dst, "/")
		if f.mode&fs.ModeDir != 0 {
			if err := mkdirs(path.Dir(f.dst)); err != nil {
				return err
			}
			if seen[f.dst] {
				return fmt.Errorf("tar: directory %s listed after its contents", f.dst)
			}
			seen[f.dst] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: tarMode(f.mode), Uname: "root", Gname: "root", ModTime: mtime, Format: tar.FormatPAX}); err != nil {
				return err
			}
			continue
		}
		if err := mkdirs(path.Dir(f.dst)); err != nil {
			return err
		}
		data, err := f.read()
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: int64(f.mode.Perm()), Uname: "root", Gname: "root", Size: int64(len(data)), ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	return tw.Close()
}

// tarMode converts permission and sticky bits to tar's mode field.
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}
