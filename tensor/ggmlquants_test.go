package tensor

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ggmlVectors is testdata/ggml: rows quantised by ggml_quantize_chunk and decoded by ggml's
// dequantize_row_<type> (bench/reference/ggml_quants.py, from a prebuilt llama.cpp).
type ggmlVectors struct {
	Rows, Cols int
	Types      map[string]struct {
		GGMLType int     `json:"ggml_type"`
		RowBytes int     `json:"row_bytes"`
		RMSE     float64 `json:"rmse"`
	}
}

func readF32s(t *testing.T, path string) []float32 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

// Every ggml block type llamacu reads decodes exactly as ggml decodes it: bit for bit, on rows
// that reach each format's corners (one sign only, outliers, constant, zero, tiny values).
func TestDecodeEqualsGGML(t *testing.T) {
	dir := filepath.Join("testdata", "ggml")
	raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m ggmlVectors
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	input := readF32s(t, filepath.Join(dir, "input.f32"))
	if len(m.Types) != 10 {
		t.Fatalf("manifest lists %d types, want 10", len(m.Types))
	}
	for name, info := range m.Types {
		t.Run(name, func(t *testing.T) {
			d, err := ParseDType(name)
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := d.Bytes(int64(m.Cols)); got != int64(info.RowBytes) {
				t.Fatalf("%v: %d bytes per %d-element row, ggml says %d", d, got, m.Cols, info.RowBytes)
			}
			blocks, err := os.ReadFile(filepath.Join(dir, strings.ToLower(name)+".blocks"))
			if err != nil {
				t.Fatal(err)
			}
			want := readF32s(t, filepath.Join(dir, strings.ToLower(name)+".f32"))
			got := make([]float32, m.Rows*m.Cols)
			Decode(got, d, blocks)
			bad := 0
			for i := range got {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					if bad < 5 {
						t.Errorf("element %d (row %d): got %g, ggml %g", i, i/m.Cols, got[i], want[i])
					}
					bad++
				}
			}
			if bad > 0 {
				t.Fatalf("%d of %d elements differ from ggml", bad, len(got))
			}
			// The vectors themselves are what they claim: ggml's error on the input.
			var se float64
			for i, v := range got {
				se += float64(v-input[i]) * float64(v-input[i])
			}
			if rmse := math.Sqrt(se / float64(len(got))); math.Abs(rmse-info.RMSE) > 1e-6*max(1, info.RMSE) {
				t.Errorf("rmse %g, manifest %g", rmse, info.RMSE)
			}
		})
	}
}

func TestGGMLTypeGeometry(t *testing.T) {
	for _, tc := range []struct {
		d        DType
		bs, bb   int
		bpw      float64
		readOnly bool
	}{
		{Q8_0, 32, 34, 8.5, false}, {Q4_0, 32, 18, 4.5, false},
		{Q4_1, 32, 20, 5, true}, {Q5_0, 32, 22, 5.5, false}, {Q5_1, 32, 24, 6, false},
		{Q2_K, 256, 84, 2.625, true}, {Q3_K, 256, 110, 3.4375, true}, {Q4_K, 256, 144, 4.5, false},
		{Q5_K, 256, 176, 5.5, false}, {Q6_K, 256, 210, 6.5625, false},
	} {
		if tc.d.BlockSize() != tc.bs || tc.d.BlockBytes() != tc.bb || tc.d.BitsPerWeight() != tc.bpw || tc.d.ReadOnly() != tc.readOnly || !tc.d.Quantized() {
			t.Errorf("%v: block %d × %d bytes, %g bits, read-only %v; want %d × %d, %g, %v", tc.d,
				tc.d.BlockSize(), tc.d.BlockBytes(), tc.d.BitsPerWeight(), tc.d.ReadOnly(), tc.bs, tc.bb, tc.bpw, tc.readOnly)
		}
		if p, err := ParseDType(strings.ToLower(tc.d.String())); err != nil || p != tc.d {
			t.Errorf("ParseDType(%q) = %v, %v", strings.ToLower(tc.d.String()), p, err)
		}
	}
	if F16.Quantized() || F32.ReadOnly() {
		t.Error("F16 quantized or F32 read-only")
	}
	defer func() {
		if recover() == nil {
			t.Error("Encode(Q3_K) did not panic")
		}
	}()
	Encode(Q3_K, make([]float32, 256))
}

