package realserver

import (
	"net/netip"
	"testing"
	"time"
)

func TestParseLogLine(t *testing.T) {
	for _, tc := range []struct {
		line string
		want LogLine
		err  bool
	}{
		{line: "4242 127.0.0.1 51234 127.0.0.1 46001 1700000000.123 200 /curl?n=7\n", want: LogLine{
			PID: 4242, Remote: netip.MustParseAddrPort("127.0.0.1:51234"), Server: netip.MustParseAddrPort("127.0.0.1:46001"),
			Time: time.Unix(1700000000, 123e6), Status: 200, URI: "/curl?n=7"}},
		{line: "17 ::1 40000 ::1 46001 1700000001.005 404 /x", want: LogLine{
			PID: 17, Remote: netip.MustParseAddrPort("[::1]:40000"), Server: netip.MustParseAddrPort("[::1]:46001"),
			Time: time.Unix(1700000001, 5e6), Status: 404, URI: "/x"}},
		{line: "17 ::ffff:127.0.0.1 40000 ::ffff:127.0.0.1 46001 1700000001.005 200 /m", want: LogLine{
			PID: 17, Remote: netip.MustParseAddrPort("127.0.0.1:40000"), Server: netip.MustParseAddrPort("127.0.0.1:46001"),
			Time: time.Unix(1700000001, 5e6), Status: 200, URI: "/m"}},
		{line: "", err: true},
		{line: "x 127.0.0.1 1 127.0.0.1 2 1.000 200 /", err: true},
		{line: "0 127.0.0.1 1 127.0.0.1 2 1.000 200 /", err: true},
		{line: "1 127.0.0.1 0 127.0.0.1 2 1.000 200 /", err: true},
		{line: "1 127.0.0.1 1 127.0.0.1 70000 1.000 200 /", err: true},
		{line: "1 nohost 1 127.0.0.1 2 1.000 200 /", err: true},
		{line: "1 127.0.0.1 1 127.0.0.1 2 1.5 200 /", err: true},
		{line: "1 127.0.0.1 1 127.0.0.1 2 1.000 ok /", err: true},
		{line: "1 127.0.0.1 1 127.0.0.1 2 1.000 200 / extra", err: true},
	} {
		got, err := ParseLogLine(tc.line)
		if tc.err {
			if err == nil {
				t.Errorf("ParseLogLine(%q) = %+v, want an error", tc.line, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseLogLine(%q) = %+v, %v; want %+v", tc.line, got, err, tc.want)
		}
	}
}
