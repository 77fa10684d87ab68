package add_network_process

import (
	"maps"
	"strings"

	"github.com/elastic/elastic-agent-libs/mapstr"

	"github.com/netprocbeat/netprocbeat/internal/procs"
)

// rendered is a process's output object built once per process (a
// *procs.Process is immutable): template maps holding the boxed values,
// which each event clones. Cloning a map of at most 8 entries copies its
// one group of slots (no hashing, no boxing), so an event's object costs
// two allocations per map and no per-field work, and every event still
// gets maps of its own: nothing written to an event is shared with another
// event or with another field of the same event.
type rendered struct {
	// top holds the scalar fields; each event's clone gets parent, user
	// and args added. (No placeholders for them: a Go map holding 8
	// entries grows to a full table on any assignment, even to a key it
	// has.)
	top    mapstr.M
	parent mapstr.M // nil: no parent.* field
	user   mapstr.M // nil: no user.* field
	args   []string // nil: no args field
}

// renderCacheMax bounds the render cache; it is cleared when full (a
// *Process is replaced at least every process_cache_ttl, so old entries
// only linger until then).
const renderCacheMax = 4096

func (p *processor) render(pr *procs.Process) *rendered {
	if r, ok := p.renders.Load(pr); ok {
		return r.(*rendered)
	}
	r := p.newRendered(pr)
	if p.renderN.Add(1) > renderCacheMax {
		p.renders.Clear()
		p.renderN.Store(1)
	}
	p.renders.Store(pr, r)
	return r
}

// newRendered builds the templates of pr's object under <side>.process
// from the include_fields mask. Keep at most 8 keys per map: a Go map of
// up to 8 entries is one group of slots, cloned with one copy.
func (p *processor) newRendered(pr *procs.Process) *rendered {
	r := &rendered{top: mapstr.M{}}
	put := func(m mapstr.M, bit fieldMask, k string, v any, present bool) {
		if p.mask&bit != 0 && present {
			m[k] = v
		}
	}
	put(r.top, fPID, "pid", pr.PID, true)
	put(r.top, fName, "name", p.alias(pr), pr.Name != "")
	put(r.top, fExecutable, "executable", pr.Executable, pr.Executable != "")
	put(r.top, fStart, "start", pr.Start, !pr.Start.IsZero())
	put(r.top, fEntityID, "entity_id", pr.EntityID, pr.EntityID != "")
	put(r.top, fWorkingDirectory, "working_directory", pr.WorkingDirectory, pr.WorkingDirectory != "")
	if p.mask&fArgs != 0 && len(pr.Args) > 0 {
		r.args = pr.Args
	}

	parent := mapstr.M{}
	put(parent, fParentPID, "pid", pr.PPID, pr.PPID > 0)
	if pp := pr.Parent; pp != nil && pp.PID == pr.PPID {
		put(parent, fParentEntityID, "entity_id", pp.EntityID, pp.EntityID != "")
		put(parent, fParentName, "name", pp.Name, pp.Name != "")
		put(parent, fParentExecutable, "executable", pp.Executable, pp.Executable != "")
		put(parent, fParentStart, "start", pp.Start, !pp.Start.IsZero())
	}
	if len(parent) > 0 {
		r.parent = parent
	}

	user := mapstr.M{}
	put(user, fUserID, "id", pr.UID, pr.UID != "")
	put(user, fUserName, "name", pr.UserName, pr.UserName != "")
	if len(user) > 0 {
		r.user = user
	}
	return r
}

// object returns a new object for one field of one event, with maps of its
// own; args is the event's own copy of r.args (see argsArena).
func (r *rendered) object(args []string) mapstr.M {
	m := maps.Clone(r.top)
	if r.parent != nil {
		m["parent"] = maps.Clone(r.parent)
	}
	if r.user != nil {
		m["user"] = maps.Clone(r.user)
	}
	if r.args != nil {
		m["args"] = args
	}
	return m
}

// argsArena hands out copies of args from one allocation per event: each
// copy is a capped slice of its own part of the array, so appending to one
// (or changing an element) leaves the others as they are.
type argsArena struct{ buf []string }

// reserve makes room for the copies of n more strings.
func (a *argsArena) reserve(n int) { a.buf = make([]string, 0, n) }

func (a *argsArena) copyOf(args []string) []string {
	if args == nil {
		return nil
	}
	if cap(a.buf)-len(a.buf) < len(args) {
		a.buf = make([]string, 0, len(args)) // not reserved: its own allocation
	}
	i := len(a.buf)
	a.buf = append(a.buf, args...)
	return a.buf[i:len(a.buf):len(a.buf)]
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
