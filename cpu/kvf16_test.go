package cpu

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// With one cached position the attention weight is 1 and the output is that position's V: exactly
// as stored, so float32 with the default cache and rounded to F16 with KVF16 — the F16 cache
// really holds F16 (the conformance suite's tolerance alone would not tell).
func TestKVF16StoresF16(t *testing.T) {
	for _, f16 := range []bool{false, true} {
		be := New(Options{Threads: 1, KVF16: f16})
		const heads, hd = 2, 64
		c, err := be.NewKVCache(model.KVLayout{Layers: 1, KVHeads: heads, HeadDim: hd, BlockSize: 4, NumBlocks: 2})
		require.NoError(t, err)
		assert.Equal(t, map[bool]int{false: 4, true: 2}[f16], be.KVElementBytes())
		r := rand.New(rand.NewPCG(1, 2))
		row := func() (model.Buffer, []float32) {
			v := make([]float32, heads*hd)
			for i := range v {
				v[i] = float32(r.NormFloat64())
			}
			buf, err := be.NewBuffer(1, heads*hd)
			require.NoError(t, err)
			copy(buf.(*Buffer).row(0), v)
			return buf, v
		}
		k, _ := row()
		v, want := row()
		q, _ := row()
		out, err := be.NewBuffer(1, heads*hd)
		require.NoError(t, err)
		bt := &model.Batch{Tokens: []int32{5}, Pos: []int32{0}, Seq: []int32{0}, BlockTables: [][]int32{{1}}}
		be.StoreKV(c, 0, k, v, bt)
		be.Attention(out, q, c, 0, bt)
		got := make([]float32, heads*hd)
		require.NoError(t, be.Read(got, out, 1))
		rounded := 0
		for i := range want {
			w := want[i]
			if f16 {
				w = tensor.F16ToF32(tensor.F32ToF16(w))
			}
			require.Equal(t, w, got[i], "element %d (f16 %v)", i, f16)
			if w != want[i] {
				rounded++
			}
		}
		assert.Equal(t, f16, rounded > 0)
		be.Close()
	}
}
