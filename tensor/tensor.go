// Package tensor describes host-side weight tensors as they come out of a model file: a name, a
// dtype, a shape and the raw little-endian bytes (usually a slice of a memory-mapped file). It also
// holds the scalar conversions (fp16, bf16) and the block dequantisers (Q8_0, Q4_0, and the other
// ggml types GGUF files hold: Q4_1, Q5_0, Q5_1 and the k-quants Q2_K … Q6_K) that every
// backend needs. It imports nothing from the project: loader, model, cpu and gpu all depend on it.
//
// Shapes are row-major, outermost first, as in PyTorch: a matrix W that maps dim → n has shape
// (n, dim) and y = W·x. (GGUF lists dimensions innermost first; the loader reverses them.)
package tensor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
)

// DType is the storage type of a tensor's elements.
type DType int

// The storage types llamacu reads. The numbering is internal, not GGUF's.
const (
	F32  DType = iota // IEEE-754 binary32
	F16               // IEEE-754 binary16
	BF16              // bfloat16: the top half of a binary32
	Q8_0              // blocks of 32: fp16 scale d, 32 int8 q; x = d·q
	Q4_0              // blocks of 32: fp16 scale d, 16 bytes of nibbles; x = d·(q−8)
	// Read-only ggml types (ggmlquants.go): decoded, never written by llamacu.
	Q4_1 // blocks of 32: fp16 d and m, nibbles; x = d·q + m
	Q5_0 // blocks of 32: fp16 d, 5-bit q; x = d·(q−16)
	Q5_1 // blocks of 32: fp16 d and m, 5-bit q; x = d·q + m
	Q2_K // super-blocks of 256: 2-bit q, 4-bit scales and mins (2.625 bits per weight)
	Q3_K // super-blocks of 256: 3-bit q, 6-bit scales (3.4375)
	Q4_K // super-blocks of 256: 4-bit q, 6-bit scales and mins (4.5)
	Q5_K // super-blocks of 256: 5-bit q, 6-bit scales and mins (5.5)
	Q6_K // super-blocks of 256: 6-bit q, int8 scales (6.5625)
)

// QK is the number of elements in one Q8_0 or Q4_0 block.
const QK = 32

var dtypeNames = [...]string{F32: "F32", F16: "F16", BF16: "BF16", Q8_0: "Q8_0", Q4_0: "Q4_0",
	Q4_1: "Q4_1", Q5_0: "Q5_0", Q5_1: "Q5_1", Q2_K: "Q2_K", Q3_K: "Q3_K", Q4_K: "Q4_K", Q5_K: "Q5_K", Q6_K: "Q6_K"}

// String returns the conventional upper-case name ("F16", "Q4_0").
func (d DType) String() string {
	if d >= 0 && int(d) < len(dtypeNames) {
		return dtypeNames[d]
	}
	return fmt.Sprintf("DType(%d)", int(d))
}

// ParseDType accepts the names String returns, case-insensitively ("fp16" and "fp32" too).
func ParseDType(s string) (DType, error) {
	u := strings.ToUpper(s)
	for d, name := range dtypeNames {
		if d > int(Q4_0) && u == name {
			return DType(d), nil
		}
	}
	switch u {
	case "F32", "FP32", "FLOAT32":
		return F32, nil
	case "F16", "FP16", "FLOAT16":
		return F16, nil
	case "BF16", "BFLOAT16":
		return BF16, nil
	case "Q8_0":
		return Q8_0, nil
	case "Q4_0":
		return Q4_0, nil
	}
	return 0, fmt.Errorf("%w: %q", ErrUnknownDType, s)
}

// ErrUnknownDType is returned for a dtype name or code llamacu does not support.
var ErrUnknownDType = errors.New("unknown dtype")

// BlockSize returns how many elements one storage block holds (1 for scalar types, QK for
// Q8_0 … Q5_1, QKK for the k-quants).
func (d DType) BlockSize() int {
	switch d {
	case Q8_0, Q4_0, Q4_1, Q5_0, Q5_1:
		return QK
	case Q2_K, Q3_K, Q4_K, Q5_K, Q6_K:
		return QKK
	}
	return 1
}

// Quantized reports whether d stores blocks of several elements with their scales.
func (d DType) Quantized() bool { return d.BlockSize() > 1 }

// ReadOnly reports whether llamacu can decode d but not encode it: Q4_1, Q2_K and Q3_K (files
// of them come from llama.cpp's quantiser).
func (d DType) ReadOnly() bool { return d == Q4_1 || d == Q2_K || d == Q3_K }

// BlockBytes returns the bytes of one storage block.
func (d DType) BlockBytes() int {
	switch d {
	case F32:
		return 4
	case F16, BF16:
		return 2
	case Q8_0:
		return 2 + QK // fp16 scale + 32 int8
	case Q4_0:
		return 2 + QK/2 // fp16 scale + 16 bytes of nibbles
	}
	return blockBytesGGML[d]
}

