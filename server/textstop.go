package server

import "strings"

// stopMatcher finds the client's stop sequences in streamed text. Text that
// could be the start of a stop sequence is held back until the next chunk
// shows whether it is one, so a stop sequence is never sent, even in part.
type stopMatcher struct {
	stops   []string
	pending string
	hit     bool
}

// write adds text and returns what can be sent now. Once a stop sequence is
// found, it returns the text before it and reports hit; later writes return
// nothing.
func (m *stopMatcher) write(text string) (out string, hit bool) {
	if m.hit {
		return "", true
	}
	if len(m.stops) == 0 {
		return text, false
	}
	buf := m.pending + text
	first := -1
	for _, s := range m.stops {
		if i := strings.Index(buf, s); i >= 0 && (first < 0 || i < first) {
			first = i
		}
	}
	if first >= 0 {
		m.hit, m.pending = true, ""
		return buf[:first], true
	}
	hold := 0
	for _, s := range m.stops {
		for n := min(len(buf), len(s)-1); n > hold; n-- {
			if strings.HasSuffix(buf, s[:n]) {
				hold = n
				break
			}
		}
	}
	m.pending = buf[len(buf)-hold:]
	return buf[:len(buf)-hold], false
}

// flush returns the held text at the end of the reply.
func (m *stopMatcher) flush() string {
	out := m.pending
	m.pending = ""
	if m.hit {
		return ""
	}
	return out
}
