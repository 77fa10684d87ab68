package add_network_process

import (
	"github.com/elastic/beats/v7/libbeat/beat"
	"github.com/elastic/elastic-agent-libs/mapstr"

	"github.com/netprocbeat/netprocbeat/internal/procs"
)

// provenanceRoot is the top-level object that says how each side's owner
// was found. It is named after the processor, not put under process.*: ECS
// reserves the process field set (and source.*/destination.* are ECS's
// too), while a top-level object named after the processor is where libbeat
// processors that write non-ECS fields keep them, and it cannot collide
// with a future ECS field.
const provenanceRoot = "add_network_process"

// viaValues holds each procs.Via's name already boxed, so writing it costs
// no allocation. Read-only.
var viaValues = func() []any {
	v := make([]any, procs.ViaNAT+1)
	for i := range v {
		v[i] = procs.Via(i).String()
	}
	return v
}()

// viaFields is one side's object: found_by and, for a tracker answer,
// socket_closed (whether the socket was already gone).
func viaFields(v procs.Via) mapstr.M {
	if v == procs.ViaTracker || v == procs.ViaTrackerClosed {
		return mapstr.M{"found_by": viaValues[v], "socket_closed": v.SocketClosed()}
	}
	return mapstr.M{"found_by": viaValues[v]}
}

// writeVia writes <target>add_network_process.{source,destination} for the
// sides that got a process (ViaNone: none).
func (p *processor) writeVia(ev *beat.Event, src, dst procs.Via, rep *report) {
	if p.mask&fFoundBy == 0 || (src == procs.ViaNone && dst == procs.ViaNone) || int(src) >= len(viaValues) || int(dst) >= len(viaValues) {
		return
	}
	// The usual case, no such object yet: one object set through the
	// pre-split path.
	if parent := parentMap(ev.Fields, p.viaPath); parent != nil {
		last := p.viaPath[len(p.viaPath)-1]
		if v, exists := parent[last]; !exists || v == nil {
			m := make(mapstr.M, 2)
			if src != procs.ViaNone {
				m["source"] = viaFields(src)
			}
			if dst != procs.ViaNone {
				m["destination"] = viaFields(dst)
			}
			parent[last] = m
			return
		}
	}
	for _, s := range []struct {
		key string
		v   procs.Via
	}{{p.srcVia, src}, {p.dstVia, dst}} {
		if s.v == procs.ViaNone {
			continue
		}
		old, err := ev.GetValue(s.key)
		if err == nil && old != nil && !p.cfg.OverwriteKeys {
			rep.problem("kept existing %s (set overwrite_keys: true to replace)", s.key)
			continue
		}
		_, _ = ev.PutValue(s.key, viaFields(s.v))
	}
}
