// Package add_network_process is a libbeat processor that writes, for each
// local endpoint of a network event, the process that owns its socket.
// Importing the package registers the processor as "add_network_process".
package add_network_process

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elastic/beats/v7/libbeat/beat"
	"github.com/elastic/beats/v7/libbeat/processors"
	conf "github.com/elastic/elastic-agent-libs/config"
	"github.com/elastic/elastic-agent-libs/logp"
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
	srcOut, dstOut, out outField // <target>source.process, <target>destination.process, <target>process
	containerOut        outField // <target>container.id
	srcVia, dstVia      string   // <target>add_network_process.{source,destination}: provenance.go
	viaPath             []string // <target>add_network_process, split
	containerField      []string
	closeOnce           sync.Once
	closed              atomic.Bool // set by Close: events pass unenriched

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
	p.srcOut, p.dstOut, p.out = newOutField(prefix+"source.process"), newOutField(prefix+"destination.process"), newOutField(prefix+"process")
	p.containerOut = newOutField(prefix + "container.id")
	p.srcVia, p.dstVia = prefix+provenanceRoot+".source", prefix+provenanceRoot+".destination"
	p.viaPath = strings.Split(prefix+provenanceRoot, ".")
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
// Events run after Close pass through unenriched (libbeat may still run an
// in-flight event through a closing pipeline client); a Run that Close
// overlaps is safe, as the watcher is.
func (p *processor) Close() error {
	p.closed.Store(true)
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
	if p.watcher == nil || ev == nil || p.closed.Load() {
		return ev, nil
	}
	var rep report

	t := p.defaultTransport
	if v, found, shapeErr := lookupField(ev, p.transport); shapeErr != nil {
		rep.problem("field %s: %v", p.cfg.TransportField, shapeErr)
	} else if found {
		tr, ok, err := decodeTransport(v)
		if err != nil {
			rep.problem("field %s: %v", p.cfg.TransportField, err)
			return p.finish(ev, rep)
		}
		if !ok {
			return ev, nil // icmp and friends: nothing to look up
		}
		t = tr
	}

	src := p.readEndpoint(ev, p.srcIP, p.srcPort, p.cfg.Source, &rep)
	dst := p.readEndpoint(ev, p.dstIP, p.dstPort, p.cfg.Destination, &rep)
	if len(rep.problems) > 0 {
		// A bad value anywhere makes the event suspect: report it and leave
		// the event unenriched rather than half-attributed.
		return p.finish(ev, rep)
	}

	var srcProc, dstProc *procs.Process
	var srcVia, dstVia procs.Via
	container := p.eventContainer(ev)
	// The event's @timestamp bounds whom it may name: no process that
	// started after it (zero, as on events built without one: now).
	at := ev.Timestamp
	// Both sides share one start, and so one deadline: an event waits at
	// most rescan_timeout.
	start := time.Now()
	if src.present {
		srcProc, srcVia = p.watcher.LookupInContainerBy(start, container, at, t, src.ap, dst.ap)
	}
	if dst.present {
		dstProc, dstVia = p.watcher.LookupInContainerBy(start, container, at, t, dst.ap, src.ap)
	}
	// packetbeat's rule for process.*: the destination (usually the
	// server) first. container.id follows the same side.
	owner := dstProc
	if owner == nil {
		owner = srcProc
	}
	if owner == nil {
		return p.finish(ev, rep)
	}
	var srcR, dstR, ownerR *rendered
	var arena argsArena
	n := 0
	if srcProc != nil {
		srcR = p.render(srcProc)
		n += len(srcR.args)
	}
	if dstProc != nil {
		dstR = p.render(dstProc)
		n += len(dstR.args)
	}
	if p.cfg.SetProcess {
		ownerR = dstR
		if ownerR == nil {
			ownerR = srcR
		}
		n += len(ownerR.args)
	}
	arena.reserve(n)
	if srcR != nil {
		p.write(ev, p.srcOut, srcR, &arena, &rep)
	}
	if dstR != nil {
		p.write(ev, p.dstOut, dstR, &arena, &rep)
	}
	if ownerR != nil {
		p.write(ev, p.out, ownerR, &arena, &rep)
	}
	p.writeVia(ev, srcVia, dstVia, &rep)
	if p.mask&fContainerID != 0 && owner.ContainerID != "" {
		p.writeScalar(ev, p.containerOut, owner.ContainerID, &rep)
	}
	return p.finish(ev, rep)
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

// report is what Run found wrong with one event: bad values and fields
// that could not be written (problems, for error.message) and absent fields
// (missing, an error only with ignore_missing: false).
type report struct {
	problems []string
	missing  []string
}

func (r *report) problem(format string, args ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
}

// finish writes rep to the event and returns the event and Run's error.
func (p *processor) finish(ev *beat.Event, rep report) (*beat.Event, error) {
	if len(rep.problems) > 0 {
		appendError(ev, processorName+": "+strings.Join(rep.problems, "; "))
	}
	if len(rep.missing) > 0 && !p.cfg.IgnoreMissing {
		return ev, fmt.Errorf("%s: missing field(s) %s (set ignore_missing: true to skip such events silently)", processorName, strings.Join(rep.missing, ", "))
	}
	return ev, nil
}

func (p *processor) readEndpoint(ev *beat.Event, ipPath, portPath []string, names endpointConfig, rep *report) endpointRead {
	addr, ipOK := readField(ev, ipPath, names.IP, decodeIP, rep)
	port, portOK := readField(ev, portPath, names.Port, decodePort, rep)
	if !ipOK || !portOK {
		return endpointRead{}
	}
	return endpointRead{ap: netip.AddrPortFrom(addr, port), present: true}
}

// readField reads and decodes the field at path (named name in the
// configuration), reporting a bad shape or value as a problem and an absent
// field as missing.
func readField[T any](ev *beat.Event, path []string, name string, decode func(any) (T, error), rep *report) (T, bool) {
	var zero T
	v, found, shapeErr := lookupField(ev, path)
	switch {
	case shapeErr != nil:
		rep.problem("field %s: %v", name, shapeErr)
	case !found:
		rep.missing = append(rep.missing, name)
	default:
		x, err := decode(v)
		if err != nil {
			rep.problem("field %s: %v", name, err)
			return zero, false
		}
		return x, true
	}
	return zero, false
}
