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

// Memory operations come in two kinds:
//
//   - Synchronous ones (CopyHtoD, CopyDtoH, CopyFloats*, Memset) first wait
//     for all work in the context (cuCtxSynchronize) and return when the
//     operation is complete on the device. They are simple and safe next to
//     kernels on any stream, and meant for loading weights, tests, and
//     reading results; they must not be called during graph capture.
//   - Stream-ordered ones (CopyHtoDAsync, CopyDtoHAsync, CopyDtoD,
//     MemsetAsync) are queued on a stream (nil: the default stream). With
//     pageable Go memory, CopyHtoDAsync has taken a copy of src when it
//     returns, and CopyDtoHAsync returns once dst is filled; with a
//     HostBuffer they are truly asynchronous (Synchronize the stream before
//     touching the buffer).

// Alloc allocates bytes of device memory (cuMemAlloc; 256-byte aligned,
// contents undefined).
func (c *Context) Alloc(bytes int64) (DevicePtr, error) {
	if bytes <= 0 {
		return 0, fmt.Errorf("cuda: Alloc(%d bytes): size must be positive", bytes)
	}
	var p cu.DevicePtr
	err := c.Do(func() error {
		var e error
		p, e = cu.MemAlloc(bytes)
		return wrap(fmt.Sprintf("cuMemAlloc(%d bytes) on device %d", bytes, c.ordinal), e)
	})
	return DevicePtr(p), err
}

// Free frees memory from Alloc. Free(0) is a no-op.
func (c *Context) Free(p DevicePtr) error {
	if p == 0 {
		return nil
	}
	return c.Do(func() error {
		return wrap(fmt.Sprintf("cuMemFree(%#x)", uintptr(p)), cu.MemFree(cu.DevicePtr(p)))
	})
}

// CopyHtoD copies len(src) bytes to dst, synchronously (see above).
func (c *Context) CopyHtoD(dst DevicePtr, src []byte) error {
	if len(src) == 0 {
		return nil
	}
	return c.Do(func() error {
		if err := wrap("cuCtxSynchronize before copy", cu.Synchronize()); err != nil {
			return err
		}
		op := fmt.Sprintf("cuMemcpyHtoD(%#x, %d bytes)", uintptr(dst), len(src))
		if err := wrap(op, cu.MemcpyHtoD(cu.DevicePtr(dst), unsafe.Pointer(&src[0]), int64(len(src)))); err != nil {
			return err
		}
		return wrap(op+": synchronize", cu.Synchronize())
	})
}

// CopyDtoH copies len(dst) bytes from src, synchronously (see above).
func (c *Context) CopyDtoH(dst []byte, src DevicePtr) error {
	if len(dst) == 0 {
		return nil
	}
	return c.Do(func() error {
		if err := wrap("cuCtxSynchronize before copy", cu.Synchronize()); err != nil {
			return err
		}
		op := fmt.Sprintf("cuMemcpyDtoH(%#x, %d bytes)", uintptr(src), len(dst))
		return wrap(op, cu.MemcpyDtoH(unsafe.Pointer(&dst[0]), cu.DevicePtr(src), int64(len(dst))))
	})
}

// CopyFloatsHtoD copies len(src) float32 values (4·len bytes) to dst,
// synchronously.
func (c *Context) CopyFloatsHtoD(dst DevicePtr, src []float32) error {
	return c.CopyHtoD(dst, Bytes(src))
}

// CopyFloatsDtoH copies len(dst) float32 values from src, synchronously.
func (c *Context) CopyFloatsDtoH(dst []float32, src DevicePtr) error {
	return c.CopyDtoH(Bytes(dst), src)
}

// CopyHtoDAsync queues a copy of len(src) bytes to dst on s (see above).
// This and the other stream-ordered operations make no allocation when
// called inside Do.
func (c *Context) CopyHtoDAsync(dst DevicePtr, src []byte, s *Stream) error {
	if len(src) == 0 {
		return nil
	}
	if c.onThread() {
		return c.copyHtoDAsync(dst, src, s)
	}
	return c.Do(func() error { return c.copyHtoDAsync(dst, src, s) })
}

func (c *Context) copyHtoDAsync(dst DevicePtr, src []byte, s *Stream) error {
	if err := cu.MemcpyHtoDAsync(cu.DevicePtr(dst), unsafe.Pointer(&src[0]), int64(len(src)), c.cuStream(s)); err != nil {
		return wrap(fmt.Sprintf("cuMemcpyHtoDAsync(%#x, %d bytes)", uintptr(dst), len(src)), err)
	}
	return nil
}

