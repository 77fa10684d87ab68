package procs

import (
	"strings"
	"testing"
)

func TestParseCgroupContainerID(t *testing.T) {
	const id = "2dcbab615aebfa9313feffc5cfdacd381543cfa04c6be3f39ac656e55ef34805"
	cases := []struct {
		name, in, want string
	}{
		{"cgroup v1 docker", "12:pids:/docker/" + id + "\n11:memory:/docker/" + id + "\n", id},
		{"cgroup v2 systemd scope", "0::/system.slice/docker-" + id + ".scope\n", id},
		{"kubernetes containerd", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-" + id + ".scope\n", id},
		{"host process", "0::/user.slice/user-0.slice/session-1.scope\n", ""},
		{"init", "0::/init.scope\n", ""},
		{"short hex is not an id", "0::/docker/abc123\n", ""},
		{"garbage lines are skipped", "no colons here\n:\n0::/docker/" + id + "\n", id},
		{"empty", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCgroupContainerID(strings.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// FuzzParseCgroupContainerID: any /proc/<pid>/cgroup content gives either
// no ID or a 64-hex-digit one that appears in the input.
func FuzzParseCgroupContainerID(f *testing.F) {
	f.Add("0::/system.slice/docker-2dcbab615aebfa9313feffc5cfdacd381543cfa04c6be3f39ac656e55ef34805.scope\n")
	f.Add("12:pids:/docker/2dcbab615aebfa9313feffc5cfdacd381543cfa04c6be3f39ac656e55ef34805\n0::/\n")
	f.Add("::\n:\n\n")
	f.Fuzz(func(t *testing.T, in string) {
		id, err := ParseCgroupContainerID(strings.NewReader(in))
		if err != nil || id == "" {
			return
		}
		if len(id) != 64 || !strings.Contains(in, id) {
			t.Fatalf("id %q from %q", id, in)
		}
		for _, c := range id {
			if !strings.ContainsRune("0123456789abcdef", c) {
				t.Fatalf("id %q is not lower-case hex", id)
			}
		}
	})
}
