package model

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"

	"github.com/llamacu/llamacu/sample"
	"github.com/llamacu/llamacu/tp"
)

// Multi-node tensor parallelism, as vLLM and Megatron run it: one process per node, each running
// a contiguous block of the group's ranks. Node 0 (the leader, which holds rank 0) is the whole
// engine — scheduler, sampler, tokenizer — and its Model looks like any other: before running a
// step on its own ranks, Forward sends the step's inputs to the other nodes over a StepLink. The
// other nodes (followers) have no engine; Follow receives each step, runs it on their ranks —
// whose collectives meet node 0's — and loops until node 0 stops the group (its Model.Close).
//
// A step message carries everything Forward takes: the State it runs on (an id, with the
// State's sizes so that a follower makes its own the first time it sees the id), the batch's
// tokens, positions, sequence slots and the block tables of the slots it uses, and the logit
// rows; plus the ids of node 0's States the garbage collector has reclaimed since the last step,
// so that the followers drop theirs. The KV cache needs no other event: it is paged by the block
// tables each step brings, and every rank keeps the blocks of its own heads.
//
// Little-endian, counts before their lists:
//
//	run:  1 | nfree u32, id u64 ×nfree | id u64 | maxBatch, maxLogits, blockSize, numBlocks u32 |
//	      B u32, tokens i32 ×B | B u32, pos i32 ×B | B u32, seq i32 ×B |
//	      nslots u32, (len u32, block i32 ×len) ×nslots | R u32, rows i32 ×R
//	stop: 2

// StepLink carries forward steps from node 0 to the other nodes of a multi-node group
// (*tp.TCPNode implements it).
type StepLink interface {
	// Sync returns once every node has called it (after loading its weights), or fails naming
	// the ranks that did not in time.
	Sync() error
	// Send delivers msg, in order, to every other node (node 0 only); msg may be reused after.
	Send(msg []byte) error
	// Recv returns the next message node 0 sent (the other nodes); it blocks until one comes or
	// the link breaks.
	Recv() ([]byte, error)
	// Close leaves: node 0's Close makes the others' Recv fail once they have taken every
	// message sent before.
	Close() error
}

const (
	stepRun  byte = 1
	stepStop byte = 2
	// maxStepDim bounds the State sizes a step may ask a follower to allocate (a corrupted
	// message must not become a huge allocation).
	maxStepDim = 1 << 24
)

var stopStep = []byte{stepStop}

var errFollower = fmt.Errorf("%w: this node follows node 0's steps (Model.Follow); Forward runs on node 0", ErrBadConfig)

// NewParallelNode builds this process's ranks of a tensor-parallel group that spans several
// processes (nodes): rank comms[i].Rank() = comms[0].Rank()+i on backends[i], reading only its
// shards from src, in a group of comms[0].Size() ranks. link reaches the other nodes; once the
// ranks are loaded NewParallelNode waits (link.Sync) until every node has loaded its own.
//
// On node 0 (comms[0].Rank() == 0) the returned Model is used like any other: Forward sends each
// step to the other nodes, then runs it; Close stops them. On the other nodes call Follow.
func NewParallelNode(backends []Backend, cfg Config, src TensorSource, comms []tp.Comm, link StepLink, progress func(done, total int64)) (*Model, error) {
	n := len(backends)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if n == 0 || len(comms) != n || link == nil {
		return nil, fmt.Errorf("%w: %d backends and %d communicators (and a link to the other nodes: %t)", ErrBadConfig, n, len(comms), link != nil)
	}
	first, size := comms[0].Rank(), comms[0].Size()
	for i, c := range comms {
		if c.Rank() != first+i || c.Size() != size {
			return nil, fmt.Errorf("%w: communicator %d is rank %d of %d, want %d of %d", ErrBadConfig, i, c.Rank(), c.Size(), first+i, size)
		}
	}
	if first+n > size {
		return nil, fmt.Errorf("%w: ranks %d..%d of a group of %d", ErrBadConfig, first, first+n-1, size)
	}
	if err := cfg.CheckTP(size); err != nil {
		return nil, err
	}
	ranks := make([]*Model, n)
	for i := range ranks {
		var p func(done, total int64)
		if i == 0 {
			p = progress
		}
		m, err := newRank(backends[i], cfg, size, ShardSource(cfg, src, first+i, size), comms[i], p)
		if err != nil {
			return nil, fmt.Errorf("model: rank %d of %d: %w", first+i, size, err)
		}
		ranks[i] = m
	}
	g := startGroup(ranks, comms)
	g.link, g.leader = link, first == 0
	ranks[0].group = g
	if err := link.Sync(); err != nil {
		g.close(false)
		return nil, fmt.Errorf("model: ranks %d..%d of %d: waiting for the other nodes to load: %w", first, first+n-1, size, err)
	}
	return ranks[0], nil
}

