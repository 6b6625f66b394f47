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
	g := newSynth(cfg, seed, dtype)
	return func(name string) (*tensor.Tensor, error) {
		shape, ok := g.shapes[name]
		if !ok {
			return nil, fmt.Errorf("model: synthetic: no tensor %q", name)
		}
		if len(shape) == 1 {
			return g.region(name, 0, 1, 0, shape[0])
		}
		return g.region(name, 0, shape[0], 0, shape[1])
	}
}

// SyntheticShard is ShardSource(cfg, Synthetic(cfg, seed, dtype), r, n), byte for byte, but makes
// only rank r's values (each value of Synthetic can be computed on its own): 1/n of the work for
// the sharded matrices, which is what lets one GPU build one rank of a 70B model in seconds.
func SyntheticShard(cfg Config, seed uint64, dtype tensor.DType, r, n int) TensorSource {
	g := newSynth(cfg, seed, dtype)
	return func(name string) (*tensor.Tensor, error) {
		srcName, kind := shardKind(cfg, name, n)
		shape, ok := g.shapes[srcName]
		if !ok {
			return nil, fmt.Errorf("model: synthetic: no tensor %q", name)
		}
		if len(shape) == 1 {
			return g.region(srcName, 0, 1, 0, shape[0])
		}
		rows, cols := shape[0], shape[1]
		var t *tensor.Tensor
		var err error
		switch kind {
		case shardRows:
			if rows%n != 0 {
				return nil, fmt.Errorf("model: shard %q: %d rows do not split %d ways", name, rows, n)
			}
			t, err = g.region(srcName, r*rows/n, (r+1)*rows/n, 0, cols)
		case shardCols:
			if cols%n != 0 {
				return nil, fmt.Errorf("model: shard %q: %d columns do not split %d ways", name, cols, n)
			}
			c0, c1 := r*cols/n, (r+1)*cols/n
			if !SplitWidens(dtype, cols, n) {
				t, err = g.region(srcName, 0, rows, c0, c1)
				break
			}
			// As sliceCols: widen the rank's columns, made from the whole blocks around them.
			bs := dtype.BlockSize()
			a0, a1 := c0/bs*bs, (c1+bs-1)/bs*bs
			if t, err = g.region(srcName, 0, rows, a0, a1); err == nil {
				t, err = widenCols(t, name, c0-a0, c1-a0)
			}
		default:
			t, err = g.region(srcName, 0, rows, 0, cols)
		}
		if t != nil && kind != shardWhole {
			t.Name = name // as ShardSource's slices are named
		}
		return t, err
	}
}

// synth makes the values of Synthetic. Matrix values come from streams of synthChunk values
// each (chunk c of a tensor's flattened values is SplitMix64 from base + c·K), and SplitMix64's
// k-th output is a function of its state base + k·γ alone, so any value can be made directly.
type synth struct {
	shapes map[string][]int
	index  map[string]uint64
	seed   uint64
	dtype  tensor.DType
}

func newSynth(cfg Config, seed uint64, dtype tensor.DType) *synth {
	g := &synth{shapes: map[string][]int{}, index: map[string]uint64{}, seed: seed, dtype: dtype}
	for i, ws := range cfg.WeightShapes() {
		g.shapes[ws.Name] = ws.Shape
		g.index[ws.Name] = uint64(i)
	}
	return g
}

// region makes rows [r0, r1) and columns [c0, c1) of tensor name (a vector: r0, r1 = 0, 1).
func (g *synth) region(name string, r0, r1, c0, c1 int) (*tensor.Tensor, error) {
	shape := g.shapes[name]
	// Each tensor has its own streams, so a tensor's values do not depend on request order.
	base := g.seed*0x9E3779B97F4A7C15 + g.index[name]*0xD1B54A32D192ED03 + 1
	if len(shape) == 1 {
		vals := make([]float32, shape[0])
		rng := splitmix{state: base}
		for i := range vals {
			vals[i] = 1 + 0.1*rng.uniform()
		}
		return &tensor.Tensor{Name: name, DType: tensor.F32, Shape: shape, Data: tensor.Encode(tensor.F32, vals)}, nil
	}
	dtype, cols := g.dtype, shape[1]
	if bs := dtype.BlockSize(); cols%bs != 0 || c0%bs != 0 || c1%bs != 0 {
		return nil, fmt.Errorf("model: synthetic %q: rows of %d are not whole %v blocks of %d", name, cols, dtype, bs)
	}
	rows, w := r1-r0, c1-c0
	rowBytes, err := dtype.Bytes(int64(w))
	if err != nil {
		return nil, fmt.Errorf("model: synthetic %q: %w", name, err)
	}
	if _, err := dtype.Bytes(int64(rows) * int64(w)); err != nil {
		return nil, fmt.Errorf("model: synthetic %q: %w", name, err)
	}
	data := make([]byte, int64(rows)*rowBytes)
	const std = 0.02
	a := float32(std * math.Sqrt(3)) // uniform(−a, a) has standard deviation std
	parallelRanges(rows, w, func(lo, hi int, vals []float32) {
		for r := lo; r < hi; r++ {
			start := int64(r0+r)*int64(cols) + int64(c0)
			for j := range vals {
				i := start + int64(j)
				c, k := uint64(i/synthChunk), uint64(i%synthChunk)
				rng := splitmix{state: base + c*0x632BE59BD9B4E019 + k*0x9E3779B97F4A7C15}
				vals[j] = a * rng.uniform()
			}
			tensor.EncodeTo(data[int64(r)*rowBytes:], dtype, vals)
		}
	})
	return &tensor.Tensor{Name: name, DType: dtype, Shape: []int{rows, w}, Data: data}, nil
}

// synthChunk is the values one random stream fills (a 7B model is 6.7·10⁹ values, about a
// minute on one core, so they are made on every core). Chunk c's stream depends only on c, so
// the bytes do not depend on the core count; chunk 0's is the tensor's first stream, so tensors
// of at most synthChunk values are what they always were.
const synthChunk = 1 << 20

// parallelRanges splits [0, rows) into ranges of about synthChunk values (rows of w values) and
// calls f on GOMAXPROCS goroutines, each with its own scratch of w floats.
func parallelRanges(rows, w int, f func(lo, hi int, scratch []float32)) {
	per := max(1, synthChunk/max(w, 1))
	ranges := (rows + per - 1) / per
	workers := min(runtime.GOMAXPROCS(0), ranges)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			scratch := make([]float32, w)
			for c := int(next.Add(1) - 1); c < ranges; c = int(next.Add(1) - 1) {
				f(c*per, min(rows, (c+1)*per), scratch)
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
