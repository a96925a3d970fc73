package convert

import (
	"math"
	"math/rand"
	"sort"
	"testing"
)

func TestF32ToF16Edges(t *testing.T) {
	p2 := func(e int) float32 { return float32(math.Ldexp(1, e)) }
	cases := []struct {
		in   float32
		want uint16
	}{
		{0, 0x0000},
		{float32(math.Copysign(0, -1)), 0x8000},
		{1, 0x3c00},
		{-2, 0xc000},
		{65504, 0x7bff},    // max half
		{65519.99, 0x7bff}, // just below the rounding point
		{65520, 0x7c00},    // tie between 65504 and 2^16 goes to even (Inf)
		{1e6, 0x7c00},      // overflow
		{-1e30, 0xfc00},    // overflow, negative
		{float32(math.Inf(1)), 0x7c00},
		{float32(math.Inf(-1)), 0xfc00},
		{p2(-14), 0x0400}, // smallest normal
		{p2(-24), 0x0001}, // smallest subnormal
		{p2(-25), 0x0000}, // tie between 0 and 2^-24: even is 0
		{p2(-25) * 1.0000001, 0x0001},
		{3 * p2(-25), 0x0002},       // 1.5 ulp: tie to even 2
		{5 * p2(-25), 0x0002},       // 2.5 ulp: tie to even 2
		{1023 * p2(-24), 0x03ff},    // largest subnormal
		{p2(-14) - p2(-25), 0x0400}, // rounds up out of the subnormals
		{p2(-26), 0x0000},
		{-p2(-26), 0x8000},
		{1e-30, 0x0000},
		{1 + p2(-11), 0x3c00},   // tie, mantissa even: stays
		{1 + 3*p2(-11), 0x3c02}, // tie, mantissa odd: rounds up
		{1 + p2(-11) + p2(-20), 0x3c01},
		{1 - p2(-12), 0x3c00}, // tie above 0x3bff (odd mantissa) rounds up across the exponent
	}
	for _, c := range cases {
		if got := F32ToF16(c.in); got != c.want {
			t.Errorf("F32ToF16(%g) = %#04x, want %#04x", c.in, got, c.want)
		}
	}
	for _, bits := range []uint32{0x7fc00000, 0x7f800001, 0xffc00000, 0x7fa00000} {
		h := F32ToF16(math.Float32frombits(bits))
		if h&0x7c00 != 0x7c00 || h&0x3ff == 0 {
			t.Errorf("NaN %#08x became %#04x", bits, h)
		}
		if (h>>15 == 1) != (bits>>31 == 1) {
			t.Errorf("NaN %#08x lost its sign: %#04x", bits, h)
		}
	}
}

// nearestF16 finds the correctly rounded half for a finite float32 by
// searching the table of all finite halves (independent of the bit tricks).
type halfTable struct {
	vals []float64
	bits []uint16
}

func newHalfTable() *halfTable {
	var ht halfTable
	for h := 0; h < 0x7c00; h++ { // non-negative finite halves, increasing
		ht.vals = append(ht.vals, float64(F16ToF32(uint16(h))))
		ht.bits = append(ht.bits, uint16(h))
	}
	return &ht
}

func (ht *halfTable) nearest(f float32) uint16 {
	x := math.Abs(float64(f))
	sign := uint16(0)
	if math.Signbit(float64(f)) {
		sign = 0x8000
	}
	max := ht.vals[len(ht.vals)-1]
	// Values at or beyond max + half an ulp (2^16 - 16 = 65520) overflow.
	if x >= 65520 {
		return sign | 0x7c00
	}
	i := sort.SearchFloat64s(ht.vals, x)
	if i < len(ht.vals) && ht.vals[i] == x {
		return sign | ht.bits[i]
	}
	if i == len(ht.vals) {
		_ = max
		return sign | ht.bits[i-1]
	}
	lo, hi := i-1, i
	dl, dh := x-ht.vals[lo], ht.vals[hi]-x
	switch {
	case dl < dh:
		return sign | ht.bits[lo]
	case dh < dl:
		return sign | ht.bits[hi]
	case ht.bits[lo]&1 == 0:
		return sign | ht.bits[lo]
	default:
		return sign | ht.bits[hi]
	}
}

func TestF32ToF16AgainstTable(t *testing.T) {
	ht := newHalfTable()
	rng := rand.New(rand.NewSource(1))
	check := func(f float32) {
		if got, want := F32ToF16(f), ht.nearest(f); got != want {
			t.Fatalf("F32ToF16(%g [%#08x]) = %#04x, want %#04x", f, math.Float32bits(f), got, want)
		}
	}
	// Every half and the midpoints and neighbours around it.
	for h := 0; h < 0x7c00; h++ {
		v := F16ToF32(uint16(h))
		for _, f := range []float32{v, math.Nextafter32(v, 0), math.Nextafter32(v, 1e9), -v} {
			check(f)
		}
		if h+1 < 0x7c00 {
			mid := (float64(v) + float64(F16ToF32(uint16(h+1)))) / 2
			check(float32(mid))
			check(math.Nextafter32(float32(mid), 0))
			check(math.Nextafter32(float32(mid), 1e9))
		}
	}
	// Random bit patterns across the float32 range that halves can reach.
	for i := 0; i < 200000; i++ {
		f := math.Float32frombits(rng.Uint32())
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			continue
		}
		check(f)
	}
}

