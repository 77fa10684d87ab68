// Package deploy builds what netprocbeat is deployed as: the container image
// (a root filesystem imported with `docker import`, run as a Kubernetes
// DaemonSet runs it) and the .tar.gz and .deb packages. magefile.go's image
// and package targets and the tests in testing/deploy use it, so both build
// the same artifacts.
//
// The files beside it are the deployment's sources: capabilities (the one
// list of Linux capabilities), docker/netprocbeat.yml (the image's
// configuration), package/ (the packages' configuration, systemd unit and
// wrapper script) and kubernetes/ (the DaemonSet manifest).
package deploy

import (
	"bufio"
	_ "embed"
	"slices"
	"strings"

	"github.com/elastic/beats/v7/libbeat/version"
)

// Name is the beat's name: the binary, the package and the directories
// (/usr/share/netprocbeat, /etc/netprocbeat, /var/lib/netprocbeat).
const Name = "netprocbeat"

//go:embed capabilities
var capabilitiesFile string

// Capabilities returns the Linux capabilities netprocbeat needs in a
// container, without the CAP_ prefix (as Docker's --cap-add and Kubernetes'
// capabilities.add take them), in the order of the capabilities file.
func Capabilities() []string {
	var caps []string
	for _, c := range capabilityLines() {
		caps = append(caps, c[0])
	}
	return caps
}

// CapabilitiesForOldRuntimes is Capabilities with each capability an older
// runtime does not know (BPF, PERFMON before Docker 23.0) replaced by the
// one the capabilities file names for it (SYS_ADMIN), without duplicates.
func CapabilitiesForOldRuntimes() []string {
	var caps []string
	for _, c := range capabilityLines() {
		name := c[len(c)-1]
		if !slices.Contains(caps, name) {
			caps = append(caps, name)
		}
	}
	return caps
}

// capabilityLines returns the capabilities file's entries: each a
// capability, optionally followed by its replacement on older runtimes.
func capabilityLines() [][]string {
	var lines [][]string
	sc := bufio.NewScanner(strings.NewReader(capabilitiesFile))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		lines = append(lines, strings.Fields(line))
	}
	return lines
}

// Mount is a host path mounted read-only into the container.
type Mount struct{ Host, Container string }

// Mounts are the host paths the container reads, with where they go: the
// host's /proc and /etc/passwd under /hostfs (host_path: /hostfs), and the
// kernel's BTF for the eBPF tracker. The Kubernetes manifest and
// docs/running.md list the same (checked by testing/deploy).
func Mounts() []Mount {
	return []Mount{
		{Host: "/proc", Container: HostFS + "/proc"},
		{Host: "/etc/passwd", Container: HostFS + "/etc/passwd"},
		{Host: "/sys/kernel/btf", Container: "/sys/kernel/btf"},
	}
}

// DockerRunArgs are the `docker run` options that give the container what
// it needs, as docs/running.md shows them: the host's PID namespace, the
// capabilities (caps: Capabilities or CapabilitiesForOldRuntimes) and the
// read-only mounts. The container needs no network of its own for
// attribution (every namespace's sockets are read through /hostfs/proc).
func DockerRunArgs(caps []string) []string {
	args := []string{"--pid=host"}
	for _, c := range caps {
		args = append(args, "--cap-add="+c)
	}
	for _, m := range Mounts() {
		args = append(args, "--volume="+m.Host+":"+m.Container+":ro")
	}
	return args
}

// Version is the version the artifacts carry: the pinned beats version, as
// netprocbeat reports it (`netprocbeat version`).
func Version() string { return version.GetDefaultVersion() }
