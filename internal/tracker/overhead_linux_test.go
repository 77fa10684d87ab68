//go:build linux

package tracker

import (
	"io"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/netprocbeat/netprocbeat/testing/bench"
)

// interleave runs op b.N times without the tracker's programs and b.N
// times with them, in alternating chunks of chunk ops: one tracker is
// loaded, and its programs are detached and attached again between chunks,
// so that both halves see the same machine load on this shared VM. The
// order alternates (base, tracked, tracked, base, ...), and each chunk
// starts after a pause, so that neither half pays for the other's
// attaching or detaching (the kernel finishes that work in RCU callbacks,
// charged to whatever runs then). It reports the CPU time per op (the
// whole process: both ends of the connections, the kernel's work on their
// behalf with the BPF programs, and the tracker's reader, caught up with
// at the end of every chunk) of each, their difference, and the loss of
// throughput per CPU second, 1 - base/tracked, of the sums and the median
// of the chunk pairs (robust to a burst of load from elsewhere).
//
// settle, if not nil, runs at the end of each chunk inside its measurement
// and returns once the chunk's work is done.
//
// tr is loaded before the workload's sockets are made, so that its
// listener and connections are known to it from their start.
func interleave(b *testing.B, tr *Tracker, chunk int, op func() error, settle func()) {
	epochs := tr.Epochs() != nil
	attached := true
	setAttached := func(on bool) {
		if on != attached {
			if on {
				if err := tr.attachSockets(); err != nil {
					b.Fatal(err)
				}
				if epochs {
					if err := tr.attachEpochLinks(); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				for _, l := range tr.links {
					if err := l.Close(); err != nil {
						b.Fatal(err)
					}
				}
				tr.links = nil
			}
			attached = on
		}
		time.Sleep(20 * time.Millisecond)
	}
	dummy := netip.MustParseAddrPort("127.0.0.1:1")
	measure := func(n int, on bool) time.Duration {
		b.StopTimer()
		setAttached(on)
		b.StartTimer()
		c0 := bench.CPUTime()
		for range n {
			if err := op(); err != nil {
				b.Fatal(err)
			}
		}
		if settle != nil {
			settle()
		}
		// Let the reader apply what the chunk produced: its work is part
		// of the cost.
		tr.LookupSync(TCP, dummy, dummy)
		return bench.CPUTime() - c0
	}
	var base, tracked time.Duration
	var losses []float64
	ev0 := tr.Stats().Events
	b.ResetTimer()
	for i, done := 0, 0; done < b.N; i, done = i+1, done+chunk {
		n := min(chunk, b.N-done)
		var cb, ct time.Duration
		if i%2 == 0 {
			cb = measure(n, false)
			ct = measure(n, true)
		} else {
			ct = measure(n, true)
			cb = measure(n, false)
		}
		base += cb
		tracked += ct
		losses = append(losses, 1-float64(cb)/float64(ct))
	}
	b.StopTimer()
	events := tr.Stats().Events - ev0
	slices.Sort(losses)
	n := float64(b.N)
	b.ReportMetric(float64(base)/n, "base-cpu-ns/op")
	b.ReportMetric(float64(tracked)/n, "tracked-cpu-ns/op")
	b.ReportMetric(float64(tracked-base)/n, "added-cpu-ns/op")
	b.ReportMetric(100*(1-float64(base)/float64(tracked)), "loss-%")
	b.ReportMetric(100*losses[len(losses)/2], "median-loss-%")
	b.ReportMetric(float64(events)/n, "events/op")
}

// loopbackPair returns both ends of a loopback TCP connection, closed
// with b.
func loopbackPair(b *testing.B) (client, server net.Conn) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	srv := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(srv)
			return
		}
		srv <- c
	}()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	s, ok := <-srv
	if !ok {
		c.Close()
		b.Fatal("accept failed")
	}
	b.Cleanup(func() {
		c.Close()
		s.Close()
	})
	return c, s
}

// streamMsg is the message size of BenchmarkStream: small messages make the
// per-message cost of the send/recv programs visible.
const streamMsg = 64

