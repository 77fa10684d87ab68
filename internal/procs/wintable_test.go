package procs

import (
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// Fixture builders. They write the fields the way Windows does: addresses in
// network order, ports big-endian in the low half of a little-endian DWORD,
// everything else little-endian. The upper half of each port DWORD and the
// scope IDs are filled with decoys, which the parser must ignore.

const (
	decoyPortHigh = 0xBEEF
	decoyScopeID  = 0x0C0FFEE0
)

// Windows TCP states used in fixtures besides LISTEN.
const (
	stateEstab    = 5
	stateTimeWait = 11
)

func le32(b []byte, v uint32) []byte { return binary.LittleEndian.AppendUint32(b, v) }

func portDword(b []byte, port uint16) []byte {
	b = binary.BigEndian.AppendUint16(b, port)
	return binary.LittleEndian.AppendUint16(b, decoyPortHigh)
}

func addr4(t testing.TB, s string) []byte {
	t.Helper()
	a := netip.MustParseAddr(s)
	if !a.Is4() {
		t.Fatalf("fixture address %s is not IPv4", s)
	}
	b := a.As4()
	return b[:]
}

func addr16(s string) []byte {
	b := netip.MustParseAddr(s).As16() // As16 keeps IPv4 as ::ffff:a.b.c.d
	return b[:]
}

func tcp4Row(t testing.TB, state uint32, local string, lport uint16, remote string, rport uint16, pid uint32) []byte {
	b := le32(nil, state)
	b = append(b, addr4(t, local)...)
	b = portDword(b, lport)
	b = append(b, addr4(t, remote)...)
	b = portDword(b, rport)
	return le32(b, pid)
}

func tcp6Row(local string, lport uint16, remote string, rport uint16, state, pid uint32) []byte {
	b := append([]byte(nil), addr16(local)...)
	b = le32(b, decoyScopeID)
	b = portDword(b, lport)
	b = append(b, addr16(remote)...)
	b = le32(b, decoyScopeID)
	b = portDword(b, rport)
	b = le32(b, state)
	return le32(b, pid)
}

func udp4Row(t testing.TB, local string, lport uint16, pid uint32) []byte {
	b := append([]byte(nil), addr4(t, local)...)
	b = portDword(b, lport)
	return le32(b, pid)
}

func udp6Row(local string, lport uint16, pid uint32) []byte {
	b := append([]byte(nil), addr16(local)...)
	b = le32(b, decoyScopeID)
	b = portDword(b, lport)
	return le32(b, pid)
}

// table prefixes rows with count, which tests set apart from len(rows) to
// build corrupt buffers.
func table(count uint32, rows ...[]byte) []byte {
	return slices.Concat(append([][]byte{le32(nil, count)}, rows...)...)
}

// pid32 converts a DWORD PID as the parser does, so that fixtures with PIDs
// above 2^31 hold on 32-bit platforms too.
func pid32(v uint32) int { return int(v) }

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex fixture: %v", err)
	}
	return b
}

