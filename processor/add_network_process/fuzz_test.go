package add_network_process

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/elastic/beats/v7/libbeat/beat"
	conf "github.com/elastic/elastic-agent-libs/config"
	"github.com/elastic/elastic-agent-libs/logp"
	"github.com/elastic/elastic-agent-libs/mapstr"

	"github.com/netprocbeat/netprocbeat/internal/procs"
	"github.com/netprocbeat/netprocbeat/testing/fakehost"
)

// biMaxMessage bounds error.message: each problem quotes at most maxQuoted
// bytes of a value, so even an event that is wrong everywhere stays small.
const biMaxMessage = 1024

// biSnapshotFields renders every value of m in Go syntax. fmt sorts map keys
// and prints NaN as NaN, so two renderings are equal exactly when the
// values (and their types) are, and the rendering cannot alias the event.
func biSnapshotFields(m mapstr.M, skip ...string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		if biContains(skip, k) {
			continue
		}
		out[k] = fmt.Sprintf("%#v", v)
	}
	return out
}

func biContains(s []string, k string) bool {
	for _, x := range s {
		if x == k {
			return true
		}
	}
	return false
}

// biStripAdded returns a shallow copy of ev's fields without what the
// processor may legitimately add: error, and <side>.process / process when
// the input did not have them. Nested maps that received a process key are
// copied, not modified.
func biStripAdded(before, after mapstr.M) mapstr.M {
	out := mapstr.M{}
	for k, v := range after {
		if k == "error" {
			continue
		}
		if k == "process" || k == provenanceRoot {
			if _, had := before[k]; !had {
				continue
			}
		}
		if k == "source" || k == "destination" {
			if m, ok := biAsMap(v); ok {
				if _, had := biNestedKey(before, k, "process"); !had {
					if _, has := m["process"]; has {
						cp := make(map[string]any, len(m))
						for kk, vv := range m {
							if kk != "process" {
								cp[kk] = vv
							}
						}
						// Keep the original map type so the rendering compares.
						if _, isM := v.(mapstr.M); isM {
							v = mapstr.M(cp)
						} else {
							v = cp
						}
					}
				}
			}
		}
		out[k] = v
	}
	return out
}

func biAsMap(v any) (map[string]any, bool) {
	switch m := v.(type) {
	case mapstr.M:
		return m, true
	case map[string]any:
		return m, true
	}
	return nil, false
}

func biNestedKey(m mapstr.M, a, b string) (any, bool) {
	sub, ok := biAsMap(m[a])
	if !ok {
		return nil, false
	}
	v, ok := sub[b]
	return v, ok
}

// biCheckPreserved fails t unless every field of the input is still on the
// event with the same value, ignoring only error and the process keys the
// processor writes.
func biCheckPreserved(t testing.TB, before map[string]string, beforeFields mapstr.M, ev *beat.Event) {
	t.Helper()
	after := biSnapshotFields(biStripAdded(beforeFields, ev.Fields))
	for k, v := range before {
		if after[k] != v {
			t.Fatalf("field %s changed:\nbefore %.300s\nafter  %.300s", k, v, after[k])
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			t.Fatalf("field %s added: %.300s", k, after[k])
		}
	}
}

// biErrorMessages returns error.message as a list of strings.
func biErrorMessages(ev *beat.Event) []string {
	v, err := ev.GetValue("error.message")
	if err != nil {
		return nil
	}
	switch x := v.(type) {
	case string:
		return []string{x}
	case []string:
		return x
	case []any:
		var out []string
		for _, e := range x {
			out = append(out, fmt.Sprint(e))
		}
		return out
	}
	return []string{fmt.Sprint(v)}
}

func FuzzDecodeIP(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "::1", "fe80::1%eth0", "::ffff:10.0.0.1", "", "1.2.3", "256.0.0.1",
		"127.0.0.1:80", "[::1]", "0x7f.1", "127.1", "1.2.3.4%", "::ffff:1.2.3.4%x", strings.Repeat("1", 300), "\xff\xfe"} {
		f.Add(s, []byte(net.ParseIP("10.0.0.1")))
	}
	f.Add("x", []byte{1, 2, 3})
	f.Add("x", []byte{})
	f.Fuzz(func(t *testing.T, s string, b []byte) {
		a, err := decodeIP(s)
		biCheckIP(t, s, a, err)
		if err == nil {
			// Agreement with netip: only unzoned addresses, unmapped.
			want, perr := netip.ParseAddr(s)
			if perr != nil || want.Zone() != "" || a != want.Unmap() {
				t.Fatalf("decodeIP(%q) = %v, netip says %v %v", s, a, want, perr)
			}
		}
		a, err = decodeIP(net.IP(b))
		biCheckIP(t, net.IP(b), a, err)
		if (err == nil) != (len(b) == 4 || len(b) == 16) {
			t.Fatalf("decodeIP(net.IP of %d bytes) error = %v", len(b), err)
		}
		if pa, ok := netip.AddrFromSlice(b); ok {
			for _, v := range []any{pa, pa.WithZone("eth0"), []byte(s), json.Number(s), map[string]any{"ip": s}, []any{s}} {
				a, err := decodeIP(v)
				biCheckIP(t, v, a, err)
			}
		}
	})
}

