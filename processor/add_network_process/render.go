package add_network_process

import (
	"strings"

	"github.com/elastic/elastic-agent-libs/mapstr"

	"github.com/netprocbeat/netprocbeat/internal/procs"
)

// rendered is a process's output fields with their values already boxed
// in interfaces: a *procs.Process is immutable, so this is done once per
// process, not per event. Every event still gets maps of its own.
type rendered struct {
	top        []kv // pid, name, executable, start, working_directory
	args       []string
	ppid       any // nil: no parent field
	user       []kv
	fieldCount int
}

type kv struct {
	k string
	v any
}

// renderCacheMax bounds the render cache; it is cleared when full (a
// *Process is replaced at least every process_cache_ttl, so old entries
// only linger until then).
const renderCacheMax = 4096

func (p *processor) render(pr *procs.Process) *rendered {
	if r, ok := p.renders.Load(pr); ok {
		return r.(*rendered)
	}
	r := &rendered{}
	if p.mask&fPID != 0 {
		r.top = append(r.top, kv{"pid", pr.PID})
	}
	if p.mask&fName != 0 && pr.Name != "" {
		r.top = append(r.top, kv{"name", p.alias(pr)})
	}
	if p.mask&fArgs != 0 && len(pr.Args) > 0 {
		r.args = pr.Args
	}
	if p.mask&fExecutable != 0 && pr.Executable != "" {
		r.top = append(r.top, kv{"executable", pr.Executable})
	}
	if p.mask&fStart != 0 && !pr.Start.IsZero() {
		r.top = append(r.top, kv{"start", pr.Start})
	}
	if p.mask&fParentPID != 0 && pr.PPID > 0 {
		r.ppid = pr.PPID
	}
	if p.mask&fWorkingDirectory != 0 && pr.WorkingDirectory != "" {
		r.top = append(r.top, kv{"working_directory", pr.WorkingDirectory})
	}
	if p.mask&fUserID != 0 && pr.UID != "" {
		r.user = append(r.user, kv{"id", pr.UID})
	}
	if p.mask&fUserName != 0 && pr.UserName != "" {
		r.user = append(r.user, kv{"name", pr.UserName})
	}
	r.fieldCount = len(r.top) + 3
	if p.renderN.Add(1) > renderCacheMax {
		p.renders.Clear()
		p.renderN.Store(1)
	}
	p.renders.Store(pr, r)
	return r
}

// fields renders a process as the ECS object written under <side>.process.
func (p *processor) fields(pr *procs.Process) mapstr.M {
	r := p.render(pr)
	m := make(mapstr.M, r.fieldCount)
	for _, e := range r.top {
		m[e.k] = e.v
	}
	if r.args != nil {
		m["args"] = append([]string(nil), r.args...)
	}
	if r.ppid != nil {
		m["parent"] = mapstr.M{"pid": r.ppid}
	}
	if len(r.user) > 0 {
		u := make(mapstr.M, len(r.user))
		for _, e := range r.user {
			u[e.k] = e.v
		}
		m["user"] = u
	}
	return m
}

// alias applies monitored: the first cmdline_grep found in the joined args
// names the process, as packetbeat.procs.monitored does.
func (p *processor) alias(pr *procs.Process) string {
	for _, m := range p.cfg.Monitored {
		if strings.Contains(pr.JoinedArgs, m.CmdlineGrep) {
			return m.Process
		}
	}
	return pr.Name
}
