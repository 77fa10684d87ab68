package add_network_process

import (
	"strings"
	"testing"
	"time"

	conf "github.com/elastic/elastic-agent-libs/config"
	"github.com/elastic/elastic-agent-libs/logp"
)

// TestConfigValidate has one case per Validate rule: the setting that breaks
// it and the words the error must say (the option and the bad value).
func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name   string
		modify func(*config)
		want   []string // substrings of the error; none = valid
	}{
		{"defaults are valid", func(*config) {}, nil},
		{"every include_fields name is valid", func(c *config) { c.IncludeFields = includeFieldNames() }, nil},
		{"monitored process empty", func(c *config) {
			c.Monitored = []monitoredConfig{{Process: " ", CmdlineGrep: "java"}}
		}, []string{"monitored[0].process is empty", `"java"`}},
		{"monitored cmdline_grep empty", func(c *config) {
			c.Monitored = []monitoredConfig{{Process: "app"}}
		}, []string{"monitored[0].cmdline_grep is empty", `"app"`}},
		{"include_fields unknown", func(c *config) { c.IncludeFields = []string{"pid", "ppid"} },
			[]string{`include_fields: unknown field "ppid"`, "parent.pid"}},
		{"default_transport unsupported", func(c *config) { c.DefaultTransport = "sctp" },
			[]string{`default_transport "sctp"`, "tcp or udp"}},
		{"source.ip empty", func(c *config) { c.Source.IP = "" }, []string{"source.ip is empty"}},
		{"source.port empty", func(c *config) { c.Source.Port = " " }, []string{"source.port is empty"}},
		{"destination.ip empty", func(c *config) { c.Destination.IP = "" }, []string{"destination.ip is empty"}},
		{"destination.port empty", func(c *config) { c.Destination.Port = "" }, []string{"destination.port is empty"}},
		{"transport_field empty", func(c *config) { c.TransportField = "" }, []string{"transport_field is empty"}},
		{"process_cache_ttl not positive", func(c *config) { c.ProcessCacheTTL = 0 }, []string{"process_cache_ttl must be a positive duration, got 0s"}},
		{"socket_cache_ttl not positive", func(c *config) { c.SocketCacheTTL = -time.Second }, []string{"socket_cache_ttl must be a positive duration, got -1s"}},
		{"negative_cache_ttl not positive", func(c *config) { c.NegativeCacheTTL = 0 }, []string{"negative_cache_ttl must be a positive duration"}},
		{"min_rescan_interval not positive", func(c *config) { c.MinRescanInterval = 0 }, []string{"min_rescan_interval must be a positive duration"}},
		{"rescan_timeout not positive", func(c *config) { c.RescanTimeout = 0 }, []string{"rescan_timeout must be a positive duration"}},
		{"tracker_retention not positive", func(c *config) { c.TrackerRetention = 0 }, []string{"tracker_retention must be a positive duration"}},
		{"tracker unsupported", func(c *config) { c.Tracker = "kprobe" }, []string{`tracker "kprobe" is not supported`, "auto, ebpf or procfs"}},
		{"safety_rescan_interval negative", func(c *config) { c.SafetyRescanInterval = -time.Minute }, []string{"safety_rescan_interval must be a positive duration, or 0 to turn event-driven mode off, got -1m0s"}},
		{"safety_rescan_interval 0 turns event-driven mode off", func(c *config) { c.SafetyRescanInterval = 0 }, nil},
		{"negative_cache_size not positive", func(c *config) { c.NegativeCacheSize = 0 }, []string{"negative_cache_size must be positive, got 0"}},
		{"several faults are all reported", func(c *config) { c.Tracker, c.NegativeCacheSize = "x", -1 },
			[]string{`tracker "x"`, "negative_cache_size must be positive, got -1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := defaultConfig()
			c.modify(&cfg)
			err := cfg.Validate()
			if len(c.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want an error saying %q", c.want)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to say %q", err, w)
				}
			}
		})
	}
}

// TestNewRejectsInvalidConfig: New runs Validate through Unpack, so a bad
// option stops the processor from starting, naming the option.
func TestNewRejectsInvalidConfig(t *testing.T) {
	_, err := New(conf.MustNewConfigFrom(map[string]any{"tracker": "sometimes"}), logp.NewNopLogger())
	if err == nil || !strings.Contains(err.Error(), `tracker "sometimes" is not supported`) {
		t.Fatalf("New = %v, want the tracker option rejected", err)
	}
}

// TestIncludeFieldsTable: every name maps to its own bit, and an empty list
// selects the default fields: every field but the entity IDs and the
// parent's description.
func TestIncludeFieldsTable(t *testing.T) {
	var all fieldMask
	for _, f := range includeFields {
		if f.bit == 0 || all&f.bit != 0 {
			t.Errorf("include_fields %q: bit %b is zero or shared", f.name, f.bit)
		}
		all |= f.bit
		if maskOf([]string{f.name}) != f.bit {
			t.Errorf("maskOf([%q]) = %b, want %b", f.name, maskOf([]string{f.name}), f.bit)
		}
	}
	optIn := fEntityID | fParentEntityID | fParentName | fParentExecutable | fParentStart
	if maskOf(nil) != all&^optIn {
		t.Errorf("maskOf(nil) = %b, want every field but the opt-in ones %b", maskOf(nil), all&^optIn)
	}
}

// TestSafetyRescanIntervalReachesTheWatcher: the option's 0 turns
// event-driven mode off (procs' negative), its default and other values
// pass through.
func TestSafetyRescanIntervalReachesTheWatcher(t *testing.T) {
	for _, tc := range []struct {
		set  *time.Duration
		want time.Duration
	}{
		{nil, 5 * time.Minute},
		{ptr(time.Duration(0)), -1},
		{ptr(time.Minute), time.Minute},
	} {
		cfg := defaultConfig()
		if tc.set != nil {
			cfg.SafetyRescanInterval = *tc.set
		}
		if got := cfg.watcherConfig().SafetyRescanInterval; got != tc.want {
			t.Errorf("safety_rescan_interval %v: watcher gets %v, want %v", tc.set, got, tc.want)
		}
	}
}

func ptr[T any](v T) *T { return &v }
