// Package packetbeat runs Packetbeat with its own process attribution
// (packetbeat.procs) and Packetbeat with add_network_process
// (cmd/netprocbeat-packet, configured by netprocbeat-packet.yml) side by
// side on the same real traffic: a distro nginx whose access log names the
// worker that served each request, and curl and python3 clients whose PIDs
// the test knows, over IPv4 and IPv6 on loopback. It reports, for each
// product, event type (flow, http) and side (client, server), how many
// answers were right, wrong and missing; a wrong answer from
// add_network_process fails the test.
//
// It is opt-in (it needs root, libpcap, nginx, curl and python3):
//
//	NETPROCBEAT_PACKET=1 go test -count=1 -v ./testing/packetbeat/
//
// or go run mage.go packetbeatTest, which builds the binary first.
// NETPROCBEAT_PACKET_BIN names a prebuilt build/netprocbeat-packet; without
// it the test builds one (cgo, -tags packetbeat).
package packetbeat