// track gives a new State of node 0 an id, and arranges for the other nodes to drop theirs once
// it is garbage.
func (g *tpGroup) track(s *State) {
	s.id = g.nextID.Add(1)
	runtime.AddCleanup(s, g.release, s.id)
}

func (g *tpGroup) release(id uint64) {
	g.freeMu.Lock()
	g.frees = append(g.frees, id)
	g.freeMu.Unlock()
}

// send sends step (s, b, rows, k) to the other nodes. Call with g.mu held, after checkBatch.
func (g *tpGroup) send(s *State, b *Batch, rows []int32, k int) error {
	m := append(g.msg[:0], stepRun)
	g.freeMu.Lock()
	m = binary.LittleEndian.AppendUint32(m, uint32(len(g.frees)))
	for _, id := range g.frees {
		m = binary.LittleEndian.AppendUint64(m, id)
	}
	g.frees = g.frees[:0]
	g.freeMu.Unlock()
	kv := s.KV.Layout()
	m = binary.LittleEndian.AppendUint64(m, s.id)
	for _, v := range []int{s.MaxBatch, s.MaxLogits, kv.BlockSize, kv.NumBlocks} {
		m = binary.LittleEndian.AppendUint32(m, uint32(v))
	}
	m = appendInt32s(m, b.Tokens)
	m = appendInt32s(m, b.Pos)
	m = appendInt32s(m, b.Seq)
	// Only the tables of the slots this step uses: a scheduler keeps one per slot it may run.
	if cap(g.used) < len(b.BlockTables) {
		g.used = make([]bool, len(b.BlockTables))
	}
	used := g.used[:len(b.BlockTables)]
	clear(used)
	for _, q := range b.Seq {
		used[q] = true
	}
	m = binary.LittleEndian.AppendUint32(m, uint32(len(b.BlockTables)))
	for q, t := range b.BlockTables {
		if !used[q] {
			t = nil
		}
		m = appendInt32s(m, t)
	}
	m = appendInt32s(m, rows)
	m = binary.LittleEndian.AppendUint32(m, uint32(k))
	g.msg = m
	return g.link.Send(m)
}

func appendInt32s(b []byte, v []int32) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, uint32(x))
	}
	return b
}

// step is a decoded step message; its slices are reused from one message to the next.
type step struct {
	stop                                    bool
	frees                                   []uint64
	id                                      uint64
	maxBatch, maxLogits, blockSize, nBlocks int
	batch                                   Batch
	rows                                    []int32
	topK                                    int // 0: logits; else ForwardTopK's k
}

// errStep reports a step message that does not decode.
var errStep = errors.New("model: malformed step message")

// stepReader decodes a step message; the first error sticks.
type stepReader struct {
	b   []byte
	err error
}

func (r *stepReader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", errStep, what)
	}
}

// take consumes the next n bytes, or fails (and empties the reader) when fewer are left.
func (r *stepReader) take(n int, what string) []byte {
	if len(r.b) < n {
		r.fail(what + ": truncated")
		r.b = nil
		return nil
	}
	b := r.b[:n]
	r.b = r.b[n:]
	return b
}

