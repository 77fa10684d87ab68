package procs

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// Fuzz tests for the /proc text parsers. Each checks that the parser never
// panics on arbitrary bytes and, where it is cheap, a property of its
// output: row counts, and that values it returns survive being written back
// in the kernel's format and parsed again.

const (
	seedTCP4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n" +
		"   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n" +
		"   1: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 23456 1 0000000000000000 20 4 30 10 -1\n" +
		"   2: 0100007F:9C41 0100007F:1F90 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000\n"
	seedTCP6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n" +
		"   0: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 34567 1 0000000000000000 100 0 0 10 0\n" +
		"   1: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 45678 1 0000000000000000 20 4 30 10 -1\n"
	seedUDP4 = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n" +
		"  123: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5678 2 0000000000000000 0\n"
	seedStat = "1234 (nginx: worker) S 1 1234 1234 0 -1 4194560 1520 0 12 0 7 3 0 0 20 0 1 0 98765 11063296 1174 18446744073709551615 1 1 0 0 0 0 0 4096 17411 0 0 0 17 0 0 0 0 0 0\n"
	seedFib  = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     |-- 10.0.0.5\n        /32 host LOCAL\n" +
		"     |-- 127.0.0.1\n        /32 host LOCAL\n     |-- 127.255.255.255\n        /32 link BROADCAST\n"
	seedIfInet6 = "00000000000000000000000000000001 01 80 10 80       lo\nfe800000000000000000000000000001 02 40 20 80     eth0\n"
)

// hexEndpoint writes ap as /proc/net does: an IPv4 address as one
// little-endian u32, an IPv6 one as four, the port in big-endian hex.
func hexEndpoint(ap netip.AddrPort, v6 bool) string {
	var b strings.Builder
	if v6 {
		a := ap.Addr().As16()
		for w := 0; w < 16; w += 4 {
			fmt.Fprintf(&b, "%02X%02X%02X%02X", a[w+3], a[w+2], a[w+1], a[w])
		}
	} else {
		a := ap.Addr().As4()
		fmt.Fprintf(&b, "%02X%02X%02X%02X", a[3], a[2], a[1], a[0])
	}
	fmt.Fprintf(&b, ":%04X", ap.Port())
	return b.String()
}

func FuzzParseProcNet(f *testing.F) {
	for _, s := range []string{seedTCP4, seedTCP6, seedUDP4, "", "\n", "sl\n", "0: : : : : : : : : :\n",
		"   0: 0100007F:1F90 00000000:0000 0A 0 0 0 0 0 0 12345",
		"   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99999999999999999999 1\n",
		"   0: 0100007F:11111 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n",
		"\t0:\t0100007F:0050\t00000000:0000\tFF\ta\tb\tc\td\te\t7\r\n"} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, udp bool) {
		tr := TCP
		if udp {
			tr = UDP
		}
		prefix := []Socket{{Transport: UDP, Inode: 424242}}
		out, bad := ParseProcNet(data, tr, prefix)
		if len(out) < 1 || out[0] != prefix[0] {
			t.Fatalf("ParseProcNet did not keep dst's existing rows: %v", out)
		}
		rows := out[1:]
		lines := bytes.Count(data, []byte("\n")) + 1
		if len(rows)+bad > lines {
			t.Fatalf("%d rows + %d bad from %d lines", len(rows), bad, lines)
		}
		if bad < 0 {
			t.Fatalf("bad = %d", bad)
		}
		for i, s := range rows {
			if s.Transport != tr {
				t.Fatalf("row %d: transport %v, want %v", i, s.Transport, tr)
			}
			if !s.Local.IsValid() || !s.Remote.IsValid() {
				t.Fatalf("row %d: invalid endpoint %v %v", i, s.Local, s.Remote)
			}
			if s.Local.Addr().Is4In6() || s.Remote.Addr().Is4In6() || s.Local.Addr().Zone() != "" {
				t.Fatalf("row %d: address not unmapped: %v %v", i, s.Local, s.Remote)
			}
			if s.PID != 0 || s.StartKey != 0 {
				t.Fatalf("row %d: parser invented an owner: %+v", i, s)
			}
			// Round trip: write the row back in both table formats and
			// parse it again; the socket must come back unchanged.
			state := "01"
			if s.Listen {
				state = "0A"
				if tr == UDP {
					state = "07"
				}
			}
			for _, v6 := range []bool{false, true} {
				if !v6 && (!s.Local.Addr().Is4() || !s.Remote.Addr().Is4()) {
					continue
				}
				line := fmt.Sprintf("%4d: %s %s %s 00000000:00000000 00:00000000 00000000     0        0 %d 1 0000000000000000",
					i, hexEndpoint(s.Local, v6), hexEndpoint(s.Remote, v6), state, s.Inode)
				again, bad2 := ParseProcNet([]byte(line), tr, nil)
				if bad2 != 0 || len(again) != 1 {
					t.Fatalf("row %d %+v: re-encoded %q parsed to %v (bad %d)", i, s, line, again, bad2)
				}
				if again[0] != s {
					t.Fatalf("row %d: round trip through %q changed %+v into %+v", i, line, s, again[0])
				}
			}
		}
	})
}