func biCheckIP(t *testing.T, in any, a netip.Addr, err error) {
	t.Helper()
	if err != nil {
		if a.IsValid() {
			t.Fatalf("decodeIP(%#v) returned %v with error %v", in, a, err)
		}
		biCheckMessage(t, err.Error())
		return
	}
	if !a.IsValid() || a.Is4In6() || a.Zone() != "" {
		t.Fatalf("decodeIP(%#v) = %v: not a valid unmapped, unzoned address", in, a)
	}
}

func biCheckMessage(t *testing.T, msg string) {
	t.Helper()
	if len(msg) > biMaxMessage/4 {
		t.Fatalf("error message of %d bytes is not truncated: %.200q", len(msg), msg)
	}
	if !utf8.ValidString(msg) {
		t.Fatalf("error message is not valid UTF-8: %q", msg)
	}
}

func FuzzDecodePort(f *testing.F) {
	f.Add("80", int64(80), uint64(80), 80.0)
	f.Add("0", int64(0), uint64(0), 0.0)
	f.Add("65536", int64(65536), uint64(65536), 65536.0)
	f.Add("-1", int64(-1), uint64(math.MaxUint64), -1.0)
	f.Add("80.0", int64(math.MinInt64), uint64(1<<63), 1.5)
	f.Add("8e1", int64(math.MaxInt64), uint64(65535), math.Inf(1))
	f.Add("99999999999999999999", int64(1), uint64(1), math.NaN())
	f.Add("0x50p0", int64(65535), uint64(65535), 1e30)
	f.Add("+80", int64(2), uint64(2), -0.0)
	f.Add(" 80", int64(3), uint64(3), 65535.0000001)
	f.Add("1e400", int64(4), uint64(4), math.SmallestNonzeroFloat64)
	f.Fuzz(func(t *testing.T, s string, i int64, u uint64, fl float64) {
		for _, v := range []any{s, json.Number(s), i, int(i), int8(i), int16(i), int32(i), u, uint(u), uint8(u), uint16(u), uint32(u), fl, float32(fl), []byte(s), nil, true, map[string]any{"p": i}, []any{i}} {
			p, err := decodePort(v)
			if err != nil {
				if p != 0 {
					t.Fatalf("decodePort(%#v) = %d with error %v", v, p, err)
				}
				biCheckMessage(t, err.Error())
				continue
			}
			if p < 1 {
				t.Fatalf("decodePort(%#v) = %d, nil: outside 1-65535", v, p)
			}
		}
		// Cross-checks against the obvious meaning of each form.
		want := func(n int64, ok bool) func(any) {
			return func(v any) {
				p, err := decodePort(v)
				if ok && n >= 1 && n <= 65535 {
					if err != nil || int64(p) != n {
						t.Fatalf("decodePort(%#v) = %d, %v; want %d", v, p, err, n)
					}
				} else if err == nil {
					t.Fatalf("decodePort(%#v) = %d, want an error", v, p)
				}
			}
		}
		want(i, true)(i)
		if u <= math.MaxInt64 {
			want(int64(u), true)(u)
		} else {
			want(0, false)(u)
		}
		want(int64(fl), fl == math.Trunc(fl) && !math.IsInf(fl, 0) && fl >= 0 && fl <= 65535)(fl)
		if n, err := strconv.ParseUint(s, 10, 64); err == nil && n <= 65535 {
			want(int64(n), true)(s)
			want(int64(n), true)(json.Number(s))
		}
		if strings.ContainsAny(s, "xXpP_+ \tIiNn") {
			// Hex floats, signs, blanks, Inf and NaN are not port numbers.
			want(0, false)(s)
		}
	})
}

