//go:build cudaemu && !cuda

package cuda

// The emulated CUDA driver (build tag cudaemu): the same API as the real binding, backed by the
// CPU emulator of emu_device.go, so that package gpu's Backend — its launchers, uploads, KV
// cache, collectives and all — runs the real kernel sources on a machine without a GPU, in CI.
// It is slow (every CUDA thread is a fiber) and checks what kernels/emu/emu.h lists, nothing
// about speed. What differs from a GPU, on purpose:
//
//   - Alloc fills memory with 0xff bytes (NaN in f32, f16, bf16): a kernel that reads memory
//     nobody wrote produces NaNs instead of the zeros a fresh GPU often happens to hold.
//   - Device addresses are buffer id << 40 | offset: a pointer into freed memory, into another
//     Context's memory or past an allocation is an error, and a kernel that reads or writes past
//     the end of its buffer faults (reported with the kernel, block and thread).
//   - Kernel faults, bad launches and barrier divergence stop the emulator; like a GPU's sticky
//     errors, every later call of the Context then fails with CUDA_ERROR_LAUNCH_FAILED naming
//     what the emulator saw.
//   - Graph capture records the stream's calls and replays them; synchronous calls and pageable
//     host copies during capture are errors, as on a GPU.
//   - cuBLAS and NCCL are emulated in Go (emu_libs.go): GemmEx computes in float64 from the
//     device bytes; NCCL's ranks meet in process.
//
// $LLAMACU_EMU_DEVICES (default 4), $LLAMACU_EMU_SMS (default 8) and $LLAMACU_EMU_MEM (bytes,
// default 8 GiB) shape the emulated devices.

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/llamacu/llamacu/kernels"
)

// Emulated is true in this build (false in the real one): tests use it to size their shapes.
const Emulated = true

func envInt(name string, def int64) int64 {
	if v, err := strconv.ParseInt(os.Getenv(name), 10, 64); err == nil && v > 0 {
		return v
	}
	return def
}

// DeviceCount is $LLAMACU_EMU_DEVICES (default 4) emulated devices.
func DeviceCount() (int, error) { return int(envInt("LLAMACU_EMU_DEVICES", 4)), nil }

// DriverVersion reports 12.8, whose features (parameter info) the emulator has.
func DriverVersion() int { return 12080 }

// cuErrorName names the CUresult codes the emulator returns.
func cuErrorName(code int) string {
	switch code {
	case 1:
		return "CUDA_ERROR_INVALID_VALUE"
	case 2:
		return "CUDA_ERROR_OUT_OF_MEMORY"
	case 101:
		return "CUDA_ERROR_INVALID_DEVICE"
	case 200:
		return "CUDA_ERROR_INVALID_IMAGE"
	case 500:
		return "CUDA_ERROR_NOT_FOUND"
	case 719:
		return "CUDA_ERROR_LAUNCH_FAILED"
	case 900:
		return "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED"
	case 901:
		return "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED"
	}
	return fmt.Sprintf("CUDA_ERROR_UNKNOWN_CODE_%d", code)
}

func emuError(op string, code int) error {
	return &Error{Lib: "cuda", Op: op, Code: code, Name: cuErrorName(code)}
}

// goid is the calling goroutine's id ("goroutine 42 [running]:"), to know whether a call comes
// from inside Do, as the real binding knows its thread.
func goid() int64 {
	var buf [32]byte
	n := runtime.Stack(buf[:], false)
	s := string(buf[len("goroutine "):n])
	for i := 0; i < len(s); i++ {
		if s[i] == ' ' {
			id, _ := strconv.ParseInt(s[:i], 10, 64)
			return id
		}
	}
	return -1
}

// ---------------------------------------------------------------- context

type ctxState struct {
	ordinal int
	name    string
	total   int64
	sms     int
	proc    *emuProc
	kernel  map[string]bool

	work   chan *emuRequest
	quit   chan struct{}
	done   chan struct{}
	worker int64 // goid of the worker
	once   sync.Once
	stream *Stream

	// Owned by the worker:
	nextID    uint32
	sizes     map[uint32]int64
	used      int64
	capturing *Stream // the stream being captured, if any
}

type emuRequest struct {
	f     func() error
	err   error
	panic any
	done  chan struct{}
}

