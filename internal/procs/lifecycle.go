package procs

import (
	"context"
	"io"
	"net/netip"
	"sync"
	"time"
)

// guardedSource keeps an owner source from being used after, or while, it
// is closed: libbeat may run an event through the processor while its
// pipeline client closes, and the eBPF tracker's ring reader must not be
// read once the tracker is closed. Recall holds a read lock; Close takes the
// write lock (waiting for Recalls in flight), marks the source closed and
// only then closes it. A Recall that finds Close waiting or done answers
// nothing instead of waiting.
type guardedSource struct {
	mu     sync.RWMutex
	closed bool
	src    OwnerSource // nil for none
}

// guardFallback puts a guard around cfg.Fallback's closable part and
// returns the guard (whose zero value, for no fallback, guards nothing). A
// resolve source keeps its place, so the watcher still tells its live
// answers apart; the source it falls back to and its engine queries are
// guarded inside it, so that after Close it answers nothing.
func guardFallback(cfg *Config) *guardedSource {
	switch f := cfg.Fallback.(type) {
	case nil:
		return &guardedSource{}
	case *resolveSource:
		g := &guardedSource{src: f.next}
		if f.next != nil {
			f.next = g
		}
		f.r = guardedResolver{g, f.r}
		return g
	default:
		g := &guardedSource{src: f}
		cfg.Fallback = g
		return g
	}
}

// Recall asks the guarded source unless it is closing or closed.
func (g *guardedSource) Recall(t Transport, local, remote netip.AddrPort, at time.Time) (Socket, *Process, bool) {
	if !g.mu.TryRLock() {
		return Socket{}, nil, false // Close is waiting or done
	}
	defer g.mu.RUnlock()
	if g.closed || g.src == nil {
		return Socket{}, nil, false
	}
	return g.src.Recall(t, local, remote, at)
}

// recallComplete is Recall through the guard, telling whether a miss is
// complete (the guarded source is a SocketFeed that had caught up).
func (g *guardedSource) recallComplete(t Transport, local, remote netip.AddrPort, at, deadline time.Time) (Socket, *Process, bool, bool) {
	f, isFeed := g.src.(SocketFeed)
	if !isFeed {
		s, p, ok := g.Recall(t, local, remote, at)
		return s, p, ok, false
	}
	if !g.mu.TryRLock() {
		return Socket{}, nil, false, false
	}
	defer g.mu.RUnlock()
	if g.closed {
		return Socket{}, nil, false, false
	}
	return f.RecallComplete(t, local, remote, at, deadline)
}

// guardedResolver refuses single-connection queries once the guard closes.
type guardedResolver struct {
	g *guardedSource
	r Resolver
}

func (gr guardedResolver) Resolve(ctx context.Context, t Transport, local, remote netip.AddrPort) (Socket, bool, error) {
	if !gr.g.mu.TryRLock() {
		return Socket{}, false, nil
	}
	defer gr.g.mu.RUnlock()
	if gr.g.closed {
		return Socket{}, false, nil
	}
	return gr.r.Resolve(ctx, t, local, remote)
}

// ResolveHinted is Resolve searching pid first, where the engine can.
func (gr guardedResolver) ResolveHinted(ctx context.Context, t Transport, local, remote netip.AddrPort, pid int) (Socket, bool, error) {
	if !gr.g.mu.TryRLock() {
		return Socket{}, false, nil
	}
	defer gr.g.mu.RUnlock()
	if gr.g.closed {
		return Socket{}, false, nil
	}
	return gr.r.ResolveHinted(ctx, t, local, remote, pid)
}

// Close marks the source closed once no Recall uses it, then closes it (if
// it is an io.Closer). Later calls return nil.
func (g *guardedSource) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	g.mu.Unlock()
	if c, ok := g.src.(io.Closer); ok {
		return c.Close()
	}
	return nil
}
