//go:build linux

package add_network_process

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/elastic/beats/v7/libbeat/beat"
	conf "github.com/elastic/elastic-agent-libs/config"
	"github.com/elastic/elastic-agent-libs/logp/logptest"
	"github.com/elastic/elastic-agent-libs/mapstr"
)

// absent marks a field the event does not have.
type absentT struct{}

var absent absentT

// remoteIP is TEST-NET-2: never an address of this host (test hosts may
// well use TEST-NET-1 for themselves), so the source
// side of these events is never looked up or enriched.
const remoteIP = "198.51.100.1"

// lowPortListener listens on 127.0.0.1 at a port below 128, so that every
// integer type, int8 included, can name it. The tests run as root.
func lowPortListener(t *testing.T) (net.Listener, int) {
	t.Helper()
	for p := 127; p >= 1; p-- {
		l, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		t.Cleanup(func() { l.Close() })
		return l, p
	}
	t.Skip("no free TCP port below 128 on 127.0.0.1 (not root?)")
	return nil, 0
}

// badEvent builds source = remoteIP:40000, destination = ip:port and
// network.transport = tr, leaving out any of them set to absent.
func badEvent(ip, port, tr any) *beat.Event {
	dst := mapstr.M{}
	if ip != absent {
		dst["ip"] = ip
	}
	if port != absent {
		dst["port"] = port
	}
	f := mapstr.M{
		"source":      mapstr.M{"ip": remoteIP, "port": 40000},
		"destination": dst,
		"message":     "GET / HTTP/1.1",
		"event":       map[string]any{"kind": "event", "category": []any{"network"}},
	}
	if tr != absent {
		f["network"] = mapstr.M{"transport": tr, "type": "ipv4"}
	}
	// Stamped now: the processor never names a process that started after
	// an event's @timestamp.
	return &beat.Event{Timestamp: time.Now().UTC(), Fields: f, Meta: mapstr.M{"pipeline": "p"}}
}

type badCase struct {
	name  string
	ev    func(port int) *beat.Event
	field string   // the field error.message must name
	want  []string // substrings error.message must contain: the value, recognisably
	big   bool     // the value is enormous: error.message must stay under 1 KB
}

func ipCase(name string, ip any, want ...string) badCase {
	return badCase{name: "ip/" + name, ev: func(p int) *beat.Event { return badEvent(ip, p, "tcp") }, field: "destination.ip", want: want}
}

func portCase(name string, port any, want ...string) badCase {
	return badCase{name: "port/" + name, ev: func(int) *beat.Event { return badEvent("127.0.0.1", port, "tcp") }, field: "destination.port", want: want}
}

func trCase(name string, tr any, want ...string) badCase {
	return badCase{name: "transport/" + name, ev: func(p int) *beat.Event { return badEvent("127.0.0.1", p, tr) }, field: "network.transport", want: want}
}

func shapeCase(name, key string, v any, field string, want ...string) badCase {
	return badCase{name: "shape/" + name, ev: func(p int) *beat.Event {
		ev := badEvent("127.0.0.1", p, "tcp")
		ev.Fields[key] = v
		return ev
	}, field: field, want: want}
}

const mib = 1 << 20

