package tp

import "fmt"

// Solo stands in for one rank of a group when that rank runs alone: its collectives move
// nothing. AllReduceSum leaves buf as it is; AllGather fills this rank's slot of dst and leaves
// the others. A model built on it (model.NewRank) does one GPU's share of every tensor-parallel
// step, without the communication, so that one GPU can time a rank of a group bigger than the
// machine (llamacu bench --rank-of). Its outputs are not the model's.
type Solo struct{ rank, size int }

// NewSolo returns rank of a size-rank stand-in group.
func NewSolo(rank, size int) (*Solo, error) {
	if size < 1 || rank < 0 || rank >= size {
		return nil, fmt.Errorf("%w: rank %d of %d", ErrDegree, rank, size)
	}
	return &Solo{rank: rank, size: size}, nil
}

func (s *Solo) Rank() int                    { return s.rank }
func (s *Solo) Size() int                    { return s.size }
func (s *Solo) AllReduceSum([]float32) error { return nil }
func (s *Solo) Barrier() error               { return nil }
func (s *Solo) Close() error                 { return nil }

// AllGather copies src into this rank's slot of dst.
func (s *Solo) AllGather(dst, src []float32) error {
	if len(dst) != s.size*len(src) {
		return fmt.Errorf("tp: all-gather of %d floats per rank into %d (%d ranks)", len(src), len(dst), s.size)
	}
	copy(dst[s.rank*len(src):], src)
	return nil
}
