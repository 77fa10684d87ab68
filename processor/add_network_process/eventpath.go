package add_network_process

// Reading and writing event fields by pre-split dotted paths, and reporting
// problems in error.message.

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/elastic/beats/v7/libbeat/beat"
	"github.com/elastic/elastic-agent-libs/mapstr"
)

// lookupField walks a pre-split dotted path without allocating. found is
// false when a key is absent; shapeErr is set when an intermediate value is
// not an object (e.g. "source" is a string), which is bad input, not a
// missing field.
func lookupField(ev *beat.Event, path []string) (v any, found bool, shapeErr error) {
	var cur any = ev.Fields
	if path[0] == "@metadata" {
		cur, path = ev.Meta, path[1:]
	}
	for i, k := range path {
		var m map[string]any
		switch x := cur.(type) {
		case mapstr.M:
			m = x
		case map[string]any:
			m = x
		case nil:
			return nil, false, nil
		default:
			return nil, false, fmt.Errorf("%s is %s of type %T, not an object", strings.Join(path[:i], "."), describe(cur), cur)
		}
		var ok bool
		if cur, ok = m[k]; !ok {
			// Fall back to a literal dotted key ("source.ip" at the top
			// level), which some inputs produce.
			rest := strings.Join(path[i:], ".")
			if v, ok := m[rest]; ok && i < len(path)-1 {
				return v, true, nil
			}
			return nil, false, nil
		}
	}
	return cur, true, nil
}

// outField is a field the processor writes: its dotted key, for messages
// and for the slow paths, and the key split once.
type outField struct {
	key  string
	path []string
}

func newOutField(key string) outField { return outField{key: key, path: strings.Split(key, ".")} }

// write puts r's object at f. With overwrite_keys false an object that
// already holds any of the fields is left whole (mixing fields of two
// processes would be worse than either), and the kept fields are named.
func (p *processor) write(ev *beat.Event, f outField, r *rendered, arena *argsArena, rep *report) {
	m := r.object(arena.copyOf(r.args))
	// The usual case, no such object yet: set it through the pre-split
	// path.
	if parent := parentMap(ev.Fields, f.path); parent != nil {
		last := f.path[len(f.path)-1]
		if v, exists := parent[last]; !exists || v == nil {
			parent[last] = m
			return
		}
	}
	key := f.key
	existing, err := ev.GetValue(key)
	if err != nil || existing == nil || p.cfg.OverwriteKeys {
		if _, isMap := asMap(existing); isMap && p.cfg.OverwriteKeys {
			// Keep fields this processor does not write (e.g. process.title).
			for k, v := range m.Flatten() {
				_, _ = ev.PutValue(key+"."+k, v)
			}
			return
		}
		_, _ = ev.PutValue(key, m)
		return
	}
	var kept []string
	if em, isMap := asMap(existing); isMap {
		for k := range m.Flatten() {
			if old, err := em.GetValue(k); err == nil && old != nil {
				kept = append(kept, key+"."+k)
			}
		}
		if len(kept) == 0 {
			for k, v := range m.Flatten() {
				_, _ = em.Put(k, v)
			}
			return
		}
	} else {
		kept = append(kept, key)
	}
	slices.Sort(kept)
	rep.problem("kept existing %s (set overwrite_keys: true to replace)", strings.Join(kept, ", "))
}

// parentMap returns the object that holds path's last key, creating
// missing intermediate objects, or nil if one of them is not an object.
func parentMap(m mapstr.M, path []string) mapstr.M {
	if len(path) == 0 {
		return nil
	}
	for _, k := range path[:len(path)-1] {
		v, ok := m[k]
		if !ok || v == nil {
			child := mapstr.M{}
			m[k] = child
			m = child
			continue
		}
		next, isMap := asMap(v)
		if !isMap {
			return nil
		}
		m = next
	}
	return m
}

// asMap accepts both map forms found in events (decoded JSON gives plain
// maps, processors give mapstr.M).
func asMap(v any) (mapstr.M, bool) {
	switch x := v.(type) {
	case mapstr.M:
		return x, true
	case map[string]any:
		return mapstr.M(x), true
	}
	return nil, false
}

// appendError adds msg to error.message, turning an existing message into
// a list so that nothing another processor reported is lost.
func appendError(ev *beat.Event, msg string) {
	old, err := ev.GetValue("error.message")
	switch x := old.(type) {
	case nil:
		if err == nil || errors.Is(err, mapstr.ErrKeyNotFound) {
			if _, perr := ev.PutValue("error.message", msg); perr == nil {
				return
			}
		}
	case string:
		_, _ = ev.PutValue("error.message", []string{x, msg})
		return
	// Copy before appending: the list may be shared with other events
	// (a clone of an event shares its slices).
	case []string:
		_, _ = ev.PutValue("error.message", append(slices.Clip(x), msg))
		return
	case []any:
		_, _ = ev.PutValue("error.message", append(slices.Clip(x), msg))
		return
	}
	// "error" is not an object (or message has an odd type): keep the
	// original under error.original rather than losing either.
	_, _ = ev.PutValue("error", mapstr.M{"message": msg, "original": fmt.Sprint(ev.Fields["error"])})
}

// writeScalar puts v at f unless a different value is there and
// overwrite_keys is off, which is reported like write does.
func (p *processor) writeScalar(ev *beat.Event, f outField, v string, rep *report) {
	if parent := parentMap(ev.Fields, f.path); parent != nil {
		last := f.path[len(f.path)-1]
		if old, exists := parent[last]; !exists || old == nil {
			parent[last] = v
			return
		}
	}
	old, err := ev.GetValue(f.key)
	if err == nil && old != nil && !p.cfg.OverwriteKeys {
		if s, ok := old.(string); !ok || s != v {
			rep.problem("kept existing %s (set overwrite_keys: true to replace)", f.key)
		}
		return
	}
	_, _ = ev.PutValue(f.key, v)
}
