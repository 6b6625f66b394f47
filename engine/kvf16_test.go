package engine_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/sample"
)

// An fp16 KV cache on the CPU: the scheduler's default cache holds twice the blocks in the same
// memory, and stories260K writes what it writes with the fp32 cache (greedy, its first
// sentences) — the rounding moves logits by far less than the gaps greedy decoding sees.
func TestCPUKVF16(t *testing.T) {
	path := shared(t, "stories260K/stories260K.gguf")
	load := func(f16 bool) *engine.Engine {
		e, err := engine.Load(engine.Options{ModelPath: path, Backend: cpu.New(cpu.Options{Threads: 1, KVF16: f16}), CloseBackend: true, Context: 512})
		require.NoError(t, err)
		t.Cleanup(func() { e.Close() })
		return e
	}
	e32, e16 := load(false), load(true)
	c := e32.Model.Config
	perBlock32 := int64(2*c.Layers*c.KVDim()*4) * 16
	blocks := func(e *engine.Engine) int {
		s, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 8, KVMemory: 100 * perBlock32})
		require.NoError(t, err)
		defer s.Close(context.Background())
		return s.Stats().KVBlocksTotal
	}
	assert.Equal(t, 100, blocks(e32))
	assert.Equal(t, 200, blocks(e16))

	for _, p := range []string{"Once upon a time", "Lily and Tom went to the park."} {
		ref := generateSolo(t, e32, engine.Request{Prompt: p, MaxTokens: 40, Sampling: sample.GreedyParams()})
		got := generateSolo(t, e16, engine.Request{Prompt: p, MaxTokens: 40, Sampling: sample.GreedyParams()})
		assert.Equal(t, ref.ids[:20], got.ids[:20], "%q", p)
	}
}
