package add_network_process

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/netprocbeat/netprocbeat/internal/procs"
)

// endpointConfig names the event fields that hold one endpoint.
type endpointConfig struct {
	IP   string `config:"ip"`
	Port string `config:"port"`
}

// monitoredConfig is packetbeat.procs.monitored: the first entry whose
// CmdlineGrep is a substring of the space-joined args renames the process.
type monitoredConfig struct {
	Process     string `config:"process"`
	CmdlineGrep string `config:"cmdline_grep"`
}

type config struct {
	Source           endpointConfig    `config:"source"`
	Destination      endpointConfig    `config:"destination"`
	TransportField   string            `config:"transport_field"`
	DefaultTransport string            `config:"default_transport"`
	Target           string            `config:"target"`
	IncludeFields    []string          `config:"include_fields"`
	SetProcess       bool              `config:"set_process"`
	OverwriteKeys    bool              `config:"overwrite_keys"`
	IgnoreMissing    bool              `config:"ignore_missing"`
	HostPath         string            `config:"host_path"`
	Monitored        []monitoredConfig `config:"monitored"`
	// ContainerIDField names an event field holding the container the event
	// came from; its network namespace is searched first. "" = off.
	ContainerIDField string `config:"container_id_field"`

	ProcessCacheTTL   time.Duration `config:"process_cache_ttl"`
	SocketCacheTTL    time.Duration `config:"socket_cache_ttl"`
	NegativeCacheTTL  time.Duration `config:"negative_cache_ttl"`
	MinRescanInterval time.Duration `config:"min_rescan_interval"`
	RescanTimeout     time.Duration `config:"rescan_timeout"`
	NegativeCacheSize int           `config:"negative_cache_size"`

	// Tracker selects the eBPF connection tracker: auto, ebpf or procfs.
	Tracker          string        `config:"tracker"`
	TrackerRetention time.Duration `config:"tracker_retention"`
	// TrackerProgramStats turns on the kernel's BPF run-time statistics
	// while the tracker runs, for the tracker.programs.* metrics.
	TrackerProgramStats bool `config:"tracker_program_stats"`

	// NATLookup reads the kernel's conntrack table to attribute events
	// whose tuple was translated (procs.Config.NATLookup).
	NATLookup bool `config:"nat_lookup"`

	// SafetyRescanInterval is how often the watcher rescans in event-driven
	// mode (with the eBPF tracker's records and change counters); 0 turns
	// the mode off (procs.Config.SafetyRescanInterval).
	SafetyRescanInterval time.Duration `config:"safety_rescan_interval"`
}

func defaultConfig() config {
	d := procs.DefaultConfig()
	return config{
		Source:               endpointConfig{IP: "source.ip", Port: "source.port"},
		Destination:          endpointConfig{IP: "destination.ip", Port: "destination.port"},
		TransportField:       "network.transport",
		DefaultTransport:     "tcp",
		SetProcess:           true,
		OverwriteKeys:        false,
		IgnoreMissing:        true,
		HostPath:             "/",
		ProcessCacheTTL:      d.ProcessTTL,
		SocketCacheTTL:       d.SocketTTL,
		NegativeCacheTTL:     d.NegativeTTL,
		MinRescanInterval:    d.MinRescanInterval,
		RescanTimeout:        d.RescanTimeout,
		NegativeCacheSize:    d.NegativeCacheSize,
		Tracker:              trackerAuto,
		TrackerRetention:     30 * time.Second,
		NATLookup:            true,
		SafetyRescanInterval: d.SafetyRescanInterval,
	}
}

