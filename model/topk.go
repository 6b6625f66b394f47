package model

import (
	"fmt"

	"github.com/llamacu/llamacu/sample"
)

// topBufs are a State's host buffers for ForwardTopK, sized for MaxLogits rows of
// sample.MaxTopK candidates at the first call, so that no step allocates.
type topBufs struct {
	vals []float32 // (R, k) this rank's candidates, then the result
	ids  []int32   // (R, k)
	part []float32 // (2, R, k) vocabulary split: this rank's values, then its global ids
	all  []float32 // (TP, 2, R, k) every rank's part
	cv   []float32 // (TP·k) one row's candidates from every rank
	cid  []int32   // (TP·k)
}

// maxTopKVocab bounds the vocabulary of a split LM head under ForwardTopK: the all-gather
// carries ids as float32, exact below 2^24.
const maxTopKVocab = 1 << 24

// topK returns the k best logits of each of the r rows of s.logits: on the device when the
// backend is a TopKer, else from the whole rows on the host. With a vocabulary-split LM head
// each rank takes the best min(k, outRows) of its slice, and the candidates of all ranks (with
// global ids) are all-gathered and merged: TP·k candidates per row cross between ranks instead
// of the vocabulary.
func (m *Model) topK(s *State, r, k int) (stepOut, error) {
	c, be := m.local, m.Backend
	t := &s.top
	size := 1
	if m.outRows != c.Vocab {
		size = m.comm.Size()
	}
	if t.vals == nil {
		n := s.MaxLogits * sample.MaxTopK
		t.vals, t.ids = make([]float32, n), make([]int32, n)
		if size > 1 {
			t.part, t.all = make([]float32, 2*n), make([]float32, size*2*n)
			t.cv, t.cid = make([]float32, size*sample.MaxTopK), make([]int32, size*sample.MaxTopK)
		}
	}
	kk := min(k, m.outRows)
	lv, li := t.vals[:r*kk], t.ids[:r*kk]
	if tk, ok := be.(TopKer); ok {
		if err := tk.TopK(lv, li, s.logits, r, kk); err != nil {
			return stepOut{}, fmt.Errorf("model: forward: top-%d: %w", kk, err)
		}
	} else {
		rows := s.host[:r*m.outRows]
		if err := be.Read(rows, s.logits, r); err != nil {
			return stepOut{}, fmt.Errorf("model: forward: %w", err)
		}
		for i := range r {
			sample.TopK(lv[i*kk:(i+1)*kk], li[i*kk:(i+1)*kk], rows[i*m.outRows:(i+1)*m.outRows], kk)
		}
	}
	if size == 1 {
		return stepOut{vals: lv, ids: li}, nil
	}
	if c.Vocab > maxTopKVocab {
		return stepOut{}, fmt.Errorf("%w: top-k over a vocabulary of %d split across ranks (at most %d)", ErrBatch, c.Vocab, maxTopKVocab)
	}
	// Vocabulary split: rank q holds ids [q·outRows, (q+1)·outRows).
	part := t.part[:2*r*kk]
	copy(part, lv)
	off := m.comm.Rank() * m.outRows
	for i, id := range li {
		part[r*kk+i] = float32(int(id) + off)
	}
	all := t.all[:size*len(part)]
	if err := m.comm.AllGather(all, part); err != nil {
		return stepOut{}, fmt.Errorf("model: forward: %w", err)
	}
	vals, ids := t.vals[:r*k], t.ids[:r*k] // lv and li are no longer needed
	cv, cid := t.cv[:size*kk], t.cid[:size*kk]
	for i := range r {
		for q := range size {
			from := all[q*len(part):]
			copy(cv[q*kk:(q+1)*kk], from[i*kk:(i+1)*kk])
			for j := range kk {
				cid[q*kk+j] = int32(from[r*kk+i*kk+j])
			}
		}
		sample.MergeTopK(vals[i*k:(i+1)*k], ids[i*k:(i+1)*k], cv, cid, k)
	}
	return stepOut{vals: vals, ids: ids}, nil
}
