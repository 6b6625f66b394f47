package cpu

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// KVCache is the CPU paged KV cache: K and V each (Layers, NumBlocks, BlockSize, KVHeads, HeadDim)
// float32 — or float16 with Options.KVF16, half the memory and half the bytes attention reads,
// each value rounded to F16 as it is stored (as the GPU's cache and llama.cpp's default) — plus
// per-worker attention-score scratch for the longest context the pool can hold.
type KVCache struct {
	l        model.KVLayout
	k, v     []float32   // (Layers, NumBlocks, BlockSize, KVHeads, HeadDim); nil with F16
	k16, v16 []byte      // the same, F16 little-endian, 2 bytes an element; nil with F32
	scores   [][]float32 // (workers, NumBlocks·BlockSize)
}

// Layout returns the geometry.
func (c *KVCache) Layout() model.KVLayout { return c.l }

// K and V expose the storage, (Layers, NumBlocks, BlockSize, KVHeads, HeadDim), for tests (nil
// for an F16 cache).
func (c *KVCache) K() []float32 { return c.k }

// V is K's twin.
func (c *KVCache) V() []float32 { return c.v }

// NewKVCache allocates zeroed K and V storage for the layout.
func (b *Backend) NewKVCache(l model.KVLayout) (model.KVCache, error) {
	if l.Layers <= 0 || l.KVHeads <= 0 || l.HeadDim <= 0 || l.BlockSize <= 0 || l.NumBlocks <= 0 {
		return nil, fmt.Errorf("%w: kv layout %+v", ErrBadShape, l)
	}
	n := int64(l.Layers) * int64(l.NumBlocks) * int64(l.BlockSize) * int64(l.KVHeads) * int64(l.HeadDim)
	if n > math.MaxInt/8 || int64(l.NumBlocks)*int64(l.BlockSize) > math.MaxInt32 {
		return nil, fmt.Errorf("%w: kv layout %+v is too large", ErrBadShape, l)
	}
	c := &KVCache{l: l}
	if b.opts.KVF16 {
		c.k16, c.v16 = make([]byte, 2*n), make([]byte, 2*n)
	} else {
		c.k, c.v = make([]float32, n), make([]float32, n)
	}
	c.scores = make([][]float32, b.pool.size)
	for i := range c.scores {
		c.scores[i] = make([]float32, l.NumBlocks*l.BlockSize)
	}
	return c, nil
}

// KVElementBytes is 4 (float32 K and V), or 2 with Options.KVF16 (model.KVSizer).
func (b *Backend) KVElementBytes() int {
	if b.opts.KVF16 {
		return 2
	}
	return 4
}

func kvc(c model.KVCache) *KVCache {
	cc, ok := c.(*KVCache)
	if !ok {
		panic(fmt.Sprintf("cpu: kv cache of type %T is not from the cpu backend", c))
	}
	return cc
}

// slot returns the offset in K or V of (layer, sequence s at position p), checking the block table.
func (c *KVCache) slot(layer int, bt *model.Batch, s, p int32) int {
	l := c.l
	if s < 0 || int(s) >= len(bt.BlockTables) {
		panic(fmt.Sprintf("cpu: sequence slot %d outside %d block tables", s, len(bt.BlockTables)))
	}
	tab := bt.BlockTables[s]
	if p < 0 || int(p)/l.BlockSize >= len(tab) {
		panic(fmt.Sprintf("cpu: position %d of sequence %d beyond its %d blocks of %d", p, s, len(tab), l.BlockSize))
	}
	blk := tab[int(p)/l.BlockSize]
	if blk < 0 || int(blk) >= l.NumBlocks {
		panic(fmt.Sprintf("cpu: block %d outside a pool of %d", blk, l.NumBlocks))
	}
	return (((layer*l.NumBlocks+int(blk))*l.BlockSize + int(p)%l.BlockSize) * l.KVHeads) * l.HeadDim
}

// checkBatch panics on a malformed batch for an op whose buffers hold B rows.
func checkBatch(op string, c *KVCache, layer int, bt *model.Batch, bufs ...*Buffer) {
	B := bt.Len()
	if len(bt.Pos) != B || len(bt.Seq) != B {
		panic(fmt.Sprintf("cpu: %s: batch of %d tokens with %d positions and %d sequence slots", op, B, len(bt.Pos), len(bt.Seq)))
	}
	if layer < 0 || layer >= c.l.Layers {
		panic(fmt.Sprintf("cpu: %s: layer %d of %d", op, layer, c.l.Layers))
	}
	checkRows(op, B, bufs...)
}

// StoreKV writes row i of k and v (B, kv_heads·head_dim) into layer's cache at the slot of
// (b.Seq[i], b.Pos[i]).
func (b *Backend) StoreKV(c model.KVCache, layer int, k, v model.Buffer, bt *model.Batch) {
	cc, kb, vb := kvc(c), buf(k), buf(v)
	checkBatch("StoreKV", cc, layer, bt, kb, vb)
	kvDim := cc.l.KVHeads * cc.l.HeadDim
	if kb.cols != kvDim || vb.cols != kvDim {
		panic(fmt.Sprintf("cpu: StoreKV: k (%d, %d), v (%d, %d) into kv_heads·head_dim %d", bt.Len(), kb.cols, bt.Len(), vb.cols, kvDim))
	}
	for i := range bt.Tokens {
		off := cc.slot(layer, bt, bt.Seq[i], bt.Pos[i])
		if cc.k16 != nil {
			putF16(cc.k16[2*off:2*(off+kvDim)], kb.row(i))
			putF16(cc.v16[2*off:2*(off+kvDim)], vb.row(i))
			continue
		}
		copy(cc.k[off:off+kvDim], kb.row(i))
		copy(cc.v[off:off+kvDim], vb.row(i))
	}
}

