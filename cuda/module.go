//go:build cuda

package cuda

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <cuda.h>

// cuFuncGetParamInfo (driver >= 12.4) lets Launch check the parameter
// count and sizes; looked up at run time since the 11.8 headers lack it.
typedef CUresult (*llamacu_param_info_t)(CUfunction f, size_t index, size_t *offset, size_t *size);
static llamacu_param_info_t llamacu_param_info_fn;

static void llamacu_param_info_init(void) {
	void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
	if (h) *(void **)&llamacu_param_info_fn = dlsym(h, "cuFuncGetParamInfo");
}

// Fills sizes[0..n) with the byte sizes of f's parameters and returns n,
// or -1 when the driver cannot tell.
static int llamacu_param_info(CUfunction f, unsigned char *sizes, int max) {
	if (!llamacu_param_info_fn) return -1;
	int i;
	for (i = 0; i < max; i++) {
		size_t off, size;
		if (llamacu_param_info_fn(f, i, &off, &size) != CUDA_SUCCESS) break;
		sizes[i] = size > 255 ? 255 : (unsigned char)size;
	}
	return i == 0 ? -1 : i; // a failure at index 0 proves nothing
}

// cuLaunchKernelEx (driver >= 12.0) with one attribute, programmatic stream serialization
// (CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = 6): the 11.8 headers lack both, so the
// CUDA 12 ABI's CUlaunchAttribute (id, 4 bytes of padding, a 64-byte value union) and
// CUlaunchConfig are declared here and the entry point looked up at run time.
typedef struct {
	int id;
	char pad[4];
	union { char bytes[64]; int programmatic_stream_serialization_allowed; } value;
} llamacu_launch_attr;
typedef struct {
	unsigned int grid_x, grid_y, grid_z, block_x, block_y, block_z, shared_mem;
	CUstream stream;
	llamacu_launch_attr *attrs;
	unsigned int num_attrs;
} llamacu_launch_config;
typedef CUresult (*llamacu_launch_ex_t)(const llamacu_launch_config *cfg, CUfunction f, void **params, void **extra);
static llamacu_launch_ex_t llamacu_launch_ex_fn;

static int llamacu_launch_ex_init(void) {
	void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
	if (h) *(void **)&llamacu_launch_ex_fn = dlsym(h, "cuLaunchKernelEx");
	return llamacu_launch_ex_fn != 0;
}

static CUresult llamacu_launch_pdl(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                   unsigned by, unsigned bz, unsigned shared, CUstream s, void **params) {
	llamacu_launch_attr attr = {0};
	attr.id = 6;
	attr.value.programmatic_stream_serialization_allowed = 1;
	llamacu_launch_config cfg = {gx, gy, gz, bx, by, bz, shared, s, &attr, 1};
	return llamacu_launch_ex_fn(&cfg, f, params, 0);
}
*/
import "C"

import (
	"fmt"
	"os"
	"sync"
	"unsafe"

	"gorgonia.org/cu"
)

// gorgonia's cu.Function is a struct holding exactly one CUfunction; launch
// reads it as such (these two lines fail to compile if its size changes).
var (
	_ [unsafe.Sizeof(cu.Function{}) - unsafe.Sizeof(uintptr(0))]byte
	_ [unsafe.Sizeof(uintptr(0)) - unsafe.Sizeof(cu.Function{})]byte
)

// Module is a loaded fatbin / cubin / PTX image.
type Module struct{ moduleState }

type moduleState struct {
	c     *Context
	m     cu.Module
	mu    sync.Mutex
	funcs map[string]*Function
}

