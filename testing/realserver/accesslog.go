package realserver

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// LogFormat is the nginx log_format StartNginx writes: the serving worker's
// PID, the client's address and port, the server's address and port, the
// log time in seconds with milliseconds, the status and the request URI.
const LogFormat = `$pid $remote_addr $remote_port $server_addr $server_port $msec $status $request_uri`

// LogLine is one access log line in LogFormat.
type LogLine struct {
	PID    int            // $pid: the worker that served the request
	Remote netip.AddrPort // $remote_addr:$remote_port: the client's end
	Server netip.AddrPort // $server_addr:$server_port: nginx's end
	Time   time.Time      // $msec: when nginx wrote the line (end of the request)
	Status int            // $status
	URI    string         // $request_uri
}

// ParseLogLine parses one line in LogFormat (trailing newline allowed).
func ParseLogLine(s string) (LogLine, error) {
	f := strings.Fields(s)
	if len(f) != 8 {
		return LogLine{}, fmt.Errorf("access log line %q: %d fields, want 8 (%s)", s, len(f), LogFormat)
	}
	var l LogLine
	var err error
	if l.PID, err = strconv.Atoi(f[0]); err != nil || l.PID <= 0 {
		return LogLine{}, fmt.Errorf("access log line %q: $pid %q is not a PID", s, f[0])
	}
	if l.Remote, err = addrPort(f[1], f[2]); err != nil {
		return LogLine{}, fmt.Errorf("access log line %q: remote: %w", s, err)
	}
	if l.Server, err = addrPort(f[3], f[4]); err != nil {
		return LogLine{}, fmt.Errorf("access log line %q: server: %w", s, err)
	}
	if l.Time, err = parseMsec(f[5]); err != nil {
		return LogLine{}, fmt.Errorf("access log line %q: %w", s, err)
	}
	if l.Status, err = strconv.Atoi(f[6]); err != nil {
		return LogLine{}, fmt.Errorf("access log line %q: $status %q: %w", s, f[6], err)
	}
	l.URI = f[7]
	return l, nil
}

func addrPort(ip, port string) (netip.AddrPort, error) {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: %w", ip, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return netip.AddrPort{}, fmt.Errorf("port %q is not a port number", port)
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(p)), nil
}

// parseMsec reads "1700000000.123" exactly (no float rounding).
func parseMsec(s string) (time.Time, error) {
	sec, frac, ok := strings.Cut(s, ".")
	if !ok || len(frac) != 3 {
		return time.Time{}, fmt.Errorf("$msec %q: want seconds.milliseconds", s)
	}
	n, err1 := strconv.ParseInt(sec, 10, 64)
	ms, err2 := strconv.ParseInt(frac, 10, 64)
	if err1 != nil || err2 != nil || n < 0 || ms < 0 {
		return time.Time{}, fmt.Errorf("$msec %q: want seconds.milliseconds", s)
	}
	return time.Unix(n, ms*int64(time.Millisecond)), nil
}
