//go:build packetbeat

// Command netprocbeat-packet is Packetbeat, from the pinned beats module,
// with the add_network_process processor compiled in: Packetbeat's own
// command, configuration and fields, plus the processor, registered by the
// blank import below. Configure it with packetbeat.procs.enabled: false and
// add_network_process in processors (netprocbeat-packet.yml).
//
// Packetbeat captures with libpcap, so this command needs cgo and
// libpcap-dev: it builds only with the packetbeat build tag
// (go run mage.go packetbeat), and the rest of the module, netprocbeat
// included, stays pure Go without it.
package main

import (
	"os"
	_ "time/tzdata" // as Packetbeat's main: timezones without a system database

	_ "github.com/elastic/beats/v7/libbeat/processors/timestamp"
	"github.com/elastic/beats/v7/packetbeat/cmd"

	_ "github.com/netprocbeat/netprocbeat/processor/add_network_process"
)

func main() {
	if err := cmd.RootCmd.Execute(); err != nil {
		os.Exit(1)
	}
}
