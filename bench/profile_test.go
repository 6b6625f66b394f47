package bench

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

func tinyModel(tb testing.TB, be model.Backend) *model.Model {
	tb.Helper()
	m, err := model.New(be, model.Tiny, model.Synthetic(model.Tiny, 1, tensor.F32), nil)
	require.NoError(tb, err)
	return m
}

// decodeOnce runs one decode step of one token at position pos.
func decodeOnce(tb testing.TB, m *model.Model, pos int) {
	tb.Helper()
	s, err := m.NewState(1, 1, 16, 32)
	require.NoError(tb, err)
	table := make([]int32, 32)
	for i := range table {
		table[i] = int32(i)
	}
	b := &model.Batch{Tokens: []int32{5}, Pos: []int32{int32(pos)}, Seq: []int32{0}, BlockTables: [][]int32{table}}
	_, err = m.Forward(s, b, []int32{0})
	require.NoError(tb, err)
}

// One decode step of the LLaMA architecture calls, per layer, 7 matmuls (Wq Wk Wv Wo W1 W3 W2),
// 2 RMSNorms, 2 RoPEs, 1 StoreKV, 1 Attention, 1 SwiGLU and 2 Adds; then one final norm and the LM
// head. The matmul FLOPs of a token are 2 per weight of every matrix but the embedding table.
func TestProfilingBackendCountsOps(t *testing.T) {
	be := cpu.New(cpu.Options{Threads: 1})
	defer be.Close()
	prof := NewProfilingBackend(be)
	m := tinyModel(t, prof)
	const pos = 9
	decodeOnce(t, m, pos)
	stats, err := prof.Stats()
	require.NoError(t, err)

	c := model.Tiny // dim 128, 4 layers, 8 heads, 4 KV heads (head_dim 16), ffn 352, vocab 512
	L := c.Layers
	calls := map[string]int{}
	var matmulFLOPs, matmulBytes int64
	var opsTime time.Duration
	for _, s := range stats {
		calls[s.Op+" "+s.Detail] += s.Calls
		if s.Op == "MatMul" {
			matmulFLOPs += s.FLOPs
			matmulBytes += s.Bytes
		}
		require.Positive(t, s.Time, s.Op)
		opsTime += s.Time
	}
	want := map[string]int{
		"Embed ": 1, "RMSNorm ": 2*L + 1, "RoPE ": 2 * L, "StoreKV ": L, "Attention ": L, "SwiGLU ": L, "Add ": 2 * L,
		"GatherRows ": 1, "Read ": 1,
		"MatMul 128x128 F32": 2 * L, // Wq, Wo
		"MatMul 64x128 F32":  2 * L, // Wk, Wv
		"MatMul 352x128 F32": 2 * L, // W1, W3
		"MatMul 128x352 F32": L,     // W2
		"MatMul 512x128 F32": 1,     // LM head
	}
	require.Equal(t, want, calls)
	matrices := int64(L)*(128*128*2+64*128*2+352*128*3) + 512*128
	require.Equal(t, 2*matrices, matmulFLOPs)
	// weights once, plus each matmul's input and output row (fp32)
	acts := int64(L)*(2*(128+128)+2*(128+64)+2*(128+352)+(352+128)) + (128 + 512)
	require.Equal(t, 4*matrices+4*acts, matmulBytes)

	for _, s := range stats {
		if s.Op == "Attention" {
			// q read + out written (8 heads · 16), K and V of pos+1 positions (4 KV heads · 16), fp32
			require.Equal(t, int64(L)*(2*128*4+2*(pos+1)*64*4), s.Bytes)
			require.Equal(t, int64(L)*4*(pos+1)*128, s.FLOPs)
		}
	}

	prof.Reset()
	prof.Enable(false)
	decodeOnce(t, m, 0)
	stats, _ = prof.Stats()
	require.Empty(t, stats, "disabled profiler records nothing")
}

// fakeTimer is a backend whose ops "take" 1 ms each on the device.
type fakeTimer struct {
	model.Backend
	marks int
}

func (f *fakeTimer) RecordMark() { f.marks++ }
func (f *fakeTimer) MarkIntervals() ([]time.Duration, error) {
	n := max(f.marks-1, 0)
	f.marks = 0
	iv := make([]time.Duration, n)
	for i := range iv {
		iv[i] = time.Millisecond
	}
	return iv, nil
}

func TestProfilingBackendUsesOpTimer(t *testing.T) {
	be := cpu.New(cpu.Options{Threads: 1})
	defer be.Close()
	prof := NewProfilingBackend(&fakeTimer{Backend: be})
	m := tinyModel(t, prof)
	decodeOnce(t, m, 0)
	stats, err := prof.Stats()
	require.NoError(t, err)
	for _, s := range stats {
		if s.Op == "Read" {
			continue // wall time: it synchronises
		}
		require.Equal(t, time.Duration(s.Calls)*time.Millisecond, s.Time, "%s %s", s.Op, s.Detail)
	}
}

func TestNewProfile(t *testing.T) {
	stats := []OpStat{
		{Op: "Add", Calls: 2, Time: time.Millisecond, Bytes: 1e6},
		{Op: "MatMul", Detail: "4x4 F32", Calls: 1, Time: 3 * time.Millisecond, Bytes: 30e6, FLOPs: 6e9},
	}
	p := NewProfile(stats, 5*time.Millisecond, 20)
	require.Equal(t, int64(4e6), p.OpsNS)
	require.Equal(t, "MatMul", p.Ops[0].Op, "sorted by time")
	require.InDelta(t, 10.0, p.Ops[0].GBps, 1e-9) // 30 MB in 3 ms
	require.InDelta(t, 50.0, p.Ops[0].PctCopyBW, 1e-9)
	require.InDelta(t, 2.0, p.Ops[0].TFLOPs, 1e-9)
	require.InDelta(t, 75.0, p.Ops[0].PctTime, 1e-9)
	require.Equal(t, int64(500e3), p.Ops[1].PerCallNS)
	require.Equal(t, fmt.Sprint(1.0), fmt.Sprint(p.Ops[1].GBps))
}
