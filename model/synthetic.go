package model

import (
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/llamacu/llamacu/tensor"
)

// Synthetic returns a TensorSource of seeded random weights for cfg, stored as dtype (norm vectors
// are always F32): the real architecture with meaningless weights, for tests, benchmarks and the
// built-in default model. Matrices are uniform with the standard deviation of HF's initialiser
// (0.02), norms are ones scaled by a little noise, so activations stay in a realistic range.
// The same (cfg, seed, dtype) always yields the same bytes.
func Synthetic(cfg Config, seed uint64, dtype tensor.DType) TensorSource {
	shapes := make(map[string][]int)
	index := make(map[string]uint64)
	for i, ws := range cfg.WeightShapes() {
		shapes[ws.Name] = ws.Shape
		index[ws.Name] = uint64(i)
	}
	return func(name string) (*tensor.Tensor, error) {
		shape, ok := shapes[name]
		if !ok {
			return nil, fmt.Errorf("model: synthetic: no tensor %q", name)
		}
		n := 1
		for _, s := range shape {
			n *= s
		}
		// Each tensor has its own streams, so a tensor's values do not depend on request order.
		base := seed*0x9E3779B97F4A7C15 + index[name]*0xD1B54A32D192ED03 + 1
		if len(shape) == 1 {
			vals := make([]float32, n)
			rng := splitmix{state: base}
			for i := range vals {
				vals[i] = 1 + 0.1*rng.uniform()
			}
			return &tensor.Tensor{Name: name, DType: tensor.F32, Shape: shape, Data: tensor.Encode(tensor.F32, vals)}, nil
		}
		if bs := dtype.BlockSize(); shape[len(shape)-1]%bs != 0 {
			return nil, fmt.Errorf("model: synthetic %q: rows of %d are not whole %v blocks of %d", name, shape[len(shape)-1], dtype, bs)
		}
		size, err := dtype.Bytes(int64(n))
		if err != nil {
			return nil, fmt.Errorf("model: synthetic %q: %w", name, err)
		}
		data := make([]byte, size)
		chunkBytes, _ := dtype.Bytes(synthChunk) // synthChunk is whole blocks of every dtype
		const std = 0.02
		a := float32(std * math.Sqrt(3)) // uniform(−a, a) has standard deviation std
		parallelChunks(n, func(c, lo, hi int, vals []float32) {
			rng := splitmix{state: base + uint64(c)*0x632BE59BD9B4E019}
			for i := range vals[:hi-lo] {
				vals[i] = a * rng.uniform()
			}
			copy(data[int64(c)*chunkBytes:], tensor.Encode(dtype, vals[:hi-lo]))
		})
		return &tensor.Tensor{Name: name, DType: dtype, Shape: shape, Data: data}, nil
	}
}

// synthChunk is the values one random stream fills: a 7B model is 6.7·10⁹ values, about a
// minute on one core, so chunks are made on every core. Chunk c's stream depends only on c, so
// the bytes do not depend on the core count; chunk 0's is the tensor's first stream, so tensors
// of at most synthChunk values are what they always were.
const synthChunk = 1 << 20

// parallelChunks calls f for every synthChunk-sized chunk [lo, hi) of n values on GOMAXPROCS
// goroutines, each with its own scratch of synthChunk floats.
func parallelChunks(n int, f func(c, lo, hi int, scratch []float32)) {
	chunks := (n + synthChunk - 1) / synthChunk
	workers := min(runtime.GOMAXPROCS(0), chunks)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			scratch := make([]float32, min(n, synthChunk))
			for c := int(next.Add(1) - 1); c < chunks; c = int(next.Add(1) - 1) {
				lo := c * synthChunk
				f(c, lo, min(n, lo+synthChunk), scratch)
			}
		}()
	}
	wg.Wait()
}

// splitmix is SplitMix64: tiny, fast, and good enough for weights.
type splitmix struct{ state uint64 }

func (s *splitmix) next() uint64 {
	s.state += 0x9E3779B97F4A7C15
	z := s.state
	z = (z ^ z>>30) * 0xBF58476D1CE4E5B9
	z = (z ^ z>>27) * 0x94D049BB133111EB
	return z ^ z>>31
}

// uniform returns a float32 in [−1, 1).
func (s *splitmix) uniform() float32 {
	return float32(s.next()>>40)/(1<<23) - 1
}
