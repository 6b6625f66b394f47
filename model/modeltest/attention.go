package modeltest

import (
	"math"
	"testing"

	"github.com/llamacu/llamacu/model"
)

// seqSpec is one sequence of an attention case: cached tokens already in the KV cache from
// earlier steps, and fresh tokens in this step (fresh = 1: decode; cached = 0: prefill).
type seqSpec struct{ cached, fresh int }

type attnCase struct {
	name                    string
	heads, kvHeads, headDim int
	blockSize               int
	seqs                    []seqSpec
	qScale                  float64 // query magnitude: large values make peaked softmaxes
	large                   bool
}

func (h *harness) testAttention(t *testing.T) {
	cases := []attnCase{
		{name: "decode/1seq", heads: 4, kvHeads: 4, headDim: 8, blockSize: 4, seqs: []seqSpec{{9, 1}}, qScale: 1},
		{name: "decode/first-token", heads: 2, kvHeads: 1, headDim: 4, blockSize: 4, seqs: []seqSpec{{0, 1}}, qScale: 1},
		{name: "prefill/gqa2", heads: 4, kvHeads: 2, headDim: 16, blockSize: 8, seqs: []seqSpec{{0, 20}}, qScale: 1},
		{name: "chunked-prefill/gqa2", heads: 8, kvHeads: 4, headDim: 32, blockSize: 4, seqs: []seqSpec{{13, 9}}, qScale: 1},
		{name: "block-size-1", heads: 2, kvHeads: 2, headDim: 6, blockSize: 1, seqs: []seqSpec{{5, 3}, {0, 2}}, qScale: 1},
		{name: "mixed/gqa8", heads: 8, kvHeads: 1, headDim: 64, blockSize: 16, seqs: []seqSpec{{0, 17}, {40, 1}, {5, 3}, {100, 1}}, qScale: 1},
		{name: "decode/4seqs/gqa1", heads: 8, kvHeads: 8, headDim: 8, blockSize: 16, seqs: []seqSpec{{3, 1}, {31, 1}, {32, 1}, {64, 1}}, qScale: 1},
		{name: "stories260K", heads: 8, kvHeads: 4, headDim: 8, blockSize: 16, seqs: []seqSpec{{0, 5}, {70, 1}}, qScale: 1},
		{name: "peaked-softmax", heads: 4, kvHeads: 2, headDim: 128, blockSize: 16, seqs: []seqSpec{{300, 2}, {1000, 1}}, qScale: 8},
		// Prefill at the LLaMA head_dim: tiles of up to 64 rows, key tiles of 64 crossed, a run
		// after a cached prefix (the tensor-core kernel's shapes on a GPU with an fp16 cache).
		{name: "prefill/hd128", heads: 2, kvHeads: 2, headDim: 128, blockSize: 16, seqs: []seqSpec{{0, 70}, {33, 40}}, qScale: 1},
		{name: "prefill/hd64/gqa4/peaked", heads: 8, kvHeads: 2, headDim: 64, blockSize: 8, seqs: []seqSpec{{100, 30}}, qScale: 4},
		{name: "llama7b/decode-4096", heads: 32, kvHeads: 32, headDim: 128, blockSize: 16, seqs: []seqSpec{{4095, 1}, {0, 64}}, qScale: 1, large: true},
		{name: "llama70b/mixed-gqa8", heads: 64, kvHeads: 8, headDim: 128, blockSize: 16, seqs: []seqSpec{{3000, 1}, {100, 16}, {2047, 1}}, qScale: 1, large: true},
	}
	for _, c := range cases {
		if c.large && !h.o.Large {
			continue
		}
		t.Run(c.name, func(t *testing.T) { h.attention(t, c) })
	}
}

