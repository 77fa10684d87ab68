// Package recipes runs the configurations of docs/recipes.md end to end:
// the real netprocbeat binary with each recipe's YAML block (read from the
// document), fed by the real program the recipe is for (nginx, logger,
// nftables through rsyslogd, conntrack -E), with one-shot clients whose
// PIDs are known. Each recipe runs twice side by side on the same traffic:
// with @timestamp from the log's own time (the recipe as written) and with
// the time the beat read the line (the recipe without its timestamp or
// syslog processor). The tests count, per side of the connection, answers
// that are right, wrong and missing; a wrong answer fails the test, the
// shares attributed are reported (go test -v), not asserted.
//
// They need root (the eBPF tracker, nftables, the kernel log). A program
// that is missing skips its recipe with a line naming the package to
// install. NETPROCBEAT_BIN names a prebuilt binary; NETPROCBEAT_TEST_PORTS
// (default 49500-49999) the TCP ports the servers use; RECIPES_CLIENTS the
// number of clients per recipe (default 60).
package recipes