func badCases() []badCase {
	big := func(c badCase) badCase { c.big = true; return c }
	return []badCase{
		// IP addresses.
		ipCase("word", "not-an-ip", `"not-an-ip"`),
		ipCase("ipv6 zone", "fe80::1%eth0", `"fe80::1%eth0"`, "zone"),
		ipCase("mapped with zone", "::ffff:127.0.0.1%lo", `"::ffff:127.0.0.1%lo"`, "zone"),
		ipCase("empty", "", `""`),
		ipCase("with port", "127.0.0.1:80", `"127.0.0.1:80"`),
		ipCase("octet 256", "256.1.1.1", `"256.1.1.1"`),
		ipCase("three octets", "1.2.3", `"1.2.3"`),
		ipCase("leading blank", " 127.0.0.1", `" 127.0.0.1"`),
		ipCase("cidr", "127.0.0.1/8", `"127.0.0.1/8"`),
		ipCase("NUL", "127.0.0.1\x00", `"127.0.0.1\x00"`),
		ipCase("invalid utf8", "\xff\xfe", `"\xff\xfe"`),
		big(ipCase("1 MiB string", strings.Repeat("1", mib), `"1111111111`, "1048576 bytes")),
		ipCase("integer", 2130706433, "2130706433"),
		ipCase("bool", true, "true"),
		ipCase("null", nil, "null"),
		ipCase("array", []any{"127.0.0.1"}, "[127.0.0.1]"),
		ipCase("map", mapstr.M{"addr": "127.0.0.1"}, "127.0.0.1"),
		ipCase("net.IP 3 bytes", net.IP{127, 0, 0}, "7f0000", "3 bytes"),
		ipCase("net.IP empty", net.IP{}, "0 bytes"),
		ipCase("byte slice", []byte{127, 0, 0, 1}, "[127 0 0 1]"),
		ipCase("NaN", math.NaN(), "NaN"),
		ipCase("zero netip.Addr", netip.Addr{}, "netip.Addr"),
		ipCase("zoned netip.Addr", netip.MustParseAddr("fe80::1%eth0"), "fe80::1%eth0", "zone"),

		// Ports.
		portCase("0", 0, "0 is outside"),
		portCase("65536", 65536, "65536 is outside"),
		portCase("-1", -1, "-1 is outside"),
		portCase("1.5", 1.5, "1.5 is not a whole number"),
		portCase("80a", "80a", `"80a"`),
		portCase("1e30", 1e30, "1e+30"),
		portCase("20 digits", "99999999999999999999", `"99999999999999999999"`),
		portCase("array", []any{8080}, "[8080]"),
		portCase("map", mapstr.M{"number": 8080}, "8080"),
		portCase("null", nil, "null"),
		portCase("bool", true, "true"),
		portCase("NaN", math.NaN(), "NaN"),
		portCase("+Inf", math.Inf(1), "+Inf"),
		portCase("-Inf", math.Inf(-1), "-Inf"),
		portCase("empty", "", `""`),
		portCase("blank", " 80", `" 80"`),
		portCase("hex float", "0x50p0", `"0x50p0"`),
		portCase("plus sign", "+80", `"+80"`),
		portCase("max int64", int64(math.MaxInt64), "9223372036854775807"),
		portCase("max uint64", uint64(math.MaxUint64), "18446744073709551615"),
		portCase("negative string", "-80", `"-80"`),
		portCase("int8 -5", int8(-5), "-5"),
		portCase("json.Number fraction", json.Number("80.5"), "80.5"),
		portCase("json.Number 1e999", json.Number("1e999"), "1e999"),
		portCase("float32 NaN", float32(math.NaN()), "NaN"),
		portCase("arabic digits", "٨٠", `"٨٠"`),
		big(portCase("1 MiB digits", strings.Repeat("9", mib), `"9999999999`, "1048576 bytes")),
		big(portCase("1 MiB json.Number", json.Number(strings.Repeat("9", mib)), "9999999999")),

		// Transports.
		trCase("unknown", "foo", `"foo"`),
		trCase("bool", true, "true"),
		trCase("map", mapstr.M{"name": "tcp"}, "tcp"),
		trCase("3.5", 3.5, "3.5"),
		trCase("256", 256, "256"),
		trCase("-1", -1, "-1"),
		trCase("null", nil, "null"),
		trCase("empty", "", `""`),
		trCase("array", []any{"tcp"}, "[tcp]"),
		trCase("NaN", math.NaN(), "NaN"),
		trCase("number string 300", "300", `"300"`),
		trCase("json.Number 6.5", json.Number("6.5"), "6.5"),
		big(trCase("1 MiB string", strings.Repeat("x", mib), `"xxxxxxxxxx`, "1048576 bytes")),

		// Fields of the wrong shape: the value, not only its type, is named.
		shapeCase("source is a string", "source", "127.0.0.1:80", "source.ip", "127.0.0.1:80"),
		shapeCase("destination is a number", "destination", 42, "destination.ip", "42"),
		shapeCase("destination is an array", "destination", []any{"127.0.0.1", 80}, "destination.port", "127.0.0.1"),
		shapeCase("network is a string", "network", "tcp", "network.transport", `"tcp"`),
		big(shapeCase("source is 1 MiB", "source", strings.Repeat("s", mib), "source.ip", "ssssssssss")),
	}
}

