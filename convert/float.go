package convert

import (
	"encoding/binary"
	"math"
)

// F32ToF16 converts an IEEE-754 single to half precision with
// round-to-nearest-even. Values too large for half become ±Inf, values too
// small round through the half subnormals to ±0, and NaNs stay NaN (quiet,
// with the sign and the top payload bits kept).
func F32ToF16(f float32) uint16 { return f32BitsToF16(math.Float32bits(f)) }

func f32BitsToF16(b uint32) uint16 {
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	man := b & 0x7fffff
	if exp == 0xff {
		if man == 0 {
			return sign | 0x7c00
		}
		return sign | 0x7e00 | uint16(man>>13)
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		if e < -10 {
			return sign
		}
		full := man | 0x800000
		shift := uint(14 - e)
		m := full >> shift
		rem := full & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || (rem == half && m&1 == 1) {
			m++
		}
		return sign | uint16(m)
	}
	h := sign | uint16(e)<<10 | uint16(man>>13)
	rem := man & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && h&1 == 1) {
		h++ // a carry out of the mantissa correctly bumps the exponent (up to Inf)
	}
	return h
}

// F16ToF32 converts a half-precision value to single precision (exact).
func F16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+127-15)<<23 | man<<13)
	case man == 0:
		return math.Float32frombits(sign)
	}
	// Subnormal: normalise the mantissa.
	e := uint32(127 - 15 + 1)
	for man&0x400 == 0 {
		man <<= 1
		e--
	}
	return math.Float32frombits(sign | e<<23 | (man&0x3ff)<<13)
}

// BF16ToF32 converts a bfloat16 value to single precision (exact).
func BF16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// F32ToBF16 converts a single to bfloat16 with round-to-nearest-even; NaNs
// stay quiet NaNs.
func F32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

// BF16ToF16 converts bfloat16 to half precision with round-to-nearest-even
// (bfloat16 → float32 is exact, so this rounds once).
func BF16ToF16(h uint16) uint16 { return f32BitsToF16(uint32(h) << 16) }

// convertFunc converts n elements from src to dst (little-endian bytes).
type convertFunc func(dst, src []byte, n int)

func copyConv(size int) convertFunc {
	return func(dst, src []byte, n int) { copy(dst[:n*size], src[:n*size]) }
}

func convBF16ToF16(dst, src []byte, n int) {
	le := binary.LittleEndian
	for i := 0; i < n; i++ {
		le.PutUint16(dst[2*i:], BF16ToF16(le.Uint16(src[2*i:])))
	}
}

func convF32ToF16(dst, src []byte, n int) {
	le := binary.LittleEndian
	for i := 0; i < n; i++ {
		le.PutUint16(dst[2*i:], f32BitsToF16(le.Uint32(src[4*i:])))
	}
}

func convF16ToF32(dst, src []byte, n int) {
	le := binary.LittleEndian
	for i := 0; i < n; i++ {
		le.PutUint32(dst[4*i:], math.Float32bits(F16ToF32(le.Uint16(src[2*i:]))))
	}
}

func convBF16ToF32(dst, src []byte, n int) {
	le := binary.LittleEndian
	for i := 0; i < n; i++ {
		le.PutUint32(dst[4*i:], uint32(le.Uint16(src[2*i:]))<<16)
	}
}

func convF32ToBF16(dst, src []byte, n int) {
	le := binary.LittleEndian
	for i := 0; i < n; i++ {
		le.PutUint16(dst[2*i:], F32ToBF16(math.Float32frombits(le.Uint32(src[4*i:]))))
	}
}

func convF16ToBF16(dst, src []byte, n int) {
	le := binary.LittleEndian
	for i := 0; i < n; i++ {
		le.PutUint16(dst[2*i:], F32ToBF16(F16ToF32(le.Uint16(src[2*i:]))))
	}
}
