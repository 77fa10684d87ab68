// Package beatrun runs the real netprocbeat binary in tests: Binary builds
// it (or takes NETPROCBEAT_BIN), Start runs it with a generated
// configuration and console output, and Beat collects the JSON events it
// prints. testing/e2e and testing/recipes use it.
package beatrun
