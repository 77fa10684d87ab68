package deploy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Paths inside the image.
const (
	ImageHome   = "/usr/share/netprocbeat"
	ImageBinary = ImageHome + "/netprocbeat"
	ImageConfig = ImageHome + "/netprocbeat.yml"
	// ImageConnections is where the image's configuration reads NDJSON
	// connection events from.
	ImageConnections = "/var/log/netprocbeat/connections"
	// HostFS is where the host's files are mounted (host_path: /hostfs).
	HostFS = "/hostfs"
)

// ImageTag is the default tag of the image: netprocbeat:<version>.
func ImageTag() string { return Name + ":" + Version() }

// caCertificates is where Debian keeps the bundle Go's crypto/x509 reads; the
// image carries the build machine's, so HTTPS outputs verify servers.
const caCertificates = "/etc/ssl/certs/ca-certificates.crt"

// imageFiles lists the image's root filesystem. The image has no shell and
// no package manager: only the static binary, its configuration and what Go
// reads from /etc.
func (s Sources) imageFiles() ([]file, error) {
	docs, err := s.docFiles()
	if err != nil {
		return nil, err
	}
	files := []file{
		{dst: "/etc", mode: fs.ModeDir | 0o755},
		{dst: "/etc/passwd", data: []byte("root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"), mode: 0o644},
		{dst: "/etc/group", data: []byte("root:x:0:\nnogroup:x:65534:\n"), mode: 0o644},
		// libbeat's host information (go-sysinfo) needs an os-release file.
		{dst: "/etc/os-release", data: []byte("NAME=\"netprocbeat\"\nID=netprocbeat\nVERSION_ID=\"" + Version() + "\"\nPRETTY_NAME=\"netprocbeat " + Version() + " (scratch image)\"\n"), mode: 0o644},
		{dst: "/tmp", mode: fs.ModeDir | fs.ModeSticky | 0o777},
		{dst: "/root", mode: fs.ModeDir | 0o700},
		{dst: HostFS, mode: fs.ModeDir | 0o755},
		{dst: ImageConnections, mode: fs.ModeDir | 0o755},
		{dst: ImageHome, mode: fs.ModeDir | 0o755},
		{dst: ImageHome + "/data", mode: fs.ModeDir | 0o750},
		{dst: ImageHome + "/logs", mode: fs.ModeDir | 0o750},
		// Filebeat's module directory; netprocbeat ships no modules, but
		// Filebeat logs an error at startup when it is missing.
		{dst: ImageHome + "/module", mode: fs.ModeDir | 0o755},
		{dst: ImageBinary, src: s.Binary, mode: 0o755},
		{dst: ImageConfig, src: filepath.Join(s.Root, "deploy", "docker", "netprocbeat.yml"), mode: 0o644},
		{dst: ImageHome + "/netprocbeat.reference.yml", src: filepath.Join(s.Root, "_meta", "config.yml"), mode: 0o644},
	}
	for _, d := range docs {
		d.dst = ImageHome + "/" + d.dst
		files = append(files, d)
	}
	if _, err := os.Stat(caCertificates); err == nil {
		files = append(files, file{dst: caCertificates, src: caCertificates, mode: 0o644})
	}
	return files, nil
}

// WriteRootfs writes the image's root filesystem as a tar stream, as
// `docker import` takes it.
func (s Sources) WriteRootfs(w io.Writer) error {
	files, err := s.imageFiles()
	if err != nil {
		return err
	}
	st, err := os.Stat(s.Binary)
	if err != nil {
		return err
	}
	return writeTar(w, files, st.ModTime())
}

// ImageChanges are the Dockerfile instructions `docker import --change`
// applies to the root filesystem. The entrypoint sets path.home, so the
// configuration is read from /usr/share/netprocbeat/netprocbeat.yml and data
// and logs stay under /usr/share/netprocbeat, and --environment container
// (as Filebeat's image does); arguments given to `docker run` are appended.
func ImageChanges() []string {
	return []string{
		"WORKDIR " + ImageHome,
		"ENV PATH=" + ImageHome + ":/usr/bin:/bin",
		`ENTRYPOINT ["` + ImageBinary + `", "--environment", "container", "--path.home", "` + ImageHome + `"]`,
		"LABEL org.opencontainers.image.title=" + Name,
		"LABEL org.opencontainers.image.version=" + Version(),
		"LABEL org.opencontainers.image.description=\"Filebeat with the add_network_process processor\"",
	}
}

// ImportImage builds the image offline and tags it: the root filesystem is
// streamed to `docker import` (no registry, no base image, no builder).
// The docker CLI must reach a daemon.
func (s Sources) ImportImage(ctx context.Context, tag string) error {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(s.WriteRootfs(pw)) }()
	args := []string{"import"}
	for _, c := range ImageChanges() {
		args = append(args, "--change", c)
	}
	args = append(args, "-", tag)
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdin = pr
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	pr.Close()
	if err != nil {
		return fmt.Errorf("docker import %s: %w\n%s", tag, err, strings.TrimSpace(out.String()))
	}
	return nil
}