// Bytes returns the storage size of n elements, or an error when n is not a whole number of
// blocks or the dtype is unknown.
func (d DType) Bytes(n int64) (int64, error) {
	bs, bb := int64(d.BlockSize()), int64(d.BlockBytes())
	if bb == 0 {
		return 0, fmt.Errorf("%w: %v", ErrUnknownDType, d)
	}
	if n < 0 || n%bs != 0 {
		return 0, fmt.Errorf("tensor: %d elements is not a whole number of %v blocks of %d", n, d, bs)
	}
	return n / bs * bb, nil
}

// BitsPerWeight is the average storage cost of one element, scales included (Q4_0: 4.5).
func (d DType) BitsPerWeight() float64 {
	return float64(d.BlockBytes()*8) / float64(d.BlockSize())
}

// Tensor is a named host tensor. Data is little-endian and exactly Bytes(NumElements()) long.
type Tensor struct {
	Name  string
	DType DType
	Shape []int // row-major, outermost first: (rows, cols) for a matrix
	Data  []byte
}

// NumElements is the product of the shape (1 for a scalar).
func (t *Tensor) NumElements() int64 {
	n := int64(1)
	for _, s := range t.Shape {
		n *= int64(s)
	}
	return n
}

// Rows and Cols view the tensor as a matrix: Cols is the innermost dimension, Rows the rest.
func (t *Tensor) Rows() int {
	if len(t.Shape) == 0 {
		return 1
	}
	return int(t.NumElements() / int64(t.Shape[len(t.Shape)-1]))
}

// Cols is the innermost dimension (1 for a scalar).
func (t *Tensor) Cols() int {
	if len(t.Shape) == 0 {
		return 1
	}
	return t.Shape[len(t.Shape)-1]
}

