//go:build linux

package tracker

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// newHelperEnv makes the test binary call New once and print "loaded" or
// "error: <New's error>".
const newHelperEnv = "NETPROCBEAT_TRACKER_NEW_HELPER"

func init() {
	if os.Getenv(newHelperEnv) == "" {
		return
	}
	tr, err := New(Options{})
	if err != nil {
		os.Stdout.WriteString("error: " + err.Error() + "\n")
		os.Exit(0)
	}
	tr.Close()
	os.Stdout.WriteString("loaded\n")
	os.Exit(0)
}

// TestNewRefusesPIDNamespace: in a PID namespace of its own (a container
// without hostPID), New fails and says why and what to do; in the host's
// namespace the same helper loads.
func TestNewRefusesPIDNamespace(t *testing.T) {
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) not installed")
	}
	newTracker(t, Options{}) // skips where the tracker cannot load at all
	for _, tc := range []struct {
		name string
		argv []string
		want []string
	}{
		{"host", []string{os.Args[0], "-test.run=^$"}, []string{"loaded"}},
		{"own pid namespace", []string{"unshare", "--pid", "--fork", "--mount-proc", os.Args[0], "-test.run=^$"},
			[]string{"error: ", "PID namespace other than the host's", "hostPID"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(tc.argv[0], tc.argv[1:]...)
			cmd.Env = append(os.Environ(), newHelperEnv+"=1")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %v\n%s", tc.argv, err, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output %q does not contain %q", out, w)
				}
			}
		})
	}
}
