package engine_test

import (
	"fmt"
	"testing"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// benchModel builds the synthetic ~110M-parameter model (llama2.c's stories110M shape) on the CPU
// backend with weights of dtype.
func benchModel(b *testing.B, dtype tensor.DType) *model.Model {
	b.Helper()
	cfg := model.Bench110M
	m, err := model.New(cpu.New(cpu.Options{}), cfg, model.Synthetic(cfg, 1, dtype), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Backend.Close() })
	return m
}

// BenchmarkDecode110M times one decode step (batch 1) at growing KV depth, as `run` does after the
// prompt. tok/s is the headline; bytes are the weights streamed per token, so MB/s shows how close
// the step is to memory bandwidth.
func BenchmarkDecode110M(b *testing.B) {
	for _, d := range []tensor.DType{tensor.F32, tensor.F16, tensor.Q8_0, tensor.Q4_0} {
		b.Run(d.String(), func(b *testing.B) {
			m := benchModel(b, d)
			const bs = 16
			ctx := 256
			s, err := m.NewState(1, 1, bs, ctx/bs)
			if err != nil {
				b.Fatal(err)
			}
			table := make([]int32, ctx/bs)
			for i := range table {
				table[i] = int32(i)
			}
			batch := &model.Batch{Tokens: []int32{1}, Pos: []int32{0}, Seq: []int32{0}, BlockTables: [][]int32{table}}
			rows := []int32{0}
			b.SetBytes(m.Config.WeightBytes(d))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				batch.Pos[0] = int32(i % ctx)
				batch.Tokens[0] = int32(100 + i%1000)
				if _, err := m.Forward(s, batch, rows); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tok/s")
		})
	}
}

// BenchmarkPrefill110M times prompt processing of n tokens in one batch.
func BenchmarkPrefill110M(b *testing.B) {
	m := benchModel(b, tensor.F32)
	for _, n := range []int{16, 128} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			const bs = 16
			s, err := m.NewState(n, 1, bs, n/bs)
			if err != nil {
				b.Fatal(err)
			}
			batch := &model.Batch{BlockTables: [][]int32{make([]int32, n/bs)}}
			for i := range batch.BlockTables[0] {
				batch.BlockTables[0][i] = int32(i)
			}
			for i := 0; i < n; i++ {
				batch.Tokens = append(batch.Tokens, int32(100+i))
				batch.Pos = append(batch.Pos, int32(i))
				batch.Seq = append(batch.Seq, 0)
			}
			rows := []int32{int32(n - 1)}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := m.Forward(s, batch, rows); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "tok/s")
		})
	}
}
