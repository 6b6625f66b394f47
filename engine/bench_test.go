package engine_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/grammar"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/sample"
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

// decodeState is a one-sequence State of ctx positions (blocks of 16) and a one-token batch
// over its whole block table, for decode benchmarks.
func decodeState(b *testing.B, m *model.Model, ctx int) (*model.State, *model.Batch) {
	b.Helper()
	const bs = 16
	s, err := m.NewState(1, 1, bs, ctx/bs)
	if err != nil {
		b.Fatal(err)
	}
	table := make([]int32, ctx/bs)
	for i := range table {
		table[i] = int32(i)
	}
	return s, &model.Batch{Tokens: []int32{1}, Pos: []int32{0}, Seq: []int32{0}, BlockTables: [][]int32{table}}
}

// BenchmarkDecode110M times one decode step (batch 1) at growing KV depth, as `run` does after the
// prompt. tok/s is the headline; bytes are the weights streamed per token, so MB/s shows how close
// the step is to memory bandwidth.
func BenchmarkDecode110M(b *testing.B) {
	for _, d := range []tensor.DType{tensor.F32, tensor.F16, tensor.Q8_0, tensor.Q4_0} {
		b.Run(d.String(), func(b *testing.B) {
			m := benchModel(b, d)
			const ctx = 256
			s, batch := decodeState(b, m, ctx)
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

// BenchmarkChatTurns times a 6-turn conversation on the 110M synthetic model through the
// scheduler, each turn resending the whole conversation (a 200-token system prompt, then 40
// new prompt tokens and a 32-token answer a turn), with the prefix cache on and off. Each
// iteration's conversation starts differently, so nothing is cached across iterations.
// "prefilled/turn" is the prompt tokens computed; the time ratio is what the cache saves.
func BenchmarkChatTurns(b *testing.B) {
	for _, off := range []bool{false, true} {
		name := "cache"
		if off {
			name = "nocache"
		}
		b.Run(name, func(b *testing.B) {
			cfg := model.Bench110M
			e, err := engine.Load(engine.Options{SyntheticConfig: &cfg, Context: 1024})
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close()
			s, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 1, NoPrefixCache: off})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close(context.Background())
			words := func(n, seed int) []int32 {
				out := make([]int32, n)
				for i := range out {
					out[i] = int32(300 + (seed*7919+i*104729)%30000)
				}
				return out
			}
			const turns = 6
			b.ResetTimer()
			for i := range b.N {
				conv := append([]int32{1}, words(200, i)...)
				for turn := range turns {
					conv = append(conv, words(40, i*turns+turn+1)...)
					st, err := s.Submit(context.Background(), engine.Request{PromptIDs: conv, MaxTokens: 32, Sampling: sample.GreedyParams()})
					if err != nil {
						b.Fatal(err)
					}
					for ev := range st.C {
						if ev.Done && ev.Err != nil {
							b.Fatal(ev.Err)
						} else if !ev.Done {
							conv = append(conv, ev.Token)
						}
					}
				}
			}
			stats := s.Stats()
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N*turns), "ms/turn")
			b.ReportMetric(float64(stats.PromptTokens)/float64(b.N*turns), "prefilled/turn")
		})
	}
}

// BenchmarkKVBound serves stories260K's 8 story prompts at once with no max_tokens (each runs
// to EOS, ~375 tokens, or to the end of a 512-token context), comparing, in one run: a KV cache
// of 8 full contexts (every sequence fits: the reference), one of 2 full contexts with 8
// sequences (blocks taken as sequences grow, preempting when they run out: here the stories
// need far more than the cache holds), and the same 2 contexts with 2 sequences — all a
// scheduler that reserves every request's whole context at admission could run at once; and
// the small cache again with the prefix cache on (the default: a preempted sequence's full
// blocks may still be there when it comes back). tok/s is generated tokens over wall time;
// ttft-ms the mean time from submission to the first token.
func BenchmarkKVBound(b *testing.B) {
	path := shared(b, "stories260K/stories260K.gguf")
	e, err := engine.Load(engine.Options{ModelPath: path, Context: 512, Threads: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	const ctxBlocks = 512 / 16
	for _, tc := range []struct {
		name            string
		seqs, kvContext int
		prefixCache     bool
	}{{"seqs8-kv8ctx", 8, 8, false}, {"seqs8-kv2ctx", 8, 2, false}, {"seqs8-kv2ctx-prefixcache", 8, 2, true}, {"seqs2-kv2ctx", 2, 2, false}} {
		b.Run(tc.name, func(b *testing.B) {
			s, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: tc.seqs, KVBlocks: tc.kvContext * ctxBlocks, NoPrefixCache: !tc.prefixCache})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close(context.Background())
			generated, firsts := 0, 0
			var ttft time.Duration
			b.ResetTimer()
			for range b.N {
				streams := make([]*engine.Stream, len(storyPrompts))
				for i, p := range storyPrompts {
					if streams[i], err = s.Submit(context.Background(), engine.Request{Prompt: p, Sampling: sample.GreedyParams()}); err != nil {
						b.Fatal(err)
					}
				}
				for _, st := range streams {
					first := true
					for ev := range st.C {
						if first {
							ttft += ev.Time.Sub(st.Submitted())
							firsts++
							first = false
						}
						if ev.Done {
							generated += ev.Usage.CompletionTokens
						}
					}
				}
			}
			b.ReportMetric(float64(generated)/b.Elapsed().Seconds(), "tok/s")
			b.ReportMetric(float64(ttft.Milliseconds())/float64(firsts), "ttft-ms")
			b.ReportMetric(float64(s.Stats().Preemptions)/float64(b.N), "preemptions/op")
		})
	}
}

