package procs

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"time"
)

// EntityID returns the process.entity_id Elastic's beats give the process
// instance (pid, start) on the host whose unique ID is hostID, so that
// events this processor enriches join with Auditbeat's and
// add_process_metadata's events about the same process. "" when hostID is
// empty or start is zero, where the beats write no entity_id either.
//
// The formula is beats' as pinned in go.mod (v7.0.0-alpha2.0.20251031181001-be9871f5dab9):
// x-pack/auditbeat/module/system/process/process.go:115 (entityID, with
// system.NewEntityHash from x-pack/auditbeat/module/system/entity_hash.go:19
// and Sum at :25) and libbeat/processors/add_process_metadata/gosysinfo_provider.go:108:
// SHA-256 of the host ID's bytes, the PID as a little-endian int64 and
// start.Nanosecond() (the nanoseconds within the second, not since the
// epoch) as a little-endian int64; the first 12 bytes of the sum in
// unpadded standard base64 (16 characters). The host ID is go-sysinfo's
// Host().Info().UniqueID (x-pack/auditbeat/module/system/system.go:58),
// on Linux the machine-id file (see HostID); start is go-sysinfo's
// ProcessInfo.StartTime, whose sub-second part the Linux engine takes
// from go-sysinfo itself, so that its rounding matches too.
func EntityID(hostID string, pid int, start time.Time) string {
	if hostID == "" || start.IsZero() {
		return ""
	}
	h := sha256.New()
	h.Write([]byte(hostID))
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], uint64(int64(pid)))
	binary.LittleEndian.PutUint64(b[8:], uint64(int64(start.Nanosecond())))
	h.Write(b[:])
	var sum [sha256.Size]byte
	return base64.RawStdEncoding.EncodeToString(h.Sum(sum[:0])[:12])
}