// Open starts emulated device `device` (a harness process) and its worker goroutine.
func Open(device int) (*Context, error) {
	n, _ := DeviceCount()
	if device < 0 || device >= n {
		return nil, emuError(fmt.Sprintf("cuDeviceGet(%d) of %d emulated devices", device, n), 101)
	}
	path, table, err := emuHarness()
	if err != nil {
		return nil, err
	}
	proc, err := startEmu(path)
	if err != nil {
		return nil, err
	}
	c := &Context{ctxState{
		ordinal: device,
		name:    fmt.Sprintf("llamacu emulator %d (kernels on the CPU)", device),
		total:   envInt("LLAMACU_EMU_MEM", 8<<30),
		sms:     int(envInt("LLAMACU_EMU_SMS", 8)),
		proc:    proc,
		kernel:  table,
		work:    make(chan *emuRequest),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
		sizes:   map[uint32]int64{},
	}}
	ready := make(chan struct{})
	go c.serve(ready)
	<-ready
	c.stream = &Stream{streamState{c: c}}
	return c, nil
}

func (c *Context) serve(ready chan<- struct{}) {
	c.worker = goid()
	close(ready)
	defer close(c.done)
	for {
		select {
		case r := <-c.work:
			func() {
				defer func() {
					if p := recover(); p != nil {
						r.panic = p
					}
					close(r.done)
				}()
				r.err = r.f()
			}()
		case <-c.quit:
			c.proc.quit()
			return
		}
	}
}

func (c *Context) onThread() bool { return goid() == c.worker }

// Do runs f on the context's worker goroutine (directly when already there), as the real
// binding runs it on the context's thread. After Close it returns ErrClosed.
func (c *Context) Do(f func() error) error {
	if c.onThread() {
		return f()
	}
	r := &emuRequest{f: f, done: make(chan struct{})}
	select {
	case c.work <- r:
	case <-c.quit:
		return ErrClosed
	}
	<-r.done
	if r.panic != nil {
		panic(r.panic)
	}
	return r.err
}

// Close stops the emulator; safe to call more than once, not from inside Do.
func (c *Context) Close() error {
	if c.onThread() {
		panic("cuda: Context.Close called from inside Do")
	}
	c.once.Do(func() {
		close(c.quit)
		<-c.done
	})
	return nil
}

func (c *Context) Device() int                           { return c.ordinal }
func (c *Context) DeviceName() string                    { return c.name }
func (c *Context) ComputeCapability() (major, minor int) { return 9, 0 }
func (c *Context) TotalMem() int64                       { return c.total }
func (c *Context) SMCount() int                          { return c.sms }
func (c *Context) MaxSharedMemOptin() int                { return 227 << 10 }
func (c *Context) Stream() *Stream                       { return c.stream }

// MemInfo is the emulated total less what is allocated.
func (c *Context) MemInfo() (free, total int64, err error) {
	err = c.Do(func() error { free = c.total - c.used; return nil })
	return free, c.total, err
}

// syncCall is the prologue of every synchronous call: an error during capture (as on a GPU,
// where it also invalidates the capture), else a wait for all queued work.
func (c *Context) syncCall(op string) error {
	if s := c.capturing; s != nil {
		s.invalid = true
		return emuError(op+" during stream capture", 900)
	}
	return c.proc.sync(op)
}

// Synchronize waits for all queued work and returns the sticky error, if any.
func (c *Context) Synchronize() error {
	return c.Do(func() error { return c.syncCall("cuCtxSynchronize") })
}

// ---------------------------------------------------------------- memory

// check validates [p, p+n) against the live allocations.
func (c *Context) check(op string, p DevicePtr, n int64) (uint32, uint64, error) {
	id, off := emuAddr(p)
	size, ok := c.sizes[id]
	if !ok {
		return 0, 0, emuError(fmt.Sprintf("%s: %#x is not in any live allocation", op, uintptr(p)), 1)
	}
	if n < 0 || off > uint64(size) || uint64(n) > uint64(size)-off {
		return 0, 0, emuError(fmt.Sprintf("%s: %d bytes at offset %d of a %d-byte allocation", op, n, off, size), 1)
	}
	return id, off, nil
}

