//go:build !linux && !windows

package procs

// NewEngine reports that this operating system has no engine; the processor
// then passes events through and logs that once.
func NewEngine(root string) (Engine, error) {
	return nil, ErrUnsupported
}
