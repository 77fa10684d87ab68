package procs

import (
	"path/filepath"
	"sync"

	"github.com/elastic/elastic-agent-libs/logp"
)

// sharedKey identifies watchers that can be shared: same host and policy.
type sharedKey struct {
	root     string
	cfg      Config // Fallback, Changes and NAT are always nil here; fallback stands for the first two
	fallback string
}

type sharedEntry struct {
	w        *Watcher
	fallback OwnerSource // what newFallback built (nil for none)
	refs     int
}

// registry is the one piece of package-level state, on purpose: processors
// are built independently by libbeat (one per input, per pipeline client),
// and each building its own watcher would rescan /proc once per processor.
var registry = struct {
	sync.Mutex
	m map[sharedKey]*sharedEntry
}{m: map[sharedKey]*sharedEntry{}}

// Shared returns the watcher for hostPath and cfg, creating it on first use,
// and a release function; the last release closes it. fallbackKind names the
// fallback the caller wants ("" for none); newFallback builds it when the
// watcher is created and may return nil to run without one.
func Shared(hostPath string, cfg Config, fallbackKind string, newFallback func() (OwnerSource, error), log *logp.Logger) (*Watcher, func(), error) {
	if hostPath == "" {
		hostPath = "/"
	}
	cfg.Fallback, cfg.Changes, cfg.NAT = nil, nil, nil
	k := sharedKey{root: filepath.Clean(hostPath), cfg: cfg.withDefaults(), fallback: fallbackKind}
	registry.Lock()
	defer registry.Unlock()
	e, ok := registry.m[k]
	if !ok {
		engine, err := NewEngine(k.root)
		if err != nil {
			return nil, nil, err
		}
		wcfg := k.cfg
		var fallback OwnerSource
		if newFallback != nil {
			var err error
			if fallback, err = newFallback(); err != nil {
				return nil, nil, err
			}
			wcfg.Fallback = fallback
			// A fallback that sees the kernel's socket and process changes
			// as they happen (the eBPF tracker) also proves when nothing
			// changed, which spares re-verifying an owner.
			if c, ok := fallback.(ChangeClock); ok {
				wcfg.Changes = c
			}
		}
		// A snapshot miss for a connection with a known peer asks the
		// engine for that one connection (at most 16 times per
		// min_rescan_interval) before falling back to a rescan.
		wcfg.Fallback = NewResolveSource(engine, wcfg.Fallback, 16, wcfg.MinRescanInterval, wcfg.RescanTimeout)
		e = &sharedEntry{w: New(engine, wcfg, log), fallback: fallback}
		registry.m[k] = e
	}
	e.refs++
	var once sync.Once
	return e.w, func() {
		once.Do(func() {
			registry.Lock()
			e.refs--
			last := e.refs == 0
			if last {
				delete(registry.m, k)
			}
			registry.Unlock()
			if last {
				e.w.Close()
			}
		})
	}, nil
}

// EachShared calls f with the host_path, counters and caller-built fallback
// owner source (nil for none) of every live shared watcher, for metrics
// reporting.
func EachShared(f func(hostPath string, st Stats, fallback OwnerSource)) {
	type entry struct {
		root     string
		w        *Watcher
		fallback OwnerSource
	}
	registry.Lock()
	entries := make([]entry, 0, len(registry.m))
	for k, e := range registry.m {
		entries = append(entries, entry{k.root, e.w, e.fallback})
	}
	registry.Unlock()
	for _, e := range entries {
		f(e.root, e.w.Stats(), e.fallback)
	}
}
