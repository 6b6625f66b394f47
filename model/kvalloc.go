package model

import (
	"errors"
	"fmt"
	"sync"
)

// ErrNoBlocks is returned when the KV cache has no free block left.
var ErrNoBlocks = errors.New("KV cache is full")

// BlockAllocator hands out the blocks of a paged KV cache to sequences. It is host-side
// bookkeeping shared by every backend; safe for concurrent use.
type BlockAllocator struct {
	mu        sync.Mutex
	blockSize int
	free      []int32 // stack of free block ids
	total     int
}

// NewBlockAllocator manages numBlocks blocks of blockSize tokens.
func NewBlockAllocator(numBlocks, blockSize int) *BlockAllocator {
	a := &BlockAllocator{blockSize: blockSize, total: numBlocks, free: make([]int32, numBlocks)}
	for i := range a.free {
		a.free[i] = int32(numBlocks - 1 - i) // pop order 0, 1, 2, …
	}
	return a
}

// BlockSize is the tokens per block.
func (a *BlockAllocator) BlockSize() int { return a.blockSize }

// InUse is the number of blocks held by sequences.
func (a *BlockAllocator) InUse() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.total - len(a.free)
}

// Total is the number of blocks in the pool.
func (a *BlockAllocator) Total() int { return a.total }

// Grow extends table so that it covers positions [0, n): it appends blocks until
// len(table)·BlockSize ≥ n and returns the new table. On ErrNoBlocks the table is returned
// unchanged and no block is taken.
func (a *BlockAllocator) Grow(table []int32, n int) ([]int32, error) {
	need := (n+a.blockSize-1)/a.blockSize - len(table)
	if need <= 0 {
		return table, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if need > len(a.free) {
		return table, fmt.Errorf("%w: %d more blocks needed, %d free of %d", ErrNoBlocks, need, len(a.free), a.total)
	}
	for i := 0; i < need; i++ {
		table = append(table, a.free[len(a.free)-1])
		a.free = a.free[:len(a.free)-1]
	}
	return table, nil
}

// Release returns every block of table to the pool and returns table[:0].
func (a *BlockAllocator) Release(table []int32) []int32 {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.free = append(a.free, table...)
	return table[:0]
}