// Alloc allocates bytes of emulated device memory, filled with 0xff.
func (c *Context) Alloc(bytes int64) (DevicePtr, error) {
	if bytes <= 0 {
		return 0, fmt.Errorf("cuda: Alloc(%d bytes): size must be positive", bytes)
	}
	var p DevicePtr
	err := c.Do(func() error {
		op := fmt.Sprintf("cuMemAlloc(%d bytes) on device %d", bytes, c.ordinal)
		if c.capturing != nil {
			return c.syncCall(op)
		}
		if bytes > emuOffMask || c.used+bytes > c.total {
			return emuError(op, 2)
		}
		if c.proc.err != nil {
			return c.proc.err
		}
		c.nextID++
		id := c.nextID
		c.proc.op('A')
		c.proc.u32(id)
		c.proc.u64(uint64(bytes))
		c.sizes[id] = bytes
		c.used += bytes
		p = DevicePtr(uint64(id) << emuAddrShift)
		return nil
	})
	return p, err
}

// Free frees memory from Alloc. Free(0) is a no-op.
func (c *Context) Free(p DevicePtr) error {
	if p == 0 {
		return nil
	}
	return c.Do(func() error {
		op := fmt.Sprintf("cuMemFree(%#x)", uintptr(p))
		id, off := emuAddr(p)
		if _, ok := c.sizes[id]; !ok || off != 0 {
			return emuError(op+": not the start of a live allocation", 1)
		}
		if err := c.syncCall(op); err != nil {
			return err
		}
		c.proc.op('F')
		c.proc.u32(id)
		c.used -= c.sizes[id]
		delete(c.sizes, id)
		return nil
	})
}

func (c *Context) write(op string, dst DevicePtr, src []byte) error {
	id, off, err := c.check(op, dst, int64(len(src)))
	if err != nil {
		return err
	}
	if c.proc.err != nil {
		return c.proc.err
	}
	c.proc.op('W')
	c.proc.u32(id)
	c.proc.u64(off)
	c.proc.u64(uint64(len(src)))
	c.proc.w.Write(src)
	return nil
}

func (c *Context) readInto(op string, dst []byte, src DevicePtr) error {
	id, off, err := c.check(op, src, int64(len(dst)))
	if err != nil {
		return err
	}
	return c.proc.read(op, dst, id, off)
}

// CopyHtoD copies src to dst after all queued work, and returns when done.
func (c *Context) CopyHtoD(dst DevicePtr, src []byte) error {
	if len(src) == 0 {
		return nil
	}
	return c.Do(func() error {
		op := fmt.Sprintf("cuMemcpyHtoD(%#x, %d bytes)", uintptr(dst), len(src))
		if err := c.syncCall(op); err != nil {
			return err
		}
		if err := c.write(op, dst, src); err != nil {
			return err
		}
		return c.proc.sync(op)
	})
}

// CopyDtoH copies src to dst after all queued work.
func (c *Context) CopyDtoH(dst []byte, src DevicePtr) error {
	if len(dst) == 0 {
		return nil
	}
	return c.Do(func() error {
		op := fmt.Sprintf("cuMemcpyDtoH(%#x, %d bytes)", uintptr(src), len(dst))
		if err := c.syncCall(op); err != nil {
			return err
		}
		return c.readInto(op, dst, src)
	})
}

// CopyFloatsHtoD is CopyHtoD of float32s.
func (c *Context) CopyFloatsHtoD(dst DevicePtr, src []float32) error {
	return c.CopyHtoD(dst, Bytes(src))
}

// CopyFloatsDtoH is CopyDtoH of float32s.
func (c *Context) CopyFloatsDtoH(dst []float32, src DevicePtr) error {
	return c.CopyDtoH(Bytes(dst), src)
}

// pinned is every live HostBuffer's memory: async copies from anywhere else are pageable.
var pinned struct {
	sync.Mutex
	m map[uintptr]int
}

func isPinned(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	pinned.Lock()
	defer pinned.Unlock()
	for start, n := range pinned.m {
		if p >= start && p+uintptr(len(b)) <= start+uintptr(n) {
			return true
		}
	}
	return false
}