func FuzzDecodeTransport(f *testing.F) {
	for _, s := range []string{"tcp", "UDP", "6", "17", "icmp", "foo", "", "256", "-6", "6.0", "ipv6-icmp", "TCP\x00"} {
		f.Add(s, int64(6), 6.0)
	}
	f.Add("x", int64(17), 17.0)
	f.Add("x", int64(256), 3.5)
	f.Add("x", int64(-1), math.NaN())
	f.Fuzz(func(t *testing.T, s string, n int64, fl float64) {
		for _, v := range []any{s, json.Number(s), n, int8(n), uint8(n), uint64(n), fl, float32(fl), true, nil, map[string]any{"t": s}, []any{s}, []byte(s)} {
			tr, ok, err := decodeTransport(v)
			switch {
			case err != nil:
				if ok || tr != 0 {
					t.Fatalf("decodeTransport(%#v) = %v, %v with error %v", v, tr, ok, err)
				}
				biCheckMessage(t, err.Error())
			case ok:
				if tr != procs.TCP && tr != procs.UDP {
					t.Fatalf("decodeTransport(%#v) = %v, ok: not tcp or udp", v, tr)
				}
			default:
				if tr != 0 {
					t.Fatalf("decodeTransport(%#v) = %v, not ok", v, tr)
				}
			}
		}
		// A protocol number names TCP exactly when it is 6.
		tr, ok, err := decodeTransport(n)
		switch {
		case n == 6:
			if !ok || tr != procs.TCP {
				t.Fatalf("decodeTransport(6) = %v %v %v", tr, ok, err)
			}
		case n == 17:
			if !ok || tr != procs.UDP {
				t.Fatalf("decodeTransport(17) = %v %v %v", tr, ok, err)
			}
		case n < 0 || n > 255:
			if err == nil {
				t.Fatalf("decodeTransport(%d) accepted", n)
			}
		default:
			if ok || err != nil {
				t.Fatalf("decodeTransport(%d) = %v %v %v, want another valid transport", n, tr, ok, err)
			}
		}
	})
}

// biFuzzHost is a fake host with a TCP listener on 127.0.0.1:8080 owned by
// PID 100 and a UDP socket on 127.0.0.1:53 owned by PID 200.
const biFuzzHost = `
sockets:
  - {proto: tcp, local: "127.0.0.1:8080", inode: 1001}
  - {proto: udp, local: "127.0.0.1:53", inode: 1002}
  - {proto: tcp6, local: "[::1]:8443", inode: 1003}
processes:
  - {pid: 100, ppid: 1, args: [/usr/sbin/httpd], exe: /usr/sbin/httpd, start_ticks: 500, sockets: [1001, 1003]}
  - {pid: 200, ppid: 1, args: [/usr/sbin/named], exe: /usr/sbin/named, start_ticks: 600, sockets: [1002]}
`

