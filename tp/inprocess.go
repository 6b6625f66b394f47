package tp

import (
	"fmt"
	"sync"
	"time"
)

// group is the state the in-process ranks share. Collectives are rounds: every rank posts its
// slices, the last to arrive wakes the others, each rank reduces its own chunk of the result
// (reduce-scatter), a second rendezvous waits for all chunks, then everyone reads the result.
type group struct {
	n       int
	mu      sync.Mutex
	cond    *sync.Cond
	arrived int
	phase   uint64 // increments at each completed rendezvous
	closed  bool
	failed  error  // set by a time-out: the group is broken
	present []bool // which ranks are at the current rendezvous (for error messages)

	bufs [][]float32 // per rank: its contribution (AllReduceSum) or src (AllGather)
	sum  []float32   // scratch for the reduced result, grown as needed (no allocation once warm)
}

// NewInProcess returns the n Comms of a group whose ranks are goroutines in this process. Each
// Comm must be used by one goroutine.
func NewInProcess(n int) ([]Comm, error) {
	if n < 1 {
		return nil, fmt.Errorf("%w: %d ranks", ErrDegree, n)
	}
	g := &group{n: n, bufs: make([][]float32, n), present: make([]bool, n)}
	g.cond = sync.NewCond(&g.mu)
	cs := make([]Comm, n)
	for r := range cs {
		cs[r] = &inProc{g: g, rank: r}
	}
	return cs, nil
}

type inProc struct {
	g    *group
	rank int
}

func (c *inProc) Rank() int { return c.rank }
func (c *inProc) Size() int { return c.g.n }

// rendezvous blocks until all n ranks have arrived, the group closes, or timeout (> 0) passes.
// A time-out breaks the group (as an NCCL abort would): every waiting rank, and every later
// collective, fails with the same error naming the ranks that never arrived.
func (g *group) rendezvous(rank int, op string, timeout time.Duration) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.failed != nil {
		return g.failed
	}
	if g.closed {
		return ErrClosed
	}
	ph := g.phase
	g.arrived++
	g.present[rank] = true
	if g.arrived == g.n {
		g.arrived = 0
		for i := range g.present {
			g.present[i] = false
		}
		g.phase++
		g.cond.Broadcast()
		return nil
	}
	if timeout > 0 {
		t := time.AfterFunc(timeout, func() { g.fail(op, ph) })
		defer t.Stop()
	}
	for g.phase == ph && !g.closed && g.failed == nil {
		g.cond.Wait()
	}
	switch {
	case g.phase != ph:
		return nil
	case g.failed != nil:
		return g.failed
	}
	return &RankError{Op: op, Missing: g.missing(), Err: ErrClosed}
}

// fail breaks the group if the rendezvous of phase ph is still incomplete.
func (g *group) fail(op string, ph uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.phase == ph && g.failed == nil {
		g.failed = &RankError{Op: op, Missing: g.missing(), Err: ErrTimeout}
		g.cond.Broadcast()
	}
}

// missing lists the ranks not at the current rendezvous. Call with mu held.
func (g *group) missing() []int {
	var m []int
	for r, p := range g.present {
		if !p {
			m = append(m, r)
		}
	}
	return m
}

func (c *inProc) Barrier() error { return c.g.rendezvous(c.rank, "barrier", 0) }

// BarrierTimeout is Barrier with a deadline; the error names the ranks that never came.
func (c *inProc) BarrierTimeout(d time.Duration) error {
	return c.g.rendezvous(c.rank, "barrier", d)
}

func (c *inProc) AllReduceSum(buf []float32) error {
	g := c.g
	if g.n == 1 {
		return nil
	}
	g.mu.Lock()
	g.bufs[c.rank] = buf
	if c.rank == 0 && cap(g.sum) < len(buf) {
		g.sum = make([]float32, len(buf))
	}
	g.mu.Unlock()
	if err := g.rendezvous(c.rank, "all-reduce", 0); err != nil {
		return err
	}
	// Reduce-scatter: rank r sums chunk r over all ranks, in rank order (deterministic).
	n := len(buf)
	for _, b := range g.bufs {
		if len(b) != n {
			return fmt.Errorf("tp: all-reduce: rank %d has %d elements, rank %d has %d", c.rank, n, indexOf(g.bufs, b), len(b))
		}
	}
	sum := g.sum[:n]
	lo, hi := c.rank*n/g.n, (c.rank+1)*n/g.n
	for i := lo; i < hi; i++ {
		s := g.bufs[0][i]
		for r := 1; r < g.n; r++ {
			s += g.bufs[r][i]
		}
		sum[i] = s
	}
	if err := g.rendezvous(c.rank, "all-reduce", 0); err != nil {
		return err
	}
	copy(buf, sum)
	// A third rendezvous keeps a fast rank from overwriting sum (next collective) while a slow
	// one is still copying it out.
	return g.rendezvous(c.rank, "all-reduce", 0)
}

func (c *inProc) AllGather(dst, src []float32) error {
	g := c.g
	if len(dst) != g.n*len(src) {
		return fmt.Errorf("tp: all-gather: dst has %d elements, want %d×%d", len(dst), g.n, len(src))
	}
	g.mu.Lock()
	g.bufs[c.rank] = src
	g.mu.Unlock()
	if err := g.rendezvous(c.rank, "all-gather", 0); err != nil {
		return err
	}
	for r, b := range g.bufs {
		if len(b) != len(src) {
			return fmt.Errorf("tp: all-gather: rank %d has %d elements, rank %d has %d", c.rank, len(src), r, len(b))
		}
		copy(dst[r*len(src):], b)
	}
	return g.rendezvous(c.rank, "all-gather", 0)
}

func (c *inProc) Close() error {
	g := c.g
	g.mu.Lock()
	g.closed = true
	g.cond.Broadcast()
	g.mu.Unlock()
	return nil
}

func indexOf(bufs [][]float32, b []float32) int {
	for i, x := range bufs {
		if len(x) == len(b) && (len(b) == 0 || &x[0] == &b[0]) {
			return i
		}
	}
	return -1
}
