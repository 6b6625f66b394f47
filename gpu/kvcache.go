//go:build cuda || cudaemu

package gpu

import (
	"fmt"
	"math"
	"slices"

	"github.com/llamacu/llamacu/cuda"
	"github.com/llamacu/llamacu/model"
)

// KVCache is the device paged KV cache: K and V each (Layers, NumBlocks, BlockSize, KVHeads,
// HeadDim), fp16 by default (Options.KVF32: fp32), the cpu reference's layout.
type KVCache struct {
	l    model.KVLayout
	f32  bool           // element type: fp32, else fp16
	k, v cuda.DevicePtr // (Layers, NumBlocks, BlockSize, KVHeads, HeadDim)
}

// Layout returns the geometry.
func (c *KVCache) Layout() model.KVLayout { return c.l }

// F32 reports whether the cache holds fp32 (else fp16) elements.
func (c *KVCache) F32() bool { return c.f32 }

// K and V are the device addresses of the two tensors.
func (c *KVCache) K() cuda.DevicePtr { return c.k }

// V is K's twin.
func (c *KVCache) V() cuda.DevicePtr { return c.v }

// NewKVCache allocates zeroed K and V storage for the layout.
// FreeMemory reports the device's free and total memory (model.MemoryReporter).
func (b *Backend) FreeMemory() (free, total int64, err error) { return b.ctx.MemInfo() }

// KVElementBytes is 2 (fp16 K and V), or 4 with Options.KVF32 (model.MemoryReporter).
func (b *Backend) KVElementBytes() int {
	if b.opts.KVF32 {
		return 4
	}
	return 2
}

var _ model.MemoryReporter = (*Backend)(nil)

func (b *Backend) NewKVCache(l model.KVLayout) (model.KVCache, error) {
	if l.Layers <= 0 || l.KVHeads <= 0 || l.HeadDim <= 0 || l.BlockSize <= 0 || l.NumBlocks <= 0 {
		return nil, fmt.Errorf("%w: kv layout %+v", ErrBadShape, l)
	}
	n := int64(l.Layers) * int64(l.NumBlocks) * int64(l.BlockSize) * int64(l.KVHeads) * int64(l.HeadDim)
	if n > math.MaxInt64/16 || int64(l.NumBlocks)*int64(l.BlockSize) > math.MaxInt32 || int64(l.KVHeads)*int64(l.HeadDim) > math.MaxInt32 {
		return nil, fmt.Errorf("%w: kv layout %+v is too large", ErrBadShape, l)
	}
	c := &KVCache{l: l, f32: b.opts.KVF32}
	bytes := n * 2
	if c.f32 {
		bytes = n * 4
	}
	var err error
	for _, p := range []*cuda.DevicePtr{&c.k, &c.v} {
		if *p, err = b.alloc(bytes); err != nil {
			return nil, fmt.Errorf("gpu: kv cache %+v (%d bytes each for K and V): %w", l, bytes, err)
		}
		if err = b.ctx.Memset(*p, bytes); err != nil {
			return nil, fmt.Errorf("gpu: kv cache: %w", err)
		}
	}
	return c, nil
}

func kvc(c model.KVCache) *KVCache {
	cc, ok := c.(*KVCache)
	if !ok {
		panic(fmt.Sprintf("gpu: kv cache of type %T is not from the gpu backend", c))
	}
	return cc
}

// batchMeta is a Batch packed for the kernels, as one int32 array on the device:
//
//	pos (B) | row_tab (B) | tables (T)
//
// where tables concatenates the block tables of the sequences the batch uses and row_tab[i] is
// the offset in tables of row i's sequence table.
type batchMeta struct {
	slab    intSlab
	host    []int32 // the packing being built
	seqOff  []int32 // (len(BlockTables)) offset of each used sequence's table, or −1
	B       int
	version uint64 // bumped whenever the uploaded contents change

	// What has been validated for (checkedVersion, checkedLayout): every block up to each
	// position (checkedAll, what Attention reads), or only the written slots (StoreKV).
	checkedVersion           uint64
	checkedLayout            model.KVLayout
	checkedAll, checkedSlots bool
}

// devBatch is the device view of a packed batch.
type devBatch struct {
	pos, rowTab, tables cuda.DevicePtr
	version             uint64
}