// attention runs one case: the layout has 2 layers and the case runs on layer 1 (layer 0 holds
// other values in the same slots); the sequences sit in scattered, shuffled blocks, in sequence
// slots 1, 3, 5, … (even slots are unused); spare blocks hold garbage. The step's tokens are the
// sequences' fresh tokens interleaved round-robin.
func (h *harness) attention(t *testing.T, c attnCase) {
	r := rng("attention/" + c.name)
	const layers, layer = 2, 1
	kvDim := c.kvHeads * c.headDim
	qDim := c.heads * c.headDim
	bs := c.blockSize

	// Block tables: a shuffled pool with two spare blocks.
	need := 0
	for _, s := range c.seqs {
		need += (s.cached + s.fresh + bs - 1) / bs
	}
	numBlocks := need + 2
	perm := r.Perm(numBlocks)
	tables := make([][]int32, 2*len(c.seqs)+1)
	next := 0
	for si, s := range c.seqs {
		nb := (s.cached + s.fresh + bs - 1) / bs
		for range nb {
			tables[2*si+1] = append(tables[2*si+1], int32(perm[next]))
			next++
		}
	}
	spare := []int32{int32(perm[next]), int32(perm[next+1])}
	tables[0] = spare // slot 0: the garbage sequence

	cache, err := h.be.NewKVCache(model.KVLayout{Layers: layers, KVHeads: c.kvHeads, HeadDim: c.headDim, BlockSize: bs, NumBlocks: numBlocks})
	if err != nil {
		t.Fatalf("NewKVCache: %v", err)
	}

	// The true K and V of every sequence, position by position.
	kv := make([][2][]float32, len(c.seqs)) // [seq] {K, V}: (cached+fresh, kvDim)
	for si, s := range c.seqs {
		n := s.cached + s.fresh
		kv[si] = [2][]float32{normal(r, n*kvDim, 1), normal(r, n*kvDim, 1)}
	}

	// store writes the rows of batch b (pos/seq given) with per-row K and V.
	store := func(layer int, b *model.Batch, ks, vs []float32) {
		n := b.Len()
		kb := h.input(t, n, kvDim, ks)
		vb := h.input(t, n, kvDim, vs)
		h.be.StoreKV(cache, layer, kb, vb, b)
	}
	batchOf := func(seqSlot []int32, pos []int32) *model.Batch {
		return &model.Batch{Tokens: make([]int32, len(pos)), Pos: pos, Seq: seqSlot, BlockTables: tables}
	}

	// Garbage in the spare blocks (both layers), and in layer 0 at every slot the case uses.
	{
		var seq, pos []int32
		for p := 0; p < 2*bs; p++ {
			seq, pos = append(seq, 0), append(pos, int32(p))
		}
		for l := 0; l < layers; l++ {
			store(l, batchOf(seq, pos), normal(r, len(pos)*kvDim, 30), normal(r, len(pos)*kvDim, 30))
		}
	}
	for si, s := range c.seqs {
		var seq, pos []int32
		for p := 0; p < s.cached+s.fresh; p++ {
			seq, pos = append(seq, int32(2*si+1)), append(pos, int32(p))
		}
		store(0, batchOf(seq, pos), normal(r, len(pos)*kvDim, 30), normal(r, len(pos)*kvDim, 30))
	}
	// Earlier steps: the cached prefix of each sequence, on the tested layer, in one batch.
	{
		var seq, pos []int32
		var ks, vs []float32
		for si, s := range c.seqs {
			for p := 0; p < s.cached; p++ {
				seq, pos = append(seq, int32(2*si+1)), append(pos, int32(p))
				ks = append(ks, kv[si][0][p*kvDim:(p+1)*kvDim]...)
				vs = append(vs, kv[si][1][p*kvDim:(p+1)*kvDim]...)
			}
		}
		if len(pos) > 0 {
			store(layer, batchOf(seq, pos), ks, vs)
		}
	}

	// This step: fresh tokens, interleaved round-robin across sequences.
	var seq, pos []int32
	var owner []int // index into c.seqs
	var ks, vs []float32
	for k := 0; ; k++ {
		added := false
		for si, s := range c.seqs {
			if k < s.fresh {
				p := s.cached + k
				seq, pos, owner = append(seq, int32(2*si+1)), append(pos, int32(p)), append(owner, si)
				ks = append(ks, kv[si][0][p*kvDim:(p+1)*kvDim]...)
				vs = append(vs, kv[si][1][p*kvDim:(p+1)*kvDim]...)
				added = true
			}
		}
		if !added {
			break
		}
	}
	B := len(pos)
	step := batchOf(seq, pos)
	store(layer, step, ks, vs)
	qs := normal(r, B*qDim, c.qScale)
	q := h.input(t, B+1, qDim, qs)
	out := h.input(t, B+1, qDim, nil)
	h.be.Attention(out, q, cache, layer, step)

	want, mag := attentionRef(qs, kv, owner, pos, c.heads, c.kvHeads, c.headDim)
	h.compare(t, "Attention", h.read(t, out, B), want, mag, nil)
	h.checkUntouched(t, "Attention", out, B)
	h.compare(t, "Attention input q (must be unchanged)", h.read(t, q, B), f64s(qs), nil, nil)
}

// attentionRef is the slow twin: for each token i and head h, softmax over t ≤ pos[i] of
// q·K[t]/sqrt(hd), then Σ a[t]·V[t], in float64. mag is max_t |V[t]| per output element.
func attentionRef(qs []float32, kv [][2][]float32, owner []int, pos []int32, heads, kvHeads, hd int) (want, mag []float64) {
	qDim, kvDim := heads*hd, kvHeads*hd
	want = make([]float64, len(pos)*qDim)
	mag = make([]float64, len(pos)*qDim)
	for i, p := range pos {
		K, V := kv[owner[i]][0], kv[owner[i]][1]
		for hh := 0; hh < heads; hh++ {
			g := hh / (heads / kvHeads)
			q := qs[i*qDim+hh*hd : i*qDim+(hh+1)*hd]
			sc := make([]float64, p+1)
			mx := math.Inf(-1)
			for tt := range sc {
				k := K[tt*kvDim+g*hd : tt*kvDim+(g+1)*hd]
				s := 0.0
				for d := range q {
					s += float64(q[d]) * float64(k[d])
				}
				sc[tt] = s / math.Sqrt(float64(hd))
				mx = max(mx, sc[tt])
			}
			sum := 0.0
			for tt := range sc {
				sc[tt] = math.Exp(sc[tt] - mx)
				sum += sc[tt]
			}
			o := want[i*qDim+hh*hd : i*qDim+(hh+1)*hd]
			m := mag[i*qDim+hh*hd : i*qDim+(hh+1)*hd]
			for tt := range sc {
				a := sc[tt] / sum
				v := V[tt*kvDim+g*hd : tt*kvDim+(g+1)*hd]
				for d := range o {
					o[d] += a * float64(v[d])
					m[d] = max(m[d], math.Abs(float64(v[d])))
				}
			}
		}
	}
	return want, mag
}