// runPreserving runs ev through p and checks the invariants every input
// must keep: no panic, the same event back, no error (ignore_missing is
// true), every original field unchanged apart from error, metadata and
// timestamp unchanged.
func runPreserving(t *testing.T, p beat.Processor, ev *beat.Event) *beat.Event {
	t.Helper()
	before := biSnapshotFields(ev.Fields, "error")
	beforeFields := ev.Fields.Clone()
	meta, ts := fmt.Sprintf("%#v", ev.Meta), ev.Timestamp
	var out *beat.Event
	var err error
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("Run panicked: %v", r)
			}
		}()
		out, err = p.Run(ev)
	}()
	if out != ev {
		t.Fatalf("Run returned %p, want the input event %p", out, ev)
	}
	if err != nil {
		t.Fatalf("Run returned error %v", err)
	}
	if fmt.Sprintf("%#v", ev.Meta) != meta || !ev.Timestamp.Equal(ts) {
		t.Fatalf("metadata or timestamp changed")
	}
	biCheckPreserved(t, before, beforeFields, ev)
	return ev
}

func TestBadInputIsReportedAndEventKept(t *testing.T) {
	_, port := lowPortListener(t)
	p := newFromYAML(t, "min_rescan_interval: 10ms\n")
	cases := badCases()
	if len(cases) < 40 {
		t.Fatalf("only %d bad-input cases", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev := runPreserving(t, p, tc.ev(port))
			for _, k := range []string{"source.process", "destination.process", "process"} {
				if v, err := ev.GetValue(k); err == nil {
					t.Errorf("%s = %v written for a bad event", k, v)
				}
			}
			msgs := biErrorMessages(ev)
			if len(msgs) != 1 {
				t.Fatalf("error.message = %q, want one message", msgs)
			}
			msg := msgs[0]
			if !strings.HasPrefix(msg, processorName+": ") {
				t.Errorf("error.message %.200q does not name the processor", msg)
			}
			if !strings.Contains(msg, tc.field) {
				t.Errorf("error.message %.300q does not name the field %s", msg, tc.field)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error.message %.300q does not show the value (%q)", msg, w)
				}
			}
			if !utf8.ValidString(msg) {
				t.Errorf("error.message is not valid UTF-8: %q", msg)
			}
			limit := 512
			if tc.big {
				limit = 1024
			}
			if len(msg) >= limit {
				t.Errorf("error.message is %d bytes, want < %d (truncated value)", len(msg), limit)
			}
		})
	}
}

