// Package torture is a real-socket torture suite for add_network_process:
// real helper processes, real sockets, real `ip` commands, both trackers.
// Every case asserts that the processor never names a process that did not
// own the socket (wrong = 0) and, where the data exists, that it names the
// owner within a stated time. See README.md for the scenarios and how to
// run the cases still waiting for their fixes.
//
// The suite drives the product only through its public surface: the
// processor built from YAML by add_network_process.New, beat.Events in,
// <side>.process.pid out.
package torture
