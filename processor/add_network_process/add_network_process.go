// Package add_network_process is a libbeat processor that writes, for each
// local endpoint of a network event, the process that owns its socket.
// Importing the package registers the processor as "add_network_process".
package add_network_process

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/elastic/beats/v7/libbeat/beat"
	"github.com/elastic/beats/v7/libbeat/processors"
	conf "github.com/elastic/elastic-agent-libs/config"
	"github.com/elastic/elastic-agent-libs/logp"
	"github.com/elastic/elastic-agent-libs/mapstr"
	"github.com/elastic/elastic-agent-libs/monitoring"

	"github.com/netprocbeat/netprocbeat/internal/procs"
)

const processorName = "add_network_process"

func init() {
	processors.RegisterPlugin(processorName, New)
	registerMetrics(monitoring.Default)
}

type processor struct {
	cfg     config
	log     *logp.Logger
	watcher *procs.Watcher // nil when the OS or host_path has no engine
	release func()

	mask                fieldMask
	srcIP, srcPort      []string
	dstIP, dstPort      []string
	transport           []string
	defaultTransport    procs.Transport
	srcOut, dstOut, out string              // <target>source.process, <target>destination.process, <target>process
	containerOut        string              // <target>container.id
	outPaths            map[string][]string // the keys above, split once
	containerField      []string
	closeOnce           sync.Once

	renders sync.Map // *procs.Process -> *rendered
	renderN atomic.Int64
}

// New builds the processor from its beat configuration.
func New(c *conf.C, log *logp.Logger) (beat.Processor, error) {
	cfg := defaultConfig()
	if err := c.Unpack(&cfg); err != nil {
		return nil, fmt.Errorf("%s: invalid configuration: %w", processorName, err)
	}
	if log == nil {
		log = logp.NewLogger(processorName)
	} else {
		log = log.Named(processorName)
	}
	kind, newFallback := fallbackFor(cfg, log)
	return newProcessor(cfg, log, func(hostPath string, wc procs.Config, log *logp.Logger) (*procs.Watcher, func(), error) {
		return procs.Shared(hostPath, wc, kind, newFallback, log)
	})
}

// acquireFunc returns a watcher for a host_path and policy, and a release
// function; tests pass one that builds a watcher over a fake engine.
type acquireFunc func(hostPath string, cfg procs.Config, log *logp.Logger) (*procs.Watcher, func(), error)

func newProcessor(cfg config, log *logp.Logger, acquire acquireFunc) (*processor, error) {
	p := &processor{
		cfg:       cfg,
		log:       log,
		mask:      maskOf(cfg.IncludeFields),
		srcIP:     strings.Split(cfg.Source.IP, "."),
		srcPort:   strings.Split(cfg.Source.Port, "."),
		dstIP:     strings.Split(cfg.Destination.IP, "."),
		dstPort:   strings.Split(cfg.Destination.Port, "."),
		transport: strings.Split(cfg.TransportField, "."),
	}
	p.defaultTransport, _ = parseTransportName(cfg.DefaultTransport)
	prefix := cfg.Target
	if prefix != "" && !strings.HasSuffix(prefix, ".") {
		prefix += "."
	}
	p.srcOut, p.dstOut, p.out = prefix+"source.process", prefix+"destination.process", prefix+"process"
	p.containerOut = prefix + "container.id"
	p.outPaths = map[string][]string{}
	for _, k := range []string{p.srcOut, p.dstOut, p.out} {
		p.outPaths[k] = strings.Split(k, ".")
	}
	if cfg.ContainerIDField != "" {
		p.containerField = strings.Split(cfg.ContainerIDField, ".")
	}

	w, release, err := acquire(cfg.HostPath, cfg.watcherConfig(), log)
	var required *trackerRequiredError
	switch {
	case errors.As(err, &required):
		return nil, fmt.Errorf("%s: %w", processorName, err)
	case errors.Is(err, procs.ErrUnsupported):
		log.Warnf("%v: events pass through unenriched", err)
	case err != nil:
		log.Errorf("no process lookups: %v; events pass through unenriched", err)
	default:
		p.watcher, p.release = w, release
	}
	return p, nil
}

func (p *processor) String() string {
	return fmt.Sprintf("%s=[source=%s:%s, destination=%s:%s, transport=%s, host_path=%s]",
		processorName, p.cfg.Source.IP, p.cfg.Source.Port, p.cfg.Destination.IP, p.cfg.Destination.Port,
		p.cfg.TransportField, p.cfg.HostPath)
}

// Close releases the shared watcher; the last processor using it stops it.
func (p *processor) Close() error {
	p.closeOnce.Do(func() {
		if p.release != nil {
			p.release()
		}
	})
	return nil
}

// endpointRead is one side of the event as decoded.
type endpointRead struct {
	ap      netip.AddrPort
	present bool // both fields present and valid
}

