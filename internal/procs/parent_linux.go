//go:build linux

package procs

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Describing a process's parent: only what the parent.* fields need (the
// name, the executable, the start time and with it the entity ID), read
// from stat and the exe link rather than through go-sysinfo's full
// description, which would double the cost of describing every new process
// (BenchmarkDescribeProcess).

// setDescribeParents turns describing parents on or off (New, from
// Config.DescribeParents).
func (e *linuxEngine) setDescribeParents(on bool) { e.describeParents.Store(on) }

// parent describes ppid and returns its start time in clock ticks. stat is
// read before and after the rest so that a PID recycled during the read is
// refused: nil when ppid cannot be described.
func (e *linuxEngine) parent(ppid int) (*Parent, uint64) {
	if ppid <= 0 || !e.describeParents.Load() {
		return nil, 0
	}
	dir := filepath.Join(e.proc, strconv.Itoa(ppid))
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return nil, 0
	}
	ticks, err := ParseStatStart(stat)
	if err != nil {
		return nil, 0
	}
	comm := statComm(stat)
	exe, _ := os.Readlink(filepath.Join(dir, "exe")) // none for kernel threads or without privileges
	name := comm
	if len(comm) >= 15 { // possibly truncated: procName may need argv[0]
		if cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
			name = procName(comm, splitCmdline(cmdline))
		}
	}
	if again, err := os.ReadFile(filepath.Join(dir, "stat")); err != nil {
		return nil, 0
	} else if t, err := ParseStatStart(again); err != nil || t != ticks {
		return nil, 0
	}
	boot := e.bootTime()
	if boot.IsZero() {
		return nil, 0
	}
	start := boot.Add(ticksToDuration(ticks))
	return &Parent{
		PID:        ppid,
		Name:       name,
		Executable: exe,
		Start:      start.UTC(),
		EntityID:   EntityID(e.hostID(), ppid, start),
	}, ticks
}

// ticksToDuration is go-sysinfo's conversion of a start time in clock ticks
// (providers/linux/process_linux.go:294 in v1.15.3), float rounding
// included: the sub-second part of the start time goes into the entity ID,
// so it must be the one go-sysinfo, and through it the beats, compute.
// TestEntityIDMatchesBeats compares the results.
func ticksToDuration(ticks uint64) time.Duration {
	const userHz = 100
	seconds := float64(ticks) / float64(userHz) * float64(time.Second)
	return time.Duration(int64(seconds))
}

// readBootTime reads the boot time (whole seconds, the btime line of
// <root>/proc/stat) as go-sysinfo does; the zero time if it cannot.
func readBootTime(proc string) time.Time {
	b, err := os.ReadFile(filepath.Join(proc, "stat"))
	if err != nil {
		return time.Time{}
	}
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte("btime ")); ok {
			if n, ok := parseDecUint(bytes.TrimSpace(v)); ok {
				return time.Unix(int64(n), 0)
			}
		}
	}
	return time.Time{}
}
