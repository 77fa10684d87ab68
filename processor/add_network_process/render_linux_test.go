//go:build linux

package add_network_process

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/elastic/beats/v7/libbeat/beat"
	conf "github.com/elastic/elastic-agent-libs/config"
	"github.com/elastic/elastic-agent-libs/logp"
	"github.com/elastic/elastic-agent-libs/mapstr"
)

const renderHost = `
machine_id: 0f0e0d0c0b0a09080706050403020100
users: {1000: alice}
sockets:
  - {proto: tcp, local: "127.0.0.1:8080", remote: "127.0.0.1:40000", inode: 3001}
processes:
  - {pid: 300, ppid: 1, comm: supervisor, args: [/usr/bin/supervisor], exe: /usr/bin/supervisor, cwd: /, start_ticks: 100}
  - {pid: 301, ppid: 300, comm: app, args: [/srv/app, --port, "8080"], exe: /srv/app, cwd: /srv, start_ticks: 200, uid: 1000, sockets: [3001]}
`

// TestRunObjectsShareNoMaps: events enriched concurrently from the same
// cached process each get maps and args of their own, and within one event
// source.process, destination.process and process share nothing: a later
// processor that edits one object of one event changes nothing else.
func TestRunObjectsShareNoMaps(t *testing.T) {
	root := biWriteFakeHost(t, renderHost)
	c, err := conf.NewConfigFrom(fmt.Sprintf("host_path: %q\nmin_rescan_interval: 1h\nsocket_cache_ttl: 1h\n"+
		"include_fields: [pid, name, args, executable, start, entity_id, parent.pid, parent.name, user.id, user.name]\n", root))
	if err != nil {
		t.Fatal(err)
	}
	bp, err := New(c, logp.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bp.(*processor).Close() })
	newEvent := func() *beat.Event {
		return &beat.Event{Timestamp: fuzzEventTime, Fields: mapstr.M{
			"source":      mapstr.M{"ip": "127.0.0.1", "port": 8080},
			"destination": mapstr.M{"ip": "127.0.0.1", "port": 40000},
		}}
	}
	run := func(t *testing.T) *beat.Event {
		ev, err := bp.Run(newEvent())
		if err != nil {
			t.Error(err)
		}
		return ev
	}
	want := run(t).Fields.Clone()
	if v, _ := want.GetValue("process.parent.name"); v != "supervisor" {
		t.Fatalf("process.parent.name = %v, want supervisor: %s", v, want.StringToPrint())
	}
	objects := []string{"source.process", "process"}

	// Mutate every map and the args of one object per event, concurrently.
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				ev := run(t)
				if ev == nil {
					return
				}
				obj := objects[i%len(objects)]
				m, err := ev.GetValue(obj)
				if err != nil {
					t.Errorf("%s missing", obj)
					return
				}
				pm := m.(mapstr.M)
				pm["name"] = "edited"
				pm["parent"].(mapstr.M)["name"] = "edited"
				pm["user"].(mapstr.M)["name"] = "edited"
				args := pm["args"].([]string)
				args[0] = "edited"
				pm["args"] = append(args, "more")
				// The other object of the same event is untouched.
				other := objects[(i+1)%len(objects)]
				if got, _ := ev.GetValue(other); !mapEqual(got.(mapstr.M), want, other) {
					t.Errorf("editing %s changed %s: %v", obj, other, got)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := run(t).Fields; !mapEqual(got, want, "") {
		t.Errorf("after edits of other events, a new event = %s, want %s", got.StringToPrint(), want.StringToPrint())
	}
}

// mapEqual compares got with want's object at key ("" for the whole event).
func mapEqual(got, want mapstr.M, key string) bool {
	if key != "" {
		w, err := want.GetValue(key)
		if err != nil {
			return false
		}
		want = w.(mapstr.M)
	}
	gf, wf := got.Flatten(), want.Flatten()
	if len(gf) != len(wf) {
		return false
	}
	for k, v := range wf {
		if a, ok := v.([]string); ok {
			if b, ok := gf[k].([]string); !ok || !slices.Equal(a, b) {
				return false
			}
			continue
		}
		if gf[k] != v {
			return false
		}
	}
	return true
}