// Validate rejects settings that would silently do the wrong thing, naming
// the option and the bad value.
func (c *config) Validate() error {
	var errs []error
	for i, m := range c.Monitored {
		if strings.TrimSpace(m.Process) == "" {
			errs = append(errs, fmt.Errorf("monitored[%d].process is empty: give the name to report for processes matching cmdline_grep %q", i, m.CmdlineGrep))
		}
		if m.CmdlineGrep == "" {
			errs = append(errs, fmt.Errorf("monitored[%d].cmdline_grep is empty: an empty pattern would rename every process to %q; give a substring of the command line", i, m.Process))
		}
	}
	for _, f := range c.IncludeFields {
		if fieldBit(f) == 0 {
			errs = append(errs, fmt.Errorf("include_fields: unknown field %q; valid fields are %s", f, strings.Join(includeFieldNames(), ", ")))
		}
	}
	if _, ok := parseTransportName(c.DefaultTransport); !ok {
		errs = append(errs, fmt.Errorf("default_transport %q is not supported: use tcp or udp", c.DefaultTransport))
	}
	for _, f := range []struct{ name, value string }{
		{"source.ip", c.Source.IP}, {"source.port", c.Source.Port},
		{"destination.ip", c.Destination.IP}, {"destination.port", c.Destination.Port},
		{"transport_field", c.TransportField},
	} {
		if strings.TrimSpace(f.value) == "" {
			errs = append(errs, fmt.Errorf("%s is empty: name the event field to read", f.name))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"process_cache_ttl", c.ProcessCacheTTL}, {"socket_cache_ttl", c.SocketCacheTTL},
		{"negative_cache_ttl", c.NegativeCacheTTL}, {"min_rescan_interval", c.MinRescanInterval},
		{"rescan_timeout", c.RescanTimeout}, {"tracker_retention", c.TrackerRetention},
	} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be a positive duration, got %v", d.name, d.v))
		}
	}
	switch c.Tracker {
	case trackerAuto, trackerEBPF, trackerProcfs:
	default:
		errs = append(errs, fmt.Errorf("tracker %q is not supported: use auto, ebpf or procfs", c.Tracker))
	}
	if c.SafetyRescanInterval < 0 {
		errs = append(errs, fmt.Errorf("safety_rescan_interval must be a positive duration, or 0 to turn event-driven mode off, got %v", c.SafetyRescanInterval))
	}
	if c.NegativeCacheSize <= 0 {
		errs = append(errs, fmt.Errorf("negative_cache_size must be positive, got %d", c.NegativeCacheSize))
	}
	return errors.Join(errs...)
}

func (c *config) watcherConfig() procs.Config {
	return procs.Config{
		ProcessTTL:        c.ProcessCacheTTL,
		SocketTTL:         c.SocketCacheTTL,
		NegativeTTL:       c.NegativeCacheTTL,
		MinRescanInterval: c.MinRescanInterval,
		RescanTimeout:     c.RescanTimeout,
		NegativeCacheSize: c.NegativeCacheSize,
		// conntrack is this kernel's: it says nothing of another tree's
		// sockets (a fake /proc in tests, a copy).
		NATLookup:            c.NATLookup && isProcfs(filepath.Join(c.HostPath, "proc")),
		SafetyRescanInterval: c.safetyRescanInterval(),
		DescribeParents:      maskOf(c.IncludeFields)&(fParentEntityID|fParentName|fParentExecutable|fParentStart) != 0,
	}
}

// safetyRescanInterval maps the option to procs.Config's encoding, where 0
// means the default and a negative value turns event-driven mode off.
func (c *config) safetyRescanInterval() time.Duration {
	if c.SafetyRescanInterval == 0 {
		return -1
	}
	return c.SafetyRescanInterval
}

// fieldMask is a set of include_fields, so the hot path tests bits instead
// of strings.
type fieldMask uint32

const (
	fPID fieldMask = 1 << iota
	fName
	fArgs
	fExecutable
	fStart
	fParentPID
	fWorkingDirectory
	fUserID
	fUserName
	fContainerID // written at <target>container.id, not under <side>.process
	fFoundBy     // written at <target>add_network_process.<side>: provenance.go
	fEntityID
	fParentEntityID
	fParentName
	fParentExecutable
	fParentStart
)

// includeFields maps each include_fields name, in output order, to its bit,
// and tells whether it is written when include_fields is not set. Names
// are dotted paths under <side>.process, except container.id and found_by
// (add_network_process.<side>.found_by and .socket_closed). The opt-in
// fields and why they are not defaults: docs/add_network_process.md.
var includeFields = []struct {
	name string
	bit  fieldMask
	def  bool
}{
	{"pid", fPID, true},
	{"name", fName, true},
	{"args", fArgs, true},
	{"executable", fExecutable, true},
	{"start", fStart, true},
	{"entity_id", fEntityID, false},
	{"parent.pid", fParentPID, true},
	{"parent.entity_id", fParentEntityID, false},
	{"parent.name", fParentName, false},
	{"parent.executable", fParentExecutable, false},
	{"parent.start", fParentStart, false},
	{"working_directory", fWorkingDirectory, true},
	{"user.id", fUserID, true},
	{"user.name", fUserName, true},
	{"container.id", fContainerID, true},
	{"found_by", fFoundBy, true},
}

func fieldBit(name string) fieldMask {
	for _, f := range includeFields {
		if f.name == name {
			return f.bit
		}
	}
	return 0
}

func includeFieldNames() []string {
	names := make([]string, len(includeFields))
	for i, f := range includeFields {
		names[i] = f.name
	}
	return names
}

// maskOf returns the set of fields; an empty list means the defaults. The
// default list is applied here, not in defaultConfig, because go-ucfg
// merges lists by position: a user's [pid, name] over a default list
// would keep the rest of the defaults.
func maskOf(fields []string) fieldMask {
	var m fieldMask
	if len(fields) == 0 {
		for _, f := range includeFields {
			if f.def {
				m |= f.bit
			}
		}
		return m
	}
	for _, f := range fields {
		m |= fieldBit(f)
	}
	return m
}
