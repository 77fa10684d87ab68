// Command netprocbeat is Filebeat, from the pinned beats module, with the
// add_network_process processor compiled in. Every Filebeat input, output
// and processor works as in Filebeat; add_network_process is registered by
// the import of its package below.
//
// It differs from Filebeat in its identity only:
//
//   - The beat name is "netprocbeat" (settings.Name) and the index prefix is
//     "netprocbeat" (settings.IndexPrefix). The default configuration file
//     is therefore netprocbeat.yml, the data directory lock is
//     data/netprocbeat.lock, the log files are logs/netprocbeat*.ndjson and
//     events carry agent.type: netprocbeat, so it never shares state with a
//     Filebeat on the same host.
//   - Filebeat's fields.yml is registered under the new name too, together
//     with add_network_process's own fields.yml (source.process.* and
//     destination.process.*), so that `netprocbeat export template` and
//     `setup.template` produce Filebeat's mappings plus the processor's
//     under the netprocbeat-* index pattern.
//   - The default path.home is the current working directory, not the
//     directory of the executable as in Filebeat. This makes
//     `go run ./cmd/netprocbeat -e -c netprocbeat.yml` (whose executable
//     lives in a temporary build directory) and
//     `build/netprocbeat -e -c netprocbeat.yml`, both run from the
//     repository root, read ./netprocbeat.yml and keep their registry and
//     logs in ./data and ./logs. --path.home, --path.config, --path.data,
//     --path.logs and -E path.*=... override it as usual.
//
// Subcommands are Filebeat's: run (the default), test config, test output,
// export config, version, keystore and the others.
package main

import (
	"flag"
	"fmt"
	"maps"
	"os"

	"github.com/elastic/beats/v7/filebeat/cmd"
	inputs "github.com/elastic/beats/v7/filebeat/input/default-inputs"
	"github.com/elastic/beats/v7/libbeat/asset"
	"github.com/elastic/beats/v7/libbeat/cfgfile"

	"github.com/netprocbeat/netprocbeat/processor/add_network_process"
)

// Name is the beat name and index prefix.
const Name = "netprocbeat"

func main() {
	settings := cmd.FilebeatSettings("")
	settings.Name = Name
	settings.IndexPrefix = Name
	// Filebeat's Kibana dashboards are not shipped with netprocbeat.
	settings.HasDashboards = false
	// The index template is built from the fields.yml files registered
	// under the beat name.
	if err := registerFields(); err != nil {
		fmt.Fprintln(os.Stderr, "netprocbeat:", err)
		os.Exit(1)
	}

	defaultHomeToWorkingDirectory()

	if err := cmd.Filebeat(inputs.Init, settings).Execute(); err != nil {
		os.Exit(1)
	}
}

// registerFields registers, under the beat name, a copy of Filebeat's
// fields.yml files (ECS, libbeat, inputs and modules, registered under
// "filebeat" by the packages imported above) and add_network_process's
// fields.yml. The copy keeps Filebeat's own registry unchanged. Without it
// the netprocbeat template would have no mappings; without the processor's
// file source.process.name would be mapped as text by dynamic mapping, and
// terms aggregations on it would fail.
func registerFields() error {
	if _, ok := asset.FieldsRegistry[Name]; !ok {
		reg := make(map[int]map[string][]string, len(asset.FieldsRegistry[cmd.Name]))
		for pri, entries := range asset.FieldsRegistry[cmd.Name] {
			reg[pri] = maps.Clone(entries)
		}
		asset.FieldsRegistry[Name] = reg
	}
	encoded, err := asset.EncodeData(add_network_process.FieldsYML())
	if err != nil {
		return fmt.Errorf("encoding add_network_process fields.yml for the index template: %w", err)
	}
	return asset.SetFields(Name, add_network_process.FieldsAssetName, asset.ModuleFieldsPri,
		func() string { return encoded })
}

// defaultHomeToWorkingDirectory presets --path.home to the working
// directory. The flag is registered by cfgfile.Initialize; setting it here,
// before the command line is parsed, makes it a default that an explicit
// --path.home or -E path.home=... replaces.
func defaultHomeToWorkingDirectory() {
	cfgfile.Initialize()
	wd, err := os.Getwd()
	if err != nil {
		return // keep Filebeat's default, the executable's directory
	}
	if f := flag.CommandLine.Lookup("path.home"); f != nil {
		_ = f.Value.Set(wd)
	}
}
