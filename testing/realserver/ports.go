package realserver

import (
	"fmt"
	"os"
)

// PortsEnv names the environment variable that sets the TCP port range
// fixtures listen in, as "lo-hi".
const PortsEnv = "NETPROCBEAT_TEST_PORTS"

// PortRange returns the range in PortsEnv, or lo-hi when it is not set.
// A malformed value is an error that says the expected form.
func PortRange(lo, hi uint16) (uint16, uint16, error) {
	v := os.Getenv(PortsEnv)
	if v == "" {
		return lo, hi, nil
	}
	var a, b uint16
	if n, err := fmt.Sscanf(v, "%d-%d", &a, &b); err != nil || n != 2 || a == 0 || b < a {
		return 0, 0, fmt.Errorf("%s=%q: want lo-hi, such as 46000-46999", PortsEnv, v)
	}
	return a, b, nil
}
