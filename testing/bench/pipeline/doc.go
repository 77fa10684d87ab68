// Package pipeline measures what add_network_process costs a whole Beats
// pipeline (issue 12, goal 4): netprocbeat reads a large NDJSON file whose
// events name live loopback connections, through the filestream input, to
// output.file, in three configurations run alternately in one test run:
//
//	A  no processor
//	B  add_network_process with its defaults
//	C  add_fields writing the very fields B wrote for a sample event
//	   (the cost of carrying B's fields, without any lookup)
//
// It reports events/s and CPU time of the beat per event, with B/A and B/C
// ratios, and a CPU profile of one extra B run split by pipeline stage.
//
// The measurement is opt-in (it builds netprocbeat and runs it ten times):
//
//	NETPROCBEAT_BENCH_PIPELINE=1 go test -count=1 -run TestPipelineCost -v -timeout 60m ./testing/bench/pipeline/
//
// or go run mage.go benchPipeline. Without the variable the test skips, so
// go test ./... stays fast. It asserts no speed; it fails when an output is
// wrong (a line count differs, a B event lacks or has the wrong process
// for a live connection, a C event's fields differ from B's sample).
package pipeline