// TestUnusualFormsAreAccepted proves acceptance by enrichment: the
// destination is a real listener of this process, so each accepted form
// must resolve to os.Getpid() without any error.
func TestUnusualFormsAreAccepted(t *testing.T) {
	_, port := lowPortListener(t)
	p := newFromYAML(t, "min_rescan_interval: 10ms\ninclude_fields: [pid]\n")
	ps := strconv.Itoa(port)
	cases := []struct {
		name     string
		ip, port any
		tr       any
	}{
		{"port int", "127.0.0.1", port, "tcp"},
		{"port int8", "127.0.0.1", int8(port), "tcp"},
		{"port int16", "127.0.0.1", int16(port), "tcp"},
		{"port int32", "127.0.0.1", int32(port), "tcp"},
		{"port int64", "127.0.0.1", int64(port), "tcp"},
		{"port uint", "127.0.0.1", uint(port), "tcp"},
		{"port uint8", "127.0.0.1", uint8(port), "tcp"},
		{"port uint16", "127.0.0.1", uint16(port), "tcp"},
		{"port uint32", "127.0.0.1", uint32(port), "tcp"},
		{"port uint64", "127.0.0.1", uint64(port), "tcp"},
		{"port float64", "127.0.0.1", float64(port), "tcp"},
		{"port float32", "127.0.0.1", float32(port), "tcp"},
		{"port json.Number", "127.0.0.1", json.Number(ps), "tcp"},
		{"port json.Number float form", "127.0.0.1", json.Number(ps + ".0"), "tcp"},
		{"port json.Number exponent", "127.0.0.1", json.Number(ps + "e0"), "tcp"},
		{"port string", "127.0.0.1", ps, "tcp"},
		{"ip net.IP 4 bytes", net.IP{127, 0, 0, 1}, port, "tcp"},
		{"ip net.IP 16 bytes", net.ParseIP("127.0.0.1"), port, "tcp"},
		{"ip netip.Addr", netip.MustParseAddr("127.0.0.1"), port, "tcp"},
		{"ip IPv4-mapped string", "::ffff:127.0.0.1", port, "tcp"},
		{"transport upper case", "127.0.0.1", port, "TCP"},
		{"transport IANA string", "127.0.0.1", port, "6"},
		{"transport IANA int", "127.0.0.1", port, 6},
		{"transport IANA uint8", "127.0.0.1", port, uint8(6)},
		{"transport IANA float", "127.0.0.1", port, 6.0},
		{"transport json.Number", "127.0.0.1", port, json.Number("6")},
		{"transport absent (default tcp)", "127.0.0.1", port, absent},
	}
	self := os.Getpid()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ev *beat.Event
			// The listener predates the processor, so the first rescan
			// sees it; retry only to ride out a slow first scan.
			for deadline := time.Now().Add(3 * time.Second); ; {
				ev = runPreserving(t, p, badEvent(tc.ip, tc.port, tc.tr))
				if _, err := ev.GetValue("destination.process.pid"); err == nil || time.Now().After(deadline) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if msgs := biErrorMessages(ev); len(msgs) > 0 {
				t.Fatalf("accepted form reported as bad: %q", msgs)
			}
			pid, err := ev.GetValue("destination.process.pid")
			if err != nil || pid != self {
				t.Fatalf("destination.process.pid = %v (%v), want this process %d: the form was not accepted\n%s", pid, err, self, ev.Fields.StringToPrint())
			}
		})
	}
}