// BenchmarkGrammarDecode times 64 tokens of the 110M synthetic model with LLaMA 2's
// 32000-piece vocabulary, sampled at temperature 1 (random weights: close to a uniform draw),
// unconstrained and under grammars; decode-tok/s leaves the prompt out. A step checks the
// sampler's choice against the grammar and masks the row only when it is refused, so the draws
// here are the worst case: "any-text" (root ::= .*) refuses only byte tokens that would break
// UTF-8; "no-e" ([^e]*) refuses the many tokens with an 'e', and its Mask walks nearly the
// whole vocabulary (the costliest mask); "digits" ([0-9]{64}) refuses almost every draw, but
// its Mask prunes at the first byte. The ratio of decode-tok/s to "none" is the grammar's cost.
func BenchmarkGrammarDecode(b *testing.B) {
	cfg := model.Bench110M
	e, err := engine.Load(engine.Options{SyntheticConfig: &cfg, Context: 256, TokenizerPath: shared(b, "llama2-tokenizer/tokenizer.model")})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	e.GrammarVocab() // built once per engine: not part of a request's time
	for _, tc := range []struct {
		name string
		g    *grammar.Grammar
	}{{"none", nil}, {"any-text", grammar.MustParse(`root ::= .*`)}, {"no-e", grammar.MustParse(`root ::= [^e]*`)}, {"digits", grammar.MustParse(`root ::= [0-9]{64}`)}} {
		b.Run(tc.name, func(b *testing.B) {
			generated := 0
			var decode time.Duration
			for b.Loop() {
				st, err := e.Generate(context.Background(), engine.Request{Prompt: "Once upon a time", MaxTokens: 64, Sampling: sample.Params{Temperature: 1, Seed: 1}, Grammar: tc.g},
					func(int32, string) error { return nil })
				if err != nil {
					b.Fatal(err)
				}
				generated += st.Generated - 1
				decode += st.DecodeTime
			}
			b.ReportMetric(float64(generated)/decode.Seconds(), "decode-tok/s")
			b.ReportMetric(float64(generated)/float64(b.N), "tokens/op")
		})
	}
}

// BenchmarkDraftDecode times one sequence at a time (batch 1, greedy) with and without
// speculative decoding by prompt lookup (SchedulerOptions.DraftTokens 4), in the same run:
// stories260K writing its 8 stories (a trained model's own repetitions: names, phrases), and
// the 110M synthetic model with LLaMA 2's vocabulary continuing a prompt that repeats a
// sentence (random weights fall into loops, which lookup predicts: the mechanism's best
// case). tok/s is generated tokens over wall time; tokens/step and accepted (the share of
// proposals the model generated) say why.
func BenchmarkDraftDecode(b *testing.B) {
	cfg := model.Bench110M
	for _, mc := range []struct {
		name    string
		opts    engine.Options
		prompts []string
		max     int
	}{
		{"stories260K", engine.Options{ModelPath: shared(b, "stories260K/stories260K.gguf"), Context: 512, Threads: 1}, storyPrompts, 0},
		{"110M", engine.Options{SyntheticConfig: &cfg, Context: 512, TokenizerPath: shared(b, "llama2-tokenizer/tokenizer.model")},
			[]string{"The cat sat on the mat. The cat sat on the mat. The cat sat on the mat."}, 128},
	} {
		e, err := engine.Load(mc.opts)
		if err != nil {
			b.Fatal(err)
		}
		for _, draft := range []int{0, 4} {
			b.Run(fmt.Sprintf("%s/draft=%d", mc.name, draft), func(b *testing.B) {
				s, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 1, DraftTokens: draft, NoPrefixCache: true})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close(context.Background())
				for b.Loop() {
					for _, p := range mc.prompts {
						st, err := s.Submit(context.Background(), engine.Request{Prompt: p, MaxTokens: mc.max, IgnoreEOS: mc.max > 0})
						if err != nil {
							b.Fatal(err)
						}
						for ev := range st.C {
							if ev.Done && ev.Err != nil {
								b.Fatal(ev.Err)
							}
						}
					}
				}
				st := s.Stats()
				b.ReportMetric(float64(st.Generated)/b.Elapsed().Seconds(), "tok/s")
				b.ReportMetric(float64(st.Generated)/float64(st.Steps), "tokens/step")
				if st.DraftTokens > 0 {
					b.ReportMetric(float64(st.DraftAccepted)/float64(st.DraftTokens), "accepted")
				}
			})
		}
		e.Close()
	}
}