func (r *stepReader) u32(what string) uint32 {
	if b := r.take(4, what); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (r *stepReader) u64(what string) uint64 {
	if b := r.take(8, what); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

// dim reads a State size: 1..maxStepDim.
func (r *stepReader) dim(what string) int {
	v := r.u32(what)
	if v < 1 || v > maxStepDim {
		r.fail(fmt.Sprintf("%s %d", what, v))
	}
	return int(v)
}

// int32s reads a counted list into dst (reused), checking the count against what is left.
func (r *stepReader) int32s(dst []int32, what string) []int32 {
	n := r.u32(what)
	if uint64(n)*4 > uint64(len(r.b)) {
		r.fail(fmt.Sprintf("%s: %d entries in %d bytes", what, n, len(r.b)))
		r.b = nil
		return dst[:0]
	}
	dst = dst[:0]
	for i := range int(n) {
		dst = append(dst, int32(binary.LittleEndian.Uint32(r.b[4*i:])))
	}
	r.b = r.b[4*n:]
	return dst
}

// decodeStep decodes msg into st (reusing its slices). Errors wrap errStep; nothing panics.
func decodeStep(msg []byte, st *step) error {
	if len(msg) == 0 {
		return fmt.Errorf("%w: empty", errStep)
	}
	*st = step{frees: st.frees[:0], batch: Batch{Tokens: st.batch.Tokens[:0], Pos: st.batch.Pos[:0], Seq: st.batch.Seq[:0],
		BlockTables: st.batch.BlockTables[:0]}, rows: st.rows[:0]}
	switch msg[0] {
	case stepStop:
		if len(msg) != 1 {
			return fmt.Errorf("%w: stop with %d bytes more", errStep, len(msg)-1)
		}
		st.stop = true
		return nil
	case stepRun:
	default:
		return fmt.Errorf("%w: kind %d", errStep, msg[0])
	}
	r := &stepReader{b: msg[1:]}
	nf := r.u32("freed states")
	if uint64(nf)*8 > uint64(len(r.b)) {
		return fmt.Errorf("%w: %d freed states in %d bytes", errStep, nf, len(r.b))
	}
	for range nf {
		st.frees = append(st.frees, r.u64("freed state"))
	}
	st.id = r.u64("state id")
	st.maxBatch, st.maxLogits = r.dim("max batch"), r.dim("max logits")
	st.blockSize, st.nBlocks = r.dim("block size"), r.dim("blocks")
	b := &st.batch
	b.Tokens = r.int32s(b.Tokens, "tokens")
	b.Pos = r.int32s(b.Pos, "positions")
	b.Seq = r.int32s(b.Seq, "sequence slots")
	ns := r.u32("block tables")
	if uint64(ns)*4 > uint64(len(r.b)) {
		return fmt.Errorf("%w: %d block tables in %d bytes", errStep, ns, len(r.b))
	}
	tables := b.BlockTables[:cap(b.BlockTables)]
	for q := range int(ns) {
		if q == len(tables) {
			tables = append(tables, nil)
		}
		tables[q] = r.int32s(tables[q], "block table")
	}
	b.BlockTables = tables[:ns]
	st.rows = r.int32s(st.rows, "logit rows")
	if k := r.u32("top k"); k > sample.MaxTopK {
		r.fail(fmt.Sprintf("top k %d", k))
	} else {
		st.topK = int(k)
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail(fmt.Sprintf("%d bytes past the end", len(r.b)))
	}
	return r.err
}

// Follow runs, on a node other than 0 of a multi-node group (NewParallelNode), every forward
// step node 0 runs, on this node's ranks, in the order node 0 sends them. It returns nil when
// node 0 stops the group (Model.Close there), and an error when node 0 goes away or breaks the
// group, a step fails, or ctx is done (then it closes the link).
func (m *Model) Follow(ctx context.Context) error {
	g := m.group
	if g == nil || g.link == nil || g.leader {
		return fmt.Errorf("%w: Follow is for the nodes other than 0 of a multi-node group", ErrBadConfig)
	}
	first := m.comm.Rank()
	where := fmt.Sprintf("model: ranks %d..%d of %d", first, first+len(g.workers), m.comm.Size())
	stop := context.AfterFunc(ctx, func() { g.link.Close() })
	defer stop()
	var st step
	states := map[uint64]*State{}
	for steps := 0; ; steps++ {
		msg, err := g.link.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%s: waiting for node 0's step %d: %w", where, steps+1, err)
		}
		if err := decodeStep(msg, &st); err != nil {
			g.abort()
			return fmt.Errorf("%s: step %d from node 0: %w", where, steps+1, err)
		}
		if st.stop {
			return nil
		}
		for _, id := range st.frees {
			delete(states, id)
		}
		s := states[st.id]
		if s == nil {
			if s, err = m.NewState(st.maxBatch, st.maxLogits, st.blockSize, st.nBlocks); err != nil {
				g.abort()
				return fmt.Errorf("%s: step %d: %w", where, steps+1, err)
			}
			states[st.id] = s
		} else if kv := s.KV.Layout(); s.MaxBatch != st.maxBatch || s.MaxLogits != st.maxLogits || kv.BlockSize != st.blockSize || kv.NumBlocks != st.nBlocks {
			g.abort()
			return fmt.Errorf("%s: step %d: %w: state %d changed its sizes", where, steps+1, errStep, st.id)
		}
		if err := m.checkBatch(s, &st.batch, st.rows); err != nil {
			g.abort()
			return fmt.Errorf("%s: step %d from node 0: %w", where, steps+1, err)
		}
		if _, err := g.forward(m, s, &st.batch, stepReq{rows: st.rows, k: st.topK}); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%s: step %d: %w", where, steps+1, err)
		}
	}
}
