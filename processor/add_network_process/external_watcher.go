package add_network_process

import (
	"fmt"

	"github.com/elastic/beats/v7/libbeat/beat"
	conf "github.com/elastic/elastic-agent-libs/config"
	"github.com/elastic/elastic-agent-libs/logp"

	"github.com/netprocbeat/netprocbeat/internal/procs"
)

// NewWithWatcher is New over a watcher the caller built and keeps: the
// processor does not close it, and the watcher settings of c (cache TTLs,
// tracker, nat_lookup, host_path) are the caller's business. It exists for
// the golden cases (testing/golden), whose owner sources (tracker records,
// exact lookups, conntrack) are fakes; procs is internal to this module, so
// nothing outside it can call this.
func NewWithWatcher(c *conf.C, log *logp.Logger, w *procs.Watcher) (beat.Processor, error) {
	cfg := defaultConfig()
	if err := c.Unpack(&cfg); err != nil {
		return nil, fmt.Errorf("%s: invalid configuration: %w", processorName, err)
	}
	if log == nil {
		log = logp.NewLogger(processorName)
	}
	return newProcessor(cfg, log, func(string, procs.Config, *logp.Logger) (*procs.Watcher, func(), error) {
		return w, func() {}, nil
	})
}
