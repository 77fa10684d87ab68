//go:build linux

package add_network_process

import (
	"net"
	"strings"
	"testing"
)

// TestFoundByRealListener: a real listener answers with found_by listener;
// include_fields without found_by writes none; an existing value is kept
// (and reported) unless overwrite_keys.
func TestFoundByRealListener(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port

	p := newFromYAML(t, "tracker: procfs\nrescan_timeout: 60s\n")
	ev, _ := p.Run(event("198.51.100.7", 40000, "127.0.0.1", port, "tcp"))
	if v, _ := ev.GetValue("add_network_process.destination.found_by"); v != "listener" {
		t.Errorf("found_by = %v, want listener: %s", v, ev.Fields.StringToPrint())
	}
	if v, err := ev.GetValue("add_network_process.source"); err == nil {
		t.Errorf("source found_by written for a side without a process: %v", v)
	}

	off := newFromYAML(t, "tracker: procfs\nrescan_timeout: 60s\ninclude_fields: [pid]\n")
	ev, _ = off.Run(event("198.51.100.7", 40001, "127.0.0.1", port, "tcp"))
	if v, err := ev.GetValue("add_network_process"); err == nil {
		t.Errorf("include_fields [pid] wrote %v", v)
	}

	ev = event("198.51.100.7", 40002, "127.0.0.1", port, "tcp")
	ev.Fields["add_network_process"] = map[string]any{"destination": "theirs"}
	ev, _ = p.Run(ev)
	if v, _ := ev.GetValue("add_network_process.destination"); v != "theirs" {
		t.Errorf("existing add_network_process.destination replaced by %v without overwrite_keys", v)
	}
	if msg, _ := ev.GetValue("error.message"); !strings.Contains(msgString(msg), "kept existing add_network_process.destination") {
		t.Errorf("error.message = %v, want it to name the kept field", msg)
	}
}

func msgString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []string:
		return strings.Join(x, "; ")
	case []any:
		var b strings.Builder
		for _, e := range x {
			if s, ok := e.(string); ok {
				b.WriteString(s + "; ")
			}
		}
		return b.String()
	}
	return ""
}