// prepareBatch validates bt for op on cache c (panicking on programmer errors, like the cpu
// backend), uploads its packing when it differs from the last one, and returns the device
// pointers. all asks for every block up to each row's position to be checked (attention reads
// them), not only the row's own slot.
func (b *Backend) prepareBatch(op string, c *KVCache, layer int, bt *model.Batch, all bool, bufs ...*Buffer) devBatch {
	B := bt.Len()
	if len(bt.Pos) != B || len(bt.Seq) != B {
		panic(fmt.Sprintf("gpu: %s: batch of %d tokens with %d positions and %d sequence slots", op, B, len(bt.Pos), len(bt.Seq)))
	}
	if layer < 0 || layer >= c.l.Layers {
		panic(fmt.Sprintf("gpu: %s: layer %d of %d", op, layer, c.l.Layers))
	}
	checkRows(op, B, bufs...)
	if B > 65535 {
		panic(fmt.Sprintf("gpu: %s: batch of %d tokens (at most 65535 per step)", op, B))
	}
	m := &b.batch
	m.host = append(m.host[:0], bt.Pos...)
	m.host = slices.Grow(m.host, B)[:2*B]
	if cap(m.seqOff) < len(bt.BlockTables) {
		m.seqOff = make([]int32, len(bt.BlockTables))
	}
	m.seqOff = m.seqOff[:len(bt.BlockTables)]
	for i := range m.seqOff {
		m.seqOff[i] = -1
	}
	for i, s := range bt.Seq {
		if s < 0 || int(s) >= len(bt.BlockTables) {
			panic(fmt.Sprintf("gpu: %s: sequence slot %d outside %d block tables", op, s, len(bt.BlockTables)))
		}
		if m.seqOff[s] < 0 {
			off := len(m.host) - 2*B
			if off > math.MaxInt32-len(bt.BlockTables[s]) {
				panic(fmt.Sprintf("gpu: %s: block tables too long", op))
			}
			m.seqOff[s] = int32(off)
			m.host = append(m.host, bt.BlockTables[s]...)
		}
		m.host[B+i] = m.seqOff[s]
	}
	changed := !(m.slab.valid && m.B == B && slices.Equal(m.slab.last, m.host))
	if changed {
		m.version++
	}
	if m.checkedVersion != m.version || m.checkedLayout != c.l {
		m.checkedVersion, m.checkedLayout = m.version, c.l
		m.checkedAll, m.checkedSlots = false, false
	}
	if (all && !m.checkedAll) || (!all && !m.checkedSlots && !m.checkedAll) {
		b.checkBatch(op, c, bt, all)
		if all {
			m.checkedAll = true
		} else {
			m.checkedSlots = true
		}
	}
	m.B = B
	base := b.upload(&m.slab, m.host)
	return devBatch{
		pos:     base,
		rowTab:  base + cuda.DevicePtr(4*B),
		tables:  base + cuda.DevicePtr(8*B),
		version: m.version,
	}
}

// checkBatch panics if a row's position has no block, or a block it uses is outside the pool.
func (b *Backend) checkBatch(op string, c *KVCache, bt *model.Batch, all bool) {
	l := c.l
	for i, p := range bt.Pos {
		s := bt.Seq[i]
		tab := bt.BlockTables[s]
		if p < 0 || int(p)/l.BlockSize >= len(tab) {
			panic(fmt.Sprintf("gpu: %s: position %d of sequence %d beyond its %d blocks of %d", op, p, s, len(tab), l.BlockSize))
		}
		if int64(p) >= int64(l.NumBlocks)*int64(l.BlockSize) {
			panic(fmt.Sprintf("gpu: %s: position %d beyond the cache's %d slots", op, p, l.NumBlocks*l.BlockSize))
		}
		first := int(p) / l.BlockSize
		if all {
			first = 0
		}
		for _, blk := range tab[first : int(p)/l.BlockSize+1] {
			if blk < 0 || int(blk) >= l.NumBlocks {
				panic(fmt.Sprintf("gpu: %s: sequence %d uses block %d outside a pool of %d", op, s, blk, l.NumBlocks))
			}
		}
	}
}

// StoreKV writes row i of k and v (B, kv_heads·head_dim) into layer's cache at the slot of
// (b.Seq[i], b.Pos[i]). kernels/kvcache.cu.
func (b *Backend) StoreKV(c model.KVCache, layer int, k, v model.Buffer, bt *model.Batch) {
	cc, kb, vb := kvc(c), buf(k), buf(v)
	kvDim := cc.l.KVHeads * cc.l.HeadDim
	if kb.cols != kvDim || vb.cols != kvDim {
		panic(fmt.Sprintf("gpu: StoreKV: k (%d, %d), v (%d, %d) into kv_heads·head_dim %d", bt.Len(), kb.cols, bt.Len(), vb.cols, kvDim))
	}
	d := b.prepareBatch("StoreKV", cc, layer, bt, false, kb, vb)
	if bt.Len() == 0 || !b.ok() {
		return
	}
	f := b.k.storeKVF16
	if cc.f32 {
		f = b.k.storeKVF32
	}
	l := cc.l
	b.launch(f, cuda.Dim3{X: bt.Len()}, cuda.Dim3{X: 128},
		cuda.Ptr(cc.k), cuda.Ptr(cc.v), cuda.Ptr(kb.ptr), cuda.Ptr(vb.ptr),
		cuda.Ptr(d.pos), cuda.Ptr(d.rowTab), cuda.Ptr(d.tables),
		i32(kvDim), i32(layer), i32(l.NumBlocks), i32(l.BlockSize))
}
