// Package trackercost measures, black-box, what the eBPF connection
// tracker costs other processes on the host: workloads run in child
// processes with the tracker loaded and not loaded, in interleaved blocks,
// and the children's CPU time is compared block by block. Opt-in (it takes
// minutes and loads the machine):
//
//	NETPROCBEAT_TRACKERCOST=1 go test -count=1 -v -run TestTrackerCost ./testing/trackercost/
//
// See docs/tracker.md, "Cost".
package trackercost
