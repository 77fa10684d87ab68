package add_network_process

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/netprocbeat/netprocbeat/internal/procs"
)

// Decoders for the forms a beat puts in event fields. They never panic and
// return errors that quote the value (truncated), so error.message shows the
// user what was wrong.

func decodeIP(v any) (netip.Addr, error) {
	switch x := v.(type) {
	case string:
		a, err := netip.ParseAddr(x)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("%s is not an IP address", quote(x))
		}
		if a.Zone() != "" {
			return netip.Addr{}, fmt.Errorf("%s has an IPv6 zone, which socket tables do not record; remove the %%zone suffix", quote(x))
		}
		return a.Unmap(), nil
	case net.IP:
		a, ok := netip.AddrFromSlice(x)
		if !ok {
			h := x
			if len(h) > maxQuoted/2 {
				h = h[:maxQuoted/2]
			}
			return netip.Addr{}, fmt.Errorf("net.IP [%x] of %d bytes is not an IP address (want 4 or 16 bytes)", []byte(h), len(x))
		}
		return a.Unmap(), nil
	case netip.Addr:
		if !x.IsValid() {
			return netip.Addr{}, fmt.Errorf("the zero netip.Addr is not an IP address")
		}
		if x.Zone() != "" {
			return netip.Addr{}, fmt.Errorf("%s has an IPv6 zone, which socket tables do not record; remove the %%zone suffix", quote(x.String()))
		}
		return x.Unmap(), nil
	case nil:
		return netip.Addr{}, fmt.Errorf("null is not an IP address")
	}
	return netip.Addr{}, fmt.Errorf("%s of type %T is not an IP address (want a string)", describe(v), v)
}

func decodePort(v any) (uint16, error) {
	var (
		n  uint64
		ok bool
	)
	switch x := v.(type) {
	case int:
		n, ok = signed(int64(x))
	case int8:
		n, ok = signed(int64(x))
	case int16:
		n, ok = signed(int64(x))
	case int32:
		n, ok = signed(int64(x))
	case int64:
		n, ok = signed(x)
	case uint:
		n, ok = uint64(x), true
	case uint8:
		n, ok = uint64(x), true
	case uint16:
		n, ok = uint64(x), true
	case uint32:
		n, ok = uint64(x), true
	case uint64:
		n, ok = x, true
	case float64:
		n, ok = integral(x)
	case float32:
		n, ok = integral(float64(x))
	case json.Number:
		n, ok = decimal(string(x))
	case string:
		n, ok = decimal(x)
	default:
		return 0, fmt.Errorf("%s of type %T is not a port number", describe(v), v)
	}
	if !ok {
		return 0, fmt.Errorf("%s is not a whole number", describe(v))
	}
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("%s is outside the port range 1-65535", describe(v))
	}
	return uint16(n), nil
}

func signed(x int64) (uint64, bool) {
	if x < 0 {
		// Out of range, reported as such: keep the sign visible.
		return math.MaxUint64, true
	}
	return uint64(x), true
}

func integral(f float64) (uint64, bool) {
	if math.IsNaN(f) || math.IsInf(f, 0) || f != math.Trunc(f) {
		return 0, false
	}
	if f < 0 || f > 65535 {
		return math.MaxUint64, true
	}
	return uint64(f), true
}

func decimal(s string) (uint64, bool) {
	if s == "" {
		return 0, false
	}
	if s[0] == '-' {
		if _, err := strconv.ParseUint(s[1:], 10, 64); err == nil {
			return math.MaxUint64, true
		}
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return math.MaxUint64, true
		}
		// json.Number may carry an integral float form such as "80.0" or
		// "8e1". Only JSON's number grammar qualifies: ParseFloat alone
		// would also take "+80", "0x50p0", "0x_5_0p0", "Inf" and "NaN".
		if !isJSONNumber(s) {
			return 0, false
		}
		if f, ferr := strconv.ParseFloat(s, 64); ferr == nil {
			return integral(f)
		}
		return 0, false
	}
	return n, true
}

