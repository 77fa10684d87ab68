//go:build linux

package add_network_process

import (
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/elastic/beats/v7/libbeat/beat"
	"github.com/elastic/beats/v7/libbeat/processors/add_process_metadata"
	conf "github.com/elastic/elastic-agent-libs/config"
	"github.com/elastic/elastic-agent-libs/logp"
	"github.com/elastic/elastic-agent-libs/mapstr"
)

// TestEventEntityIDsJoinWithAddProcessMetadata: on a real connection
// between a helper process and this test process, the entity IDs this
// processor writes for both ends and their parents are the ones libbeat's
// add_process_metadata writes for the same PIDs, so the events join.
// (internal/procs TestEntityIDMatchesBeats also checks Auditbeat's formula.)
func TestEventEntityIDsJoinWithAddProcessMetadata(t *testing.T) {
	if _, err := os.Stat("/etc/machine-id"); err != nil {
		t.Skip("no /etc/machine-id: the beats write no entity_id either")
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	pid, client := startClient(t, "tcp4", l.Addr().String())
	srvPort := l.Addr().(*net.TCPAddr).Port

	p := newFromYAML(t, "include_fields: [pid, entity_id, parent.pid, parent.entity_id, parent.name]\n")
	var ev *beat.Event
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		// A loaded machine may need more than one rescan_timeout.
		ev, err = p.Run(event(client.IP.String(), client.Port, "127.0.0.1", srvPort, "tcp"))
		if err != nil {
			t.Fatal(err)
		}
		_, errS := ev.GetValue("source.process.entity_id")
		_, errD := ev.GetValue("destination.process.entity_id")
		if (errS == nil && errD == nil) || time.Now().After(deadline) {
			break
		}
	}
	if got := getInt(t, ev, "source.process.pid"); got != pid {
		t.Fatalf("source.process.pid = %d, want the client helper %d", got, pid)
	}
	if got := getInt(t, ev, "destination.process.pid"); got != os.Getpid() {
		t.Fatalf("destination.process.pid = %d, want this process %d", got, os.Getpid())
	}
	if got := getInt(t, ev, "source.process.parent.pid"); got != os.Getpid() {
		t.Fatalf("source.process.parent.pid = %d, want this process %d (the helper's parent)", got, os.Getpid())
	}
	for _, f := range []string{"source.process", "source.process.parent", "destination.process", "destination.process.parent"} {
		want := addProcessMetadataEntityID(t, getInt(t, ev, f+".pid"))
		got, err := ev.GetValue(f + ".entity_id")
		if err != nil || got != want {
			t.Errorf("%s.entity_id = %v (%v), add_process_metadata's for PID %d = %q\nevent: %s", f, got, err, getInt(t, ev, f+".pid"), want, ev.Fields.StringToPrint())
		}
	}
	exe, _ := os.Executable()
	if name, _ := ev.GetValue("source.process.parent.name"); name == nil || name == "" {
		t.Errorf("source.process.parent.name missing (the parent is this test binary %s)", exe)
	}
}

// addProcessMetadataEntityID returns the process.entity_id libbeat's
// add_process_metadata writes for pid.
func addProcessMetadataEntityID(t *testing.T, pid int) string {
	t.Helper()
	p, err := add_process_metadata.New(conf.MustNewConfigFrom(mapstr.M{
		"match_pids": []string{"pid"}, "target": "apm", "include_fields": []string{"process.entity_id"},
	}), logp.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	ev, err := p.Run(&beat.Event{Fields: mapstr.M{"pid": pid}})
	if err != nil {
		t.Fatalf("add_process_metadata on PID %d: %v", pid, err)
	}
	v, err := ev.GetValue("apm.process.entity_id")
	if err != nil {
		t.Fatalf("add_process_metadata wrote no entity_id for PID %s: %v", strconv.Itoa(pid), ev.Fields)
	}
	return v.(string)
}