// CopyDtoHAsync queues a copy of len(dst) bytes from src on s (see above).
func (c *Context) CopyDtoHAsync(dst []byte, src DevicePtr, s *Stream) error {
	if len(dst) == 0 {
		return nil
	}
	if c.onThread() {
		return c.copyDtoHAsync(dst, src, s)
	}
	return c.Do(func() error { return c.copyDtoHAsync(dst, src, s) })
}

func (c *Context) copyDtoHAsync(dst []byte, src DevicePtr, s *Stream) error {
	if err := cu.MemcpyDtoHAsync(unsafe.Pointer(&dst[0]), cu.DevicePtr(src), int64(len(dst)), c.cuStream(s)); err != nil {
		return wrap(fmt.Sprintf("cuMemcpyDtoHAsync(%#x, %d bytes)", uintptr(src), len(dst)), err)
	}
	return nil
}

// CopyDtoD queues a copy of bytes from src to dst on s (nil: the default
// stream). It may be captured into a graph.
func (c *Context) CopyDtoD(dst, src DevicePtr, bytes int64, s *Stream) error {
	if bytes == 0 {
		return nil
	}
	if c.onThread() {
		return c.copyDtoD(dst, src, bytes, s)
	}
	return c.Do(func() error { return c.copyDtoD(dst, src, bytes, s) })
}

func (c *Context) copyDtoD(dst, src DevicePtr, bytes int64, s *Stream) error {
	if err := cu.MemcpyDtoDAsync(cu.DevicePtr(dst), cu.DevicePtr(src), bytes, c.cuStream(s)); err != nil {
		return wrap(fmt.Sprintf("cuMemcpyDtoDAsync(%#x <- %#x, %d bytes)", uintptr(dst), uintptr(src), bytes), err)
	}
	return nil
}

// Memset sets bytes of device memory to zero, synchronously (see above).
func (c *Context) Memset(p DevicePtr, bytes int64) error {
	if bytes == 0 {
		return nil
	}
	return c.Do(func() error {
		if err := wrap("cuCtxSynchronize before memset", cu.Synchronize()); err != nil {
			return err
		}
		op := fmt.Sprintf("cuMemsetD8(%#x, 0, %d bytes)", uintptr(p), bytes)
		if err := wrap(op, cu.MemsetD8(cu.DevicePtr(p), 0, bytes)); err != nil {
			return err
		}
		return wrap(op+": synchronize", cu.Synchronize())
	})
}

// MemsetAsync queues setting bytes of device memory to zero on s (nil: the
// default stream). It may be captured into a graph.
func (c *Context) MemsetAsync(p DevicePtr, bytes int64, s *Stream) error {
	if bytes == 0 {
		return nil
	}
	if c.onThread() {
		return c.memsetAsync(p, bytes, s)
	}
	return c.Do(func() error { return c.memsetAsync(p, bytes, s) })
}

func (c *Context) memsetAsync(p DevicePtr, bytes int64, s *Stream) error {
	if err := cu.MemsetD8Async(cu.DevicePtr(p), 0, bytes, c.cuStream(s)); err != nil {
		return wrap(fmt.Sprintf("cuMemsetD8Async(%#x, 0, %d bytes)", uintptr(p), bytes), err)
	}
	return nil
}

// HostBuffer is page-locked (pinned) host memory (cuMemAllocHost): copies
// to and from it run at full PCIe/NVLink speed and truly asynchronously.
type HostBuffer struct {
	Bytes []byte // the pinned memory (C memory, not Go's); valid until Free
	hostState
}

type hostState struct {
	c *Context
	p unsafe.Pointer
}

// AllocHost allocates bytes of pinned host memory.
func (c *Context) AllocHost(bytes int64) (*HostBuffer, error) {
	if bytes <= 0 {
		return nil, fmt.Errorf("cuda: AllocHost(%d bytes): size must be positive", bytes)
	}
	h := &HostBuffer{}
	err := c.Do(func() error {
		var p unsafe.Pointer
		if err := check(fmt.Sprintf("cuMemAllocHost(%d bytes)", bytes), C.cuMemAllocHost(&p, C.size_t(bytes))); err != nil {
			return err
		}
		h.c, h.p = c, p
		h.Bytes = unsafe.Slice((*byte)(p), bytes)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return h, nil
}

// Floats views the buffer as float32 values (len(Bytes)/4 of them).
func (h *HostBuffer) Floats() []float32 {
	return unsafe.Slice((*float32)(h.p), len(h.Bytes)/4)
}

// Free releases the pinned memory. Calling it twice is a no-op.
func (h *HostBuffer) Free() error {
	if h.p == nil {
		return nil
	}
	return h.c.Do(func() error {
		err := wrap("cuMemFreeHost", cu.MemFreeHost(h.p))
		h.p, h.Bytes = nil, nil
		return err
	})
}
