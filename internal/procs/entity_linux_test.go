//go:build linux

package procs

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/elastic/beats/v7/libbeat/beat"
	"github.com/elastic/beats/v7/libbeat/processors/add_process_metadata"
	"github.com/elastic/beats/v7/x-pack/auditbeat/module/system"
	conf "github.com/elastic/elastic-agent-libs/config"
	"github.com/elastic/elastic-agent-libs/logp"
	"github.com/elastic/elastic-agent-libs/mapstr"
	"github.com/elastic/go-sysinfo"
)

// auditbeatEntityID is Auditbeat's system/process entityID as written in
// the pinned beats, x-pack/auditbeat/module/system/process/process.go:115-123
// (unexported there), over its own system.NewEntityHash
// (x-pack/auditbeat/module/system/entity_hash.go:19-31).
func auditbeatEntityID(hostID string, pid int, startTime time.Time) string {
	h := system.NewEntityHash()
	h.Write([]byte(hostID))
	binary.Write(h, binary.LittleEndian, int64(pid))                    //nolint:errcheck // as in beats
	binary.Write(h, binary.LittleEndian, int64(startTime.Nanosecond())) //nolint:errcheck // as in beats
	return h.Sum()
}

// auditbeatInputs are the inputs Auditbeat's procfs (go-sysinfo) backend
// hashes for pid: the host ID of x-pack/auditbeat/module/system/system.go:58-62
// and the StartTime of x-pack/auditbeat/module/system/process/gosysinfo_provider.go:329.
func auditbeatInputs(t *testing.T, pid int) (string, time.Time) {
	t.Helper()
	host, err := sysinfo.Host()
	if err != nil {
		t.Fatalf("sysinfo.Host: %v", err)
	}
	p, err := sysinfo.Process(pid)
	if err != nil {
		t.Fatalf("sysinfo.Process(%d): %v", pid, err)
	}
	info, err := p.Info()
	if err != nil {
		t.Fatalf("Info of %d: %v", pid, err)
	}
	return host.Info().UniqueID, info.StartTime
}

// addProcessMetadataEntityID runs libbeat's add_process_metadata processor
// on an event naming pid and returns the process.entity_id it writes
// (libbeat/processors/add_process_metadata/gosysinfo_provider.go:108).
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
		t.Fatalf("add_process_metadata wrote no entity_id for PID %d: %v", pid, ev.Fields)
	}
	return v.(string)
}

// TestEntityIDMatchesBeats: for a real process and its parent (this test
// binary), the engine's entity IDs are the ones Auditbeat's system/process
// dataset and libbeat's add_process_metadata give the same processes.
func TestEntityIDMatchesBeats(t *testing.T) {
	if machineID("/") == "" {
		t.Skip("this host has no /etc/machine-id: the beats write no entity_id either")
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pid := cmd.Process.Pid
	// Wait for the exec: before it, the child is a copy of this binary.
	var startKey uint64
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		exe, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "exe"))
		stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if err == nil && filepath.Base(exe) == "sleep" {
			if startKey, err = ParseStatStart(stat); err != nil {
				t.Fatal(err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("PID %d did not exec sleep (exe %q)", pid, exe)
		}
	}
	e, err := NewEngine("/")
	if err != nil {
		t.Fatal(err)
	}
	if p, err := e.Process(pid, startKey); err != nil || p.Parent != nil || p.EntityID == "" {
		t.Fatalf("without DescribeParents: Process(%d) = %+v, %v; want an entity_id and no parent", pid, p, err)
	}
	e.(*linuxEngine).setDescribeParents(true)
	p, err := e.Process(pid, startKey)
	if err != nil {
		t.Fatal(err)
	}

	hostID, start := auditbeatInputs(t, pid)
	if want := auditbeatEntityID(hostID, pid, start); p.EntityID != want {
		t.Errorf("entity_id of PID %d = %q, Auditbeat's = %q", pid, p.EntityID, want)
	}
	if want := addProcessMetadataEntityID(t, pid); p.EntityID != want {
		t.Errorf("entity_id of PID %d = %q, add_process_metadata's = %q", pid, p.EntityID, want)
	}

	if p.Parent == nil {
		t.Fatalf("PID %d: no parent described, want this test process %d", pid, os.Getpid())
	}
	self := os.Getpid()
	hostID, selfStart := auditbeatInputs(t, self)
	exe, _ := os.Executable()
	if p.Parent.PID != self || p.Parent.Executable != exe || !p.Parent.Start.Equal(selfStart) {
		t.Errorf("parent = %+v, want PID %d, executable %s, start %v", *p.Parent, self, exe, selfStart)
	}
	if want := auditbeatEntityID(hostID, self, selfStart); p.Parent.EntityID != want {
		t.Errorf("parent.entity_id = %q, Auditbeat's for PID %d = %q", p.Parent.EntityID, self, want)
	}
	if want := addProcessMetadataEntityID(t, self); p.Parent.EntityID != want {
		t.Errorf("parent.entity_id = %q, add_process_metadata's for PID %d = %q", p.Parent.EntityID, self, want)
	}
	if p.EntityID == p.Parent.EntityID || len(p.EntityID) != 16 {
		t.Errorf("entity IDs %q (process) and %q (parent): want two different 16-character IDs", p.EntityID, p.Parent.EntityID)
	}
}

// BenchmarkDescribeProcess: what describing a process costs, once per
// process (and again every process_cache_ttl), not per event: part=process
// is Engine.Process of a real child process (sleep) of this test binary,
// which includes describing its parent; part=parent is describing the
// parent alone, the share of part=process that the parent.* fields add.
func BenchmarkDescribeProcess(b *testing.B) {
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pid := cmd.Process.Pid
	time.Sleep(100 * time.Millisecond) // let it exec
	e, err := NewEngine("/")
	if err != nil {
		b.Fatal(err)
	}
	le := e.(*linuxEngine)
	le.setDescribeParents(true)
	b.Run("part=process", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			p, err := le.Process(pid, 0)
			if err != nil || p.Parent == nil {
				b.Fatalf("Process(%d) = %+v, %v; want it with its parent", pid, p, err)
			}
		}
	})
	b.Run("part=parent", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if p, _ := le.parent(os.Getpid()); p == nil {
				b.Fatal("parent not described")
			}
		}
	})
}