func TestErrorMessageMerging(t *testing.T) {
	p := newFromYAML(t, "{}")
	cases := []struct {
		name  string
		error any
		check func(t *testing.T, ev *beat.Event, ours string)
	}{
		{"string message", mapstr.M{"message": "x", "type": "parse"}, func(t *testing.T, ev *beat.Event, ours string) {
			msgs := biErrorMessages(ev)
			if len(msgs) != 2 || msgs[0] != "x" || msgs[1] != ours {
				t.Fatalf("error.message = %q, want [x, ours]", msgs)
			}
			if v, _ := ev.GetValue("error.type"); v != "parse" {
				t.Fatalf("error.type = %v, want parse kept", v)
			}
		}},
		{"list of strings", mapstr.M{"message": []string{"a", "b"}}, func(t *testing.T, ev *beat.Event, ours string) {
			msgs := biErrorMessages(ev)
			if len(msgs) != 3 || msgs[0] != "a" || msgs[1] != "b" || msgs[2] != ours {
				t.Fatalf("error.message = %q, want [a b ours]", msgs)
			}
		}},
		{"list of any", map[string]any{"message": []any{"a"}}, func(t *testing.T, ev *beat.Event, ours string) {
			msgs := biErrorMessages(ev)
			if len(msgs) != 2 || msgs[0] != "a" || msgs[1] != ours {
				t.Fatalf("error.message = %q, want [a ours]", msgs)
			}
		}},
		{"no message yet", mapstr.M{"type": "parse"}, func(t *testing.T, ev *beat.Event, ours string) {
			msgs := biErrorMessages(ev)
			if len(msgs) != 1 || msgs[0] != ours {
				t.Fatalf("error.message = %q, want [ours]", msgs)
			}
			if v, _ := ev.GetValue("error.type"); v != "parse" {
				t.Fatalf("error.type = %v, want parse kept", v)
			}
		}},
		{"error is a string", "boom", func(t *testing.T, ev *beat.Event, ours string) {
			msgs := biErrorMessages(ev)
			if len(msgs) != 1 || msgs[0] != ours {
				t.Fatalf("error.message = %q, want [ours]", msgs)
			}
			if v, _ := ev.GetValue("error.original"); !strings.Contains(fmt.Sprint(v), "boom") {
				t.Fatalf("error.original = %v, want the original error kept", v)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev := badEvent("127.0.0.1", "80a", "tcp")
			ev.Fields["error"] = tc.error
			runPreserving(t, p, ev)
			// What the processor alone says about this event.
			alone := runPreserving(t, p, badEvent("127.0.0.1", "80a", "tcp"))
			ours := biErrorMessages(alone)
			if len(ours) != 1 || !strings.Contains(ours[0], `"80a"`) {
				t.Fatalf("processor message %q", ours)
			}
			tc.check(t, ev, ours[0])
		})
	}
}

// TestBadInputStormDoesNotLog: bad events are reported on the events
// themselves; 1000 of them must not write 1000 log lines.
func TestBadInputStormDoesNotLog(t *testing.T) {
	_, port := lowPortListener(t)
	log, obs := logptest.NewTestingLoggerWithObserver(t, "")
	c, err := conf.NewConfigFrom("min_rescan_interval: 10ms\n")
	if err != nil {
		t.Fatal(err)
	}
	bp, err := New(c, log)
	if err != nil {
		t.Fatal(err)
	}
	defer bp.(*processor).Close()
	// Let the first rescan finish so its own log lines (if any) are not
	// counted.
	runPreserving(t, bp, badEvent("127.0.0.1", port, "tcp"))
	start := obs.Len()
	cases := badCases()
	for i := 0; i < 1000; i++ {
		runPreserving(t, bp, cases[i%len(cases)].ev(port))
	}
	if n := obs.Len() - start; n > 1 {
		t.Fatalf("1000 bad events wrote %d log lines, want at most 1; first: %v", n, obs.All()[start].Message)
	}
}

// TestErrorMessageListNotShared: two events whose error.message lists share
// a backing array (a shallow copy, as a fan-out may make) must each keep
// their own messages.
func TestErrorMessageListNotShared(t *testing.T) {
	p := newFromYAML(t, "{}")
	shared := make([]string, 1, 8)
	shared[0] = "upstream"
	ev1 := badEvent("127.0.0.1", "80a", "tcp")
	ev1.Fields["error"] = mapstr.M{"message": shared}
	ev2 := badEvent("127.0.0.1", "99999", "tcp")
	ev2.Fields["error"] = mapstr.M{"message": shared}
	runPreserving(t, p, ev1)
	runPreserving(t, p, ev2)
	m1, m2 := biErrorMessages(ev1), biErrorMessages(ev2)
	if len(m1) != 2 || m1[0] != "upstream" || !strings.Contains(m1[1], `"80a"`) {
		t.Errorf("first event's error.message = %q, want [upstream, its own message about \"80a\"]", m1)
	}
	if len(m2) != 2 || m2[0] != "upstream" || !strings.Contains(m2[1], `"99999"`) {
		t.Errorf("second event's error.message = %q, want [upstream, its own message about \"99999\"]", m2)
	}
	if len(shared) != 1 || shared[0] != "upstream" || shared[:2][1] != "" {
		t.Errorf("the shared list was written to: %q", shared[:2])
	}
}