func TestParseWinTable(t *testing.T) {
	tests := []struct {
		name    string
		kind    winTable
		buf     []byte
		want    []Socket
		wantErr []string // substrings the error must contain; nil means success
	}{
		{
			name: "tcp4 empty",
			kind: winTCP4,
			buf:  table(0),
		},
		{
			name: "udp6 empty",
			kind: winUDP6,
			buf:  table(0),
		},
		{
			name: "tcp4 listener owned by System",
			kind: winTCP4,
			buf:  table(1, tcp4Row(t, winTCPStateListen, "0.0.0.0", 445, "0.0.0.0", 0, 4)),
			want: []Socket{{Transport: TCP, Local: ap("0.0.0.0:445"), Remote: ap("0.0.0.0:0"), Listen: true, PID: 4}},
		},
		{
			name: "tcp4 established and time-wait",
			kind: winTCP4,
			buf: table(2,
				tcp4Row(t, stateEstab, "192.168.1.10", 50000, "93.184.216.34", 443, 1234),
				tcp4Row(t, stateTimeWait, "192.168.1.10", 50001, "93.184.216.34", 443, 0)),
			want: []Socket{
				{Transport: TCP, Local: ap("192.168.1.10:50000"), Remote: ap("93.184.216.34:443"), PID: 1234},
				{Transport: TCP, Local: ap("192.168.1.10:50001"), Remote: ap("93.184.216.34:443"), PID: 0},
			},
		},
		{
			name: "tcp4 port byte order",
			kind: winTCP4,
			buf:  table(1, tcp4Row(t, stateEstab, "10.0.0.1", 0x1234, "10.0.0.2", 0xFF01, 7)),
			want: []Socket{{Transport: TCP, Local: ap("10.0.0.1:4660"), Remote: ap("10.0.0.2:65281"), PID: 7}},
		},
		{
			name: "tcp6 listener and established link-local",
			kind: winTCP6,
			buf: table(2,
				tcp6Row("::", 80, "::", 0, winTCPStateListen, 900),
				tcp6Row("fe80::1", 49152, "fe80::2", 22, stateEstab, 901)),
			want: []Socket{
				{Transport: TCP, Local: ap("[::]:80"), Remote: ap("[::]:0"), Listen: true, PID: 900},
				{Transport: TCP, Local: ap("[fe80::1]:49152"), Remote: ap("[fe80::2]:22"), PID: 901},
			},
		},
		{
			name: "tcp6 ipv4-mapped addresses are unmapped",
			kind: winTCP6,
			buf:  table(1, tcp6Row("::ffff:10.0.0.1", 8080, "::ffff:10.0.0.9", 51000, stateEstab, 42)),
			want: []Socket{{Transport: TCP, Local: ap("10.0.0.1:8080"), Remote: ap("10.0.0.9:51000"), PID: 42}},
		},
		{
			name: "udp4 sockets always listen with no remote",
			kind: winUDP4,
			buf:  table(2, udp4Row(t, "0.0.0.0", 53, 1500), udp4Row(t, "127.0.0.1", 1900, 1501)),
			want: []Socket{
				{Transport: UDP, Local: ap("0.0.0.0:53"), Listen: true, PID: 1500},
				{Transport: UDP, Local: ap("127.0.0.1:1900"), Listen: true, PID: 1501},
			},
		},
		{
			name: "udp6 native and ipv4-mapped",
			kind: winUDP6,
			buf:  table(2, udp6Row("::1", 123, 600), udp6Row("::ffff:127.0.0.1", 5353, 601)),
			want: []Socket{
				{Transport: UDP, Local: ap("[::1]:123"), Listen: true, PID: 600},
				{Transport: UDP, Local: ap("127.0.0.1:5353"), Listen: true, PID: 601},
			},
		},
		{
			name: "pid above int32",
			kind: winUDP4,
			buf:  table(1, udp4Row(t, "0.0.0.0", 1, 0xFFFFFFFC)),
			want: []Socket{{Transport: UDP, Local: ap("0.0.0.0:1"), Listen: true, PID: pid32(0xFFFFFFFC)}},
		},
		{
			name: "bytes past the last row are ignored",
			kind: winUDP4,
			buf:  append(table(1, udp4Row(t, "10.1.2.3", 67, 8)), 0xAA, 0xBB, 0xCC),
			want: []Socket{{Transport: UDP, Local: ap("10.1.2.3:67"), Listen: true, PID: 8}},
		},
		{
			// The seed's TestParseTableRaw fixture, kept byte for byte so the
			// port and address decoding provably matches packetbeat's.
			name: "seed tcp4 fixture",
			kind: winTCP4,
			buf:  mustHex(t, "01000000"+"77777777AAAAAAAA12340000BBBBBBBBFFFF0000CCCCCCCC"),
			want: []Socket{{Transport: TCP, Local: ap("170.170.170.170:4660"), Remote: ap("187.187.187.187:65535"), PID: pid32(0xCCCCCCCC)}},
		},
		{
			name: "seed tcp6 fixture",
			kind: winTCP6,
			buf: mustHex(t, "02000000"+
				"11112222333344445555666677778888F0F0F0F0ABCDEFFF"+
				"FFFFEEEEDDDDCCCCBBBBAAAA999988880A0A0A0A33333333"+
				"7777777701000000"+
				"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABBBBBBBB0000FFFF"+
				"BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBCCCCCCCC44444444"+
				"77777777FFFF0000"),
			want: []Socket{
				{Transport: TCP, Local: ap("[1111:2222:3333:4444:5555:6666:7777:8888]:43981"), Remote: ap("[ffff:eeee:dddd:cccc:bbbb:aaaa:9999:8888]:13107"), PID: 1},
				{Transport: TCP, Local: ap("[aaaa:aaaa:aaaa:aaaa:aaaa:aaaa:aaaa:aaaa]:0"), Remote: ap("[bbbb:bbbb:bbbb:bbbb:bbbb:bbbb:bbbb:bbbb]:17476"), PID: 0xFFFF},
			},
		},
		{
			name:    "nil buffer",
			kind:    winTCP4,
			buf:     nil,
			wantErr: []string{"MIB_TCPTABLE_OWNER_PID", "buffer is 0 bytes", "need at least 4"},
		},
		{
			name:    "no room for the count",
			kind:    winUDP6,
			buf:     []byte{1, 0, 0},
			wantErr: []string{"MIB_UDP6TABLE_OWNER_PID", "buffer is 3 bytes", "need at least 4"},
		},
		{
			name:    "tcp6 partial row",
			kind:    winTCP6,
			buf:     table(1, tcp6Row("::1", 1, "::1", 2, stateEstab, 3)[:40]),
			wantErr: []string{"MIB_TCP6TABLE_OWNER_PID", "buffer is 44 bytes", "row count 1 needs 60", "56-byte rows"},
		},
		{
			name:    "udp4 count one past the rows",
			kind:    winUDP4,
			buf:     table(2, udp4Row(t, "0.0.0.0", 53, 1)),
			wantErr: []string{"MIB_UDPTABLE_OWNER_PID", "buffer is 16 bytes", "row count 2 needs 28"},
		},
		{
			// 0xFFFFFFFF*24 wraps a 32-bit int to a small number; the check
			// must not be fooled on 386 Windows.
			name:    "tcp4 count overflow",
			kind:    winTCP4,
			buf:     table(0xFFFFFFFF, tcp4Row(t, winTCPStateListen, "0.0.0.0", 1, "0.0.0.0", 0, 1)),
			wantErr: []string{"MIB_TCPTABLE_OWNER_PID", "buffer is 28 bytes", "row count 4294967295 needs 103079215084"},
		},
		{
			// A count whose product with the row size wraps to exactly the
			// buffer size modulo 2^32.
			name:    "udp6 count wraps to buffer size",
			kind:    winUDP6,
			buf:     table(0x80000001, udp6Row("::1", 1, 1)),
			wantErr: []string{"MIB_UDP6TABLE_OWNER_PID", "row count 2147483649"},
		},
		{
			name:    "unknown table kind",
			kind:    winTable(9),
			buf:     table(0),
			wantErr: []string{"winTable(9)", "unknown table kind"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseWinTable(tc.kind, tc.buf, nil)
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("parseWinTable(%v) = %v, want an error", tc.kind, got)
				}
				for _, sub := range tc.wantErr {
					if !strings.Contains(err.Error(), sub) {
						t.Errorf("error %q does not mention %q", err, sub)
					}
				}
				if len(got) != 0 {
					t.Errorf("parseWinTable(%v) appended %v despite the error", tc.kind, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseWinTable(%v): %v", tc.kind, err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("parseWinTable(%v)\n got %+v\nwant %+v", tc.kind, got, tc.want)
			}
		})
	}
}