// enqueue runs op now, or records it when s is being captured. Pageable host copies cannot be
// captured (a GPU rejects them), which pageable says.
func (c *Context) enqueue(s *Stream, what string, pageable bool, op func() error) error {
	if s == nil {
		s = c.stream
	}
	if s.closed {
		return emuError(what+" on a closed stream", 1)
	}
	if s.capture != nil {
		if pageable {
			s.invalid = true
			return emuError(what+" from pageable host memory during stream capture", 900)
		}
		s.capture = append(s.capture, op)
		return nil
	}
	return op()
}

// CopyHtoDAsync queues a copy of src (taken now for pageable memory, as the driver stages it).
func (c *Context) CopyHtoDAsync(dst DevicePtr, src []byte, s *Stream) error {
	if len(src) == 0 {
		return nil
	}
	return c.Do(func() error {
		op := fmt.Sprintf("cuMemcpyHtoDAsync(%#x, %d bytes)", uintptr(dst), len(src))
		return c.enqueue(s, op, !isPinned(src), func() error { return c.write(op, dst, src) })
	})
}

// CopyDtoHAsync copies src to dst; here it returns when dst is filled.
func (c *Context) CopyDtoHAsync(dst []byte, src DevicePtr, s *Stream) error {
	if len(dst) == 0 {
		return nil
	}
	return c.Do(func() error {
		op := fmt.Sprintf("cuMemcpyDtoHAsync(%#x, %d bytes)", uintptr(src), len(dst))
		return c.enqueue(s, op, !isPinned(dst), func() error { return c.readInto(op, dst, src) })
	})
}

// CopyDtoD queues a device-to-device copy.
func (c *Context) CopyDtoD(dst, src DevicePtr, bytes int64, s *Stream) error {
	if bytes == 0 {
		return nil
	}
	return c.Do(func() error {
		op := fmt.Sprintf("cuMemcpyDtoDAsync(%#x <- %#x, %d bytes)", uintptr(dst), uintptr(src), bytes)
		return c.enqueue(s, op, false, func() error {
			did, doff, err := c.check(op, dst, bytes)
			if err != nil {
				return err
			}
			sid, soff, err := c.check(op, src, bytes)
			if err != nil {
				return err
			}
			c.proc.op('C')
			c.proc.u32(did)
			c.proc.u64(doff)
			c.proc.u32(sid)
			c.proc.u64(soff)
			c.proc.u64(uint64(bytes))
			return c.proc.err
		})
	})
}

func (c *Context) zero(op string, p DevicePtr, bytes int64) error {
	id, off, err := c.check(op, p, bytes)
	if err != nil {
		return err
	}
	c.proc.op('Z')
	c.proc.u32(id)
	c.proc.u64(off)
	c.proc.u64(uint64(bytes))
	return c.proc.err
}

// Memset zeroes bytes at p after all queued work, and returns when done.
func (c *Context) Memset(p DevicePtr, bytes int64) error {
	if bytes == 0 {
		return nil
	}
	return c.Do(func() error {
		op := fmt.Sprintf("cuMemsetD8(%#x, 0, %d bytes)", uintptr(p), bytes)
		if err := c.syncCall(op); err != nil {
			return err
		}
		if err := c.zero(op, p, bytes); err != nil {
			return err
		}
		return c.proc.sync(op)
	})
}

// MemsetAsync queues the zeroing of bytes at p.
func (c *Context) MemsetAsync(p DevicePtr, bytes int64, s *Stream) error {
	if bytes == 0 {
		return nil
	}
	return c.Do(func() error {
		op := fmt.Sprintf("cuMemsetD8Async(%#x, 0, %d bytes)", uintptr(p), bytes)
		return c.enqueue(s, op, false, func() error { return c.zero(op, p, bytes) })
	})
}

// HostBuffer is "pinned" host memory: Go memory that async copies may use during capture.
type HostBuffer struct {
	Bytes []byte
	hostState
}

type hostState struct{ freed bool }

// AllocHost allocates a HostBuffer of bytes (16-byte aligned).
func (c *Context) AllocHost(bytes int64) (*HostBuffer, error) {
	if bytes <= 0 {
		return nil, fmt.Errorf("cuda: AllocHost(%d bytes): size must be positive", bytes)
	}
	words := make([]uint64, (bytes+15)/8)
	b := unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), bytes)
	pinned.Lock()
	if pinned.m == nil {
		pinned.m = map[uintptr]int{}
	}
	pinned.m[uintptr(unsafe.Pointer(&words[0]))] = int(bytes)
	pinned.Unlock()
	return &HostBuffer{Bytes: b}, nil
}

