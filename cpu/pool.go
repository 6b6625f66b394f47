package cpu

import (
	"sync"
	"sync/atomic"
)

// task is one parallel op: run handles items [lo, hi) on worker w (0 ≤ w < pool size), which
// indexes that worker's scratch. Tasks are structs owned by the Backend and reused, so that
// dispatching one converts a pointer to an interface and allocates nothing.
type task interface {
	run(w, lo, hi int)
}

// pool is a fixed set of worker goroutines started by New. parallel hands out chunks of items
// through an atomic counter; the calling goroutine works too, as worker 0.
type pool struct {
	mu    sync.Mutex // one parallel op at a time
	size  int        // workers, the caller included
	start []chan struct{}
	wg    sync.WaitGroup
	quit  chan struct{}
	done  bool // closed: run everything on the caller

	// the current op, written before the start signals are sent
	t     task
	n     int
	grain int
	next  atomic.Int64
}

func newPool(size int) *pool {
	p := &pool{size: size, quit: make(chan struct{})}
	p.start = make([]chan struct{}, size)
	for w := 1; w < size; w++ {
		p.start[w] = make(chan struct{}, 1)
		go p.worker(w)
	}
	return p
}

func (p *pool) worker(w int) {
	for {
		select {
		case <-p.start[w]:
			p.drain(w)
			p.wg.Done()
		case <-p.quit:
			return
		}
	}
}

// drain runs chunks until none are left.
func (p *pool) drain(w int) {
	for {
		lo := int(p.next.Add(int64(p.grain))) - p.grain
		if lo >= p.n {
			return
		}
		p.t.run(w, lo, min(lo+p.grain, p.n))
	}
}

// parallel runs t over items [0, n) in chunks of grain items (the last may be short). It returns
// when every item is done. With one chunk, or one worker, it runs on the caller alone.
func (p *pool) parallel(t task, n, grain int) {
	if n <= 0 {
		return
	}
	grain = max(grain, 1)
	chunks := (n + grain - 1) / grain
	if chunks == 1 || p.size == 1 || p.done {
		t.run(0, 0, n)
		return
	}
	p.mu.Lock()
	p.t, p.n, p.grain = t, n, grain
	p.next.Store(0)
	helpers := min(p.size, chunks) - 1
	p.wg.Add(helpers)
	for w := 1; w <= helpers; w++ {
		p.start[w] <- struct{}{}
	}
	p.drain(0)
	p.wg.Wait()
	p.t = nil
	p.mu.Unlock()
}

// close stops the workers.
func (p *pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.done {
		p.done = true
		close(p.quit)
	}
}

// grainFor splits n items into about 4 chunks per worker, each at least min items and a multiple
// of align.
func (p *pool) grainFor(n, minItems, align int) int {
	g := (n + 4*p.size - 1) / (4 * p.size)
	g = max(g, minItems)
	g = (g + align - 1) / align * align
	return max(g, 1)
}
