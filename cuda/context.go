//go:build cuda

package cuda

/*
#cgo LDFLAGS: -lcuda
#cgo linux CFLAGS: -I/usr/local/cuda/include
#cgo linux LDFLAGS: -L/usr/local/cuda/lib64 -L/usr/local/cuda/lib64/stubs
#include <stdint.h>
#include <stdlib.h>
#include <cuda.h>

// The id of the Context whose worker runs on this OS thread (0: none).
// Only the worker goroutine ever runs on its locked thread, so a goroutine
// that reads its own Context's id here is that Context's worker.
static __thread uintptr_t llamacu_owner;
static void llamacu_set_owner(uintptr_t id) { llamacu_owner = id; }
static uintptr_t llamacu_get_owner(void) { return llamacu_owner; }

// Kernel parameter slots: argv[i] holds parameter i (8 bytes, the value in
// the low bytes), argp[i] = &argv[i] is what cuLaunchKernel reads.
static void **llamacu_alloc_slots(int n) {
	void **p = (void **)malloc(n * (sizeof(void *) + sizeof(uint64_t)));
	uint64_t *v = (uint64_t *)(p + n);
	if (!p) return 0;
	for (int i = 0; i < n; i++) { v[i] = 0; p[i] = &v[i]; }
	return p;
}
*/
import "C"

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"gorgonia.org/cu"
)

// maxArgs is the most parameters a kernel launch may pass.
const maxArgs = 64

var nextContextID atomic.Uintptr

// ctxState is the private part of Context.
type ctxState struct {
	ordinal  int
	id       uintptr // this Context's value of llamacu_owner
	dev      cu.Device
	pctx     cu.CUContext
	retained bool
	stream   *Stream // the default stream: what a nil *Stream means

	work chan *request
	quit chan struct{} // closed by Close
	done chan struct{} // closed when the worker has exited
	once sync.Once

	name         string
	major, minor int
	sms          int
	smemOptin    int
	total        int64

	// argp points to maxArgs parameter pointers followed by maxArgs uint64
	// slots (C memory, llamacu_alloc_slots). Used only on the worker thread.
	argp *unsafe.Pointer
	argv *[maxArgs]uint64
}

// request is one Do call handed to the worker.
type request struct {
	f     func() error
	err   error
	panic any
	done  chan struct{}
}

var requestPool = sync.Pool{New: func() any { return &request{done: make(chan struct{}, 1)} }}

// Open retains device's primary context (so that libraries built on the
// CUDA runtime API, cuBLAS and NCCL, share it) and makes it current on a new
// goroutine locked to its OS thread, which then serves Do. It also creates
// the context's default stream (see Stream).
func Open(device int) (*Context, error) {
	n, err := cu.NumDevices()
	if err != nil {
		return nil, wrap("cuDeviceGetCount", err)
	}
	if device < 0 || device >= n {
		return nil, fmt.Errorf("cuda: device %d out of range: %d device(s)", device, n)
	}
	c := &Context{}
	c.ordinal = device
	c.id = nextContextID.Add(1)
	c.work = make(chan *request)
	c.quit = make(chan struct{})
	c.done = make(chan struct{})
	ready := make(chan error)
	go c.serve(ready)
	if err := <-ready; err != nil {
		return nil, err
	}
	s, err := c.NewStream()
	if err != nil {
		c.Close()
		return nil, err
	}
	c.stream = s
	return c, nil
}

// serve is the worker: it owns the locked thread for the Context's life.
func (c *Context) serve(ready chan<- error) {
	// Never unlocked: when this goroutine returns, the runtime ends the
	// thread, and with it the context binding.
	runtime.LockOSThread()
	defer close(c.done)
	if err := c.setup(); err != nil {
		C.llamacu_set_owner(0)
		if c.retained {
			_ = c.dev.ReleasePrimaryCtx()
		}
		ready <- err
		return
	}
	ready <- nil
	for {
		select {
		case r := <-c.work:
			c.run(r)
		case <-c.quit:
			if c.argp != nil {
				C.free(unsafe.Pointer(c.argp))
				c.argp, c.argv = nil, nil
			}
			C.llamacu_set_owner(0)
			_ = c.dev.ReleasePrimaryCtx()
			return
		}
	}
}