// Floats views the buffer as float32s.
func (h *HostBuffer) Floats() []float32 {
	return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(h.Bytes))), len(h.Bytes)/4)
}

// Free releases the buffer; calling it twice is a no-op.
func (h *HostBuffer) Free() error {
	if h.freed || len(h.Bytes) == 0 {
		return nil
	}
	h.freed = true
	pinned.Lock()
	delete(pinned.m, uintptr(unsafe.Pointer(unsafe.SliceData(h.Bytes))))
	pinned.Unlock()
	h.Bytes = nil
	return nil
}

// ---------------------------------------------------------------- modules and launches

type Module struct{ moduleState }

type moduleState struct {
	c      *Context
	closed bool
}

// LoadModule accepts the emulated build's image (kernels.EmuImage): the kernels were compiled
// when the Context opened.
func (c *Context) LoadModule(image []byte) (*Module, error) {
	if string(image) != string(kernels.EmuImage) {
		return nil, emuError(fmt.Sprintf("cuModuleLoadData(%d bytes): the emulated build runs kernels/*.cu, not a fatbin", len(image)), 200)
	}
	return &Module{moduleState{c: c}}, nil
}

// LoadModuleFile is not available in the emulated build.
func (c *Context) LoadModuleFile(path string) (*Module, error) {
	return nil, emuError(fmt.Sprintf("cuModuleLoad(%s): the emulated build runs kernels/*.cu, not a fatbin", path), 200)
}

// Function looks a kernel up in the emulator's table.
func (m *Module) Function(name string) (*Function, error) {
	if !m.c.kernel[name] {
		return nil, emuError(fmt.Sprintf("cuModuleGetFunction(%q)", name), 500)
	}
	return &Function{functionState{m: m, name: name}}, nil
}

// Close unloads the module.
func (m *Module) Close() error { m.closed = true; return nil }

type Function struct{ functionState }

type functionState struct {
	m    *Module
	name string
}

// Name is the kernel's name.
func (f *Function) Name() string { return f.name }

// Launch queues the kernel on s with its parameter slots; the emulator checks each against the
// kernel's parameter types (as cuFuncGetParamInfo does on a GPU). Faults show at the next
// synchronisation.
func (f *Function) Launch(grid, block Dim3, sharedMem int, s *Stream, args ...Arg) error {
	c := f.m.c
	one := func(v int) int { return max(v, 1) }
	gx, gy, gz := one(grid.X), one(grid.Y), one(grid.Z)
	bx, by, bz := one(block.X), one(block.Y), one(block.Z)
	op := fmt.Sprintf("launch %q grid(%d,%d,%d) block(%d,%d,%d) shared %d B, %d args", f.name, gx, gy, gz, bx, by, bz, sharedMem, len(args))
	if bx*by*bz > 1024 || gx > math.MaxInt32 || gy > 65535 || gz > 65535 || len(args) > 64 || sharedMem < 0 {
		return emuError(op, 1)
	}
	a := append([]Arg(nil), args...)
	return c.Do(func() error {
		return c.enqueue(s, op, false, func() error {
			p := c.proc
			if p.err != nil {
				return p.err
			}
			p.op('K')
			p.u32(uint32(len(f.name)))
			p.w.WriteString(f.name)
			for _, v := range []int{gx, gy, gz, bx, by, bz, sharedMem, len(a)} {
				p.u32(uint32(v))
			}
			for _, x := range a {
				p.u8(x.size)
				p.u64(x.bits)
			}
			return nil
		})
	})
}

// LaunchPDL is Launch: the emulator runs launches one after another, which is one of the orders
// programmatic dependent launch allows (each kernel's pdl_begin waits for the one before).
func (f *Function) LaunchPDL(grid, block Dim3, sharedMem int, s *Stream, args ...Arg) error {
	return f.Launch(grid, block, sharedMem, s, args...)
}

// PDL is true: the emulated device is an sm_90 with a CUDA 12 driver.
func (c *Context) PDL() bool { return true }

