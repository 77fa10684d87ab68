package beatrun

import (
	"encoding/json"
	"strings"
)

// Event is one output event, decoded from the console output's JSON lines.
type Event map[string]any

// Get returns the value at a dotted path, or nil.
func (e Event) Get(path string) any {
	var cur any = map[string]any(e)
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

// Num returns the number at path, or -1.
func (e Event) Num(path string) int {
	switch v := e.Get(path).(type) {
	case float64:
		return int(v)
	case json.Number:
		n, err := v.Int64()
		if err == nil {
			return int(n)
		}
	}
	return -1
}

// Str returns the string at path, or "".
func (e Event) Str(path string) string {
	s, _ := e.Get(path).(string)
	return s
}

func (e Event) String() string {
	b, _ := json.Marshal(e)
	return string(b)
}
