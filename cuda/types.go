//go:build cuda || cudaemu

package cuda

// The package's plain-Go types, shared by the real driver binding (build tag cuda) and the
// emulated one (build tag cudaemu, emu*.go).

import (
	"errors"
	"fmt"
	"math"
	"unsafe"
)

// DevicePtr is a device address (CUdeviceptr). Zero is the null pointer.
// Offsets are plain additions: p + DevicePtr(byteOffset).
type DevicePtr uintptr

// Bytes views a slice of plain values (numbers, no pointers) as bytes, for
// the copy functions: c.CopyHtoD(p, cuda.Bytes(tokens)).
func Bytes[T any](s []T) []byte {
	if len(s) == 0 {
		return nil
	}
	var z T
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), len(s)*int(unsafe.Sizeof(z)))
}

// Dim3 is a grid or block size; zero fields count as 1.
type Dim3 struct{ X, Y, Z int }

// Arg is one kernel parameter: a device pointer or a 32/64-bit scalar,
// held in an 8-byte slot with the value in its low bytes (little-endian),
// as DESIGN.md requires. Build it with Ptr, I32, U32, F32, I64 or U64, in
// the order of the kernel's parameters. No struct may be passed by value.
type Arg struct {
	bits uint64
	size uint8 // the C parameter's size: 4 or 8
}

// Ptr is a pointer kernel parameter (T* / const T*).
func Ptr(p DevicePtr) Arg { return Arg{uint64(p), 8} }

// I32 is an int kernel parameter.
func I32(v int32) Arg { return Arg{uint64(uint32(v)), 4} }

// U32 is an unsigned int kernel parameter.
func U32(v uint32) Arg { return Arg{uint64(v), 4} }

// F32 is a float kernel parameter.
func F32(v float32) Arg { return Arg{uint64(math.Float32bits(v)), 4} }

// I64 is a long long / int64_t kernel parameter.
func I64(v int64) Arg { return Arg{uint64(v), 8} }

// U64 is an unsigned long long / size_t kernel parameter.
func U64(v uint64) Arg { return Arg{v, 8} }

// FuncAttribute is a CUfunction_attribute.
type FuncAttribute int

// DataType is an element type for the cuBLAS and NCCL wrappers.
type DataType int

// Element types.
const (
	TypeF32  DataType = iota // float
	TypeF16                  // __half
	TypeBF16                 // __nv_bfloat16
)

func (t DataType) String() string {
	switch t {
	case TypeF32:
		return "f32"
	case TypeF16:
		return "f16"
	case TypeBF16:
		return "bf16"
	}
	return fmt.Sprintf("DataType(%d)", int(t))
}

// Size is the element size in bytes.
func (t DataType) Size() int {
	if t == TypeF32 {
		return 4
	}
	return 2
}

// ErrNoCublas is returned (wrapped) when no libcublas could be dlopened.
var ErrNoCublas = errors.New("cuda: cannot load cuBLAS (set LLAMACU_CUBLAS or LD_LIBRARY_PATH)")

// ErrNoNCCL is returned (wrapped) when libnccl cannot be dlopened.
var ErrNoNCCL = errors.New("cuda: cannot load NCCL (set LLAMACU_NCCL or LD_LIBRARY_PATH)")

// NCCLUniqueID is an ncclUniqueId: made once (by rank 0) and given to every
// rank's CommInitRank, in this process or (sent over the network) others.
type NCCLUniqueID [128]byte

// ErrClosed is returned by Context methods after Close.
var ErrClosed = errors.New("cuda: context closed")

// Error is a failed CUDA driver, cuBLAS or NCCL call.
type Error struct {
	Lib  string // "cuda", "cublas" or "nccl"
	Op   string // what was being done, e.g. `launch "rmsnorm_f16" grid(32,1,1) block(256,1,1) shared 0 B, 5 args`
	Code int    // CUresult, cublasStatus_t or ncclResult_t
	Name string // e.g. "CUDA_ERROR_OUT_OF_MEMORY"
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s: %s (%d)", e.Lib, e.Op, e.Name, e.Code)
}

// Is reports whether target is an *Error of the same library and code, so
// errors.Is(err, &cuda.Error{Lib: "cuda", Code: 2}) matches any
// CUDA_ERROR_OUT_OF_MEMORY.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Lib == e.Lib && t.Code == e.Code
}