func TestParseWinTableKeepsDst(t *testing.T) {
	prior := Socket{Transport: UDP, Local: ap("1.2.3.4:5"), Inode: 99, PID: 1, StartKey: 7}
	tests := []struct {
		name    string
		buf     []byte
		wantLen int
		wantErr bool
	}{
		{name: "appends after existing rows", buf: table(1, udp4Row(t, "0.0.0.0", 53, 2)), wantLen: 2},
		{name: "error leaves dst alone", buf: table(3, udp4Row(t, "0.0.0.0", 53, 2)), wantLen: 1, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseWinTable(winUDP4, tc.buf, []Socket{prior})
			if (err != nil) != tc.wantErr {
				t.Fatalf("error = %v, want error %v", err, tc.wantErr)
			}
			if len(got) != tc.wantLen || got[0] != prior {
				t.Errorf("got %+v, want %d rows starting with %+v", got, tc.wantLen, prior)
			}
		})
	}
}

func TestParseWinTableAllocs(t *testing.T) {
	tests := []struct {
		kind winTable
		buf  []byte
	}{
		{winTCP4, table(3, tcp4Row(t, 2, "0.0.0.0", 1, "0.0.0.0", 0, 1), tcp4Row(t, 5, "10.0.0.1", 2, "10.0.0.2", 3, 4), tcp4Row(t, 11, "10.0.0.1", 4, "10.0.0.2", 5, 0))},
		{winTCP6, table(2, tcp6Row("::ffff:10.0.0.1", 1, "::", 0, 2, 3), tcp6Row("fe80::1", 4, "fe80::2", 5, 5, 6))},
		{winUDP4, table(2, udp4Row(t, "0.0.0.0", 53, 1), udp4Row(t, "127.0.0.1", 54, 2))},
		{winUDP6, table(2, udp6Row("::1", 53, 1), udp6Row("::ffff:1.2.3.4", 54, 2))},
	}
	for _, tc := range tests {
		t.Run(tc.kind.String(), func(t *testing.T) {
			dst := make([]Socket, 0, 8)
			allocs := testing.AllocsPerRun(100, func() {
				var err error
				if dst, err = parseWinTable(tc.kind, tc.buf, dst[:0]); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Errorf("parseWinTable(%v) allocated %v times per call into a slice with room, want 0", tc.kind, allocs)
			}
		})
	}
}

func TestWinTableString(t *testing.T) {
	tests := []struct {
		kind winTable
		want string
		size int
	}{
		{winTCP4, "MIB_TCPTABLE_OWNER_PID", 24},
		{winTCP6, "MIB_TCP6TABLE_OWNER_PID", 56},
		{winUDP4, "MIB_UDPTABLE_OWNER_PID", 12},
		{winUDP6, "MIB_UDP6TABLE_OWNER_PID", 28},
		{winTable(200), "winTable(200)", 0},
	}
	for _, tc := range tests {
		if got := tc.kind.String(); got != tc.want {
			t.Errorf("winTable(%d).String() = %q, want %q", uint8(tc.kind), got, tc.want)
		}
		if got := tc.kind.rowSize(); got != tc.size {
			t.Errorf("%v.rowSize() = %d, want %d", tc.kind, got, tc.size)
		}
	}
}

// winLayout gives the field offsets of one row kind, written out
// independently of the parser so that the fuzz target cross-checks it.
// Negative offsets mark fields the row lacks.
type winLayout struct {
	transport                   Transport
	local, lport, remote, rport int
	state, pid                  int
	v6                          bool
}

// FuzzParseWinTable feeds arbitrary buffers to every table kind: the parser
// must never panic, must leave dst alone on error, and on success must emit
// exactly one row per counted row whose fields match the raw bytes.
func FuzzParseWinTable(f *testing.F) {
	f.Add(uint8(winTCP4), table(1, tcp4Row(f, winTCPStateListen, "0.0.0.0", 445, "0.0.0.0", 0, 4)))
	f.Add(uint8(winTCP4), table(2, tcp4Row(f, stateEstab, "192.168.1.10", 50000, "93.184.216.34", 443, 1234), tcp4Row(f, stateTimeWait, "10.0.0.1", 1, "10.0.0.2", 2, 0)))
	f.Add(uint8(winTCP6), table(1, tcp6Row("::ffff:10.0.0.1", 8080, "fe80::2", 22, stateEstab, 42)))
	f.Add(uint8(winUDP4), table(1, udp4Row(f, "127.0.0.1", 53, 1)))
	f.Add(uint8(winUDP6), table(2, udp6Row("::1", 123, 600), udp6Row("::ffff:127.0.0.1", 5353, 601)))
	f.Add(uint8(winUDP6), table(0x80000001, udp6Row("::1", 1, 1)))
	f.Add(uint8(winTCP4), table(0xFFFFFFFF))
	f.Add(uint8(winUDP4), []byte{1, 0, 0})
	f.Add(uint8(7), table(0))

	f.Fuzz(func(t *testing.T, kind uint8, buf []byte) {
		k := winTable(kind)
		prior := Socket{Transport: 1, PID: -1}
		got, err := parseWinTable(k, buf, []Socket{prior})
		if len(got) == 0 || got[0] != prior {
			t.Fatalf("dst's existing row was lost or changed: %+v", got)
		}
		rows := got[1:]
		layout, known := map[winTable]winLayout{
			winTCP4: {TCP, 4, 8, 12, 16, 0, 20, false},
			winTCP6: {TCP, 0, 20, 24, 44, 48, 52, true},
			winUDP4: {UDP, 0, 4, -1, -1, -1, 8, false},
			winUDP6: {UDP, 0, 20, -1, -1, -1, 24, true},
		}[k]
		if err != nil {
			if len(rows) != 0 {
				t.Fatalf("error %v but %d rows appended", err, len(rows))
			}
			if !strings.Contains(err.Error(), k.String()) {
				t.Fatalf("error %q does not name the table %v", err, k)
			}
			return
		}
		if !known {
			t.Fatalf("unknown kind %d parsed without error", kind)
		}
		count := binary.LittleEndian.Uint32(buf)
		size := k.rowSize()
		if uint64(len(rows)) != uint64(count) || 4+uint64(count)*uint64(size) > uint64(len(buf)) {
			t.Fatalf("count %d, %d-byte buffer: got %d rows", count, len(buf), len(rows))
		}
		for i, s := range rows {
			r := buf[4+i*size : 4+(i+1)*size]
			checkWinRow(t, i, s, r, layout)
		}
	})
}

// checkWinRow compares row i's Socket s with the raw row bytes r.
func checkWinRow(t *testing.T, i int, s Socket, r []byte, l winLayout) {
	t.Helper()
	addr := func(off int) netip.Addr {
		if l.v6 {
			return netip.AddrFrom16([16]byte(r[off : off+16]))
		}
		return netip.AddrFrom4([4]byte(r[off : off+4]))
	}
	port := func(off int) uint16 { return uint16(r[off])<<8 | uint16(r[off+1]) }
	want := Socket{
		Transport: l.transport,
		Local:     netip.AddrPortFrom(addr(l.local).Unmap(), port(l.lport)),
		Listen:    l.state < 0 || binary.LittleEndian.Uint32(r[l.state:]) == winTCPStateListen,
		PID:       int(binary.LittleEndian.Uint32(r[l.pid:])),
	}
	if l.remote >= 0 {
		want.Remote = netip.AddrPortFrom(addr(l.remote).Unmap(), port(l.rport))
	}
	if s != want {
		t.Fatalf("row %d (% x):\n got %+v\nwant %+v", i, r, s, want)
	}
	if s.Local.Addr().Is4In6() || s.Remote.Addr().Is4In6() {
		t.Fatalf("row %d kept an IPv4-mapped address: %+v", i, s)
	}
}

func BenchmarkParseWinTable(b *testing.B) {
	rows := make([][]byte, 0, 1000)
	for i := range 1000 {
		rows = append(rows, tcp6Row("2001:db8::1", uint16(i), "::ffff:10.0.0.2", 443, stateEstab, uint32(i)))
	}
	buf := table(uint32(len(rows)), rows...)
	dst := make([]Socket, 0, len(rows))
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = parseWinTable(winTCP6, buf, dst[:0]); err != nil {
			b.Fatal(err)
		}
	}
}
