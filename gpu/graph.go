//go:build cuda || cudaemu

package gpu

// CUDA graphs of forward steps (Options.Graphs).
//
// A decode step is ~12 launches per layer, and a step at batch size B and a given context bucket
// launches the same kernels with the same grids and arguments every time: only the int32
// metadata (tokens, positions, block tables) changes, and the kernels read it from device memory.
// Such a step can be captured once into a CUDA graph and replayed with one cuGraphLaunch, which
// removes the per-launch CPU cost and the gaps between kernels on the GPU.
//
// RunStep records instead of executing: every launch, every metadata upload (copied into a
// pinned arena, so that the copy is capturable and a replay reads this step's values) and every
// NCCL all-reduce is appended to a log. At the first operation that needs the results (Read,
// Argmax, a staged all-reduce, cuBLAS, a scratch or slab that must grow) or at the end of the
// step, the log is flushed:
//
//   - a cached graph with the very same log (kernels, grids, arguments, copy addresses and
//     sizes) is replayed;
//   - else, if the log equals the previous step's, it is captured (stream capture of the log's
//     own operations), cached (at most maxGraphs, least recently used evicted) and launched;
//   - else the log's operations are executed directly, as without graphs.
//
// The rest of the step after a flush runs directly. Replayed or not, a log computes exactly the
// same thing: the graph holds the same launches. What Options.Graphs changes is the plan: the
// decode attention plans for the context rounded up to graphCtxBucket tokens (more splits, some
// empty: the same attention, summed in another order), so that the log stays the same for that
// many steps.

import (
	"slices"

	"github.com/llamacu/llamacu/cuda"
)

const (
	maxGraphs       = 16
	graphCtxBucket  = 256 // tokens: decode attention plans for the context rounded up to this
	graphCopyBucket = 256 // int32s: recorded metadata copies are padded to a multiple of this
	arenaMin        = 64 << 10

	maxFailedCaptures = 3
)

// graphOp is one recorded operation.
type graphOp struct {
	// Kernel launch (f != nil): args are rec.args[a0:a1].
	f           *cuda.Function
	grid, block cuda.Dim3
	a0, a1      int
	// Host-to-device copy of src (a slice of the pinned arena) to dst.
	dst cuda.DevicePtr
	src []byte
	// In-place NCCL all-reduce of count floats at ptr.
	comm  *cuda.Comm
	ptr   cuda.DevicePtr
	count int
}

// recorder is the log of the step being recorded.
type recorder struct {
	on    bool
	ops   []graphOp
	args  []cuda.Arg
	arena *cuda.HostBuffer
	used  int
	grow  int // arena bytes wanted at the next step (a step ran out)
	// pending: a flushed log may still be reading the arena on the GPU (no synchronous Read or
	// Argmax since), so the next step must wait before overwriting it.
	pending bool

	prevOps  []graphOp // the previous flushed log, to capture a repeat
	prevArgs []cuda.Arg
	graphs   []*stepGraph
	tick     uint64
	stats    GraphStats
}

// stepGraph is a captured log.
type stepGraph struct {
	ops  []graphOp
	args []cuda.Arg
	g    *cuda.Graph
	used uint64
}

// GraphStats counts how the steps recorded under Options.Graphs ran.
type GraphStats struct {
	Captured int // logs captured into a new graph (and launched)
	Replayed int // logs that launched a cached graph
	Direct   int // logs executed launch by launch
	Failed   int // captures that failed (their logs ran directly)
}

// GraphStats reports the counts so far.
func (b *Backend) GraphStats() GraphStats { return b.rec.stats }

// startRecording begins a step's log. Every metadata slab is invalidated so that the first
// upload of each in the step is recorded (a replay must rewrite them all).
func (b *Backend) startRecording() {
	r := &b.rec
	need := max(arenaMin, r.grow)
	if r.arena == nil || len(r.arena.Bytes) < need {
		if r.arena != nil {
			r.arena.Free()
			r.arena = nil
		}
		h, err := b.ctx.AllocHost(int64(need))
		if err != nil {
			b.fail(err)
			return
		}
		r.arena = h
		// Cached graphs copy from the old arena's addresses: they can never match again.
		for _, g := range r.graphs {
			b.fail(g.g.Close())
		}
		r.graphs, r.prevOps = nil, r.prevOps[:0]
	}
	if r.pending { // the previous step's copies from the arena may still be queued
		b.fail(b.ctx.Stream().Synchronize())
		r.pending = false
	}
	for _, s := range []*intSlab{&b.tokens, &b.ropePos, &b.rows, &b.argRows, &b.batch.slab, &b.plan.slab} {
		s.valid = false
	}
	b.plan.valid = false
	r.on, r.ops, r.args, r.used = true, r.ops[:0], r.args[:0], 0
}

// recordLaunch appends a launch to the log.
func (b *Backend) recordLaunch(f *cuda.Function, grid, block cuda.Dim3, args []cuda.Arg) {
	r := &b.rec
	a0 := len(r.args)
	r.args = append(r.args, args...)
	r.ops = append(r.ops, graphOp{f: f, grid: grid, block: block, a0: a0, a1: len(r.args)})
}

// recordCopy appends an upload of vals, zero-padded to padded int32s, to dst through the arena;
// false when the arena is full (the caller flushes and copies directly).
func (b *Backend) recordCopy(dst cuda.DevicePtr, vals []int32, padded int) bool {
	r := &b.rec
	n := 4 * padded
	off := (r.used + 15) &^ 15
	if off+n > len(r.arena.Bytes) {
		r.grow = 2 * (off + n)
		return false
	}
	src := r.arena.Bytes[off : off+n : off+n]
	clear(src[copy(src, int32Bytes(vals)):])
	r.used = off + n
	r.ops = append(r.ops, graphOp{dst: dst, src: src})
	return true
}

