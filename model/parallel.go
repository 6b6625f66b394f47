package model

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/llamacu/llamacu/tp"
)

// Collective is implemented by backends that run tensor-parallel collectives on their own
// buffers (NCCL on the compute stream, so a CUDA graph captures it).
type Collective interface {
	// AllReduceSum replaces the first n rows of x on every rank by their sum over the ranks.
	AllReduceSum(x Buffer, n int, c tp.Comm) error
}

// HostBuffer is implemented by buffers that live in host memory (the CPU backend's): the
// in-process Comm then all-reduces them in place.
type HostBuffer interface {
	HostFloats() []float32 // (rows, cols) row-major
}

// allReduce sums x's first n rows across the TP group (nothing without one), telling the
// collective observer (rank 0 only) how long it took.
func (m *Model) allReduce(x Buffer, n int) error {
	if m.comm == nil || m.comm.Size() == 1 {
		return nil
	}
	if _, solo := m.comm.(*tp.Solo); solo {
		return nil // a rank timed alone: no collective, and none of the staging copies either
	}
	if m.group != nil && m.group.observe != nil {
		start := time.Now()
		err := m.allReduceRows(x, n)
		m.group.observe(time.Since(start), 4*n*x.Cols())
		return err
	}
	return m.allReduceRows(x, n)
}

func (m *Model) allReduceRows(x Buffer, n int) error {
	if c, ok := m.Backend.(Collective); ok {
		return c.AllReduceSum(x, n, m.comm)
	}
	if h, ok := x.(HostBuffer); ok {
		return m.comm.AllReduceSum(h.HostFloats()[:n*x.Cols()])
	}
	return fmt.Errorf("model: backend %s cannot all-reduce (neither Collective nor host buffers)", m.Backend.Name())
}

// tpGroup runs this process's ranks after the first of a tensor-parallel model (1..n−1 on one
// node), each on a goroutine of its own that lives as long as the model (a rank's backend may
// need a locked OS thread: the goroutine is it).
type tpGroup struct {
	workers []*Model
	steps   []chan tpStep
	done    chan error
	comms   []tp.Comm
	once    sync.Once
	observe func(d time.Duration, bytes int) // SetCollectiveObserver; nil: not timed

	// Several nodes (nodes.go): the link to the other nodes; leader is node 0, which sends
	// every step over it before running it.
	link   StepLink
	leader bool
	mu     sync.Mutex // one step at a time, so that the nodes run them in the order sent
	msg    []byte     // the step being sent (under mu)
	used   []bool     // by sequence slot: in the step being sent (under mu)
	nextID atomic.Uint64
	freeMu sync.Mutex
	frees  []uint64 // ids of the leader's States the garbage collector has reclaimed

	// The step watchdog: a step that has not finished after timeout aborts the group, so that a
	// rank or node that hangs (a GPU collective has no time-out of its own) ends in an error.
	timeout  time.Duration
	watchdog *time.Timer
	fired    atomic.Bool
}

// DefaultStepTimeout bounds one tensor-parallel forward step (SetStepTimeout changes it): far
// above any healthy step — a 256-token prefill chunk of 70B on CPUs takes under a minute — so
// that only a hang trips it.
const DefaultStepTimeout = 10 * time.Minute

// SetStepTimeout sets how long one tensor-parallel forward step may take before the group is
// aborted and the step fails naming the time-out (0: never). No-op without tensor parallelism.
func (m *Model) SetStepTimeout(d time.Duration) {
	if m.group != nil {
		m.group.timeout = d
	}
}

// SetCollectiveObserver makes rank 0 call f after each of its all-reduces (two per layer per
// step) with the wall time the call took and the bytes it reduced (4·rows·dim); nil removes it.
// Without an observer allReduce costs nothing more. The time is what the host waited: the whole
// exchange for host collectives (the CPU backend, the GPU's staged path), but only the enqueue
// for a backend that queues the collective on a device stream (NCCL), whose cost then shows in
// the step time instead. Set it before Forward, not during; without tensor parallelism it has
// no effect (there are no all-reduces).
func (m *Model) SetCollectiveObserver(f func(d time.Duration, bytes int)) {
	if m.group != nil {
		m.group.observe = f
	}
}

type tpStep struct {
	s   *State
	b   *Batch
	req stepReq // without hidden rows: only rank 0 reads them
}

// NewParallel builds an n-way tensor-parallel model, n = len(backends) = len(comms): rank r runs
// on backends[r] and talks through comms[r] (comms[r].Rank() == r). Every rank reads only its
// shards from src. Forward on the returned Model (rank 0) drives all ranks; Close stops them.
// With one backend it is New.
func NewParallel(backends []Backend, cfg Config, src TensorSource, comms []tp.Comm, progress func(done, total int64)) (*Model, error) {
	n := len(backends)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if n == 0 || len(comms) != n {
		return nil, fmt.Errorf("%w: %d backends and %d communicators", ErrBadConfig, n, len(comms))
	}
	if err := cfg.CheckTP(n); err != nil {
		return nil, err
	}
	for r, c := range comms {
		if c.Rank() != r || c.Size() != n {
			return nil, fmt.Errorf("%w: communicator %d is rank %d of %d", ErrBadConfig, r, c.Rank(), c.Size())
		}
	}
	ranks := make([]*Model, n)
	for r := range ranks {
		var p func(done, total int64)
		if r == 0 {
			p = progress
		}
		m, err := newRank(backends[r], cfg, n, ShardSource(cfg, src, r, n), comms[r], p)
		if err != nil {
			return nil, fmt.Errorf("model: rank %d of %d: %w", r, n, err)
		}
		ranks[r] = m
	}
	if n == 1 {
		return ranks[0], nil
	}
	ranks[0].group = startGroup(ranks, comms)
	return ranks[0], nil
}