// Run enriches ev. It never drops the event: bad values become an
// error.message on it; missing fields are an error only with
// ignore_missing: false.
func (p *processor) Run(ev *beat.Event) (*beat.Event, error) {
	if p.watcher == nil || ev == nil {
		return ev, nil
	}
	var problems []string
	var missing []string

	t := p.defaultTransport
	if v, found, shapeErr := lookupField(ev, p.transport); shapeErr != nil {
		problems = append(problems, fmt.Sprintf("field %s: %v", p.cfg.TransportField, shapeErr))
	} else if found {
		tr, ok, err := decodeTransport(v)
		if err != nil {
			problems = append(problems, fmt.Sprintf("field %s: %v", p.cfg.TransportField, err))
			return p.finish(ev, problems, nil)
		}
		if !ok {
			return ev, nil // icmp and friends: nothing to look up
		}
		t = tr
	}

	src := p.readEndpoint(ev, p.srcIP, p.srcPort, p.cfg.Source, &problems, &missing)
	dst := p.readEndpoint(ev, p.dstIP, p.dstPort, p.cfg.Destination, &problems, &missing)
	if len(problems) > 0 {
		// A bad value anywhere makes the event suspect: report it and leave
		// the event unenriched rather than half-attributed.
		return p.finish(ev, problems, missing)
	}

	var srcProc, dstProc *procs.Process
	container := p.eventContainer(ev)
	if src.present {
		srcProc = p.watcher.LookupInContainer(container, t, src.ap, dst.ap)
	}
	if dst.present {
		dstProc = p.watcher.LookupInContainer(container, t, dst.ap, src.ap)
	}
	if srcProc != nil {
		p.write(ev, p.srcOut, srcProc, &problems)
	}
	if dstProc != nil {
		p.write(ev, p.dstOut, dstProc, &problems)
	}
	// packetbeat's rule for process.*: the destination (usually the
	// server) first. container.id follows the same side.
	owner := dstProc
	if owner == nil {
		owner = srcProc
	}
	if owner != nil {
		if p.cfg.SetProcess {
			p.write(ev, p.out, owner, &problems)
		}
		if p.mask&fContainerID != 0 && owner.ContainerID != "" {
			p.writeScalar(ev, p.containerOut, owner.ContainerID, &problems)
		}
	}
	return p.finish(ev, problems, missing)
}

// eventContainer returns the container ID the event names in
// container_id_field, or "".
func (p *processor) eventContainer(ev *beat.Event) string {
	if p.containerField == nil {
		return ""
	}
	v, found, _ := lookupField(ev, p.containerField)
	if s, ok := v.(string); found && ok {
		return s
	}
	return ""
}

// writeScalar puts v at key unless a different value is there and
// overwrite_keys is off, which is reported like write does.
func (p *processor) writeScalar(ev *beat.Event, key, v string, problems *[]string) {
	old, err := ev.GetValue(key)
	if err == nil && old != nil && !p.cfg.OverwriteKeys {
		if s, ok := old.(string); !ok || s != v {
			*problems = append(*problems, fmt.Sprintf("kept existing %s (set overwrite_keys: true to replace)", key))
		}
		return
	}
	_, _ = ev.PutValue(key, v)
}

func (p *processor) finish(ev *beat.Event, problems, missing []string) (*beat.Event, error) {
	if len(problems) > 0 {
		appendError(ev, processorName+": "+strings.Join(problems, "; "))
	}
	if len(missing) > 0 && !p.cfg.IgnoreMissing {
		return ev, fmt.Errorf("%s: missing field(s) %s (set ignore_missing: true to skip such events silently)", processorName, strings.Join(missing, ", "))
	}
	return ev, nil
}

func (p *processor) readEndpoint(ev *beat.Event, ipPath, portPath []string, names endpointConfig, problems, missing *[]string) endpointRead {
	ipv, ipFound, ipShape := lookupField(ev, ipPath)
	pv, portFound, portShape := lookupField(ev, portPath)
	var r endpointRead
	var addr netip.Addr
	var port uint16
	ok := true
	switch {
	case ipShape != nil:
		*problems = append(*problems, fmt.Sprintf("field %s: %v", names.IP, ipShape))
		ok = false
	case !ipFound:
		*missing = append(*missing, names.IP)
		ok = false
	default:
		a, err := decodeIP(ipv)
		if err != nil {
			*problems = append(*problems, fmt.Sprintf("field %s: %v", names.IP, err))
			ok = false
		}
		addr = a
	}
	switch {
	case portShape != nil:
		*problems = append(*problems, fmt.Sprintf("field %s: %v", names.Port, portShape))
		ok = false
	case !portFound:
		*missing = append(*missing, names.Port)
		ok = false
	default:
		n, err := decodePort(pv)
		if err != nil {
			*problems = append(*problems, fmt.Sprintf("field %s: %v", names.Port, err))
			ok = false
		}
		port = n
	}
	if ok {
		r.ap = netip.AddrPortFrom(addr, port)
		r.present = true
	}
	return r
}

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

// write puts the process object at key. With overwrite_keys false an
// object that already holds any of the fields is left whole (mixing fields of
// two processes would be worse than either), and the kept fields are named.
func (p *processor) write(ev *beat.Event, key string, pr *procs.Process, problems *[]string) {
	m := p.fields(pr)
	// The usual case, no such object yet: set it through the pre-split
	// path instead of splitting the dotted key twice more.
	if parent := parentMap(ev.Fields, p.outPaths[key]); parent != nil {
		last := p.outPaths[key][len(p.outPaths[key])-1]
		if v, exists := parent[last]; !exists || v == nil {
			parent[last] = m
			return
		}
	}
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
	*problems = append(*problems, fmt.Sprintf("kept existing %s (set overwrite_keys: true to replace)", strings.Join(kept, ", ")))
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