// BenchmarkStream: small writes over one loopback TCP connection, both
// ends in this process, the reader taking one message per recv, so that
// each op (one message) runs sock_send_length and sock_recv_length once.
// Without and with the tracker, interleaved (see interleave):
//
//	go test -run '^$' -bench Stream -benchtime 1000000x -count 3 ./internal/tracker
func BenchmarkStream(b *testing.B) {
	tr := newTracker(b, Options{})
	c, s := loopbackPair(b)
	var read atomic.Int64
	go func() {
		buf := make([]byte, streamMsg)
		for {
			if _, err := io.ReadFull(s, buf); err != nil {
				return
			}
			read.Add(1)
		}
	}()
	msg := make([]byte, streamMsg)
	written := int64(0)
	b.SetBytes(2 * streamMsg)
	interleave(b, tr, 5000, func() error {
		written++
		_, err := c.Write(msg)
		return err
	}, func() {
		// The writer runs ahead of the reader by up to a socket buffer:
		// a chunk ends when its messages have been read.
		for read.Load() < written {
			time.Sleep(50 * time.Microsecond)
		}
	})
}

// BenchmarkConnectClose: a loopback TCP connect + accept + close loop, both
// ends in this process, without and with the tracker, interleaved (see
// interleave); added-cpu-ns/op is the tracker's cost per connection, both
// ends and the reader's handling of its events:
//
//	go test -run '^$' -bench ConnectClose -benchtime 20000x -count 3 ./internal/tracker
func BenchmarkConnectClose(b *testing.B) {
	tr := newTracker(b, Options{})
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	addr := ln.Addr().String()
	interleave(b, tr, 500, func() error {
		c, err := net.Dial("tcp4", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}, nil)
}

// progTime reports the run time of the tracker's programs per run as the
// kernel measures it (BPF_STATS_RUN_TIME, which adds its own two clock
// reads to every run) and their runs per op, while op runs b.N times with
// the tracker loaded. Unlike the CPU time of BenchmarkStream and
// BenchmarkConnectClose, this is not disturbed by other processes' load,
// nor by other tracers attached to the same tracepoints; it leaves out the
// tracepoint's own dispatch, which the program does not choose.
func progTime(b *testing.B, tr *Tracker, op func() error) {
	st, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		b.Skipf("BPF run-time statistics unavailable: %v", err)
	}
	defer st.Close()
	progs := []struct {
		name string
		p    *ebpf.Program
	}{
		{"send", tr.objs.SockSendLength},
		{"recv", tr.objs.SockRecvLength},
		{"state", tr.objs.InetSockSetState},
	}
	s0 := make([]*ebpf.ProgramStats, len(progs))
	for i, p := range progs {
		if s0[i], err = p.p.Stats(); err != nil {
			b.Fatal(err)
		}
	}
	st0 := tr.Stats()
	b.ResetTimer()
	for range b.N {
		if err := op(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	var total time.Duration
	for i, p := range progs {
		s1, err := p.p.Stats()
		if err != nil {
			b.Fatal(err)
		}
		runs := s1.RunCount - s0[i].RunCount
		rt := s1.Runtime - s0[i].Runtime
		total += rt
		if runs > 0 {
			b.ReportMetric(float64(rt)/float64(runs), p.name+"-ns/run")
		}
		b.ReportMetric(float64(runs)/float64(b.N), p.name+"-runs/op")
	}
	b.ReportMetric(float64(total)/float64(b.N), "prog-ns/op")
	tr.LookupSync(TCP, netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:1"))
	st1 := tr.Stats()
	b.ReportMetric(float64(st1.Events-st0.Events)/float64(b.N), "events/op")
	// Runs skipped because a program was interrupted by another on its
	// CPU (see "Limits" in docs/tracker.md), per million ops.
	b.ReportMetric(1e6*float64(st1.Missed-st0.Missed)/float64(b.N), "missed/Mop")
}

// BenchmarkProgTime: the programs' own run time on the Stream and
// ConnectClose workloads (see progTime):
//
//	go test -run '^$' -bench ProgTime -benchtime 200000x ./internal/tracker
func BenchmarkProgTime(b *testing.B) {
	b.Run("stream", func(b *testing.B) {
		tr := newTracker(b, Options{})
		c, s := loopbackPair(b)
		go func() {
			buf := make([]byte, streamMsg)
			for {
				if _, err := io.ReadFull(s, buf); err != nil {
					return
				}
			}
		}()
		msg := make([]byte, streamMsg)
		progTime(b, tr, func() error {
			_, err := c.Write(msg)
			return err
		})
	})
	b.Run("connect", func(b *testing.B) {
		tr := newTracker(b, Options{})
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		addr := ln.Addr().String()
		progTime(b, tr, func() error {
			c, err := net.Dial("tcp4", addr)
			if err != nil {
				return err
			}
			return c.Close()
		})
	})
}