func FuzzParseStatStart(f *testing.F) {
	f.Add([]byte(seedStat), "nginx: worker", uint32(1), uint64(98765))
	f.Add([]byte("1 (systemd) S 0"), "a) b (c", uint32(0), uint64(0))
	f.Add([]byte("1 ((sd-pam)) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 x"), ") 1 2 3", uint32(4294967295), uint64(9999999999999999999))
	f.Add([]byte(")("), "", uint32(2), uint64(1))
	f.Add([]byte("1 (a\nb) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5"), "a\nb", uint32(1), uint64(5))
	f.Fuzz(func(t *testing.T, data []byte, comm string, ppid uint32, start uint64) {
		if _, err := ParseStatStart(data); err != nil && len(err.Error()) > 512 {
			t.Fatalf("error message of %d bytes: not truncated", len(err.Error()))
		}

		// Round trip: a stat line in do_task_stat's format parses back to
		// the start it was written with, whatever its comm (at most
		// TASK_COMM_LEN-1 bytes, no NUL, possibly with ") 1 2" in it). parseDecUint takes at most 19 digits, so
		// starttime values of 20 digits are out of scope.
		if len(comm) > 15 || strings.IndexByte(comm, 0) >= 0 || start > 9999999999999999999 {
			return
		}
		line := fmt.Sprintf("4242 (%s) S %d 4242 4242 0 -1 4194560 1520 0 12 0 7 3 0 0 20 0 1 0 %d 11063296 1174 18446744073709551615 1 1 0 0 0 0 0 4096 17411 0 0 0 17 0 0 0 0 0 0\n",
			comm, ppid, start)
		gs, err := ParseStatStart([]byte(line))
		if err != nil {
			t.Fatalf("ParseStatStart(%q): %v", line, err)
		}
		if gs != start {
			t.Fatalf("ParseStatStart(%q) = %d, want %d", line, gs, start)
		}
		// The parent's description reads comm and ppid from the same line.
		_, _ = parseStatPPID(data)
		_ = statComm(data)
		if got := statComm([]byte(line)); got != comm {
			t.Fatalf("statComm(%q) = %q, want %q", line, got, comm)
		}
		if ppid <= 1<<31 {
			if got, err := parseStatPPID([]byte(line)); err != nil || got != int(ppid) {
				t.Fatalf("parseStatPPID(%q) = %d, %v; want %d", line, got, err, ppid)
			}
		}
	})
}

