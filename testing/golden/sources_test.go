package golden

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/elastic/elastic-agent-libs/logp/logptest"
	"gopkg.in/yaml.v3"

	"github.com/netprocbeat/netprocbeat/internal/procs"
)

// sourcesFile is a case's sources.yml: what the watcher's owner sources
// answer, so that every kind of answer (found_by) has a golden case.
type sourcesFile struct {
	// Tracker records: the eBPF tracker's answer for a tuple.
	Tracker []struct {
		Proto      string `yaml:"proto"`
		Local      string `yaml:"local"`
		Remote     string `yaml:"remote"`
		PID        int    `yaml:"pid"`
		StartTicks uint64 `yaml:"start_ticks"`
		Comm       string `yaml:"comm"`
		Closed     bool   `yaml:"closed"`
	} `yaml:"tracker"`
	// Resolve: the sock_diag exact lookup's answer for a connection (its
	// socket inode, owner and descriptor, verified against the fake host).
	Resolve []struct {
		Proto      string `yaml:"proto"`
		Local      string `yaml:"local"`
		Remote     string `yaml:"remote"`
		Inode      uint64 `yaml:"inode"`
		PID        int    `yaml:"pid"`
		StartTicks uint64 `yaml:"start_ticks"`
		FD         int32  `yaml:"fd"`
	} `yaml:"resolve"`
	// Conntrack entries; their presence turns the NAT lookup on.
	Conntrack []struct {
		OrigSrc  string `yaml:"orig_src"`
		OrigDst  string `yaml:"orig_dst"`
		ReplySrc string `yaml:"reply_src"`
		ReplyDst string `yaml:"reply_dst"`
	} `yaml:"conntrack"`
}

func loadSources(t *testing.T, path string) (*sourcesFile, bool) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	var s sourcesFile
	if err := yaml.Unmarshal(raw, &s); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &s, true
}

func proto(t *testing.T, s string) procs.Transport {
	switch s {
	case "tcp", "":
		return procs.TCP
	case "udp":
		return procs.UDP
	}
	t.Fatalf("sources.yml: proto %q", s)
	return 0
}

// watcher builds a watcher over the fake host at root with these sources.
func (s *sourcesFile) watcher(t *testing.T, root string) *procs.Watcher {
	e, err := procs.NewEngine(root)
	if err != nil {
		t.Fatal(err)
	}
	v, ok := e.(procs.OwnerVerifier)
	if !ok {
		t.Fatal("the engine cannot verify owners")
	}
	ge := &goldenEngine{Engine: e, OwnerVerifier: v}
	for _, r := range s.Resolve {
		ge.resolve = append(ge.resolve, procs.Socket{
			Transport: proto(t, r.Proto), Local: netip.MustParseAddrPort(r.Local), Remote: netip.MustParseAddrPort(r.Remote),
			Inode: r.Inode, PID: r.PID, StartKey: r.StartTicks, FD: r.FD,
		})
	}
	tr := &goldenTracker{}
	for _, r := range s.Tracker {
		tr.records = append(tr.records, goldenRecord{
			sock: procs.Socket{
				Transport: proto(t, r.Proto), Local: netip.MustParseAddrPort(r.Local), Remote: netip.MustParseAddrPort(r.Remote),
				PID: r.PID, StartKey: r.StartTicks, Recorded: !r.Closed,
			},
			proc: &procs.Process{PID: r.PID, Name: r.Comm, StartKey: r.StartTicks},
		})
	}
	ct := &goldenConntrack{}
	for _, c := range s.Conntrack {
		ct.entries = append(ct.entries, procs.ConntrackEntry{
			OrigSrc: netip.MustParseAddrPort(c.OrigSrc), OrigDst: netip.MustParseAddrPort(c.OrigDst),
			ReplySrc: netip.MustParseAddrPort(c.ReplySrc), ReplyDst: netip.MustParseAddrPort(c.ReplyDst),
		})
	}
	cfg := procs.Config{MinRescanInterval: time.Hour}
	cfg.Fallback = procs.NewResolveSource(ge, tr, 16, time.Second, time.Second)
	if len(s.Conntrack) > 0 {
		cfg.NATLookup, cfg.NAT = true, ct
	}
	w := procs.New(ge, cfg, logptest.NewTestingLogger(t, ""))
	t.Cleanup(func() { w.Close() })
	return w
}

// goldenEngine is the fake host's engine with the exact lookup answered
// from sources.yml (the real one would ask this kernel).
type goldenEngine struct {
	procs.Engine
	procs.OwnerVerifier
	resolve []procs.Socket
}

// ResolveHinted has no search order to follow: it is Resolve.
func (g *goldenEngine) ResolveHinted(ctx context.Context, t procs.Transport, local, remote netip.AddrPort, _ int) (procs.Socket, bool, error) {
	return g.Resolve(ctx, t, local, remote)
}

func (g *goldenEngine) Resolve(_ context.Context, t procs.Transport, local, remote netip.AddrPort) (procs.Socket, bool, error) {
	for _, s := range g.resolve {
		if s.Transport == t && s.Local == local && s.Remote == remote {
			return s, true, nil
		}
	}
	return procs.Socket{}, false, nil
}

type goldenRecord struct {
	sock procs.Socket
	proc *procs.Process
}

// goldenTracker answers like the eBPF tracker from its records.
type goldenTracker struct{ records []goldenRecord }

func (g *goldenTracker) Recall(t procs.Transport, local, remote netip.AddrPort, _ time.Time) (procs.Socket, *procs.Process, bool) {
	for _, r := range g.records {
		if r.sock.Transport == t && r.sock.Local == local && r.sock.Remote == remote {
			return r.sock, r.proc, true
		}
	}
	return procs.Socket{}, nil, false
}

// goldenConntrack finds an entry by either tuple, as ctnetlink's get does.
type goldenConntrack struct{ entries []procs.ConntrackEntry }

func (g *goldenConntrack) Get(_ procs.Transport, src, dst netip.AddrPort) (procs.ConntrackEntry, bool, error) {
	for _, e := range g.entries {
		if e.OrigSrc == src && e.OrigDst == dst || e.ReplySrc == src && e.ReplyDst == dst {
			return e, true, nil
		}
	}
	return procs.ConntrackEntry{}, false, nil
}

func (g *goldenConntrack) Close() error { return nil }
