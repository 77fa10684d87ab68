package procs

import (
	"path/filepath"
	"sync"

	"github.com/elastic/elastic-agent-libs/logp"
)

// sharedKey identifies watchers that can be shared: same host and policy.
type sharedKey struct {
	root    string
	cfg     Config // History is always nil here; historyKind stands for it
	history string
}

type sharedEntry struct {
	w    *Watcher
	refs int
}

// registry is the one piece of package-level state, on purpose: processors
// are built independently by libbeat (one per input, per pipeline client),
// and each building its own watcher would rescan /proc once per processor.
var registry = struct {
	sync.Mutex
	m map[sharedKey]*sharedEntry
}{m: map[sharedKey]*sharedEntry{}}

// Shared returns the watcher for hostPath and cfg, creating it on first use,
// and a release function; the last release closes it. historyKind names the
// History the caller wants ("" for none); newHistory builds it when the
// watcher is created and may return nil to run without one.
func Shared(hostPath string, cfg Config, historyKind string, newHistory func() (History, error), log *logp.Logger) (*Watcher, func(), error) {
	if hostPath == "" {
		hostPath = "/"
	}
	cfg.History = nil
	k := sharedKey{root: filepath.Clean(hostPath), cfg: cfg.withDefaults(), history: historyKind}
	registry.Lock()
	defer registry.Unlock()
	e, ok := registry.m[k]
	if !ok {
		engine, err := NewEngine(k.root)
		if err != nil {
			return nil, nil, err
		}
		wcfg := k.cfg
		if newHistory != nil {
			h, err := newHistory()
			if err != nil {
				return nil, nil, err
			}
			wcfg.History = h
		}
		// A snapshot miss for a connection with a known peer asks the
		// engine for that one connection (at most 16 times per
		// min_rescan_interval) before falling back to a rescan.
		wcfg.History = NewResolveHistory(engine, wcfg.History, 16, wcfg.MinRescanInterval, wcfg.RescanTimeout)
		e = &sharedEntry{w: New(engine, wcfg, log)}
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

// EachShared calls f with the host_path and counters of every live shared
// watcher, for metrics reporting.
func EachShared(f func(hostPath string, st Stats)) {
	registry.Lock()
	entries := make([]struct {
		root string
		w    *Watcher
	}, 0, len(registry.m))
	for k, e := range registry.m {
		entries = append(entries, struct {
			root string
			w    *Watcher
		}{k.root, e.w})
	}
	registry.Unlock()
	for _, e := range entries {
		f(e.root, e.w.Stats())
	}
}
