package add_network_process

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/elastic/elastic-agent-libs/logp"

	"github.com/netprocbeat/netprocbeat/internal/procs"
	"github.com/netprocbeat/netprocbeat/internal/tracker"
)

// Tracker modes (option "tracker").
const (
	trackerAuto   = "auto"   // use the eBPF tracker when it loads, else /proc only
	trackerEBPF   = "ebpf"   // require it: the processor fails to start without it
	trackerProcfs = "procfs" // never load it
)

// errTrackerRequired marks a failure that must stop the processor: the user
// asked for the tracker explicitly.
type errTrackerRequired struct{ err error }

func (e *errTrackerRequired) Error() string {
	return fmt.Sprintf("tracker: ebpf was required but cannot be used: %v (set tracker: auto to fall back to /proc polling)", e.err)
}
func (e *errTrackerRequired) Unwrap() error { return e.err }

// historyFor returns the kind and constructor of the watcher's History for
// cfg. The tracker observes this kernel, so it only makes sense when
// host_path holds this kernel's procfs; for any other tree (a fake /proc in
// tests, a copy) auto mode leaves it off.
func historyFor(cfg config, log *logp.Logger) (string, func() (procs.History, error)) {
	if cfg.Tracker == trackerProcfs {
		return "", nil
	}
	mode := cfg.Tracker
	return mode, func() (procs.History, error) {
		var err error
		if !isProcfs(filepath.Join(cfg.HostPath, "proc")) {
			err = fmt.Errorf("host_path %q does not hold this kernel's procfs, so eBPF records (host PIDs) could not be matched to it", cfg.HostPath)
		} else {
			var tr *tracker.Tracker
			tr, err = tracker.New(tracker.Options{Retention: cfg.TrackerRetention})
			if err == nil {
				log.Infof("eBPF connection tracker loaded: connections that close before their event is processed still resolve for %v", cfg.TrackerRetention)
				return tr, nil
			}
		}
		if mode == trackerEBPF {
			return nil, &errTrackerRequired{err}
		}
		if errors.Is(err, tracker.ErrUnsupported) {
			log.Infof("eBPF connection tracker unavailable on this OS; resolving from socket tables only")
		} else {
			log.Infof("eBPF connection tracker not used (%v); resolving from /proc only, so connections that close before their event is processed may not resolve", err)
		}
		return nil, nil
	}
}
