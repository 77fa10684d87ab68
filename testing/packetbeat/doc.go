// Package packetbeat compares Packetbeat's procs with add_network_process in
// Packetbeat (cmd/netprocbeat-packet) on the same real traffic.
package packetbeat