// putF16 stores src rounded to F16 (to nearest, ties to even) in dst, 2 bytes each.
func putF16(dst []byte, src []float32) {
	for j, f := range src {
		binary.LittleEndian.PutUint16(dst[2*j:], tensor.F32ToF16(f))
	}
}

// Attention is causal grouped-query attention over the paged cache (see model.Backend). Work is
// split over (token, query head) pairs. The arithmetic is llama2.c's: scores q·k/sqrtf(head_dim)
// in float32, softmax with the max subtracted, then out = Σ_t a[t]·V[t] accumulated in order.
func (b *Backend) Attention(out, q model.Buffer, c model.KVCache, layer int, bt *model.Batch) {
	cc, ob, qb := kvc(c), buf(out), buf(q)
	checkBatch("Attention", cc, layer, bt, ob, qb)
	hd := cc.l.HeadDim
	if qb.cols != ob.cols || qb.cols%hd != 0 || (qb.cols/hd)%cc.l.KVHeads != 0 || ob == qb {
		panic(fmt.Sprintf("cpu: Attention: out (%d, %d), q (%d, %d) with %d kv heads of %d (out must not be q)", bt.Len(), ob.cols, bt.Len(), qb.cols, cc.l.KVHeads, hd))
	}
	heads := qb.cols / hd
	for i := range bt.Tokens { // validate every block read up front: the workers must not panic
		p := bt.Pos[i]
		cc.slot(layer, bt, bt.Seq[i], p)
		if int(p) >= len(cc.scores[0]) {
			panic(fmt.Sprintf("cpu: Attention: position %d beyond the cache's %d slots", p, len(cc.scores[0])))
		}
		for _, blk := range bt.BlockTables[bt.Seq[i]][:int(p)/cc.l.BlockSize+1] {
			if blk < 0 || int(blk) >= cc.l.NumBlocks {
				panic(fmt.Sprintf("cpu: Attention: sequence %d uses block %d outside a pool of %d", bt.Seq[i], blk, cc.l.NumBlocks))
			}
		}
	}
	t := &b.attn
	t.c, t.out, t.q, t.bt, t.layer, t.heads = cc, ob, qb, bt, layer, heads
	pairs := bt.Len() * heads
	grain := pairs
	work := 0
	for _, p := range bt.Pos {
		work += int(p) + 1
	}
	if work*heads*hd >= 1<<14 {
		grain = max(1, pairs/(16*b.pool.size))
	}
	b.pool.parallel(t, pairs, grain)
	t.c, t.out, t.q, t.bt = nil, nil, nil, nil
}

// attentionTask computes (token, head) pairs, items [lo, hi) counted from the last pair
// (pair = pairs−1−item, pair = token·heads + head): in a causal prefill the late tokens cost the
// most, and handing them out first evens out the workers' shares.
type attentionTask struct {
	c      *KVCache
	out, q *Buffer
	bt     *model.Batch
	layer  int
	heads  int
}

func (t *attentionTask) run(w, lo, hi int) {
	c, l := t.c, t.c.l
	hd, kvDim := l.HeadDim, l.KVHeads*l.HeadDim
	group := t.heads / l.KVHeads
	scale := float32(math.Sqrt(float64(hd)))
	last := t.bt.Len()*t.heads - 1
	for item := lo; item < hi; item++ {
		pair := last - item
		i, h := pair/t.heads, pair%t.heads
		g := h / group
		s, p := t.bt.Seq[i], int(t.bt.Pos[i])
		tab := t.bt.BlockTables[s]
		qh := t.q.row(i)[h*hd : (h+1)*hd]
		oh := t.out.row(i)[h*hd : (h+1)*hd]
		att := c.scores[w][:p+1]
		maxv := float32(math.Inf(-1))
		for tt := 0; tt <= p; tt++ {
			off := ((t.layer*l.NumBlocks+int(tab[tt/l.BlockSize]))*l.BlockSize+tt%l.BlockSize)*kvDim + g*hd
			var sc float32
			if c.k16 != nil {
				sc = dotF16(c.k16[2*off:2*(off+hd)], qh) / scale
			} else {
				sc = dotF32(qh, c.k[off:off+hd]) / scale
			}
			att[tt] = sc
			maxv = max(maxv, sc)
		}
		var sum float32
		for tt, v := range att {
			e := float32(math.Exp(float64(v - maxv)))
			att[tt] = e
			sum += e
		}
		for tt := range att {
			att[tt] /= sum
		}
		clear(oh)
		for tt, a := range att {
			off := ((t.layer*l.NumBlocks+int(tab[tt/l.BlockSize]))*l.BlockSize+tt%l.BlockSize)*kvDim + g*hd
			if c.v16 != nil {
				axpyF16(oh, a, c.v16[2*off:2*(off+hd)])
			} else {
				axpy(oh, a, c.v[off:off+hd])
			}
		}
	}
}

// axpyF16Go is axpyGo for x in F16.
func axpyF16Go(y []float32, a float32, x []byte) {
	x = x[:2*len(y)]
	for k := range y {
		y[k] += float32(a * tensor.F16ToF32(binary.LittleEndian.Uint16(x[2*k:])))
	}
}

// axpyGo: y += a·x, each product rounded before the add (as llama2.c compiles, without FMA).
func axpyGo(y []float32, a float32, x []float32) {
	x = x[:len(y)]
	for k := range y {
		y[k] += float32(a * x[k]) // the conversion forbids fusing into an FMA
	}
}