func biWriteFakeHost(t testing.TB, yml string) string {
	t.Helper()
	dir := t.TempDir()
	hostFile := dir + "/host.yml"
	if err := os.WriteFile(hostFile, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := fakehost.Load(hostFile)
	if err != nil {
		t.Fatal(err)
	}
	root := dir + "/root"
	if err := h.Write(root); err != nil {
		t.Fatal(err)
	}
	return root
}

// biFuzzValue turns the fuzzer's inputs into one event value; sel picks the form.
func biFuzzValue(sel uint8, s string, n int64, fl float64) any {
	switch sel % 12 {
	case 0:
		return s
	case 1:
		return n
	case 2:
		return fl
	case 3:
		return json.Number(s)
	case 4:
		return net.IP(s)
	case 5:
		return nil
	case 6:
		return []any{s, n}
	case 7:
		return mapstr.M{"v": s}
	case 8:
		return n%2 == 0
	case 9:
		return uint16(n)
	case 10:
		return int8(n)
	default:
		return float32(fl)
	}
}

// fuzzEventTime stamps the fuzz events: after the fake host's processes
// started (2023-11-14), since no process that started after an event's
// @timestamp is ever named.
var fuzzEventTime = time.Unix(1800000000, 0)

func FuzzRun(f *testing.F) {
	f.Add("127.0.0.1", "8080", int64(8080), 8080.0, "tcp", uint8(0), uint8(1), uint8(0))
	f.Add("127.0.0.1", "53", int64(53), 53.0, "udp", uint8(0), uint8(2), uint8(0))
	f.Add("::1", "8443", int64(8443), 8443.0, "6", uint8(0), uint8(3), uint8(0))
	f.Add("fe80::1%eth0", "65536", int64(-1), math.NaN(), "foo", uint8(4), uint8(5), uint8(1))
	f.Add(strings.Repeat("9", 5000), "99999999999999999999", int64(math.MaxInt64), math.Inf(-1), "", uint8(6), uint8(7), uint8(2))
	f.Add("127.0.0.1", "80a", int64(0), 1.5, "icmp", uint8(8), uint8(9), uint8(3))
	f.Add("\x7f\x00\x00\x01", "8e1", int64(127), 1e30, "TCP", uint8(4), uint8(10), uint8(4))

	if runtime.GOOS != "linux" {
		f.Skip("FuzzRun resolves against a fake Linux host through host_path, which only the Linux engine reads")
	}
	root := biWriteFakeHost(f, biFuzzHost)
	c, err := conf.NewConfigFrom(fmt.Sprintf("host_path: %q\nmin_rescan_interval: 1h\nsocket_cache_ttl: 1h\n", root))
	if err != nil {
		f.Fatal(err)
	}
	bp, err := New(c, logp.NewNopLogger())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { bp.(*processor).Close() })

	f.Fuzz(func(t *testing.T, ip, ps string, n int64, fl float64, tr string, ipSel, portSel, shape uint8) {
		fields := mapstr.M{
			"source":      mapstr.M{"ip": biFuzzValue(ipSel, ip, n, fl), "port": biFuzzValue(portSel, ps, n, fl)},
			"destination": map[string]any{"ip": "127.0.0.1", "port": biFuzzValue(portSel>>4, ps, n, fl)},
			"message":     ip,
		}
		switch shape % 8 {
		case 1:
			fields["network"] = mapstr.M{"transport": tr}
		case 2:
			fields["network"] = mapstr.M{"transport": biFuzzValue(shape>>3, tr, n, fl)}
		case 3:
			fields["source"] = ip // wrong shape
		case 4:
			fields["error"] = mapstr.M{"message": "x"}
			fields["network"] = mapstr.M{"transport": tr}
		case 5:
			fields["error"] = tr
		case 6:
			fields["network"] = tr
		case 7:
			fields["source.ip"] = ip // literal dotted key
			delete(fields, "source")
		}
		ev := &beat.Event{Timestamp: fuzzEventTime, Fields: fields, Meta: mapstr.M{"m": 1}}
		before := biSnapshotFields(fields, "error")
		beforeFields := fields.Clone()
		out, err := bp.Run(ev)
		if out != ev {
			t.Fatalf("Run returned %p, want the input event %p", out, ev)
		}
		if err != nil {
			t.Fatalf("Run returned error %v with ignore_missing: true", err)
		}
		if ev.Meta.StringToPrint() != (mapstr.M{"m": 1}).StringToPrint() || !ev.Timestamp.Equal(fuzzEventTime) {
			t.Fatalf("metadata or timestamp changed")
		}
		biCheckPreserved(t, before, beforeFields, ev)
		msgs := biErrorMessages(ev)
		total := 0
		for _, m := range msgs {
			total += len(m)
			if !utf8.ValidString(m) {
				t.Fatalf("error.message is not valid UTF-8: %q", m)
			}
		}
		if total > 2*biMaxMessage {
			t.Fatalf("error.message of %d bytes", total)
		}
		if shape%8 == 4 && (len(msgs) == 0 || msgs[0] != "x") {
			t.Fatalf("existing error.message lost: %v", msgs)
		}
		// Consistency with the decoders: a destination the decoders accept
		// as 127.0.0.1:8080 over TCP must resolve to PID 100.
		dp, perr := decodePort(fields["destination"].(map[string]any)["port"])
		tcp := shape%8 == 0 || shape%8 == 3 || shape%8 == 5 || shape%8 == 7
		if shape%8 == 1 || shape%8 == 4 {
			t2, ok, err := decodeTransport(tr)
			tcp = err == nil && ok && t2 == procs.TCP
		}
		reported := false
		for _, m := range msgs {
			reported = reported || strings.HasPrefix(m, processorName+":")
		}
		if reported {
			// Bad input anywhere leaves the event unenriched.
			for _, k := range []string{"source.process", "destination.process", "process"} {
				if _, had := beforeFields.GetValue(k); had != nil {
					if v, err := ev.GetValue(k); err == nil {
						t.Fatalf("%s = %v written although the event was reported bad: %v", k, v, msgs)
					}
				}
			}
			return
		}
		if perr == nil && dp == 8080 && tcp {
			pid, err := ev.GetValue("destination.process.pid")
			if err != nil || pid != 100 {
				t.Fatalf("destination 127.0.0.1:8080/tcp not resolved to PID 100: %v %v\n%s", pid, err, ev.Fields.StringToPrint())
			}
		}
	})
}
