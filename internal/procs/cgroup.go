package procs

import (
	"bufio"
	"bytes"
	"io"
	"regexp"
)

// containerIDRegex is libbeat add_process_metadata's default cgroup_regex:
// a 64-hex-digit ID at the end of a cgroup path, as Docker, containerd and
// CRI-O name their cgroups ("/docker/<id>", "/system.slice/docker-<id>.scope",
// "/kubepods/.../cri-containerd-<id>.scope").
var containerIDRegex = regexp.MustCompile(`[-/]([0-9a-f]{64})(\.scope)?$`)

// ParseCgroupContainerID returns the container ID found in a
// /proc/<pid>/cgroup file ("hierarchy:controllers:path" lines), or "" when
// the process runs in no container. The first path that matches wins, as in
// add_process_metadata.
func ParseCgroupContainerID(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Bytes()
		// The path is everything after the second ':'; it may itself hold ':'.
		i := bytes.IndexByte(line, ':')
		if i < 0 {
			continue
		}
		j := bytes.IndexByte(line[i+1:], ':')
		if j < 0 {
			continue
		}
		path := line[i+1+j+1:]
		if m := containerIDRegex.FindSubmatch(path); m != nil {
			return string(m[1]), nil
		}
	}
	return "", sc.Err()
}
