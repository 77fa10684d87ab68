// Command netprocbeat is Filebeat with the add_network_process processor
// compiled in.
package main

import (
	"os"

	"github.com/elastic/beats/v7/filebeat/cmd"
	inputs "github.com/elastic/beats/v7/filebeat/input/default-inputs"

	_ "github.com/netprocbeat/netprocbeat/processor/add_network_process"
)

func main() {
	if err := cmd.Filebeat(inputs.Init, cmd.FilebeatSettings("")).Execute(); err != nil {
		os.Exit(1)
	}
}