// SetMaxDynamicSharedMem accepts up to the emulated opt-in limit.
func (f *Function) SetMaxDynamicSharedMem(bytes int) error {
	if bytes < 0 || bytes > f.m.c.MaxSharedMemOptin() {
		return emuError(fmt.Sprintf("cuFuncSetAttribute(%q, MAX_DYNAMIC_SHARED_SIZE_BYTES, %d)", f.name, bytes), 1)
	}
	return nil
}

// Function attributes for Attribute (CUfunction_attribute values).
const (
	MaxThreadsPerBlock FuncAttribute = 0
	StaticSharedBytes  FuncAttribute = 1
	LocalBytes         FuncAttribute = 3
	NumRegs            FuncAttribute = 4
)

// Attribute reports 1024 threads per block and zero for the rest (the emulator has no limits).
func (f *Function) Attribute(a FuncAttribute) (int, error) {
	if a == MaxThreadsPerBlock {
		return 1024, nil
	}
	return 0, nil
}

// ---------------------------------------------------------------- streams, events, graphs

type Stream struct{ streamState }

type streamState struct {
	c       *Context
	closed  bool
	capture []func() error // non-nil while capturing
	invalid bool           // a forbidden call happened during capture
}

// NewStream makes a stream. The emulator runs everything in order, so streams only matter
// for capture.
func (c *Context) NewStream() (*Stream, error) {
	return &Stream{streamState{c: c}}, nil
}

// Synchronize waits for the queued work.
func (s *Stream) Synchronize() error {
	return s.c.Do(func() error { return s.c.syncCall("cuStreamSynchronize") })
}

// Wait makes s wait for e (everything is in order here).
func (s *Stream) Wait(e *Event) error {
	if e == nil {
		return emuError("cuStreamWaitEvent(nil event)", 1)
	}
	return nil
}

// Close closes the stream.
func (s *Stream) Close() error { s.closed = true; return nil }

type Event struct{ eventState }

type eventState struct {
	c    *Context
	at   time.Time
	done bool
}

// NewEvent makes a timing event.
func (c *Context) NewEvent() (*Event, error) { return &Event{eventState{c: c}}, nil }

// Record records the time at which the work queued so far has finished.
func (e *Event) Record(s *Stream) error {
	return e.c.Do(func() error {
		return e.c.enqueue(s, "cuEventRecord", false, func() error {
			err := e.c.proc.sync("cuEventRecord")
			e.at, e.done = time.Now(), true
			return err
		})
	})
}

// Synchronize waits for the event.
func (e *Event) Synchronize() error { return e.c.Synchronize() }

// Close destroys the event.
func (e *Event) Close() error { return nil }

// ElapsedMs is the wall time between two recorded events (of the emulator, not of a GPU).
func ElapsedMs(start, end *Event) (float32, error) {
	if !start.done || !end.done {
		return 0, emuError("cuEventElapsedTime: event not recorded", 600)
	}
	return float32(end.at.Sub(start.at).Seconds() * 1e3), nil
}

type Graph struct{ graphState }

type graphState struct {
	c      *Context
	ops    []func() error
	closed bool
}

// BeginCapture starts recording the work queued on s.
func (s *Stream) BeginCapture() error {
	return s.c.Do(func() error {
		if s.c.capturing != nil {
			return emuError("cuStreamBeginCapture: a capture is already running", 900)
		}
		s.capture, s.invalid = []func() error{}, false
		s.c.capturing = s
		return nil
	})
}

// EndCapture ends the capture and returns the graph of the recorded work.
func (s *Stream) EndCapture() (*Graph, error) {
	var g *Graph
	err := s.c.Do(func() error {
		if s.capture == nil {
			return emuError("cuStreamEndCapture: not capturing", 1)
		}
		ops, invalid := s.capture, s.invalid
		s.capture, s.invalid, s.c.capturing = nil, false, nil
		if invalid {
			return emuError("cuStreamEndCapture", 901)
		}
		g = &Graph{graphState{c: s.c, ops: ops}}
		return nil
	})
	return g, err
}

// Launch replays the graph on s.
func (g *Graph) Launch(s *Stream) error {
	return g.c.Do(func() error {
		if g.closed {
			return emuError("cuGraphLaunch of a destroyed graph", 1)
		}
		return g.c.enqueue(s, "cuGraphLaunch", false, func() error {
			for _, op := range g.ops {
				if err := op(); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// Close destroys the graph.
func (g *Graph) Close() error { g.closed = true; return nil }
