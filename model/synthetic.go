package model

import (
	"fmt"
	"math"

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
		// Each tensor has its own stream, so a tensor's values do not depend on request order.
		rng := splitmix{state: seed*0x9E3779B97F4A7C15 + index[name]*0xD1B54A32D192ED03 + 1}
		vals := make([]float32, n)
		if len(shape) == 1 {
			for i := range vals {
				vals[i] = 1 + 0.1*rng.uniform()
			}
			return &tensor.Tensor{Name: name, DType: tensor.F32, Shape: shape, Data: tensor.Encode(tensor.F32, vals)}, nil
		}
		if bs := dtype.BlockSize(); shape[len(shape)-1]%bs != 0 {
			return nil, fmt.Errorf("model: synthetic %q: rows of %d are not whole %v blocks of %d", name, shape[len(shape)-1], dtype, bs)
		}
		const std = 0.02
		a := float32(std * math.Sqrt(3)) // uniform(−a, a) has standard deviation std
		for i := range vals {
			vals[i] = a * rng.uniform()
		}
		return &tensor.Tensor{Name: name, DType: dtype, Shape: shape, Data: tensor.Encode(dtype, vals)}, nil
	}
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
