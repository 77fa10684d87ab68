package procs

// This file holds the Windows engine's scan logic apart from its syscalls,
// so that the rescan budget is tested on every platform with a fake table
// reader, and under Wine with the real one.

import (
	"context"
	"errors"
	"fmt"
)

// errNoFamily reports that the host has no stack for an address family.
var errNoFamily = errors.New("address family not supported by this host")

// winTableReader fills buf (growing it as needed) with table t and returns
// the table's bytes and the possibly grown buffer. It may block for as long
// as the system takes: one GetExtendedTcpTable call cannot be interrupted,
// and Wine 8 spends about 2 ms per row in it.
type winTableReader func(t winTable, buf []byte) (data, grown []byte, err error)

// winScanner reads the four IP Helper tables within a rescan budget.
//
// The budget is the context's. The table calls cannot be cancelled, so they
// run on their own goroutine and scan returns ctx.Err() as soon as the
// budget ends, whatever the call in flight is doing; the abandoned read
// stops before its next table. At most one read runs at a time (sem): a scan
// that finds an abandoned read still running waits for it within its own
// budget instead of piling a second read onto a slow host, and never uses
// the abandoned read's rows, which were read before this scan began and may
// describe sockets since closed and reused.
type winScanner struct {
	read winTableReader
	// startKey returns a PID's identity token, 0 if it cannot be read.
	startKey func(pid int) uint64

	// sem holds one token while a table read runs; buf (the read's
	// buffer) and rows (the last read's row count, to size the next) are
	// owned by whoever holds the token.
	sem  chan struct{}
	buf  []byte
	rows int
}

func newWinScanner(read winTableReader, startKey func(int) uint64) *winScanner {
	return &winScanner{read: read, startKey: startKey, sem: make(chan struct{}, 1)}
}

// winScanResult is what one table read hands back to its scan.
type winScanResult struct {
	socks []Socket
	err   error
}

// scan appends the TCP and UDP tables of both address families to dst, with
// each owner's start key, and returns it. If the budget ends first it
// returns dst with nothing appended and an error wrapping ctx.Err().
func (s *winScanner) scan(ctx context.Context, dst []Socket) ([]Socket, error) {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return dst, fmt.Errorf("rescan budget exhausted waiting for the previous socket table read, which outlived its own budget; the IP Helper calls are this slow on this host (raise rescan_timeout): %w", ctx.Err())
	}
	done := make(chan winScanResult, 1) // buffered: an abandoned read must not block on send
	go func() {
		defer func() { <-s.sem }()
		var r winScanResult
		s.buf, r.socks, r.err = s.readAll(ctx, s.buf)
		done <- r
	}()
	var r winScanResult
	select {
	case r = <-done:
	case <-ctx.Done():
		return dst, fmt.Errorf("rescan budget exhausted while reading the socket tables (the IP Helper call in flight finishes in the background; raise rescan_timeout if this repeats): %w", ctx.Err())
	}
	if r.err != nil {
		return dst, r.err
	}
	first := len(dst)
	dst = append(dst, r.socks...)
	keys := map[int]uint64{}
	for i := first; i < len(dst); i++ {
		pid := dst[i].PID
		if pid <= 0 {
			continue
		}
		k, ok := keys[pid]
		if !ok {
			// OpenProcess per owner: cheap on Windows, not free under
			// Wine, and a table may list thousands of owners.
			if err := ctx.Err(); err != nil {
				return dst[:first], fmt.Errorf("rescan budget exhausted after identifying %d socket owners of %d sockets: %w", len(keys), len(r.socks), err)
			}
			k = s.startKey(pid)
			keys[pid] = k
		}
		dst[i].StartKey = k
	}
	return dst, nil
}

// readAll reads and parses the four tables into a new slice (the caller
// may have given up on it, so it shares nothing with the caller's dst; the
// copy into dst costs one allocation per rescan, which rescans' rate limit
// keeps cheap). It runs holding s.sem and returns the buffer for the next
// read.
func (s *winScanner) readAll(ctx context.Context, buf []byte) ([]byte, []Socket, error) {
	socks := make([]Socket, 0, s.rows+s.rows/8)
	for _, t := range [...]winTable{winTCP4, winTCP6, winUDP4, winUDP6} {
		if err := ctx.Err(); err != nil {
			return buf, nil, err
		}
		var data []byte
		var err error
		data, buf, err = s.read(t, buf)
		if errors.Is(err, errNoFamily) {
			continue
		}
		if err != nil {
			return buf, nil, err
		}
		if socks, err = parseWinTable(t, data, socks); err != nil {
			return buf, nil, err
		}
	}
	s.rows = len(socks)
	return buf, socks, nil
}
