package vtscreen

import "testing"

func TestScreen(t *testing.T) {
	s := New(5, 3)
	s.Write([]byte("ab中文x\r\n\x1b[2Cé\x1b[1A\x1b[3D"))
	if got := s.String(); got != "ab中\n文x\n  é" {
		t.Fatalf("screen:\n%s", got)
	}
	// The wide 文 did not fit after "ab中" (4 cells of 5) and wrapped.
	if x, y := s.Cursor(); x != 0 || y != 1 {
		t.Fatalf("cursor %d,%d", x, y)
	}
}

func FuzzScreen(f *testing.F) {
	f.Add([]byte("a中\x1b[5A\x1b[J\x1b[2J\x1b[3;4H\u0301\r\n\b"), uint8(3))
	f.Fuzz(func(t *testing.T, b []byte, cols uint8) {
		s := New(int(cols%50)+1, 4)
		s.Write(b)
		_ = s.String()
	})
}
