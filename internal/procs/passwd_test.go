package procs

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParsePasswd(t *testing.T) {
	in := "root:x:0:0:root:/root:/bin/bash\n# comment:x:5\nbad line\n:x:7:7\nalice:x:1000:1000::/home/alice:/bin/sh\nshadow:x:1000:1000\n"
	got := parsePasswd(strings.NewReader(in))
	want := map[string]string{"0": "root", "1000": "alice"}
	if len(got) != len(want) {
		t.Fatalf("parsePasswd = %v, want %v", got, want)
	}
	for uid, name := range want {
		if got[uid] != name {
			t.Errorf("uid %s = %q, want %q (the first entry wins)", uid, got[uid], name)
		}
	}
}

func TestPasswdCacheRereadsOnChange(t *testing.T) {
	// Not t.TempDir: its cleanup fails the test under Wine 8, where Go's
	// RemoveAll gets "Invalid function" (go run mage.go wintest).
	dir, err := os.MkdirTemp("", "passwd-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	path := filepath.Join(dir, "passwd")
	c := passwdCache{path: path}
	if n := c.name("0"); n != "" {
		t.Errorf("missing file: name = %q, want empty", n)
	}
	if err := os.WriteFile(path, []byte("root:x:0:0::/:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if n := c.name("0"); n != "root" {
		t.Errorf("name(0) = %q, want root", n)
	}
	if err := os.WriteFile(path, []byte("admin:x:0:0::/:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute) // the size is equal: the mtime tells
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	if n := c.name("0"); n != "admin" {
		t.Errorf("after the file changed, name(0) = %q, want admin", n)
	}
}

func FuzzParsePasswd(f *testing.F) {
	f.Add([]byte("root:x:0:0:root:/root:/bin/bash\n"))
	f.Add([]byte("a:b\n::\n#x:y:z\n" + strings.Repeat("x", 70000) + ":x:1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m := parsePasswd(bytes.NewReader(data))
		for uid, name := range m {
			if name == "" || name[0] == '#' || strings.ContainsAny(name, ":\n") || strings.ContainsAny(uid, ":\n") {
				t.Fatalf("entry %q -> %q is not a passwd name", uid, name)
			}
		}
	})
}