func (c *Context) setup() error {
	dev, err := cu.GetDevice(c.ordinal)
	if err != nil {
		return wrap(fmt.Sprintf("cuDeviceGet(%d)", c.ordinal), err)
	}
	c.dev = dev
	pctx, err := dev.RetainPrimaryCtx()
	if err != nil {
		return wrap(fmt.Sprintf("cuDevicePrimaryCtxRetain(device %d)", c.ordinal), err)
	}
	if err := cu.SetCurrentContext(pctx); err != nil {
		_ = dev.ReleasePrimaryCtx()
		return wrap("cuCtxSetCurrent(primary)", err)
	}
	c.pctx = pctx
	c.retained = true
	C.llamacu_set_owner(C.uintptr_t(c.id))
	if c.name, err = dev.Name(); err != nil {
		return wrap("cuDeviceGetName", err)
	}
	attrs, err := dev.Attributes(cu.ComputeCapabilityMajor, cu.ComputeCapabilityMinor,
		cu.MultiprocessorCount, cu.DeviceAttribute(C.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN))
	if err != nil {
		return wrap("cuDeviceGetAttribute", err)
	}
	c.major, c.minor, c.sms, c.smemOptin = attrs[0], attrs[1], attrs[2], attrs[3]
	if c.total, err = dev.TotalMem(); err != nil {
		return wrap("cuDeviceTotalMem", err)
	}
	p := C.llamacu_alloc_slots(maxArgs)
	if p == nil {
		return fmt.Errorf("cuda: out of host memory for kernel parameter slots")
	}
	c.argp = (*unsafe.Pointer)(unsafe.Pointer(p))
	c.argv = (*[maxArgs]uint64)(unsafe.Add(unsafe.Pointer(p), maxArgs*unsafe.Sizeof(uintptr(0))))
	return nil
}

// run executes one request on the worker, turning a panic in f into a
// panic in the caller of Do.
func (c *Context) run(r *request) {
	defer func() {
		if p := recover(); p != nil {
			r.panic = p
		}
		r.done <- struct{}{}
	}()
	r.err = r.f()
}

// onThread reports whether the calling goroutine is c's worker.
func (c *Context) onThread() bool { return uintptr(C.llamacu_get_owner()) == c.id }

// Do runs f on the context's thread and returns its error. Called from
// inside f (that is, already on the thread) it runs f directly, so Do and
// every method may be nested freely. A panic in f is re-raised in the
// caller. After Close, Do returns ErrClosed.
//
// Each call from another goroutine costs a hand-off between goroutines (a
// few microseconds): a sequence of many calls (a forward pass) is cheaper
// as one Do whose f makes them all; inside f, Launch is allocation-free.
func (c *Context) Do(f func() error) error {
	if c.onThread() {
		return f()
	}
	r := requestPool.Get().(*request)
	r.f = f
	select {
	case c.work <- r:
	case <-c.quit:
		r.f = nil
		requestPool.Put(r)
		return ErrClosed
	}
	<-r.done
	err, p := r.err, r.panic
	r.f, r.err, r.panic = nil, nil, nil
	requestPool.Put(r)
	if p != nil {
		panic(p)
	}
	return err
}

// Close stops the thread and releases the primary context (the driver
// destroys it, and everything allocated in it, when no one else holds it).
// Free memory, modules, streams and events first. Close waits for the work
// in progress; it is safe to call more than once, but not from inside Do.
func (c *Context) Close() error {
	if c.onThread() {
		panic("cuda: Context.Close called from inside Do")
	}
	var err error
	c.once.Do(func() {
		if c.stream != nil {
			err = c.stream.Close()
		}
		close(c.quit)
		<-c.done
	})
	return err
}

// Device returns the device ordinal given to Open.
func (c *Context) Device() int { return c.ordinal }

// DeviceName is the device's name, e.g. "NVIDIA H100 80GB HBM3".
func (c *Context) DeviceName() string { return c.name }

// ComputeCapability is the SM version, e.g. (9, 0) for H100.
func (c *Context) ComputeCapability() (major, minor int) { return c.major, c.minor }

// TotalMem is the device memory in bytes.
func (c *Context) TotalMem() int64 { return c.total }

// SMCount is the number of streaming multiprocessors.
func (c *Context) SMCount() int { return c.sms }

// MaxSharedMemOptin is the most dynamic shared memory, in bytes, that one
// block may use after Function.SetMaxDynamicSharedMem (227 KiB on H100).
func (c *Context) MaxSharedMemOptin() int { return c.smemOptin }

// MemInfo reports free and total device memory in bytes.
func (c *Context) MemInfo() (free, total int64, err error) {
	err = c.Do(func() error {
		var e error
		free, total, e = cu.MemInfo()
		return wrap("cuMemGetInfo", e)
	})
	return free, total, err
}

// DriverVersion is the CUDA driver version, 1000*major + 10*minor
// (12040 = 12.4); -1 if it cannot be read.
func DriverVersion() int { return cu.Version() }

// Synchronize waits for all work on the device to finish (cuCtxSynchronize),
// and reports the first asynchronous error (a faulting kernel) if any.
func (c *Context) Synchronize() error {
	return c.Do(func() error { return wrap("cuCtxSynchronize", cu.Synchronize()) })
}

// Stream is the context's default stream, which a nil *Stream stands for.
func (c *Context) Stream() *Stream { return c.stream }

// Emulated is false in this build, true in the cudaemu one: tests use it to size their shapes.
const Emulated = false