// Validate checks that the shape is positive and the data holds exactly the elements it claims,
// and that a quantized tensor's rows are whole blocks (every kernel dequantizes row by row).
func (t *Tensor) Validate() error {
	for _, s := range t.Shape {
		if s <= 0 {
			return fmt.Errorf("tensor %q: bad shape %v", t.Name, t.Shape)
		}
	}
	if bs := t.DType.BlockSize(); bs > 1 && t.Cols()%bs != 0 {
		return fmt.Errorf("tensor %q: %v rows of %d elements are not whole blocks of %d", t.Name, t.DType, t.Cols(), bs)
	}
	want, err := t.DType.Bytes(t.NumElements())
	if err != nil {
		return fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	if int64(len(t.Data)) != want {
		return fmt.Errorf("tensor %q: %v %v needs %d bytes, have %d", t.Name, t.DType, t.Shape, want, len(t.Data))
	}
	return nil
}

// RowBytes is the storage size of one row (Cols elements).
func (t *Tensor) RowBytes() int {
	n, _ := t.DType.Bytes(int64(t.Cols()))
	return int(n)
}

// DecodeRow converts row r of a matrix to fp32 into dst (len(dst) == Cols()).
func (t *Tensor) DecodeRow(dst []float32, r int) {
	rb := t.RowBytes()
	Decode(dst, t.DType, t.Data[r*rb:(r+1)*rb])
}

// Float32s converts the whole tensor to a new fp32 slice.
func (t *Tensor) Float32s() []float32 {
	out := make([]float32, t.NumElements())
	Decode(out, t.DType, t.Data)
	return out
}

// Decode converts len(dst) elements stored as dtype d in src to fp32. src must hold exactly
// Bytes(len(dst)); it panics otherwise (a programmer error: callers validate shapes first).
func Decode(dst []float32, d DType, src []byte) {
	want, err := d.Bytes(int64(len(dst)))
	if err != nil || int64(len(src)) != want {
		panic(fmt.Sprintf("tensor.Decode: %d %v elements from %d bytes", len(dst), d, len(src)))
	}
	switch d {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	case F16:
		for i := range dst {
			dst[i] = F16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case BF16:
		for i := range dst {
			dst[i] = BF16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case Q8_0:
		for b := 0; b < len(dst)/QK; b++ {
			blk := src[b*34 : b*34+34]
			scale := F16ToF32(binary.LittleEndian.Uint16(blk))
			for j := 0; j < QK; j++ {
				dst[b*QK+j] = scale * float32(int8(blk[2+j]))
			}
		}
	case Q4_0:
		for b := 0; b < len(dst)/QK; b++ {
			blk := src[b*18 : b*18+18]
			scale := F16ToF32(binary.LittleEndian.Uint16(blk))
			// ggml layout: byte j holds element j in its low nibble and element j+16 in its high one.
			for j := 0; j < QK/2; j++ {
				q := blk[2+j]
				dst[b*QK+j] = scale * float32(int(q&0x0f)-8)
				dst[b*QK+j+QK/2] = scale * float32(int(q>>4)-8)
			}
		}
	default:
		decodeGGML(dst, d, src)
	}
}

// Encode converts fp32 values to dtype d (round to nearest even for F16/BF16; ggml's reference
// quantisation for Q8_0, Q4_0, Q5_0 and Q5_1; a simple min/max one for Q4_K/Q5_K/Q6_K, see
// ggmlquants.go). len(src)
// must be a whole number of blocks. It panics for a ReadOnly dtype.
func Encode(d DType, src []float32) []byte {
	n, err := d.Bytes(int64(len(src)))
	if err != nil {
		panic("tensor.Encode: " + err.Error())
	}
	out := make([]byte, n)
	EncodeTo(out, d, src)
	return out
}

// EncodeTo is Encode into out, which must hold at least the encoded bytes; it allocates nothing.
// It panics for a ReadOnly dtype.
func EncodeTo(out []byte, d DType, src []float32) {
	switch d {
	case Q4_1, Q2_K, Q3_K:
		panic("tensor.Encode: llamacu does not write " + d.String() + " (llama.cpp's llama-quantize does)")
	case Q5_0:
		for b := 0; b < len(src)/QK; b++ {
			encodeQ5_0(out[b*22:(b+1)*22], src[b*QK:(b+1)*QK])
		}
	case Q5_1:
		for b := 0; b < len(src)/QK; b++ {
			encodeQ5_1(out[b*24:(b+1)*24], src[b*QK:(b+1)*QK])
		}
	case Q5_K:
		for b := 0; b < len(src)/QKK; b++ {
			encodeQ45_K(out[b*176:(b+1)*176], src[b*QKK:(b+1)*QKK], 5)
		}
	case Q4_K:
		for b := 0; b < len(src)/QKK; b++ {
			encodeQ45_K(out[b*144:(b+1)*144], src[b*QKK:(b+1)*QKK], 4)
		}
	case Q6_K:
		for b := 0; b < len(src)/QKK; b++ {
			encodeQ6_K(out[b*210:(b+1)*210], src[b*QKK:(b+1)*QKK])
		}
	case F32:
		for i, v := range src {
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		}
	case F16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(out[2*i:], F32ToF16(v))
		}
	case BF16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(out[2*i:], F32ToBF16(v))
		}
	case Q8_0:
		for b := 0; b < len(src)/QK; b++ {
			x := src[b*QK : (b+1)*QK]
			amax := float32(0)
			for _, v := range x {
				amax = max(amax, float32(math.Abs(float64(v))))
			}
			d := amax / 127
			id := float32(0)
			if d != 0 {
				id = 1 / d
			}
			blk := out[b*34:]
			binary.LittleEndian.PutUint16(blk, F32ToF16(d))
			for j, v := range x {
				blk[2+j] = byte(int8(math.RoundToEven(float64(v * id))))
			}
		}
	case Q4_0:
		for b := 0; b < len(src)/QK; b++ {
			x := src[b*QK : (b+1)*QK]
			d := largestMagnitude(x) / -8
			id := float32(0)
			if d != 0 {
				id = 1 / d
			}
			blk := out[b*18:]
			binary.LittleEndian.PutUint16(blk, F32ToF16(d))
			for j := 0; j < QK/2; j++ {
				q0 := min(15, int(x[j]*id+8.5))
				q1 := min(15, int(x[j+QK/2]*id+8.5))
				blk[2+j] = byte(q0) | byte(q1)<<4
			}
		}
	}
}

// F16ToF32 converts an IEEE binary16 bit pattern to float32 (exact).
func F16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0 && mant == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: renormalise
		e := uint32(127 - 15 + 1)
		for mant&0x400 == 0 {
			mant <<= 1
			e--
		}
		mant &= 0x3ff
		return math.Float32frombits(sign | e<<23 | mant<<13)
	case exp == 0x1f: // inf or NaN
		return math.Float32frombits(sign | 0xff<<23 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// F32ToF16 converts float32 to the nearest binary16 (round half to even; overflow to ±inf).
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff { // inf / NaN
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 { // subnormal or zero in fp16
		if e < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint32(14 - e)
		half := uint32(1) << (shift - 1)
		rest := mant & (1<<shift - 1)
		m := mant >> shift
		if rest > half || (rest == half && m&1 == 1) {
			m++
		}
		return sign | uint16(m)
	}
	m := mant >> 13
	rest := mant & 0x1fff
	h := uint32(e)<<10 | m
	if rest > 0x1000 || (rest == 0x1000 && m&1 == 1) {
		h++ // may carry into the exponent, which is the correct rounding
	}
	return sign | uint16(h)
}

// BF16ToF32 converts a bfloat16 bit pattern to float32 (exact).
func BF16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// F32ToBF16 converts float32 to the nearest bfloat16 (round half to even; NaN stays NaN).
func F32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}