// BenchmarkDecodeKV times one decode step of the 110M synthetic model (F32 weights) at a
// context depth of 0 and 1008 tokens (its context is 1024) with the CPU's KV cache in fp32 and fp16: what the
// halved bytes attention reads give back at depth (and cost in conversion at none).
func BenchmarkDecodeKV(b *testing.B) {
	cfg := model.Bench110M
	for _, f16 := range []bool{false, true} {
		name := "f32"
		if f16 {
			name = "f16"
		}
		be := cpu.New(cpu.Options{KVF16: f16})
		m, err := model.New(be, cfg, model.Synthetic(cfg, 1, tensor.F32), nil)
		if err != nil {
			b.Fatal(err)
		}
		const bs, ctx, deep = 16, 1024, 1008
		s, err := m.NewState(bs, 1, bs, ctx/bs)
		if err != nil {
			b.Fatal(err)
		}
		table := make([]int32, ctx/bs)
		for i := range table {
			table[i] = int32(i)
		}
		// Fill the cache to depth deep (prefill in chunks of 16; the values do not matter).
		fill := &model.Batch{BlockTables: [][]int32{table}}
		for p := 0; p < deep; p += bs {
			fill.Tokens, fill.Pos, fill.Seq = fill.Tokens[:0], fill.Pos[:0], fill.Seq[:0]
			for i := range bs {
				fill.Tokens = append(fill.Tokens, int32(100+p+i))
				fill.Pos = append(fill.Pos, int32(p+i))
				fill.Seq = append(fill.Seq, 0)
			}
			if _, err := m.Forward(s, fill, []int32{bs - 1}); err != nil {
				b.Fatal(err)
			}
		}
		for _, depth := range []int{0, deep} {
			b.Run(fmt.Sprintf("kv=%s/depth=%d", name, depth), func(b *testing.B) {
				batch := &model.Batch{Tokens: []int32{1}, Pos: []int32{int32(depth)}, Seq: []int32{0}, BlockTables: [][]int32{table}}
				for b.Loop() {
					if _, err := m.Forward(s, batch, []int32{0}); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tok/s")
			})
		}
		be.Close()
	}
}

// BenchmarkLowRankDecode110M times a decode step of the 110M model in Q8_0 with a rank-16
// adapter applied unmerged on every projection of every layer (model.AddLowRank, as --lora on a
// quantized file does), beside the same step without it.
func BenchmarkLowRankDecode110M(b *testing.B) {
	for _, rank := range []int{0, 16} {
		b.Run(fmt.Sprintf("rank=%d", rank), func(b *testing.B) {
			m := benchModel(b, tensor.Q8_0)
			if rank > 0 {
				for _, ws := range m.Config.WeightShapes() {
					if !strings.HasPrefix(ws.Name, "layers.") || len(ws.Shape) != 2 { // the projections
						continue
					}
					a := &tensor.Tensor{Name: ws.Name + ".a", DType: tensor.F32, Shape: []int{rank, ws.Shape[1]}, Data: make([]byte, 4*rank*ws.Shape[1])}
					bb := &tensor.Tensor{Name: ws.Name + ".b", DType: tensor.F32, Shape: []int{ws.Shape[0], rank}, Data: make([]byte, 4*rank*ws.Shape[0])}
					if err := m.AddLowRank(ws.Name, a, bb); err != nil {
						b.Fatal(err)
					}
				}
			}
			s, batch := decodeState(b, m, 256)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				batch.Pos[0] = int32(i % 64)
				if _, err := m.Forward(s, batch, []int32{0}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tok/s")
		})
	}
}
