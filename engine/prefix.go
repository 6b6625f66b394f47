package engine

import (
	"container/list"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"

	"github.com/llamacu/llamacu/model"
)

// blockPool hands the scheduler's sequences their KV blocks and, unless disabled, keeps full
// blocks whose contents are known for later requests that start with the same tokens: vLLM's
// automatic prefix caching. A multi-turn chat resends the whole conversation every turn, and
// its prefix — the system prompt and the earlier turns — is then read from the cache instead
// of being prefilled again.
//
// A block is cached once all its positions are written. Its identity is its parent (the cached
// block before it, nil for the first) and its tokens: the K and V of a block depend on every
// token before it and on nothing else, so two sequences whose first n·BlockSize tokens agree
// can share those n blocks. Shared blocks are full and never written again (a sequence writes
// only at positions after its cached prefix), so no copy-on-write is needed.
//
// A cached block that no sequence holds is idle: it keeps its contents and is evicted, least
// recently released first, only when a new sequence needs its memory. Safe for concurrent
// use (Stats reads it from other goroutines; everything else runs on the scheduler's loop).
type blockPool struct {
	mu    sync.Mutex
	alloc *model.BlockAllocator
	bs    int
	on    bool
	seed  maphash.Seed
	index map[uint64][]*cachedBlock // by chain hash (collisions: several entries)
	byID  map[int32]*cachedBlock
	idle  list.List // of *cachedBlock, refs == 0, least recently released first
}

// cachedBlock is one full block in the cache.
type cachedBlock struct {
	id     int32
	hash   uint64 // chain hash: parent's hash and this block's tokens
	parent *cachedBlock
	tokens []int32
	refs   int           // sequences holding it
	elem   *list.Element // in idle while refs == 0
}

// chain is a sequence's position in the cache: its blocks up to `blocks` are registered, the
// last of them being `last`.
type chain struct {
	blocks int
	last   *cachedBlock
}

func newBlockPool(numBlocks, blockSize int, cache bool) *blockPool {
	return &blockPool{
		alloc: model.NewBlockAllocator(numBlocks, blockSize), bs: blockSize, on: cache,
		seed: maphash.MakeSeed(), index: map[uint64][]*cachedBlock{}, byID: map[int32]*cachedBlock{},
	}
}

func (p *blockPool) hash(parent *cachedBlock, tokens []int32) uint64 {
	var h maphash.Hash
	h.SetSeed(p.seed)
	var b [8]byte
	if parent != nil {
		binary.LittleEndian.PutUint64(b[:], parent.hash)
		h.Write(b[:])
	}
	for _, t := range tokens {
		binary.LittleEndian.PutUint32(b[:4], uint32(t))
		h.Write(b[:4])
	}
	return h.Sum64()
}

// find is the cached block after parent holding tokens, or nil.
func (p *blockPool) find(parent *cachedBlock, tokens []int32, hash uint64) *cachedBlock {
	for _, c := range p.index[hash] {
		if c.parent == parent && slices.Equal(c.tokens, tokens) {
			return c
		}
	}
	return nil
}

// acquire returns a block table covering n positions for a sequence whose prompt is ids: its
// longest cached prefix of whole blocks (never the last prompt token, whose logits the step
// must compute), then fresh blocks, evicting idle cached blocks when the free ones run short.
// cached is how many prompt positions the table's cached blocks already hold. read false skips
// the lookup (the prompt must be computed in full). It fails with ErrNoBlocks, taking nothing,
// unless spare more blocks would still be free or evictable afterwards.
func (p *blockPool) acquire(ids []int32, n int, read bool, spare int) (table []int32, cached int, c chain, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.on && read {
		for j := 0; (j+1)*p.bs <= len(ids)-1; j++ {
			toks := ids[j*p.bs : (j+1)*p.bs]
			b := p.find(c.last, toks, p.hash(c.last, toks))
			if b == nil {
				break
			}
			p.hold(b)
			table = append(table, b.id)
			c.blocks, c.last = j+1, b
		}
	}
	need := (n+p.bs-1)/p.bs - len(table)
	if free := p.alloc.Total() - p.alloc.InUse(); free+p.idle.Len() < need+spare {
		p.releaseLocked(table)
		return nil, 0, chain{}, fmt.Errorf("%w: %d blocks needed and %d kept spare, %d free or idle", model.ErrNoBlocks, need, spare, free+p.idle.Len())
	}
	if table, err = p.growLocked(table, n); err != nil {
		p.releaseLocked(table)
		return nil, 0, chain{}, err
	}
	return table, c.blocks * p.bs, c, nil
}

