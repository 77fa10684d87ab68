package procs

import (
	"sync"
	"time"
)

// negCache remembers local tuples that no process owned. An entry made
// after a fresh rescan ("confirmed") holds for NegativeTTL; one made while
// the rate limit deferred the rescan holds only until the next snapshot.
type negCache struct {
	mu  sync.Mutex
	cap int
	m   map[connKey]negEntry // connKey hashes as plain memory; tupleKey field by field
}

type negEntry struct {
	until     int64
	gen       uint64
	confirmed bool
}

func newNegCache(capacity int) negCache {
	return negCache{cap: capacity, m: make(map[connKey]negEntry)}
}

func (c *negCache) valid(k tupleKey, now time.Time, gen uint64) bool {
	ck := connKeyOf(k.t, k.local, k.remote)
	c.mu.Lock()
	e, ok := c.m[ck]
	c.mu.Unlock()
	if !ok || now.UnixNano() >= e.until {
		return false
	}
	return e.confirmed || e.gen == gen
}

func (c *negCache) put(k tupleKey, until time.Time, gen uint64, confirmed bool) {
	ck := connKeyOf(k.t, k.local, k.remote)
	c.mu.Lock()
	if len(c.m) >= c.cap {
		// Dropping everything keeps the bound trivially; the worst case is
		// one extra rate-limited rescan per dropped tuple.
		clear(c.m)
	}
	c.m[ck] = negEntry{until: until.UnixNano(), gen: gen, confirmed: confirmed}
	c.mu.Unlock()
}

func (c *negCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
