//go:build cuda

package cuda

/*
#include <cuda.h>
*/
import "C"

import (
	"fmt"
	"unsafe"

	"gorgonia.org/cu"
)

// Stream is a CUDA stream created with CU_STREAM_NON_BLOCKING: it does not
// synchronise with the legacy default stream (a condition for graph
// capture). A nil *Stream, wherever one is taken, means the Context's own
// default stream (Context.Stream), which is such a stream too.
type Stream struct{ streamState }

type streamState struct {
	c *Context
	s cu.Stream
}

// cuStream is the gorgonia stream for s (nil: c's default stream).
func (c *Context) cuStream(s *Stream) cu.Stream {
	if s == nil {
		s = c.stream
		if s == nil {
			return cu.Stream{}
		}
	}
	return s.s
}

// cStream converts a gorgonia stream to this package's C type.
func cStream(s cu.Stream) C.CUstream { return C.CUstream(unsafe.Pointer(s.C())) }

// NewStream creates a non-blocking stream.
func (c *Context) NewStream() (*Stream, error) {
	s := &Stream{}
	err := c.Do(func() error {
		cs, err := cu.MakeStream(cu.NonBlocking)
		if err != nil {
			return wrap("cuStreamCreate(CU_STREAM_NON_BLOCKING)", err)
		}
		s.c, s.s = c, cs
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Synchronize waits for the stream's work to finish, and reports the first
// asynchronous error (a faulting kernel) if any. Synchronize, Wait and
// Event.Record make no allocation when called inside Do.
func (s *Stream) Synchronize() error {
	if s.c.onThread() {
		return s.sync()
	}
	return s.c.Do(s.sync)
}

func (s *Stream) sync() error {
	if err := s.s.Synchronize(); err != nil {
		return wrap("cuStreamSynchronize", err)
	}
	return nil
}

// Wait makes future work on s wait for e (cuStreamWaitEvent), without
// blocking the host.
func (s *Stream) Wait(e *Event) error {
	if s.c.onThread() {
		return s.wait(e)
	}
	return s.c.Do(func() error { return s.wait(e) })
}

func (s *Stream) wait(e *Event) error {
	if r := C.cuStreamWaitEvent(cStream(s.s), cEvent(e.e), 0); r != C.CUDA_SUCCESS {
		return check("cuStreamWaitEvent", r)
	}
	return nil
}

// Close destroys the stream (its queued work still completes).
func (s *Stream) Close() error {
	return s.c.Do(func() error { return wrap("cuStreamDestroy", s.s.Destroy()) })
}

// Event is a CUDA event with timing enabled.
type Event struct{ eventState }

type eventState struct {
	c *Context
	e cu.Event
}

// gorgonia's cu.Event holds exactly one CUevent.
var (
	_ [unsafe.Sizeof(cu.Event{}) - unsafe.Sizeof(uintptr(0))]byte
	_ [unsafe.Sizeof(uintptr(0)) - unsafe.Sizeof(cu.Event{})]byte
)

func cEvent(e cu.Event) C.CUevent { return *(*C.CUevent)(unsafe.Pointer(&e)) }

// NewEvent creates an event.
func (c *Context) NewEvent() (*Event, error) {
	e := &Event{}
	err := c.Do(func() error {
		ce, err := cu.MakeEvent(cu.DefaultEvent)
		if err != nil {
			return wrap("cuEventCreate", err)
		}
		e.c, e.e = c, ce
		return nil
	})
	if err != nil {
		return nil, err
	}
	return e, nil
}

// Record records the event on s (nil: the default stream).
func (e *Event) Record(s *Stream) error {
	if e.c.onThread() {
		return e.record(s)
	}
	return e.c.Do(func() error { return e.record(s) })
}

func (e *Event) record(s *Stream) error {
	if err := e.e.Record(e.c.cuStream(s)); err != nil {
		return wrap("cuEventRecord", err)
	}
	return nil
}

// Synchronize waits for the event.
func (e *Event) Synchronize() error {
	return e.c.Do(func() error { return wrap("cuEventSynchronize", e.e.Synchronize()) })
}

// Close destroys the event.
func (e *Event) Close() error {
	return e.c.Do(func() error { return wrap("cuEventDestroy", cu.DestroyEvent(&e.e)) })
}

// ElapsedMs is the time from start to end, in milliseconds (resolution
// about 0.5 µs). Both must be recorded and complete (end.Synchronize).
func ElapsedMs(start, end *Event) (float32, error) {
	if start.c != end.c {
		return 0, fmt.Errorf("cuda: ElapsedMs: events of different contexts")
	}
	var ms float64
	err := start.c.Do(func() error {
		var e error
		ms, e = start.e.Elapsed(end.e)
		return wrap("cuEventElapsedTime", e)
	})
	return float32(ms), err
}