// grow extends a sequence's table to cover n positions, evicting idle cached blocks when the
// free ones run short. On ErrNoBlocks the table is unchanged and nothing is evicted.
func (p *blockPool) grow(table []int32, n int) ([]int32, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.growLocked(table, n)
}

func (p *blockPool) growLocked(table []int32, n int) ([]int32, error) {
	need := (n+p.bs-1)/p.bs - len(table)
	if free := p.alloc.Total() - p.alloc.InUse(); free < need && free+p.idle.Len() >= need {
		for range need - free { // evict only what this sequence needs, and only if it then fits
			p.evict(p.idle.Front().Value.(*cachedBlock))
		}
	}
	return p.alloc.Grow(table, n)
}

func (p *blockPool) hold(b *cachedBlock) {
	if b.refs == 0 {
		p.idle.Remove(b.elem)
		b.elem = nil
	}
	b.refs++
}

// evict forgets an idle cached block and frees its memory. Cached blocks after it become
// unreachable (lookups pass through their parent) and leave in their turn.
func (p *blockPool) evict(b *cachedBlock) {
	p.idle.Remove(b.elem)
	b.elem = nil
	delete(p.byID, b.id)
	bucket := p.index[b.hash]
	if i := slices.Index(bucket, b); i >= 0 {
		bucket = slices.Delete(bucket, i, i+1)
	}
	if len(bucket) == 0 {
		delete(p.index, b.hash)
	} else {
		p.index[b.hash] = bucket
	}
	p.alloc.Release([]int32{b.id})
}

// register caches the blocks of table that written positions fill completely, tokens being the
// sequence's tokens by position. A block whose contents another block already caches stays
// private to the sequence (the chain goes on through the cached twin).
func (p *blockPool) register(c *chain, table, tokens []int32, written int) {
	if !p.on || (c.blocks+1)*p.bs > written {
		return // most steps fill no block
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for ; (c.blocks+1)*p.bs <= written; c.blocks++ {
		toks := tokens[c.blocks*p.bs : (c.blocks+1)*p.bs]
		h := p.hash(c.last, toks)
		if twin := p.find(c.last, toks, h); twin != nil {
			c.last = twin
			continue
		}
		b := &cachedBlock{id: table[c.blocks], hash: h, parent: c.last, tokens: slices.Clone(toks), refs: 1}
		p.index[h] = append(p.index[h], b)
		p.byID[b.id] = b
		c.last = b
	}
}

// release gives back a sequence's blocks: cached ones become idle when no one holds them, the
// others return to the free list.
func (p *blockPool) release(table []int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.releaseLocked(table)
}

func (p *blockPool) releaseLocked(table []int32) {
	// Last block first: a sequence's tail goes idle (and is evicted) before its head, which
	// more prompts share, and no cached block outlives its parent for long.
	for _, id := range slices.Backward(table) {
		b := p.byID[id]
		if b == nil {
			p.alloc.Release([]int32{id})
			continue
		}
		if b.refs--; b.refs == 0 {
			b.elem = p.idle.PushBack(b)
		}
	}
}

// inUse is the blocks sequences hold; idle the cached blocks none holds.
func (p *blockPool) inUse() (inUse, idle int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.alloc.InUse() - p.idle.Len(), p.idle.Len()
}
