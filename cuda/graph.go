//go:build cuda

package cuda

/*
#include <cuda.h>

// Ends the capture on s and instantiates the captured graph. On failure
// after the capture ended, the graph is destroyed.
static CUresult llamacu_end_capture(CUstream s, CUgraph *g, CUgraphExec *exec, int *stage) {
	*stage = 0;
	CUresult r = cuStreamEndCapture(s, g);
	if (r != CUDA_SUCCESS) return r;
	*stage = 1;
	r = cuGraphInstantiateWithFlags(exec, *g, 0);
	if (r != CUDA_SUCCESS) {
		cuGraphDestroy(*g);
		*g = 0;
	}
	return r;
}
*/
import "C"

import "fmt"

// Graph is an instantiated CUDA graph (a CUgraphExec) captured from a
// stream: replaying it launches the whole captured sequence with one call,
// which removes the per-kernel launch overhead of a decode step.
//
// A graph bakes in everything captured: kernel parameters (pointers and
// scalars), grid sizes, copy sizes. Whatever changes between replays (the
// token ids, positions, sequence lengths) must therefore be read by the
// kernels from device memory that the host updates (with a stream-ordered
// copy on the replay stream) before each Launch; a change of shape needs a
// new capture.
type Graph struct{ graphState }

type graphState struct {
	c    *Context
	g    C.CUgraph
	exec C.CUgraphExec
}

// BeginCapture starts capturing the work queued on s into a graph, until
// EndCapture (which must always follow, even after an error in between).
// s must not be the legacy default stream; every Stream of this package
// qualifies. During capture nothing is executed, and synchronous calls
// (Alloc, Free, CopyHtoD, CopyDtoH, Memset, Synchronize, pageable async
// copies) are errors: capture only Launch, CopyDtoD, MemsetAsync, event
// records and waits, cuBLAS calls (after a warm-up call outside capture and
// SetWorkspace) and NCCL collectives.
//
// The mode is CU_STREAM_CAPTURE_MODE_THREAD_LOCAL: only calls made on this
// context's thread are checked against the capture. The global mode would
// also fail "unsafe" calls made by other threads, e.g. another GPU's
// Context allocating memory while this one captures, which tensor-parallel
// ranks do; all of this Context's work runs on its own thread anyway.
func (s *Stream) BeginCapture() error {
	return s.c.Do(func() error {
		return check("cuStreamBeginCapture(thread-local)",
			C.cuStreamBeginCapture(cStream(s.s), C.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL))
	})
}

// EndCapture ends the capture begun by BeginCapture and instantiates the
// graph. If any call during capture failed, the capture is invalidated and
// EndCapture reports it (CUDA_ERROR_STREAM_CAPTURE_INVALIDATED).
func (s *Stream) EndCapture() (*Graph, error) {
	g := &Graph{}
	err := s.c.Do(func() error {
		var stage C.int
		r := C.llamacu_end_capture(cStream(s.s), &g.g, &g.exec, &stage)
		if r != C.CUDA_SUCCESS {
			op := "cuStreamEndCapture"
			if stage == 1 {
				op = "cuGraphInstantiateWithFlags (after capture)"
			}
			return check(op, r)
		}
		g.c = s.c
		return nil
	})
	if err != nil {
		return nil, err
	}
	return g, nil
}

// Launch replays the graph on s (nil: the default stream), asynchronously.
// One graph must not run on two streams at once.
func (g *Graph) Launch(s *Stream) error {
	if g.c == nil {
		return fmt.Errorf("cuda: launch of a closed graph")
	}
	c := g.c
	if c.onThread() {
		return check("cuGraphLaunch", C.cuGraphLaunch(g.exec, cStream(c.cuStream(s))))
	}
	return c.Do(func() error {
		return check("cuGraphLaunch", C.cuGraphLaunch(g.exec, cStream(c.cuStream(s))))
	})
}

// Close destroys the graph. Calling it twice is a no-op.
func (g *Graph) Close() error {
	if g.c == nil {
		return nil
	}
	c := g.c
	return c.Do(func() error {
		err := check("cuGraphExecDestroy", C.cuGraphExecDestroy(g.exec))
		if e := check("cuGraphDestroy", C.cuGraphDestroy(g.g)); err == nil {
			err = e
		}
		g.c = nil
		return err
	})
}
