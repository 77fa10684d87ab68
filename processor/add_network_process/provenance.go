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

// writeVia writes <key>.found_by (procs.Via's name) and, for a tracker
// answer, <key>.socket_closed: whether the socket was already gone.
func (p *processor) writeVia(ev *beat.Event, key string, v procs.Via, rep *report) {
	if p.mask&fFoundBy == 0 || v == procs.ViaNone {
		return
	}
	m := mapstr.M{"found_by": v.String()}
	if v == procs.ViaTracker || v == procs.ViaTrackerClosed {
		m["socket_closed"] = v.SocketClosed()
	}
	old, err := ev.GetValue(key)
	if err == nil && old != nil && !p.cfg.OverwriteKeys {
		rep.problem("kept existing %s (set overwrite_keys: true to replace)", key)
		return
	}
	_, _ = ev.PutValue(key, m)
}
