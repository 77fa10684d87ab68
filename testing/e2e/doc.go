// Package e2e holds end-to-end tests of netprocbeat on real sockets: they
// build the real binary (or use $NETPROCBEAT_BIN), run it with generated
// configurations, drive it with helper processes (the test binary re-executed
// in a helper mode) and check the process fields it writes. A differential
// test compares the add_network_process processor with iproute2's ss over a
// few hundred sockets.
//
// Run them with:
//
//	go test ./testing/e2e/ -v -count=1
//
// They are Linux-only.
package e2e
