package lineedit

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/chatglm/chatglm/internal/atomicfile"
)

// History is the list of earlier entries that Up, Down and Ctrl-R recall,
// optionally kept in a file. It is safe for use by several goroutines.
type History struct {
	mu      sync.Mutex
	entries []string
	max     int
	path    string
	skip    func(string) bool
}

// HistoryOptions configures a History.
type HistoryOptions struct {
	// Path is the file the history is read from and appended to; empty
	// keeps it in memory only.
	Path string
	// Max is the most entries kept, in memory and in the file (1000 when 0).
	Max int
	// Skip, when set, reports entries that are recalled in this session
	// but never written to the file (commands that may carry secrets).
	Skip func(entry string) bool
}

// Limits on what the history file holds.
const (
	// MaxEntryBytes is the longest entry written to the file; longer ones
	// (big pastes) stay in memory only.
	MaxEntryBytes = 16 << 10
	// maxFileBytes is how much of the file's end is read.
	maxFileBytes = 8 << 20
)

// OpenHistory returns a history loaded from o.Path (a missing file is an
// empty history). A file grown past o.Max entries (other sessions append
// to it too) is rewritten with its newest o.Max entries.
func OpenHistory(o HistoryOptions) (*History, error) {
	h := &History{max: o.Max, path: o.Path, skip: o.Skip}
	if h.max <= 0 {
		h.max = 1000
	}
	if h.path == "" {
		return h, nil
	}
	entries, err := readHistory(h.path)
	if err != nil {
		return nil, fmt.Errorf("history %s: %w", h.path, err)
	}
	h.entries = entries
	if len(entries) > h.max {
		h.entries = entries[len(entries)-h.max:]
		if err := h.rewrite(); err != nil {
			return nil, fmt.Errorf("history %s: %w", h.path, err)
		}
	}
	return h, nil
}

// readHistory reads the entries of a history file (the last maxFileBytes
// of it); unreadable lines are skipped.
func readHistory(path string) ([]string, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	partial := false
	if st.Size() > maxFileBytes {
		if _, err := f.Seek(-maxFileBytes, io.SeekEnd); err != nil {
			return nil, err
		}
		partial = true
	}
	b, err := io.ReadAll(io.LimitReader(f, maxFileBytes))
	if err != nil {
		return nil, err
	}
	lines := strings.Split(string(b), "\n")
	if partial {
		lines = lines[1:] // the tail of a line cut by the seek
	}
	var out []string
	for _, l := range lines {
		if len(l) > 2*MaxEntryBytes {
			continue // not written by Add
		}
		if e, ok := decodeEntry(l); ok && e != "" {
			out = append(out, e)
		}
	}
	return out, nil
}

// encodeEntry writes an entry on one line: \ as \\, newline as \n.
func encodeEntry(e string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`, "\r", `\r`).Replace(e)
}

// decodeEntry reverses encodeEntry; ok is false for a malformed line.
func decodeEntry(line string) (string, bool) {
	if !strings.Contains(line, `\`) {
		return line, true
	}
	var b strings.Builder
	for i := 0; i < len(line); i++ {
		if line[i] != '\\' {
			b.WriteByte(line[i])
			continue
		}
		i++
		if i == len(line) {
			return "", false
		}
		switch line[i] {
		case '\\':
			b.WriteByte('\\')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		default:
			return "", false
		}
	}
	return b.String(), true
}

// Add appends an entry (an immediate repeat of the last one is not added
// again) and writes it to the file unless Skip says not to or it is longer
// than MaxEntryBytes.
func (h *History) Add(entry string) error {
	if strings.TrimSpace(entry) == "" {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if n := len(h.entries); n > 0 && h.entries[n-1] == entry {
		return nil
	}
	h.entries = append(h.entries, entry)
	if len(h.entries) > h.max {
		h.entries = h.entries[len(h.entries)-h.max:]
	}
	if h.path == "" || len(entry) > MaxEntryBytes || (h.skip != nil && h.skip(entry)) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(h.path), 0o700); err != nil {
		return fmt.Errorf("history: %w", err)
	}
	f, err := os.OpenFile(h.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	_, err = f.WriteString(encodeEntry(entry) + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("history %s: %w", h.path, err)
	}
	return nil
}

// rewrite replaces the file, atomically, with the entries in memory that
// belong in it. h.mu is held or h is not shared yet.
func (h *History) rewrite() error {
	var buf bytes.Buffer
	for _, e := range h.entries {
		if len(e) <= MaxEntryBytes && (h.skip == nil || !h.skip(e)) {
			buf.WriteString(encodeEntry(e) + "\n")
		}
	}
	return atomicfile.WriteFile(h.path, buf.Bytes(), 0o600)
}

// Entries returns a copy of the entries, oldest first.
func (h *History) Entries() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.entries...)
}