// Q4_K, Q5_K and Q6_K encode: decoding what Encode wrote comes back with the error of ggml's own
// quantiser on the same rows (whose search for the scales fitScaleMin and fitSymmetric run, not
// its code: the choices differ in places), within a few percent, row by row. (Both lose the row of values near 1e-4 whole in Q6_K: its fp16 d underflows.)
func TestEncodeKQuant(t *testing.T) {
	dir := filepath.Join("testdata", "ggml")
	input := readF32s(t, filepath.Join(dir, "input.f32"))
	const rows, cols = 8, 512
	for _, tc := range []struct {
		d     DType
		ratio float64 // our rms error ÷ ggml's, at most
	}{{Q4_K, 1.05}, {Q5_K, 1.07}, {Q6_K, 1.01}} { // the row with outliers: 1.03, 1.06, 1.0; else ≤ 1.01
		t.Run(tc.d.String(), func(t *testing.T) {
			ggml := readF32s(t, filepath.Join(dir, strings.ToLower(tc.d.String())+".f32"))
			got := make([]float32, len(input))
			Decode(got, tc.d, Encode(tc.d, input))
			for r := range rows {
				var ours, theirs, ss float64
				for i := r * cols; i < (r+1)*cols; i++ {
					ours += float64(got[i]-input[i]) * float64(got[i]-input[i])
					theirs += float64(ggml[i]-input[i]) * float64(ggml[i]-input[i])
					ss += float64(input[i]) * float64(input[i])
				}
				ours, theirs = math.Sqrt(ours/cols), math.Sqrt(theirs/cols)
				t.Logf("row %d: rms error %.3g, ggml %.3g (rms value %.3g)", r, ours, theirs, math.Sqrt(ss/cols))
				if ours > tc.ratio*theirs+1e-4*math.Sqrt(ss/cols) {
					t.Errorf("row %d: rms error %.3g > %.1f × ggml's %.3g", r, ours, tc.ratio, theirs)
				}
			}
		})
	}
}

// Q8_0, Q4_0, Q5_0 and Q5_1 encode as ggml's reference quantisers do (what llama-quantize
// writes for them without an importance matrix): the same bytes, block for block.
func TestEncodeEqualsGGML(t *testing.T) {
	dir := filepath.Join("testdata", "ggml")
	input := readF32s(t, filepath.Join(dir, "input.f32"))
	for _, d := range []DType{Q8_0, Q4_0, Q5_0, Q5_1} {
		want, err := os.ReadFile(filepath.Join(dir, strings.ToLower(d.String())+".blocks"))
		if err != nil {
			t.Fatal(err)
		}
		got := Encode(d, input)
		if len(got) != len(want) {
			t.Fatalf("%v: %d bytes, ggml's %d", d, len(got), len(want))
		}
		bb := d.BlockBytes()
		for b := 0; b < len(got)/bb; b++ {
			if !bytes.Equal(want[b*bb:(b+1)*bb], got[b*bb:(b+1)*bb]) {
				t.Errorf("%v block %d (row %d): % x, ggml's % x", d, b, b*d.BlockSize()/512, got[b*bb:(b+1)*bb], want[b*bb:(b+1)*bb])
			}
		}
	}
}

// BenchmarkEncode times quantizing a 7B-shaped 4096×4096 weight on one core, each type beside
// Q8_0 (one pass, no search): what `llamacu quantize` spends per such weight and core.
func BenchmarkEncode(b *testing.B) {
	x := make([]float32, 4096*4096)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range x {
		x[i] = float32(r.NormFloat64() * 0.02)
	}
	for _, d := range []DType{Q8_0, Q4_0, Q5_0, Q4_K, Q5_K, Q6_K} {
		b.Run(d.String(), func(b *testing.B) {
			b.SetBytes(int64(4 * len(x)))
			for range b.N {
				Encode(d, x)
			}
		})
	}
}