// LoadModule loads a fatbin, cubin or PTX image (cuModuleLoadData; the
// image is copied, and the driver JIT-compiles PTX when it holds no SASS for
// this GPU). A PTX image need not end in a NUL byte: one is added.
func (c *Context) LoadModule(image []byte) (*Module, error) {
	if len(image) == 0 {
		return nil, fmt.Errorf("cuda: LoadModule: empty image")
	}
	m := &Module{}
	err := c.Do(func() error {
		mod, err := cu.LoadData(string(image))
		if err != nil {
			return wrap(fmt.Sprintf("cuModuleLoadData(%d-byte image) on %s (sm_%d%d)", len(image), c.name, c.major, c.minor), err)
		}
		m.c, m.m, m.funcs = c, mod, map[string]*Function{}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// LoadModuleFile is LoadModule of a file's contents (e.g. a fatbin built on
// the GPU machine, overriding the embedded one).
func (c *Context) LoadModuleFile(path string) (*Module, error) {
	image, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cuda: %w", err)
	}
	m, err := c.LoadModule(image)
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return m, nil
}

// Function looks a kernel up by its extern "C" name; the error names it.
// Lookups are cached: the same name gives the same *Function.
func (m *Module) Function(name string) (*Function, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f := m.funcs[name]; f != nil {
		return f, nil
	}
	f := &Function{}
	err := m.c.Do(func() error {
		fn, err := m.m.Function(name)
		if err != nil {
			return wrap(fmt.Sprintf("kernel %q not in module (cuModuleGetFunction)", name), err)
		}
		f.m, f.name = m, name
		f.fn = *(*C.CUfunction)(unsafe.Pointer(&fn))
		paramInfoOnce.Do(func() { C.llamacu_param_info_init() })
		f.nparams = int(C.llamacu_param_info(f.fn, (*C.uchar)(unsafe.Pointer(&f.sizes[0])), maxArgs))
		return nil
	})
	if err != nil {
		return nil, err
	}
	m.funcs[name] = f
	return f, nil
}

// Close unloads the module; its Functions become invalid.
func (m *Module) Close() error {
	return m.c.Do(func() error { return wrap("cuModuleUnload", m.m.Unload()) })
}

// Function is one kernel (an extern "C" __global__ function) of a Module.
type Function struct{ functionState }

type functionState struct {
	m    *Module
	name string
	fn   C.CUfunction

	// The kernel's parameter sizes in bytes, from cuFuncGetParamInfo when
	// the Function is looked up; nparams is -1 when the driver cannot tell
	// (before 12.4).
	nparams int
	sizes   [maxArgs]uint8
}

var paramInfoOnce sync.Once

// Name is the kernel's name.
func (f *Function) Name() string { return f.name }

func (d Dim3) norm() (x, y, z C.uint) {
	one := func(v int) C.uint {
		if v <= 0 {
			return 1
		}
		return C.uint(v)
	}
	return one(d.X), one(d.Y), one(d.Z)
}

// Launch launches f on s (nil: the context's default stream) with the
// given parameters, in order. Grid and block sizes of 0 count as 1; shared
// memory is the dynamic shared memory in bytes (more than 48 KiB needs
// SetMaxDynamicSharedMem first).
//
// The parameters go into the Context's 64 C-memory slots (one per
// parameter, 8 bytes each) and cuLaunchKernel is called directly: called on
// the context's thread (inside Do), Launch makes no allocation at all; from
// another goroutine it hands the launch to the thread (a copy of args and a
// closure). Launch errors are configuration errors (bad sizes, too much
// shared memory, too many registers); a kernel that faults reports its
// error at the next synchronisation. On drivers that have
// cuFuncGetParamInfo (12.4 and later) Launch also checks the number of
// arguments and each one's size (4 bytes for I32/U32/F32, 8 for
// Ptr/I64/U64) against the kernel's declaration.
func (f *Function) Launch(grid, block Dim3, sharedMem int, s *Stream, args ...Arg) error {
	c := f.m.c
	if c.onThread() {
		return f.launch(grid, block, sharedMem, s, args)
	}
	a := append([]Arg(nil), args...)
	return c.Do(func() error { return f.launch(grid, block, sharedMem, s, a) })
}

// LaunchPDL is Launch with programmatic dependent launch: the kernel may start before the one
// before it in the stream has finished, and must wait for it itself (kernels/common.cuh's
// pdl_begin, griddepcontrol.wait) before touching memory. Only where Context.PDL is true.
func (f *Function) LaunchPDL(grid, block Dim3, sharedMem int, s *Stream, args ...Arg) error {
	c := f.m.c
	if !c.PDL() {
		return fmt.Errorf("cuda: launch %q with programmatic dependent launch: %s cannot (sm_%d%d; needs sm_90 and a driver with cuLaunchKernelEx)", f.name, c.name, c.major, c.minor)
	}
	if c.onThread() {
		return f.launchAs(grid, block, sharedMem, s, args, true)
	}
	a := append([]Arg(nil), args...)
	return c.Do(func() error { return f.launchAs(grid, block, sharedMem, s, a, true) })
}

var (
	launchExOnce sync.Once
	launchExOK   bool
)

// PDL reports whether kernels can be launched with programmatic dependent launch here
// (LaunchPDL): an sm_90 or later device and a driver with cuLaunchKernelEx (CUDA 12).
func (c *Context) PDL() bool {
	launchExOnce.Do(func() { launchExOK = C.llamacu_launch_ex_init() != 0 })
	return launchExOK && c.major >= 9
}

// launch runs on the context's thread.
func (f *Function) launch(grid, block Dim3, sharedMem int, s *Stream, args []Arg) error {
	return f.launchAs(grid, block, sharedMem, s, args, false)
}

// launchAs is launch, with programmatic dependent launch when pdl.
func (f *Function) launchAs(grid, block Dim3, sharedMem int, s *Stream, args []Arg, pdl bool) error {
	c := f.m.c
	if len(args) > maxArgs || sharedMem < 0 {
		return f.launchError(grid, block, sharedMem, len(args), C.CUDA_ERROR_INVALID_VALUE)
	}
	if f.nparams >= 0 {
		if len(args) != f.nparams {
			return fmt.Errorf("cuda: launch %q: %d args, but the kernel takes %d", f.name, len(args), f.nparams)
		}
		for i, a := range args {
			if a.size != f.sizes[i] {
				return fmt.Errorf("cuda: launch %q: arg %d is %d bytes, but the kernel's parameter %d is %d bytes", f.name, i, a.size, i, f.sizes[i])
			}
		}
	}
	for i, a := range args {
		c.argv[i] = a.bits
	}
	gx, gy, gz := grid.norm()
	bx, by, bz := block.norm()
	var r C.CUresult
	if pdl {
		r = C.llamacu_launch_pdl(f.fn, gx, gy, gz, bx, by, bz, C.uint(sharedMem), cStream(c.cuStream(s)), c.argp)
	} else {
		r = C.cuLaunchKernel(f.fn, gx, gy, gz, bx, by, bz, C.uint(sharedMem), cStream(c.cuStream(s)), c.argp, nil)
	}
	if r != C.CUDA_SUCCESS {
		return f.launchError(grid, block, sharedMem, len(args), r)
	}
	return nil
}

func (f *Function) launchError(grid, block Dim3, sharedMem, nargs int, r C.CUresult) error {
	gx, gy, gz := grid.norm()
	bx, by, bz := block.norm()
	op := fmt.Sprintf("launch %q grid(%d,%d,%d) block(%d,%d,%d) shared %d B, %d args",
		f.name, gx, gy, gz, bx, by, bz, sharedMem, nargs)
	if nargs > maxArgs {
		op += fmt.Sprintf(" (at most %d)", maxArgs)
	}
	return check(op, r)
}

// SetMaxDynamicSharedMem allows launches of f with up to bytes of dynamic
// shared memory (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES); needed
// above 48 KiB, up to Context.MaxSharedMemOptin.
func (f *Function) SetMaxDynamicSharedMem(bytes int) error {
	return f.m.c.Do(func() error {
		op := fmt.Sprintf("kernel %q: set max dynamic shared memory to %d B (device allows %d)", f.name, bytes, f.m.c.smemOptin)
		return check(op, C.cuFuncSetAttribute(f.fn, C.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, C.int(bytes)))
	})
}

// Attribute reads a CU_FUNC_ATTRIBUTE_* value of f, e.g. NumRegs.
func (f *Function) Attribute(a FuncAttribute) (int, error) {
	var v C.int
	err := f.m.c.Do(func() error {
		return check(fmt.Sprintf("kernel %q: cuFuncGetAttribute(%d)", f.name, int(a)),
			C.cuFuncGetAttribute(&v, C.CUfunction_attribute(a), f.fn))
	})
	return int(v), err
}

// Function attributes for Attribute.
const (
	MaxThreadsPerBlock FuncAttribute = C.CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK
	StaticSharedBytes  FuncAttribute = C.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES
	LocalBytes         FuncAttribute = C.CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES
	NumRegs            FuncAttribute = C.CU_FUNC_ATTRIBUTE_NUM_REGS
)
