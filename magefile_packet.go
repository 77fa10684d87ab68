//go:build mage

package main

// The Packetbeat build: Packetbeat with add_network_process compiled in
// (cmd/netprocbeat-packet, docs/packetbeat.md). It needs cgo and libpcap,
// so it is built with the packetbeat build tag and stays out of the rest of
// the module, which is pure Go.

import (
	"fmt"
	"path/filepath"

	"github.com/magefile/mage/mg"
)

const (
	packetBinary  = "build/netprocbeat-packet"
	packetMainPkg = "./cmd/netprocbeat-packet"
	packetTag     = "packetbeat"
	// packetTestEnv turns on testing/packetbeat; packetBinEnv names the
	// binary it runs.
	packetTestOnEnv = "NETPROCBEAT_PACKET"
	packetBinEnv    = "NETPROCBEAT_PACKET_BIN"
)

// Packetbeat builds Packetbeat with add_network_process compiled in (cgo, libpcap-dev) into build/netprocbeat-packet.
func Packetbeat() error {
	env := map[string]string{"CGO_ENABLED": "1"}
	if err := run(env, mg.GoCmd(), "build", "-tags", packetTag, "-o", packetBinary, packetMainPkg); err != nil {
		return fmt.Errorf("%w (it needs a C compiler and libpcap-dev: apt-get install -y --no-install-recommends gcc libc6-dev libpcap-dev)", err)
	}
	// go vet with the tag: the default vet in Check does not see these files.
	if err := run(env, mg.GoCmd(), "vet", "-tags", packetTag, packetMainPkg, "./testing/packetbeat/"); err != nil {
		return err
	}
	abs, err := filepath.Abs(packetBinary)
	if err != nil {
		abs = packetBinary
	}
	fmt.Println("built", abs)
	return nil
}

// PacketbeatTest builds, then runs the side-by-side test of this build and Packetbeat's procs on real traffic (testing/packetbeat; root, nginx, curl, python3).
func PacketbeatTest() error {
	env := map[string]string{}
	if err := packetTestEnv(env); err != nil {
		return err
	}
	return run(env, mg.GoCmd(), "test", "-count=1", "-v", "./testing/packetbeat/")
}

// packetTestEnv builds the Packetbeat binary and sets, in env, what turns
// on testing/packetbeat and names the binary.
func packetTestEnv(env map[string]string) error {
	if err := Packetbeat(); err != nil {
		return err
	}
	abs, err := filepath.Abs(packetBinary)
	if err != nil {
		return err
	}
	env[packetTestOnEnv] = "1"
	env[packetBinEnv] = abs
	return nil
}
