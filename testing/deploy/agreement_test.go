//go:build linux

package deploy_test

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/netprocbeat/netprocbeat/deploy"
)

var update = flag.Bool("update", false, "rewrite the generated docker run block in docs/running.md")

const manifestPath = "deploy/kubernetes/netprocbeat-kubernetes.yaml"

// k8sObject is the part of a Kubernetes object the tests read.
type k8sObject struct {
	Kind     string                `yaml:"kind"`
	Metadata struct{ Name string } `yaml:"metadata"`
	Data     map[string]string     `yaml:"data"`
	Spec     struct {
		Template struct {
			Spec struct {
				HostPID    bool `yaml:"hostPID"`
				Containers []struct {
					Name            string   `yaml:"name"`
					Image           string   `yaml:"image"`
					Args            []string `yaml:"args"`
					SecurityContext struct {
						Capabilities struct {
							Add []string `yaml:"add"`
						} `yaml:"capabilities"`
					} `yaml:"securityContext"`
					VolumeMounts []struct {
						Name      string `yaml:"name"`
						MountPath string `yaml:"mountPath"`
						ReadOnly  bool   `yaml:"readOnly"`
						SubPath   string `yaml:"subPath"`
					} `yaml:"volumeMounts"`
				} `yaml:"containers"`
				Volumes []struct {
					Name     string `yaml:"name"`
					HostPath *struct {
						Path string `yaml:"path"`
					} `yaml:"hostPath"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

func readManifest(t *testing.T) map[string]k8sObject {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(moduleRoot, manifestPath))
	if err != nil {
		t.Fatal(err)
	}
	objs := map[string]k8sObject{}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	for {
		var o k8sObject
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", manifestPath, err)
		}
		if o.Kind != "" {
			objs[o.Kind] = o
		}
	}
	return objs
}

// TestManifestAgreesWithCapabilitiesAndMounts checks the DaemonSet against
// the one list of capabilities (deploy/capabilities) and mounts
// (deploy.Mounts) that the Docker test runs with, and that its image is the
// one `go run mage.go image` tags.
func TestManifestAgreesWithCapabilitiesAndMounts(t *testing.T) {
	objs := readManifest(t)
	for _, kind := range []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet"} {
		if _, ok := objs[kind]; !ok {
			t.Errorf("%s: no %s", manifestPath, kind)
		}
	}
	pod := objs["DaemonSet"].Spec.Template.Spec
	if !pod.HostPID {
		t.Error("DaemonSet: hostPID is not true (docker run --pid=host in the Docker test)")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("DaemonSet: %d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	if c.Image != deploy.ImageTag() {
		t.Errorf("DaemonSet image %q, want %q (go run mage.go image)", c.Image, deploy.ImageTag())
	}
	if got, want := c.SecurityContext.Capabilities.Add, deploy.Capabilities(); !slices.Equal(got, want) {
		t.Errorf("DaemonSet capabilities.add = %v, want deploy/capabilities %v", got, want)
	}
	hostPaths := map[string]string{}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	for _, m := range deploy.Mounts() {
		found := false
		for _, vm := range c.VolumeMounts {
			if vm.MountPath == m.Container {
				found = true
				if hostPaths[vm.Name] != m.Host || !vm.ReadOnly {
					t.Errorf("DaemonSet mount %s: volume %q is hostPath %q (readOnly %v), want hostPath %s read-only", m.Container, vm.Name, hostPaths[vm.Name], vm.ReadOnly, m.Host)
				}
			}
		}
		if !found {
			t.Errorf("DaemonSet: no volumeMount at %s (hostPath %s)", m.Container, m.Host)
		}
	}
	// The configuration the container is given is the ConfigMap's.
	var cfgMounted bool
	for _, vm := range c.VolumeMounts {
		if vm.SubPath == "netprocbeat.yml" && slices.Contains(c.Args, vm.MountPath) {
			cfgMounted = true
		}
	}
	if !cfgMounted {
		t.Errorf("DaemonSet: args %v do not point -c at the ConfigMap's netprocbeat.yml", c.Args)
	}
}

// TestManifestConfigMap checks that the ConfigMap's netprocbeat.yml chains
// add_network_process after add_kubernetes_metadata, reading the node
// through /hostfs and searching the event's container first, and that
// `netprocbeat test config` accepts it.
func TestManifestConfigMap(t *testing.T) {
	cfg, ok := readManifest(t)["ConfigMap"].Data["netprocbeat.yml"]
	if !ok {
		t.Fatalf("%s: the ConfigMap has no netprocbeat.yml", manifestPath)
	}
	var parsed struct {
		Inputs []struct {
			Processors []map[string]map[string]any `yaml:"processors"`
		} `yaml:"netprocbeat.inputs"`
	}
	if err := yaml.Unmarshal([]byte(cfg), &parsed); err != nil {
		t.Fatalf("ConfigMap netprocbeat.yml: %v", err)
	}
	if len(parsed.Inputs) == 0 {
		t.Fatal("ConfigMap netprocbeat.yml: no inputs")
	}
	var chain []string
	var anp map[string]any
	for _, p := range parsed.Inputs[0].Processors {
		for name, opts := range p {
			chain = append(chain, name)
			if name == "add_network_process" {
				anp = opts
			}
		}
	}
	k, n := slices.Index(chain, "add_kubernetes_metadata"), slices.Index(chain, "add_network_process")
	if k < 0 || n < 0 || k > n {
		t.Errorf("ConfigMap processors %v: want add_kubernetes_metadata, then add_network_process", chain)
	}
	if anp["host_path"] != deploy.HostFS || anp["container_id_field"] != "container.id" {
		t.Errorf("ConfigMap add_network_process %v: want host_path %s and container_id_field container.id", anp, deploy.HostFS)
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "netprocbeat.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sources(t).Binary, "test", "config", "-c", path, "--path.home", dir)
	// The values the DaemonSet's env gives.
	cmd.Env = append(os.Environ(), "NODE_NAME=node-1", "ELASTICSEARCH_USERNAME=elastic", "ELASTICSEARCH_PASSWORD=changeme")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "Config OK") {
		t.Errorf("netprocbeat test config on the ConfigMap's netprocbeat.yml: %v\n%s", err, out)
	}
}

const (
	runningDoc      = "docs/running.md"
	dockerRunBegin  = "<!-- docker run: generated from deploy/capabilities and deploy.Mounts; go test ./testing/deploy -run TestDocsDockerRun -update -->\n"
	dockerRunEnding = "<!-- end of docker run -->\n"
)

// dockerRunBlock is the docs' docker run example, rendered from the same
// options the Docker test runs the image with.
func dockerRunBlock() string {
	var b strings.Builder
	b.WriteString("```sh\ndocker run -d --name netprocbeat \\\n")
	for _, a := range deploy.DockerRunArgs(deploy.Capabilities()) {
		b.WriteString("  " + a + " \\\n")
	}
	b.WriteString("  --volume=" + deploy.ImageConnections + ":" + deploy.ImageConnections + ":ro \\\n")
	b.WriteString("  --env=ELASTICSEARCH_HOSTS=https://elasticsearch:9200 \\\n")
	b.WriteString("  " + deploy.ImageTag() + "\n```\n")
	return b.String()
}

// TestDocsDockerRun checks that docs/running.md shows the docker run options
// the Docker test uses (capabilities, mounts, PID namespace) and lists the
// capabilities the capabilities file and the manifest have; -update rewrites
// the block.
func TestDocsDockerRun(t *testing.T) {
	path := filepath.Join(moduleRoot, runningDoc)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	begin, end := strings.Index(doc, dockerRunBegin), strings.Index(doc, dockerRunEnding)
	if begin < 0 || end < begin {
		t.Fatalf("%s: no docker run block between %q and %q", runningDoc, dockerRunBegin, dockerRunEnding)
	}
	begin += len(dockerRunBegin)
	want := dockerRunBlock()
	if doc[begin:end] != want {
		if *update {
			doc = doc[:begin] + want + doc[end:]
			if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
				t.Fatal(err)
			}
		} else {
			t.Errorf("%s: the docker run block differs from deploy's options (run with -update):\ngot:\n%s\nwant:\n%s", runningDoc, doc[begin:end], want)
		}
	}
	// Every capability list in the document (Kubernetes' add: [...] and the
	// capability table) names exactly the capabilities file's.
	for _, line := range strings.Split(doc, "\n") {
		if i := strings.Index(line, "add: ["); i >= 0 {
			list, _, _ := strings.Cut(line[i+len("add: ["):], "]")
			var got []string
			for _, c := range strings.Split(list, ",") {
				got = append(got, strings.TrimSpace(c))
			}
			if !slices.Equal(got, deploy.Capabilities()) {
				t.Errorf("%s: %q lists %v, want deploy/capabilities %v", runningDoc, strings.TrimSpace(line), got, deploy.Capabilities())
			}
		}
	}
	var table []string
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(line, "| `CAP_") {
			name := strings.TrimPrefix(strings.SplitN(line, "`", 3)[1], "CAP_")
			table = append(table, name)
		}
	}
	if !slices.Equal(table, deploy.Capabilities()) {
		t.Errorf("%s: the capability table lists %v, want deploy/capabilities %v", runningDoc, table, deploy.Capabilities())
	}
}
