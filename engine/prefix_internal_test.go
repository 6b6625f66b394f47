package engine

import (
	"errors"
	"slices"
	"testing"

	"github.com/llamacu/llamacu/model"
)

func seq(n int, from int32) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = from + int32(i)
	}
	return out
}

// The pool's contract, block by block: a prompt reads the whole cached blocks of its longest
// registered prefix (never the block holding its last token), a block matches only after the
// same parent, released cached blocks stay until their memory is needed (least recently
// released evicted first), and a twin (the same contents registered twice) stays private.
func TestBlockPool(t *testing.T) {
	p := newBlockPool(8, 4, true)
	a := seq(10, 100) // 2 full blocks + 2 tokens

	// Nothing cached yet: three fresh blocks for 10 positions.
	tabA, cached, chA, err := p.acquire(a, 10, true, 0)
	if err != nil || cached != 0 || len(tabA) != 3 {
		t.Fatalf("first acquire: table %v, cached %d, err %v", tabA, cached, err)
	}
	p.register(&chA, tabA, a, 10) // all written: blocks 0 and 1 are full, block 2 is not
	if chA.blocks != 2 {
		t.Fatalf("registered %d blocks, want 2", chA.blocks)
	}

	// The same prompt reads both full blocks while A still holds them (shared, not copied).
	tabB, cached, _, err := p.acquire(a, 12, true, 0)
	if err != nil || cached != 8 || !slices.Equal(tabB[:2], tabA[:2]) || len(tabB) != 3 {
		t.Fatalf("shared acquire: table %v (A %v), cached %d, err %v", tabB, tabA, cached, err)
	}
	// A prompt of exactly 8 tokens reads one block: its last token must be computed.
	tabC, cached, _, _ := p.acquire(a[:8], 8, true, 0)
	if cached != 4 || tabC[0] != tabA[0] {
		t.Fatalf("8-token prompt: cached %d, table %v", cached, tabC)
	}
	// The second block's tokens after a different first block do not match.
	other := append(seq(4, 500), a[4:]...)
	tabD, cached, _, _ := p.acquire(other, 10, true, 0)
	if cached != 0 {
		t.Fatalf("different parent: cached %d, table %v", cached, tabD)
	}
	for _, tab := range [][]int32{tabB, tabC, tabD} {
		p.release(tab)
	}
	if inUse, idle := p.inUse(); inUse != 3 || idle != 0 {
		t.Fatalf("with A running: %d in use, %d idle; want 3, 0", inUse, idle)
	}
	p.release(tabA)
	if inUse, idle := p.inUse(); inUse != 0 || idle != 2 {
		t.Fatalf("after A: %d in use, %d idle; want 0, 2", inUse, idle)
	}

	// A twin: two sequences admitted before either registered write the same block; the
	// second one's copy stays private and is freed at release.
	b := seq(5, 900)
	t1, _, c1, _ := p.acquire(b, 5, true, 0)
	t2, _, c2, _ := p.acquire(b, 5, true, 0)
	p.register(&c1, t1, b, 5)
	p.register(&c2, t2, b, 5)
	if c2.last != c1.last || p.byID[t2[0]] != nil {
		t.Fatalf("twin: chain %v vs %v, private block cached: %v", c2.last, c1.last, p.byID[t2[0]])
	}
	p.release(t1)
	p.release(t2)
	if inUse, idle := p.inUse(); inUse != 0 || idle != 3 {
		t.Fatalf("after the twins: %d in use, %d idle; want 0, 3", inUse, idle)
	}

	// Memory pressure: 8 blocks, 3 idle. A 28-position sequence needs 7: two idle blocks go,
	// least recently released first (A's two), and the twin's block survives.
	big := seq(28, 2000)
	tabE, _, _, err := p.acquire(big, 28, true, 0)
	if err != nil || len(tabE) != 7 {
		t.Fatalf("under pressure: table %v, err %v", tabE, err)
	}
	if inUse, idle := p.inUse(); inUse != 7 || idle != 1 {
		t.Fatalf("%d in use, %d idle; want 7, and the twin's block idle", inUse, idle)
	}
	// A's blocks are gone: A needs 3 blocks, 1 is free for eviction, so it fails with
	// ErrNoBlocks and evicts nothing.
	if _, _, _, err := p.acquire(a, 10, true, 0); !errors.Is(err, model.ErrNoBlocks) {
		t.Fatalf("full pool: err %v", err)
	}
	if inUse, idle := p.inUse(); inUse != 7 || idle != 1 {
		t.Fatalf("after a failed acquire: %d in use, %d idle; want 7, 1", inUse, idle)
	}
	p.release(tabE)
	if _, cached, _, _ := p.acquire(a, 10, true, 0); cached != 0 {
		t.Fatalf("A's blocks should have been evicted, read %d cached tokens", cached)
	}
	// The twin's block is still there for its prompt.
	if _, cached, _, err := p.acquire(b, 5, true, 0); cached != 4 || err != nil {
		t.Fatalf("twin's prompt: cached %d, err %v", cached, err)
	}
}

// With the cache off nothing is kept: a repeated prompt reads nothing.
func TestBlockPoolOff(t *testing.T) {
	p := newBlockPool(4, 4, false)
	a := seq(9, 1)
	tab, _, c, _ := p.acquire(a, 9, true, 0)
	p.register(&c, tab, a, 9)
	p.release(tab)
	if _, cached, _, _ := p.acquire(a, 9, true, 0); cached != 0 {
		t.Fatalf("cache off: read %d tokens", cached)
	}
	if inUse, idle := p.inUse(); inUse != 3 || idle != 0 {
		t.Fatalf("%d in use, %d idle", inUse, idle)
	}
}
