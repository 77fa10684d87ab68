//go:build linux

package add_network_process

import (
	"net"
	"os"
	"testing"
)

// TestRunAfterCloseUnenriched: an event run through a processor after its
// Close passes unenriched, even while another processor keeps the shared
// watcher alive; the other processor still enriches.
func TestRunAfterCloseUnenriched(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Addr().(*net.TCPAddr)
	const yml = "tracker: procfs"
	a := newFromYAML(t, yml)
	b := newFromYAML(t, yml) // same settings: shares a's watcher
	ev := event("127.0.0.1", 40000, "127.0.0.1", addr.Port, "tcp")
	if out, err := a.Run(ev); err != nil || getInt(t, out, "destination.process.pid") != os.Getpid() {
		t.Fatalf("before Close: %v %v", out, err)
	}
	if err := a.(interface{ Close() error }).Close(); err != nil {
		t.Fatal(err)
	}
	out, err := a.Run(event("127.0.0.1", 40000, "127.0.0.1", addr.Port, "tcp"))
	if err != nil || out == nil {
		t.Fatalf("after Close: %v, %v; want the event back", out, err)
	}
	if v, err := out.GetValue("destination.process.pid"); err == nil {
		t.Fatalf("after Close the event was enriched: destination.process.pid=%v", v)
	}
	if out, err := b.Run(event("127.0.0.1", 40000, "127.0.0.1", addr.Port, "tcp")); err != nil || getInt(t, out, "destination.process.pid") != os.Getpid() {
		t.Fatalf("the other processor: %v %v", out, err)
	}
}
