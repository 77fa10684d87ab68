//go:build linux

// Package helperproc runs a test binary as a helper process: a second real
// process that holds, opens or briefly uses a socket, so tests can check
// that its socket resolves to its PID and not to the test's. A test starts
// its own binary with Command (or Argv and Env, for a wrapper such as
// ip netns exec); the binary calls Main first thing, from an init function
// in a _test.go file (before any TestMain), and Main runs the role and
// exits. Every helper protocol of this repository's tests is a role here:
//
//	dial <network> <addr>             connect (udp, udp6: and send one datagram),
//	                                  print "ready <local addr>", hold
//	listen <addr>                     listen on TCP addr, print "ready <addr>", hold
//	send <tcp|udp> <addr> <marker>    connect, print "ready <local addr>", write
//	                                  "<marker> <n>" every 100ms, hold
//	dial-from <local> <remote>        one TCP connection from a fixed local
//	                                  address (SO_REUSEADDR/SO_REUSEPORT), hold
//	hold <prev tcp|-> <prev udp|-> <v6 0|1>
//	                                  15 sockets of every kind, print "ready <json>", hold
//	oneshot <addr> <line>             connect, write line, close, exit
//	report <tcp|udp|udp-unconnected|serve> <addr>
//	                                  send "<pid> <starttime>" once and exit
//	                                  (serve: on the listener inherited as fd 3)
//	holder                            testing/bench's socket holder: keep the
//	                                  inherited sockets, answer stdin commands
//
// "hold" means: until the parent closes the helper's stdin. A failing helper
// writes the error to stderr and exits with status 1. Only the helper holds
// its sockets (no children), so its PID is the only right answer for them.
package helperproc

import (
	"fmt"
	"os"
	"os/exec"
)

// EnvVar marks a re-executed test binary as a helper.
const EnvVar = "NETPROCBEAT_TEST_HELPER"

// Marker is every helper's argv[1], so helpers are easy to tell apart in ps
// output and their command lines are predictable; argv[2] is the role.
const Marker = "netprocbeat-test-helper"

// Main runs the role this process was started for and exits; it returns at
// once in a process that is not a helper.
func Main() {
	if os.Getenv(EnvVar) == "" {
		return
	}
	if len(os.Args) < 3 || os.Args[1] != Marker {
		fmt.Fprintf(os.Stderr, "helper: want argv %s <role> [args], got %q\n", Marker, os.Args)
		os.Exit(2)
	}
	role, args := os.Args[2], os.Args[3:]
	f, ok := roles[role]
	if !ok {
		fmt.Fprintf(os.Stderr, "helper: unknown role %q\n", role)
		os.Exit(2)
	}
	if err := f(args); err != nil {
		fmt.Fprintf(os.Stderr, "helper %s: %v\n", role, err)
		os.Exit(1)
	}
	os.Exit(0)
}

var roles = map[string]func(args []string) error{
	"dial":      dial,
	"listen":    listen,
	"accept":    accept,
	"send":      send,
	"dial-from": dialFrom,
	"hold":      hold,
	"oneshot":   oneshot,
	"report":    report,
	"holder":    holder,
}

// Argv is the command line that runs this test binary as role.
func Argv(role string, args ...string) []string {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	return append([]string{exe, Marker, role}, args...)
}

// Env is the environment a helper needs: this process's, marked.
func Env() []string { return append(os.Environ(), EnvVar+"=1") }

// Command returns the command that runs this test binary as role.
func Command(role string, args ...string) *exec.Cmd {
	argv := Argv(role, args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = Env()
	return cmd
}
