package procs

// TEMPORARY instrumentation (issue 20 item 3).

import (
	"fmt"
	"os"
	"time"
)

var procsDebugOut = func() *os.File {
	if p := os.Getenv("NETPROCBEAT_DEBUG_LOOKUP"); p != "" {
		f, _ := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		return f
	}
	return nil
}()

func debugStep(q *query, step string) {
	if procsDebugOut == nil || q.t != TCP {
		return
	}
	fmt.Fprintf(procsDebugOut, "PROCSDBG %s %s->%s at-now=%dms took=%v why=%d notHeld=%v noRecord=%v\n", step, q.local, q.remote, q.at.Sub(q.now).Milliseconds(), time.Since(q.now).Round(time.Microsecond), q.why, q.notHeld, q.noRecord)
}
