//go:build linux

package recipes

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/netprocbeat/netprocbeat/testing/beatrun"
	"github.com/netprocbeat/netprocbeat/testing/realserver"
)

// TestRecipeNginx: the nginx recipe tailing the real nginx's access log
// (realserver's fixture, whose log_format is the recipe's) while one-shot
// curl, wget, python3 and bash clients make requests. Truth: the client's
// PID by its URI, the worker's from $pid.
func TestRecipeNginx(t *testing.T) {
	needRoot(t)
	doc, err := os.ReadFile(filepath.Join(moduleRoot, "docs", "recipes.md"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "log_format netprocbeat '" + realserver.LogFormat + "';"; !strings.Contains(string(doc), want) {
		t.Fatalf("docs/recipes.md does not give nginx the fixture's format: want the line %s", want)
	}
	ngx := startNginx(t)
	logCfg, readCfg := recipeConfigs(t, "nginx", "/var/log/nginx/netprocbeat.log", ngx.AccessLog)
	p := startPair(t, logCfg, readCfg)

	n := clientCount()
	runs := driveNginx(t, ngx, "nginx", n)
	mine := func(ev beatrun.Event) bool {
		_, ok := runs[ev.Str("url.original")]
		return ok
	}
	p.collect(t, "nginx access log", n, mine, func(ev beatrun.Event) (truth, bool) {
		l, err := realserver.ParseLogLine(ev.Str("message"))
		if err != nil {
			return truth{}, false
		}
		r, ok := runs[l.URI]
		if !ok || ev.Num("nginx.worker_pid") != l.PID {
			return truth{}, false
		}
		return truth{src: r.PID, dst: l.PID}, true
	})
}