func TestF16RoundTrip(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := F16ToF32(uint16(h))
		if math.IsNaN(float64(f)) {
			if F32ToF16(f)&0x7fff <= 0x7c00 {
				t.Fatalf("NaN %#04x not kept", h)
			}
			continue
		}
		if got := F32ToF16(f); got != uint16(h) {
			t.Fatalf("%#04x -> %g -> %#04x", h, f, got)
		}
	}
}

func TestBF16(t *testing.T) {
	cases := []struct {
		in, want uint16
	}{
		{0x3f80, 0x3c00}, // 1
		{0x477f, 0x7bf8}, // 65280
		{0x4780, 0x7c00}, // 65536 overflows
		{0x7f80, 0x7c00}, // +Inf
		{0xff80, 0xfc00}, // -Inf
		{0x3380, 0x0001}, // 2^-24
		{0x3300, 0x0000}, // 2^-25: tie to zero
		{0x33c0, 0x0002}, // 1.5 * 2^-24 -> tie to even 2
		{0x3340, 0x0001}, // 0.75 * 2^-24 -> 1
		{0x8000, 0x8000}, // -0
		{0x0001, 0x0000}, // bf16 subnormal underflows
		{0x3f81, 0x3c08}, // 1 + 2^-7 is exact in half
	}
	for _, c := range cases {
		if got := BF16ToF16(c.in); got != c.want {
			t.Errorf("BF16ToF16(%#04x) = %#04x, want %#04x", c.in, got, c.want)
		}
	}
	if h := BF16ToF16(0x7fc1); h&0x7c00 != 0x7c00 || h&0x3ff == 0 {
		t.Errorf("bf16 NaN became %#04x", h)
	}
	// float32 -> bf16: ties to even, NaN quiet, overflow to Inf.
	f32 := []struct {
		in   uint32
		want uint16
	}{
		{0x3f808000, 0x3f80}, // tie, even stays
		{0x3f818000, 0x3f82}, // tie, odd rounds up
		{0x3f808001, 0x3f81},
		{0x7f7fffff, 0x7f80}, // max float rounds to Inf
		{0x7f800000, 0x7f80},
		{0x00000001, 0x0000},
	}
	for _, c := range f32 {
		if got := F32ToBF16(math.Float32frombits(c.in)); got != c.want {
			t.Errorf("F32ToBF16(%#08x) = %#04x, want %#04x", c.in, got, c.want)
		}
	}
	if got := F32ToBF16(math.Float32frombits(0x7f800001)); got&0x7f80 != 0x7f80 || got&0x7f == 0 {
		t.Errorf("signalling NaN became %#04x", got)
	}
	for h := 0; h < 1<<16; h++ {
		f := BF16ToF32(uint16(h))
		if !math.IsNaN(float64(f)) && F32ToBF16(f) != uint16(h) {
			t.Fatalf("bf16 %#04x did not round-trip", h)
		}
	}
}

func TestConvFuncs(t *testing.T) {
	vals := []float32{0, 1, -2.5, 65504, 1e-6, 3.14159}
	src := make([]byte, 4*len(vals))
	for i, v := range vals {
		le32(src[4*i:], math.Float32bits(v))
	}
	f16 := make([]byte, 2*len(vals))
	convF32ToF16(f16, src, len(vals))
	back := make([]byte, 4*len(vals))
	convF16ToF32(back, f16, len(vals))
	for i, v := range vals {
		got := math.Float32frombits(rd32(back[4*i:]))
		if math.Abs(float64(got-v)) > 1e-3*math.Abs(float64(v))+1e-7 {
			t.Errorf("f32->f16->f32 %g -> %g", v, got)
		}
	}
	bf := make([]byte, 2*len(vals))
	convF32ToBF16(bf, src, len(vals))
	convBF16ToF32(back, bf, len(vals))
	if got := math.Float32frombits(rd32(back[8:])); got != -2.5 {
		t.Errorf("bf16 -2.5 -> %g", got)
	}
	convBF16ToF16(f16, bf, len(vals))
	if F16ToF32(uint16(f16[2])|uint16(f16[3])<<8) != 1 {
		t.Error("bf16->f16 of 1")
	}
	convF16ToBF16(bf, f16, len(vals))
	if BF16ToF32(uint16(bf[4])|uint16(bf[5])<<8) != -2.5 {
		t.Error("f16->bf16 of -2.5")
	}
}

func le32(b []byte, v uint32) { b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24) }
func rd32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
