package procs

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"sync"
)

// passwdCache maps UIDs to user names from the host's etc/passwd, re-read
// when the file changes. A missing file just leaves user.name empty.
type passwdCache struct {
	path  string
	mu    sync.Mutex
	mtime int64
	size  int64
	names map[string]string
}

func (c *passwdCache) name(uid string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	fi, err := os.Stat(c.path)
	if err != nil {
		return ""
	}
	if c.names == nil || fi.ModTime().UnixNano() != c.mtime || fi.Size() != c.size {
		f, err := os.Open(c.path)
		if err != nil {
			return ""
		}
		c.names = parsePasswd(f)
		f.Close()
		c.mtime, c.size = fi.ModTime().UnixNano(), fi.Size()
	}
	return c.names[uid]
}

func parsePasswd(r io.Reader) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := bytes.SplitN(sc.Bytes(), []byte(":"), 4)
		if len(f) < 3 || len(f[0]) == 0 || f[0][0] == '#' {
			continue
		}
		if _, dup := m[string(f[2])]; !dup {
			m[string(f[2])] = string(f[0])
		}
	}
	return m
}
