//go:build linux

package pipeline

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"

	"github.com/netprocbeat/netprocbeat/testing/bench"
)

// writeEvents writes n NDJSON events to path, the i-th naming connection
// i mod len(conns): its client end as source, its server end as
// destination, as a connection log would. The message is a typical log
// line of ~100 bytes.
func writeEvents(path string, conns []bench.Conn, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	type endpoint struct {
		IP   string `json:"ip"`
		Port uint16 `json:"port"`
	}
	type event struct {
		Message     string   `json:"message"`
		Source      endpoint `json:"source"`
		Destination endpoint `json:"destination"`
		Network     struct {
			Transport string `json:"transport"`
		} `json:"network"`
	}
	enc := json.NewEncoder(w)
	for i := range n {
		c := conns[i%len(conns)]
		ev := event{
			Message: fmt.Sprintf("request %d from %s to %s/tcp: GET /api/v1/items status=200 bytes_out=%d duration_ms=%d",
				i, c.Client, c.Server, 512+i%4096, 1+i%250),
			Source:      endpoint{c.Client.Addr().String(), c.Client.Port()},
			Destination: endpoint{c.Server.Addr().String(), c.Server.Port()},
		}
		ev.Network.Transport = "tcp"
		if err := enc.Encode(ev); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// owners maps each connection's client end to the PID holding it.
func owners(conns []bench.Conn) map[netip.AddrPort]int {
	m := make(map[netip.AddrPort]int, len(conns))
	for _, c := range conns {
		m[c.Client] = c.Owner
	}
	return m
}
