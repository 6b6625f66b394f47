package model

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/llamacu/llamacu/tensor"
)

// Low-rank additions applied at run time (a LoRA adapter left unmerged, as llama.cpp applies
// one to a quantized model): beside a projection W (out, in) a pair A (r, in) and B (out, r),
// B carrying the adapter's scale, so that the step computes
//
//	y = W·x + B·(A·x)
//
// with two small MatMuls and an Add of the Backend's own: every backend has it, W stays as it
// is stored (Q4_K …), and the cost is 2·r·(in + out) per token and weight.

// lowRank is one projection's pair, resident on the backend.
type lowRank struct {
	a, b      Weight // (r, in), (out, r)
	rank, out int
}

// lowRankNames are the per-layer projections a low-rank pair may join.
var lowRankNames = []string{NameWq, NameWk, NameWv, NameWo, NameW1, NameW2, NameW3}

// AddLowRank attaches y += B·(A·x) to the projection named (a per-layer canonical name, e.g.
// LayerName(3, NameWv)); a second pair for the same projection is summed with the first. a is
// (r, in) and b (out, r), any dtype the backend takes (F32 is exact). Call it before NewState:
// states made earlier have no room for the pairs.
//
// Under tensor parallelism each of this process's ranks takes its shard, cut as the projection
// is: for one split by rows (Wq, Wk, Wv, W1, W3) the rows of B, A whole; for one split by
// columns (Wo, W2) the columns of A, B whole — its B·(A·x) is then a partial sum, which the
// all-reduce after the projection adds up with W's. (On a multi-node group every node adds the
// same pairs: each takes its own ranks' shards.)
func (m *Model) AddLowRank(name string, a, b *tensor.Tensor) error {
	l, base, ok := splitLayerName(name)
	if !ok || l >= len(m.layers) || !slices.Contains(lowRankNames, base) {
		return fmt.Errorf("%w: %q is not a layer projection a low-rank pair may join", ErrBadConfig, name)
	}
	var want []int
	for _, ws := range m.Config.WeightShapes() {
		if ws.Name == name {
			want = ws.Shape
		}
	}
	if len(a.Shape) != 2 || len(b.Shape) != 2 || a.Shape[0] != b.Shape[1] || a.Shape[0] < 1 || a.Shape[1] != want[1] || b.Shape[0] != want[0] {
		return fmt.Errorf("%w: %s: A %v and B %v do not make a %v addition", ErrBadConfig, name, a.Shape, b.Shape, want)
	}
	ranks := []*Model{m}
	if m.group != nil {
		ranks = append(ranks, m.group.workers...)
	}
	n := m.TP()
	_, kind := shardKind(m.Config, name, n)
	for _, rm := range ranks {
		r := 0
		if rm.comm != nil {
			r = rm.comm.Rank()
		}
		ra, rb := a, b
		var err error
		switch kind {
		case shardRows:
			rb, err = sliceRows(b, b.Name, r, n)
		case shardCols:
			ra, err = sliceCols(a, a.Name, r, n)
		}
		if err != nil {
			return err
		}
		if err := rm.addLowRankShard(l, base, ra, rb); err != nil {
			return err
		}
	}
	return nil
}

// addLowRankShard uploads one rank's pair and records it.
func (m *Model) addLowRankShard(l int, base string, a, b *tensor.Tensor) error {
	wa, err := m.Backend.Upload(a)
	if err != nil {
		return fmt.Errorf("model: upload %s: %w", a.Name, err)
	}
	wb, err := m.Backend.Upload(b)
	if err != nil {
		return fmt.Errorf("model: upload %s: %w", b.Name, err)
	}
	ly := &m.layers[l]
	if ly.lowRank == nil {
		ly.lowRank = map[string][]lowRank{}
	}
	ly.lowRank[base] = append(ly.lowRank[base], lowRank{a: wa, b: wb, rank: a.Shape[0], out: b.Shape[0]})
	if m.lowRankDims == nil {
		m.lowRankDims = map[int]bool{}
	}
	m.lowRankDims[-a.Shape[0]] = true // ranks as negative keys, outputs as positive ones
	m.lowRankDims[b.Shape[0]] = true
	return nil
}

// splitLayerName splits "layers.{l}.{base}".
func splitLayerName(name string) (l int, base string, ok bool) {
	rest, ok := strings.CutPrefix(name, "layers.")
	if !ok {
		return 0, "", false
	}
	num, base, ok := strings.Cut(rest, ".")
	if !ok {
		return 0, "", false
	}
	l, err := strconv.Atoi(num)
	if err != nil || l < 0 || strconv.Itoa(l) != num {
		return 0, "", false
	}
	return l, base, true
}

// lowRankBuffers allocates a State's scratch for the pairs: (B, r) for each rank and (B, out)
// for each output width.
func (m *Model) lowRankBuffers(s *State, be Backend) error {
	if len(m.lowRankDims) == 0 {
		return nil
	}
	s.lowRank = map[int]Buffer{}
	for k := range m.lowRankDims {
		b, err := be.NewBuffer(s.MaxBatch, max(k, -k))
		if err != nil {
			return fmt.Errorf("model: allocate low-rank scratch: %w", err)
		}
		s.lowRank[k] = b
	}
	return nil
}

// addLowRank is out += B·(A·x) for each pair joined to projection base of layer w. x (n, in),
// out (n, out).
func (m *Model) addLowRank(s *State, w *layer, base string, out, x Buffer, n int) error {
	for _, p := range w.lowRank[base] {
		r, o := s.lowRank[-p.rank], s.lowRank[p.out]
		if r == nil || o == nil {
			return fmt.Errorf("%w: the State was made before the low-rank pairs were added", ErrBatch)
		}
		m.Backend.MatMul(r, x, p.a, n) // (n, r)
		m.Backend.MatMul(o, r, p.b, n) // (n, out)
		m.Backend.Add(out, o, n)
	}
	return nil
}

// hasLowRank reports whether the layer has a low-rank pair on any of the named projections.
func (w *layer) hasLowRank(names ...string) bool {
	for _, name := range names {
		if len(w.lowRank[name]) > 0 {
			return true
		}
	}
	return false
}
