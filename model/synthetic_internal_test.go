package model

import (
	"bytes"
	"math"
	"runtime"
	"testing"

	"github.com/llamacu/llamacu/tensor"
)

// TestSyntheticChunks: synthetic tensors are made on every core, chunk by chunk, yet their bytes
// do not depend on the core count, and a tensor of at most one chunk is exactly the single
// stream it always was (so the built-in model and every small test model are unchanged).
func TestSyntheticChunks(t *testing.T) {
	cfg := Config{Name: "chunks", Dim: 1024, Layers: 1, Heads: 8, KVHeads: 8, FFN: 1100, Vocab: 256, MaxSeq: 64, NormEps: 1e-5, RopeTheta: 10000}
	name := LayerName(0, NameW1) // (1100, 1024): 1,126,400 values, two chunks
	var got [2][]byte
	for i, procs := range []int{1, 4} {
		old := runtime.GOMAXPROCS(procs)
		tt, err := Synthetic(cfg, 7, tensor.F16)(name)
		runtime.GOMAXPROCS(old)
		if err != nil {
			t.Fatal(err)
		}
		got[i] = tt.Data
	}
	if !bytes.Equal(got[0], got[1]) {
		t.Fatal("synthetic bytes depend on GOMAXPROCS")
	}
	if len(got[0]) != 2*1100*1024 {
		t.Fatalf("%d bytes, want %d", len(got[0]), 2*1100*1024)
	}

	// The first chunk is the tensor's original single stream.
	index := uint64(0)
	for i, ws := range cfg.WeightShapes() {
		if ws.Name == name {
			index = uint64(i)
		}
	}
	seed := uint64(7)
	rng := splitmix{state: seed*0x9E3779B97F4A7C15 + index*0xD1B54A32D192ED03 + 1}
	a := float32(0.02 * math.Sqrt(3))
	first := make([]float32, synthChunk)
	for i := range first {
		first[i] = a * rng.uniform()
	}
	if !bytes.Equal(got[0][:2*synthChunk], tensor.Encode(tensor.F16, first)) {
		t.Fatal("the first chunk is not the tensor's original stream")
	}
	// And the second chunk is another stream, not a repeat of the first.
	l2 := 2 * (1100*1024 - synthChunk) // bytes of the second chunk
	if bytes.Equal(got[0][2*synthChunk:2*synthChunk+l2], got[0][:l2]) {
		t.Fatal("the second chunk repeats the first")
	}
}
