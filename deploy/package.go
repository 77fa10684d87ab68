package deploy

import (
	"compress/gzip"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
)

// Installed paths of the .deb, as Filebeat's packages lay them out.
const (
	PkgHome    = "/usr/share/netprocbeat"
	PkgBinary  = PkgHome + "/bin/netprocbeat"
	PkgWrapper = "/usr/bin/netprocbeat"
	PkgConfig  = "/etc/netprocbeat"
	PkgData    = "/var/lib/netprocbeat"
	PkgLogs    = "/var/log/netprocbeat"
	PkgUnit    = "/lib/systemd/system/netprocbeat.service"
)

// tarArch and debArch name architectures as Filebeat's artifacts do.
var (
	tarArch = map[string]string{"amd64": "x86_64", "arm64": "arm64"}
	debArch = map[string]string{"amd64": "amd64", "arm64": "arm64"}
)

// TarGz writes netprocbeat-<version>-linux-<arch>.tar.gz into outDir and
// returns its path. Like Filebeat's, it unpacks to one directory holding the
// binary, netprocbeat.yml, netprocbeat.reference.yml and the license and
// README files; run it from there (path.home is the working directory).
func (s Sources) TarGz(outDir string) (string, error) {
	arch, ok := tarArch[s.goarch()]
	if !ok {
		return "", fmt.Errorf("package: unsupported GOARCH %q (want amd64 or arm64)", s.goarch())
	}
	base := fmt.Sprintf("%s-%s-linux-%s", Name, Version(), arch)
	docs, err := s.docFiles()
	if err != nil {
		return "", err
	}
	list := []file{
		{dst: base, mode: fs.ModeDir | 0o755},
		{dst: base + "/" + Name, src: s.Binary, mode: 0o755},
		{dst: base + "/netprocbeat.yml", src: filepath.Join(s.Root, "deploy", "package", "netprocbeat.yml"), mode: 0o600},
		{dst: base + "/netprocbeat.reference.yml", src: filepath.Join(s.Root, "_meta", "config.yml"), mode: 0o644},
	}
	for _, d := range docs {
		d.dst = base + "/" + d.dst
		list = append(list, d)
	}
	st, err := os.Stat(s.Binary)
	if err != nil {
		return "", err
	}
	out := filepath.Join(outDir, base+".tar.gz")
	f, err := os.Create(out)
	if err != nil {
		return "", err
	}
	zw := gzip.NewWriter(f)
	err = writeTar(zw, list, st.ModTime())
	if cerr := zw.Close(); err == nil {
		err = cerr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out)
		return "", fmt.Errorf("writing %s: %w", out, err)
	}
	return out, nil
}

// Deb writes netprocbeat-<version>-<arch>.deb into outDir with nfpm and
// returns its path. It installs the binary as
// /usr/share/netprocbeat/bin/netprocbeat, a /usr/bin/netprocbeat script that
// runs it with the packaged paths, /etc/netprocbeat/netprocbeat.yml (a
// configuration file dpkg keeps on upgrade), the reference configuration,
// the systemd unit, and empty /var/lib/netprocbeat and /var/log/netprocbeat.
func (s Sources) Deb(outDir string) (string, error) {
	arch, ok := debArch[s.goarch()]
	if !ok {
		return "", fmt.Errorf("package: unsupported GOARCH %q (want amd64 or arm64)", s.goarch())
	}
	docs, err := s.docFiles()
	if err != nil {
		return "", err
	}
	st, err := os.Stat(s.Binary)
	if err != nil {
		return "", err
	}
	mtime := st.ModTime()
	content := func(src, dst, typ string, mode fs.FileMode) *files.Content {
		return &files.Content{Source: src, Destination: dst, Type: typ,
			FileInfo: &files.ContentFileInfo{Owner: "root", Group: "root", Mode: mode, MTime: mtime}}
	}
	pkg := filepath.Join(s.Root, "deploy", "package")
	contents := files.Contents{
		content(s.Binary, PkgBinary, "", 0o755),
		content(filepath.Join(pkg, "netprocbeat.sh"), PkgWrapper, "", 0o755),
		content(filepath.Join(pkg, "netprocbeat.yml"), PkgConfig+"/netprocbeat.yml", files.TypeConfigNoReplace, 0o600),
		content(filepath.Join(s.Root, "_meta", "config.yml"), PkgConfig+"/netprocbeat.reference.yml", files.TypeConfig, 0o644),
		content(filepath.Join(pkg, "netprocbeat.service"), PkgUnit, "", 0o644),
		content("", PkgData, files.TypeDir, 0o750),
		content("", PkgLogs, files.TypeDir, 0o750),
	}
	for _, d := range docs {
		contents = append(contents, content(d.src, PkgHome+"/"+d.dst, "", 0o644))
	}
	info := nfpm.WithDefaults(&nfpm.Info{
		Name:        Name,
		Arch:        arch,
		Platform:    "linux",
		Version:     Version(),
		Section:     "net",
		Priority:    "optional",
		Maintainer:  "netprocbeat developers <netprocbeat@users.noreply.github.com>",
		Description: "Filebeat with add_network_process: the local processes on both ends of each network event's connection.",
		Vendor:      "netprocbeat",
		Homepage:    "https://github.com/netprocbeat/netprocbeat",
		MTime:       mtime,
		Overridables: nfpm.Overridables{
			Contents: contents,
		},
	})
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return "", fmt.Errorf("deb: %w", err)
	}
	packager, err := nfpm.Get("deb")
	if err != nil {
		return "", err
	}
	out := filepath.Join(outDir, fmt.Sprintf("%s-%s-%s.deb", Name, Version(), arch))
	f, err := os.Create(out)
	if err != nil {
		return "", err
	}
	err = packager.Package(info, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out)
		return "", fmt.Errorf("writing %s: %w", out, err)
	}
	return out, nil
}