// ianaOther are transports that legitimately have no socket owner to look
// up; events naming them pass untouched instead of being flagged.
var ianaOther = map[string]bool{
	"icmp": true, "ipv6-icmp": true, "icmpv6": true, "igmp": true, "sctp": true,
	"gre": true, "esp": true, "ah": true, "ipv6": true, "ipip": true, "pim": true,
	"vrrp": true, "ospf": true, "udplite": true, "dccp": true,
}

func parseTransportName(s string) (procs.Transport, bool) {
	switch strings.ToLower(s) {
	case "tcp", "6":
		return procs.TCP, true
	case "udp", "17":
		return procs.UDP, true
	}
	return 0, false
}

// decodeTransport returns the transport, or ok=false with a nil error for
// a valid transport that is neither TCP nor UDP (the event passes untouched).
func decodeTransport(v any) (t procs.Transport, ok bool, err error) {
	switch x := v.(type) {
	case string:
		if t, ok := parseTransportName(x); ok {
			return t, true, nil
		}
		l := strings.ToLower(x)
		if ianaOther[l] {
			return 0, false, nil
		}
		if n, err := strconv.ParseUint(l, 10, 8); err == nil {
			return 0, false, numberErr(n)
		}
		return 0, false, fmt.Errorf("%s is not a known transport (want tcp, udp or an IANA protocol number)", quote(x))
	case nil:
		return 0, false, fmt.Errorf("null is not a transport")
	case bool, map[string]any, []any:
		return 0, false, fmt.Errorf("%s of type %T is not a transport", describe(v), v)
	}
	n, err := decodeProtoNumber(v)
	if err != nil {
		return 0, false, err
	}
	switch n {
	case 6:
		return procs.TCP, true, nil
	case 17:
		return procs.UDP, true, nil
	}
	return 0, false, numberErr(n)
}

// numberErr accepts any protocol number as "some other transport".
func numberErr(n uint64) error {
	if n <= 255 {
		return nil
	}
	return fmt.Errorf("%d is not an IANA protocol number (0-255)", n)
}

func decodeProtoNumber(v any) (uint64, error) {
	switch x := v.(type) {
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64, json.Number:
		s := fmt.Sprint(x)
		n, ok := decimal(s)
		if !ok || n == math.MaxUint64 {
			return 0, fmt.Errorf("%s is not an IANA protocol number (0-255)", describe(v))
		}
		return n, nil
	}
	return 0, fmt.Errorf("%s of type %T is not a transport", describe(v), v)
}

const maxQuoted = 64

// quote shows s, or its head when long, in Go syntax. Escaping can make a
// byte four characters long, so the head shrinks until the quoted form fits
// in 2*maxQuoted characters.
func quote(s string) string {
	n := min(len(s), maxQuoted)
	q := strconv.Quote(s[:n])
	for len(q) > 2*maxQuoted {
		n = n * 2 / 3
		q = strconv.Quote(s[:n])
	}
	if n < len(s) {
		return q + fmt.Sprintf("… (%d bytes)", len(s))
	}
	return q
}

func describe(v any) string {
	switch x := v.(type) {
	case string:
		return quote(x)
	case nil:
		return "null"
	}
	s := fmt.Sprintf("%v", v)
	if !utf8.ValidString(s) {
		// json.Number, []byte and friends may carry any bytes.
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) > maxQuoted {
		// Cut on a rune boundary so error.message stays valid UTF-8.
		n := maxQuoted
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n] + "…"
	}
	return s
}

// isJSONNumber reports whether s matches JSON's number grammar:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func isJSONNumber(s string) bool {
	i := 0
	digits := func() int {
		j := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i - j
	}
	if i < len(s) && s[i] == '-' {
		i++
	}
	if i < len(s) && s[i] == '0' {
		i++
	} else if digits() == 0 {
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}
