//go:build cuda || cudaemu

package gpu_test

import (
	"context"
	"math"
	"testing"

	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/gpu"
)

// TestEmbedOnGPU: embeddings on the CUDA backend (fp16 weights and KV cache, decode graphs on),
// alone and through the scheduler beside a generation, are the CPU's within 0.5% (‖Δ‖/‖cpu‖;
// the nearest wrong answers, one token early or a token short of the mean, are 2% and more
// away on this model).
func TestEmbedOnGPU(t *testing.T) {
	path := shared(t, "stories260K/stories260K.gguf")
	texts := []string{"Once upon a time", "Lily and Ben went to the park to play.", "안녕하세요, 세계!"}
	cpuE, err := engine.Load(engine.Options{ModelPath: path})
	if err != nil {
		t.Fatal(err)
	}
	defer cpuE.Close()
	e, err := engine.Load(engine.Options{ModelPath: path, Backend: open(t, gpu.Options{Graphs: true}), Context: 512})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	ctx := context.Background()
	want := map[engine.Pooling][][]float32{}
	alone := map[engine.Pooling][][]float32{}
	for _, how := range []engine.Pooling{engine.PoolLast, engine.PoolMean} {
		for _, text := range texts {
			v, err := cpuE.Embed(ctx, engine.EmbedRequest{Prompt: text, Pooling: how})
			if err != nil {
				t.Fatal(err)
			}
			want[how] = append(want[how], v)
			if v, err = e.Embed(ctx, engine.EmbedRequest{Prompt: text, Pooling: how}); err != nil {
				t.Fatal(err)
			}
			alone[how] = append(alone[how], v)
		}
	}
	s, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	gen, err := s.Submit(ctx, engine.Request{Prompt: "The cat", MaxTokens: 24})
	if err != nil {
		t.Fatal(err)
	}
	for _, how := range []engine.Pooling{engine.PoolLast, engine.PoolMean} {
		for i, text := range texts {
			v, _, err := s.Embed(ctx, engine.EmbedRequest{Prompt: text, Pooling: how})
			if err != nil {
				t.Fatal(err)
			}
			for _, got := range []struct {
				name string
				v    []float32
			}{{"Engine.Embed", alone[how][i]}, {"Scheduler.Embed", v}} {
				if d := relDiff(got.v, want[how][i]); d > 5e-3 || math.IsNaN(d) {
					t.Errorf("%s, %v pooling of %q: ‖gpu − cpu‖/‖cpu‖ = %.2g", got.name, how, text, d)
				} else {
					t.Logf("%s, %v pooling of %q: ‖gpu − cpu‖/‖cpu‖ = %.2g", got.name, how, text, d)
				}
			}
		}
	}
	if _, ev := gen.Collect(); ev.Err != nil {
		t.Fatal(ev.Err)
	}
}

func relDiff(got, want []float32) float64 {
	var d, n float64
	for i := range want {
		d += (float64(got[i]) - float64(want[i])) * (float64(got[i]) - float64(want[i]))
		n += float64(want[i]) * float64(want[i])
	}
	return math.Sqrt(d / n)
}
