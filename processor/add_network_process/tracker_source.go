package add_network_process

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

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

// trackerRequiredError marks a failure that must stop the processor: the
// user asked for the tracker explicitly.
type trackerRequiredError struct{ err error }

func (e *trackerRequiredError) Error() string {
	return fmt.Sprintf("tracker: ebpf was required but cannot be used: %v (set tracker: auto to fall back to /proc polling)", e.err)
}
func (e *trackerRequiredError) Unwrap() error { return e.err }

// fallbackFor returns the kind and constructor of the watcher's fallback
// owner source (procs.Config.Fallback) for cfg. The tracker observes this kernel, so it only makes sense when
// host_path holds this kernel's procfs; for any other tree (a fake /proc in
// tests, a copy) auto mode leaves it off.
func fallbackFor(cfg config, log *logp.Logger) (string, func() (procs.OwnerSource, error)) {
	if cfg.Tracker == trackerProcfs {
		return "", nil
	}
	mode := cfg.Tracker
	kind := mode
	if cfg.TrackerProgramStats {
		kind += ",program_stats"
	}
	return kind, func() (procs.OwnerSource, error) {
		var err error
		if !isProcfs(filepath.Join(cfg.HostPath, "proc")) {
			err = fmt.Errorf("host_path %q does not hold this kernel's procfs, so eBPF records (host PIDs) could not be matched to it", cfg.HostPath)
		} else {
			var tr *tracker.Tracker
			tr, err = tracker.New(tracker.Options{Retention: cfg.TrackerRetention, ProgramStats: cfg.TrackerProgramStats})
			if err == nil {
				log.Infof("eBPF connection tracker loaded: connections that close before their event is processed still resolve for %v", cfg.TrackerRetention)
				if e := tr.EpochsErr(); e != nil {
					log.Infof("%v; every answer from the socket tables is verified with a system call", e)
				}
				return newTrackerSource(tr), nil
			}
		}
		if mode == trackerEBPF {
			return nil, &trackerRequiredError{err}
		}
		if errors.Is(err, tracker.ErrUnsupported) {
			log.Infof("eBPF connection tracker unavailable on this OS; resolving from socket tables only")
		} else {
			log.Infof("eBPF connection tracker not used (%v); resolving from /proc only, so connections that close before their event is processed may not resolve", err)
		}
		return nil, nil
	}
}

var _ procs.SocketFeed = trackerSource{}

// trackerSource adapts the eBPF tracker, which knows nothing of procs, to
// procs.OwnerSource: the consumer-side interface meets the kernel-level
// source here, where both are imported.
type trackerSource struct{ t *tracker.Tracker }

// trackerClockSource is a trackerSource whose tracker has its change
// counters: it is also the watcher's procs.ChangeClock (procs.Shared wires
// a fallback that implements it into Config.Changes).
type trackerClockSource struct {
	trackerSource
	e *tracker.Epochs
}

// newTrackerSource returns the owner source of tr, a procs.ChangeClock too
// exactly when tr's change counters are available: without them the
// watcher must see no clock (and verify every answer).
func newTrackerSource(tr *tracker.Tracker) procs.OwnerSource {
	if e := tr.Epochs(); e != nil {
		return trackerClockSource{trackerSource{tr}, e}
	}
	return trackerSource{tr}
}

// PortEpoch reads the kernel's counter of closes on a local port.
func (s trackerClockSource) PortEpoch(t procs.Transport, port uint16) uint32 {
	return s.e.Port(tracker.Proto(t), port)
}

// ProcEpoch reads the kernel's counter of a process's descriptor changes.
func (s trackerClockSource) ProcEpoch(pid int) uint32 { return s.e.PID(pid) }

// ForkSeq reads the kernel's count of forks (procs.ForkClock).
func (s trackerClockSource) ForkSeq() uint32 { return s.e.ForkSeq() }

// LastFork reads the fork count at a process's latest fork.
func (s trackerClockSource) LastFork(pid int) uint32 { return s.e.LastFork(pid) }

// Recall answers from the tracker's records: the owner, at the event time
// at (zero: now), as a socket row, with StartKey in the Linux engine's unit
// (/proc/<pid>/stat starttime, which is the tracker's StartTicks), and the
// part of a procs.Process the record knows, for when the owner has exited.
// The tracker picks the record whose lifetime covers at (LookupAt).
func (s trackerSource) Recall(t procs.Transport, local, remote netip.AddrPort, at time.Time) (procs.Socket, *procs.Process, bool) {
	r, ok := s.t.LookupAt(tracker.Proto(t), local, remote, at)
	if !ok {
		return procs.Socket{}, nil, false
	}
	return recordSocket(r, t, local, remote), recordProcess(r), true
}

// FeedGaps makes the tracker a procs.SocketFeed: with its change counters
// (a procs.ChangeClock too) the watcher then runs event-driven, keeping its
// view current from the tracker's records instead of rescanning. It counts
// what the tracker may have missed of sockets being opened and closed
// (tracker.Gaps: events dropped, socket-state program runs skipped, records
// evicted). Two system calls; the watcher asks once per rescan and per
// miss that its snapshot and learned rows do not answer.
func (s trackerSource) FeedGaps() uint64 { return s.t.Gaps() }

// RecallComplete is Recall telling whether the tracker had applied every
// event before the event's time when it answered (procs.SocketFeed): a
// miss while its reader was behind the kernel proves nothing. The wait for
// the tracker's reader ends at the lookup's deadline.
func (s trackerSource) RecallComplete(t procs.Transport, local, remote netip.AddrPort, at, deadline time.Time) (procs.Socket, *procs.Process, bool, bool) {
	r, ok, complete := s.t.LookupCompleteBy(deadline, tracker.Proto(t), local, remote, at)
	if !ok {
		return procs.Socket{}, nil, false, complete
	}
	return recordSocket(r, t, local, remote), recordProcess(r), true, complete
}

// Close stops the tracker; the watcher closes its fallback.
func (s trackerSource) Close() error { return s.t.Close() }

// Stats publishes the tracker's counters (metrics.go).
func (s trackerSource) Stats() tracker.Stats { return s.t.Stats() }

func recordSocket(r tracker.Record, t procs.Transport, local, remote netip.AddrPort) procs.Socket {
	return procs.Socket{
		Transport: t,
		Local:     unmapPort(local),
		Remote:    unmapPort(remote),
		Listen:    r.Source == tracker.SourceListen || r.Source == tracker.SourceListener,
		PID:       r.PID,
		StartKey:  r.StartTicks,
		NetNS:     uint64(r.NetNS),
		Recorded:  r.Closed.IsZero(),
	}
}

func recordProcess(r tracker.Record) *procs.Process {
	return &procs.Process{
		PID:      r.PID,
		Name:     r.Comm,
		Start:    r.Start,
		StartKey: r.StartTicks,
	}
}

func unmapPort(ap netip.AddrPort) netip.AddrPort {
	if ap.Addr().Is4In6() {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return ap
}