// NewRank builds one rank of a tensor-parallel model on be: rank comm.Rank() of comm.Size(),
// its weights from shard (that rank's tensors: ShardSource of the whole model's source, or
// SyntheticShard), its collectives going through comm. With tp.Solo as comm it is one GPU's
// share of a group timed alone (llamacu bench --rank-of). NewParallel is the usual way to build
// a whole group.
func NewRank(be Backend, cfg Config, shard TensorSource, comm tp.Comm, progress func(done, total int64)) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := comm.Size()
	if err := cfg.CheckTP(n); err != nil {
		return nil, err
	}
	m, err := newRank(be, cfg, n, shard, comm, progress)
	if err != nil {
		return nil, fmt.Errorf("model: rank %d of %d: %w", comm.Rank(), n, err)
	}
	return m, nil
}

// startGroup starts the workers of ranks[1:].
func startGroup(ranks []*Model, comms []tp.Comm) *tpGroup {
	g := &tpGroup{workers: ranks[1:], done: make(chan error, len(ranks)), comms: comms, timeout: DefaultStepTimeout}
	g.watchdog = time.AfterFunc(time.Hour, func() { g.fired.Store(true); g.abort() })
	g.watchdog.Stop()
	for _, w := range g.workers {
		ch := make(chan tpStep)
		g.steps = append(g.steps, ch)
		go func() {
			for st := range ch {
				_, err := w.runRank(st.s, st.b, st.req)
				g.done <- err
			}
		}()
	}
	return g
}

// TP is the tensor-parallel degree (1 without tensor parallelism).
func (m *Model) TP() int {
	if m.comm == nil {
		return 1
	}
	return m.comm.Size()
}

// Backends lists every rank's backend, rank 0 first.
func (m *Model) Backends() []Backend {
	bs := []Backend{m.Backend}
	if m.group != nil {
		for _, w := range m.group.workers {
			bs = append(bs, w.Backend)
		}
	}
	return bs
}

// forward runs every rank's share of a step at once and returns rank 0's output.
func (g *tpGroup) forward(m *Model, s *State, b *Batch, req stepReq) (stepOut, error) {
	if len(s.ranks) != len(g.workers) {
		return stepOut{}, fmt.Errorf("%w: the State was not made by this tensor-parallel model", ErrBatch)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.timeout > 0 {
		g.watchdog.Reset(g.timeout)
	}
	if g.leader {
		if err := g.send(s, b, req.rows, req.k); err != nil {
			g.abort()
			return stepOut{}, fmt.Errorf("model: tensor-parallel step: sending it to the other nodes: %w", err)
		}
	}
	for i, ch := range g.steps {
		ch <- tpStep{s.ranks[i], b, stepReq{rows: req.rows, k: req.k}}
	}
	out, err := m.runRank(s, b, req)
	if err != nil {
		g.abort() // the other ranks may be waiting in a collective for this one
	}
	for range g.workers {
		if e := <-g.done; e != nil {
			g.abort()
			err = errors.Join(err, e)
		}
	}
	if !g.watchdog.Stop() && g.fired.Load() {
		err = errors.Join(fmt.Errorf("%w: no result after %v: the group was aborted (a rank or node hung)", tp.ErrTimeout, g.timeout), err)
	}
	if err != nil {
		return stepOut{}, fmt.Errorf("model: tensor-parallel step: %w", err)
	}
	return out, nil
}

// abort breaks the group's communicators (and its link to the other nodes) so that no rank
// waits forever; the model is unusable afterwards.
func (g *tpGroup) abort() {
	for _, c := range g.comms {
		c.Close()
	}
	if g.link != nil {
		g.link.Close()
	}
}

// Close stops the workers of a tensor-parallel model and closes its communicators. On node 0 of
// a multi-node group it first tells the other nodes to stop (their Follow returns nil), then
// closes the link. It does not close the backends (their owner does). Close is a no-op without
// tensor parallelism.
func (m *Model) Close() error {
	if m.group == nil {
		return nil
	}
	m.group.close(true)
	return nil
}

// close stops the group; stop says whether node 0 tells the other nodes to stop (else they see
// the group end and fail).
func (g *tpGroup) close(stop bool) {
	g.once.Do(func() {
		g.watchdog.Stop()
		if stop && g.leader {
			// Not under g.mu: a step stuck in a collective must not hold Close up (the link
			// keeps concurrent messages whole).
			_ = g.link.Send(stopStep)
		}
		for _, ch := range g.steps {
			close(ch)
		}
		g.abort()
	})
}