func FuzzParseFibTrie(f *testing.F) {
	f.Add([]byte(seedFib), []byte{10, 0, 0, 5})
	f.Add([]byte("|-- 1.2.3.4\n/32 host LOCAL\n/32 host LOCAL\n|-- ::1\n/32 host LOCAL\n"), []byte{255, 255, 255, 255})
	f.Add([]byte("|-- \n/32 host LOCAL\n|-- 1.2.3.4%eth0\n/32 host LOCAL\n"), []byte{})
	// A line longer than bufio.Scanner's 64 KiB limit is a test case of
	// its own (TestParseFibTrieLongLine): as a seed it would make every
	// minimisation crawl.
	f.Fuzz(func(t *testing.T, data []byte, addr []byte) {
		got, _ := ParseFibTrie(bytes.NewReader(data))
		seen := map[netip.Addr]bool{}
		for _, a := range got {
			if !a.IsValid() || seen[a] {
				t.Fatalf("invalid or duplicate address %v in %v", a, got)
			}
			seen[a] = true
			if !fibTrieNames(data, a) {
				t.Fatalf("address %v is not named by any |-- line of the input", a)
			}
		}
		// Round trip: the fib_trie the kernel prints for one address
		// yields that address, once.
		a, ok := netip.AddrFromSlice(addr)
		if !ok || !a.Is4() {
			return
		}
		text := fmt.Sprintf("Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- %s\n        /32 host LOCAL\n     |-- %s\n        /32 link BROADCAST\nLocal:\n     |-- %s\n        /32 host LOCAL\n", a, a, a)
		got, err := ParseFibTrie(strings.NewReader(text))
		if err != nil || len(got) != 1 || got[0] != a {
			t.Fatalf("ParseFibTrie(%q) = %v, %v; want [%v]", text, got, err, a)
		}
	})
}

// TestParseFibTrieLongLine: a line over bufio.Scanner's limit is reported
// as an error, not a panic, and what came before it is kept.
func TestParseFibTrieLongLine(t *testing.T) {
	got, err := ParseFibTrie(strings.NewReader("|-- 1.2.3.4\n/32 host LOCAL\n" + strings.Repeat("x", 70000) + "\n|-- 5.6.7.8\n/32 host LOCAL\n"))
	if err == nil {
		t.Errorf("no error for a 70000-byte line")
	}
	if len(got) != 1 || got[0] != netip.MustParseAddr("1.2.3.4") {
		t.Errorf("got %v, want [1.2.3.4] from before the long line", got)
	}
	got6, err := ParseIfInet6(strings.NewReader("00000000000000000000000000000001 01 80 10 80 lo\n" + strings.Repeat("y", 70000) + "\n"))
	if err == nil || len(got6) != 1 {
		t.Errorf("ParseIfInet6 with a long line = %v, %v; want [::1] and an error", got6, err)
	}
}

// fibTrieNames reports whether some "|-- " line of data names a.
func fibTrieNames(data []byte, a netip.Addr) bool {
	for _, line := range bytes.Split(data, []byte("\n")) {
		rest, ok := bytes.CutPrefix(bytes.TrimSpace(line), []byte("|-- "))
		if !ok {
			continue
		}
		if b, err := netip.ParseAddr(string(rest)); err == nil && b == a {
			return true
		}
	}
	return false
}

func FuzzParseIfInet6(f *testing.F) {
	f.Add([]byte(seedIfInet6))
	f.Add([]byte("0000000000000000ffff00000a000005 02 40 00 80 eth0\n"))
	f.Add([]byte("zz000000000000000000000000000001 01 80 10 80 lo\n\n   \n"))
	f.Add([]byte("00000000000000000000000000000001"))
	f.Add([]byte("+0000000000000000000000000000001 01 80 10 80 lo\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, _ := ParseIfInet6(bytes.NewReader(data))
		if n := bytes.Count(data, []byte("\n")) + 1; len(got) > n {
			t.Fatalf("%d addresses from %d lines", len(got), n)
		}
		if len(got) == 0 {
			return
		}
		// Round trip: re-encode in if_inet6's format and parse again.
		var b bytes.Buffer
		for _, a := range got {
			if !a.IsValid() || a.Is4In6() || a.Zone() != "" {
				t.Fatalf("bad address %v", a)
			}
			fmt.Fprintf(&b, "%x 02 40 00 80 eth0\n", a.As16())
		}
		again, err := ParseIfInet6(&b)
		if err != nil || len(again) != len(got) {
			t.Fatalf("re-parse: %v, %v; want %v", again, err, got)
		}
		for i := range got {
			if again[i] != got[i] {
				t.Fatalf("round trip changed %v into %v", got[i], again[i])
			}
		}
	})
}