// recordAllReduce appends an in-place NCCL all-reduce.
func (b *Backend) recordAllReduce(c *cuda.Comm, ptr cuda.DevicePtr, count int) {
	b.rec.ops = append(b.rec.ops, graphOp{comm: c, ptr: ptr, count: count})
}

// endRecording ends the step's recording; true when its log has operations to run (and the
// arena is then pending: they will copy from it).
func (b *Backend) endRecording() bool {
	r := &b.rec
	if !r.on {
		return false
	}
	r.on = false
	if len(r.ops) == 0 || !b.ok() {
		return false
	}
	r.pending = true
	return true
}

// flush ends the recording and runs the log (see the file comment).
func (b *Backend) flush() {
	if !b.endRecording() {
		return
	}
	r := &b.rec
	r.tick++
	for _, g := range r.graphs {
		if sameLog(g.ops, g.args, r.ops, r.args) {
			g.used = r.tick
			r.stats.Replayed++
			b.fail(g.g.Launch(nil))
			return
		}
	}
	// After a few failed captures (a driver or library that cannot capture this work) steps run
	// directly rather than trying again at every step.
	if r.stats.Failed < maxFailedCaptures && sameLog(r.prevOps, r.prevArgs, r.ops, r.args) {
		if g := b.capture(); g != nil {
			r.stats.Captured++
			b.fail(g.g.Launch(nil))
			return
		}
		r.stats.Failed++
	}
	r.stats.Direct++
	b.fail(b.runOps(r.ops, r.args))
	r.prevOps = append(r.prevOps[:0], r.ops...)
	r.prevArgs = append(r.prevArgs[:0], r.args...)
}

// flushDirect ends the recording and runs the log launch by launch, never as a graph: for the
// start of a step that cuBLAS interrupts (prefill). Replaying such a partial log crashed in
// cuGraphLaunch on an H200 (SIGSEGV in the driver: pp16 at depth 2048 after pp16 at depth 0,
// bench/results/gpu-h200-2026-11-28-run3/check.log), and it is a few small kernels before the
// GEMMs, nothing a graph saves much on.
func (b *Backend) flushDirect() {
	if !b.endRecording() {
		return
	}
	r := &b.rec
	r.stats.Direct++
	b.fail(b.runOps(r.ops, r.args))
	r.prevOps, r.prevArgs = r.prevOps[:0], r.prevArgs[:0]
}

// capture captures the current log into a cached graph, or returns nil (nothing ran).
func (b *Backend) capture() *stepGraph {
	r := &b.rec
	s := b.ctx.Stream()
	if s.BeginCapture() != nil {
		return nil
	}
	runErr := b.runOps(r.ops, r.args)
	g, err := s.EndCapture()
	if runErr != nil || err != nil {
		if g != nil {
			g.Close()
		}
		return nil
	}
	sg := &stepGraph{ops: slices.Clone(r.ops), args: slices.Clone(r.args), g: g, used: r.tick}
	if len(r.graphs) == maxGraphs {
		lru := 0
		for i, x := range r.graphs {
			if x.used < r.graphs[lru].used {
				lru = i
			}
		}
		b.fail(r.graphs[lru].g.Close())
		r.graphs = slices.Delete(r.graphs, lru, lru+1)
	}
	r.graphs = append(r.graphs, sg)
	return sg
}

// runOps issues the operations on the compute stream, returning the first error.
func (b *Backend) runOps(ops []graphOp, args []cuda.Arg) error {
	for _, op := range ops {
		var err error
		switch {
		case op.f != nil:
			err = b.launchNow(op.f, op.grid, op.block, args[op.a0:op.a1])
		case op.comm != nil:
			err = op.comm.AllReduce(op.ptr, op.ptr, op.count, cuda.TypeF32, nil)
		default:
			err = b.ctx.CopyHtoDAsync(op.dst, op.src, nil)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// sameLog reports whether two logs issue the same operations: kernels, grids, argument values,
// copy destinations, sources (arena addresses) and sizes, collectives.
func sameLog(aOps []graphOp, aArgs []cuda.Arg, bOps []graphOp, bArgs []cuda.Arg) bool {
	if len(aOps) != len(bOps) || len(aArgs) != len(bArgs) || len(aOps) == 0 {
		return false
	}
	for i := range aOps {
		x, y := &aOps[i], &bOps[i]
		if x.f != y.f || x.grid != y.grid || x.block != y.block || x.a0 != y.a0 || x.a1 != y.a1 ||
			x.dst != y.dst || len(x.src) != len(y.src) || x.comm != y.comm || x.ptr != y.ptr || x.count != y.count {
			return false
		}
		if len(x.src) > 0 && &x.src[0] != &y.src[0] {
			return false
		}
	}
	return slices.Equal(aArgs, bArgs)
}

// closeGraphs destroys the cached graphs and the arena.
func (b *Backend) closeGraphs() error {
	var err error
	for _, g := range b.rec.graphs {
		if e := g.g.Close(); err == nil {
			err = e
		}
	}
	b.rec.graphs = nil
	if b.rec.arena != nil {
		if e := b.rec.arena.Free(); err == nil {
			err = e
		}
		b.rec.arena = nil
	}
	return err
}
