//go:build cuda

package cuda

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <cuda.h>

// cuBLAS entry points, found with dlsym. cuBLAS's handle is an opaque
// pointer, its enums are ints (same ABI), cudaStream_t is CUstream.
typedef int (*llamacu_cublasCreate_t)(void **handle);
typedef int (*llamacu_cublasDestroy_t)(void *handle);
typedef int (*llamacu_cublasSetStream_t)(void *handle, CUstream s);
typedef int (*llamacu_cublasSetWorkspace_t)(void *handle, void *ws, size_t bytes);
typedef int (*llamacu_cublasGetVersion_t)(void *handle, int *version);
typedef int (*llamacu_cublasGemmEx_t)(void *handle, int transa, int transb, int m, int n, int k,
	const void *alpha, const void *A, int Atype, int lda, const void *B, int Btype, int ldb,
	const void *beta, void *C, int Ctype, int ldc, int computeType, int algo);

static struct {
	void *lib;
	llamacu_cublasCreate_t create;
	llamacu_cublasDestroy_t destroy;
	llamacu_cublasSetStream_t set_stream;
	llamacu_cublasSetWorkspace_t set_workspace; // optional (cuBLAS >= 11.2)
	llamacu_cublasGetVersion_t get_version;
	llamacu_cublasGemmEx_t gemm_ex;
} llamacu_cublas;

static char llamacu_cublas_msg[256];

// Loads the library at path (after preloading lt, if not empty, so that
// libcublas finds its libcublasLt). Returns NULL or an error message.
static const char *llamacu_cublas_load(const char *path, const char *lt) {
	if (lt && lt[0]) dlopen(lt, RTLD_NOW | RTLD_GLOBAL); // best effort
	void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		const char *e = dlerror();
		snprintf(llamacu_cublas_msg, sizeof llamacu_cublas_msg, "%s", e ? e : "dlopen failed");
		return llamacu_cublas_msg;
	}
#define LLAMACU_SYM(field, name) \
	*(void **)&llamacu_cublas.field = dlsym(lib, name); \
	if (!llamacu_cublas.field) { \
		snprintf(llamacu_cublas_msg, sizeof llamacu_cublas_msg, "%s: no symbol %s", path, name); \
		dlclose(lib); \
		return llamacu_cublas_msg; \
	}
	LLAMACU_SYM(create, "cublasCreate_v2")
	LLAMACU_SYM(destroy, "cublasDestroy_v2")
	LLAMACU_SYM(set_stream, "cublasSetStream_v2")
	LLAMACU_SYM(get_version, "cublasGetVersion_v2")
	LLAMACU_SYM(gemm_ex, "cublasGemmEx")
#undef LLAMACU_SYM
	*(void **)&llamacu_cublas.set_workspace = dlsym(lib, "cublasSetWorkspace_v2");
	llamacu_cublas.lib = lib;
	return 0;
}

static int llamacu_cublas_create(void **h) { return llamacu_cublas.create(h); }
static int llamacu_cublas_destroy(void *h) { return llamacu_cublas.destroy(h); }
static int llamacu_cublas_set_stream(void *h, CUstream s) { return llamacu_cublas.set_stream(h, s); }
static int llamacu_cublas_version(void *h, int *v) { return llamacu_cublas.get_version(h, v); }
static int llamacu_cublas_set_workspace(void *h, uintptr_t ws, size_t bytes) {
	if (!llamacu_cublas.set_workspace) return 15; // CUBLAS_STATUS_NOT_SUPPORTED
	return llamacu_cublas.set_workspace(h, (void *)ws, bytes);
}

// cublasGemmEx with fp32 compute (CUBLAS_COMPUTE_32F = 68), fp32 alpha and
// beta passed by host pointer (the default pointer mode), and
// CUBLAS_GEMM_DEFAULT_TENSOR_OP (99).
static int llamacu_cublas_gemm_ex(void *h, int ta, int tb, int m, int n, int k, float alpha,
	uintptr_t A, int at, int lda, uintptr_t B, int bt, int ldb, float beta,
	uintptr_t C, int ct, int ldc) {
	return llamacu_cublas.gemm_ex(h, ta, tb, m, n, k, &alpha, (const void *)A, at, lda,
		(const void *)B, bt, ldb, &beta, (void *)C, ct, ldc, 68, 99);
}
*/
import "C"

import (
	"fmt"
	"strings"
	"sync"
	"unsafe"
)

// cudaDataType_t values: CUDA_R_32F, CUDA_R_16F, CUDA_R_16BF.
func (t DataType) cudaDataType() (C.int, bool) {
	switch t {
	case TypeF32:
		return 0, true
	case TypeF16:
		return 2, true
	case TypeBF16:
		return 14, true
	}
	return 0, false
}

var cublasLib struct {
	sync.Mutex
	path string // what was loaded
	err  error  // why nothing could be
	done bool
}

// loadCublasLib dlopens libcublas once per process: $LLAMACU_CUBLAS (a
// file or a directory), then libcublas.so.13, .12, .11.
func loadCublasLib() (string, error) {
	cublasLib.Lock()
	defer cublasLib.Unlock()
	if cublasLib.done {
		return cublasLib.path, cublasLib.err
	}
	cublasLib.done = true
	var msgs []string
	for _, p := range libCandidates("LLAMACU_CUBLAS", []string{"libcublas.so.13", "libcublas.so.12", "libcublas.so.11"}) {
		cp, clt := C.CString(p), C.CString(siblingLt(p))
		msg := C.llamacu_cublas_load(cp, clt)
		C.free(unsafe.Pointer(cp))
		C.free(unsafe.Pointer(clt))
		if msg == nil {
			cublasLib.path = p
			return p, nil
		}
		msgs = append(msgs, C.GoString(msg))
	}
	cublasLib.err = fmt.Errorf("%w: %s", ErrNoCublas, strings.Join(msgs, "; "))
	return "", cublasLib.err
}

// Cublas is a cuBLAS handle on one Context; cuBLAS itself is dlopened at
// run time (the binary links only libcuda). Use it from any goroutine; its
// calls run on the Context's thread.
type Cublas struct{ cublasState }

type cublasState struct {
	c    *Context
	h    unsafe.Pointer
	path string
}

func cublasStatusName(st int) string {
	switch st {
	case 0:
		return "CUBLAS_STATUS_SUCCESS"
	case 1:
		return "CUBLAS_STATUS_NOT_INITIALIZED"
	case 3:
		return "CUBLAS_STATUS_ALLOC_FAILED"
	case 7:
		return "CUBLAS_STATUS_INVALID_VALUE"
	case 8:
		return "CUBLAS_STATUS_ARCH_MISMATCH"
	case 11:
		return "CUBLAS_STATUS_MAPPING_ERROR"
	case 13:
		return "CUBLAS_STATUS_EXECUTION_FAILED"
	case 14:
		return "CUBLAS_STATUS_INTERNAL_ERROR"
	case 15:
		return "CUBLAS_STATUS_NOT_SUPPORTED"
	case 16:
		return "CUBLAS_STATUS_LICENSE_ERROR"
	}
	return fmt.Sprintf("CUBLAS_STATUS_%d", st)
}

func cublasCheck(op string, st C.int) error {
	if st == 0 {
		return nil
	}
	return &Error{Lib: "cublas", Op: op, Code: int(st), Name: cublasStatusName(int(st))}
}

// LoadCublas dlopens libcublas ($LLAMACU_CUBLAS, a file or a directory, or
// else libcublas.so.13, .12, .11 from the library path) if not done yet, and
// creates a handle on c whose work goes to c's default stream. The error
// wraps ErrNoCublas when no library loads (tests skip on it).
func (c *Context) LoadCublas() (*Cublas, error) {
	path, err := loadCublasLib()
	if err != nil {
		return nil, err
	}
	b := &Cublas{}
	err = c.Do(func() error {
		var h unsafe.Pointer
		if err := cublasCheck("cublasCreate_v2 ("+path+")", C.llamacu_cublas_create(&h)); err != nil {
			return err
		}
		if err := cublasCheck("cublasSetStream_v2", C.llamacu_cublas_set_stream(h, cStream(c.cuStream(nil)))); err != nil {
			C.llamacu_cublas_destroy(h)
			return err
		}
		b.c, b.h, b.path = c, h, path
		return nil
	})
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Library is the file or soname that was dlopened.
func (b *Cublas) Library() string { return b.path }

// Version is cublasGetVersion: 10000*major + 100*minor + patch (e.g. 120303).
func (b *Cublas) Version() (int, error) {
	var v C.int
	err := b.c.Do(func() error { return cublasCheck("cublasGetVersion_v2", C.llamacu_cublas_version(b.h, &v)) })
	return int(v), err
}

// SetStream makes the handle's later work go to s (nil: the default stream).
func (b *Cublas) SetStream(s *Stream) error {
	return b.c.Do(func() error {
		return cublasCheck("cublasSetStream_v2", C.llamacu_cublas_set_stream(b.h, cStream(b.c.cuStream(s))))
	})
}

// SetWorkspace gives cuBLAS bytes of device memory at p as its workspace
// (cublasSetWorkspace_v2), instead of memory it allocates itself. Needed
// before capturing cuBLAS calls into a graph; NVIDIA recommends 32 MiB on
// Hopper, 4 MiB before. The memory must outlive the handle's use of it.
// Call it after SetStream (setting the stream resets the workspace).
func (b *Cublas) SetWorkspace(p DevicePtr, bytes int64) error {
	return b.c.Do(func() error {
		return cublasCheck(fmt.Sprintf("cublasSetWorkspace_v2(%d bytes)", bytes),
			C.llamacu_cublas_set_workspace(b.h, C.uintptr_t(p), C.size_t(bytes)))
	})
}

// GemmEx is cublasGemmEx in cuBLAS's column-major convention, with fp32
// compute (CUBLAS_COMPUTE_32F) and tensor cores allowed
// (CUBLAS_GEMM_DEFAULT_TENSOR_OP):
//
//	C = alpha·op(A)·op(B) + beta·C,  op(A) (m, k), op(B) (k, n), C (m, n)
//
// where op(X) is X, or Xᵀ when transX; lda, ldb, ldc are the column strides
// in elements of the stored matrices. Inputs may be f16, bf16 (A and B the
// same type) or f32; C may be the input type or f32. Asynchronous on the
// handle's stream. Called inside Do it makes no allocation.
func (b *Cublas) GemmEx(transA, transB bool, m, n, k int, alpha float32,
	a DevicePtr, aType DataType, lda int, bm DevicePtr, bType DataType, ldb int,
	beta float32, cm DevicePtr, cType DataType, ldc int) error {
	if b.c.onThread() {
		return b.gemmEx(transA, transB, m, n, k, alpha, a, aType, lda, bm, bType, ldb, beta, cm, cType, ldc)
	}
	return b.c.Do(func() error {
		return b.gemmEx(transA, transB, m, n, k, alpha, a, aType, lda, bm, bType, ldb, beta, cm, cType, ldc)
	})
}

// gemmEx runs on the context's thread.
func (b *Cublas) gemmEx(transA, transB bool, m, n, k int, alpha float32,
	a DevicePtr, aType DataType, lda int, bm DevicePtr, bType DataType, ldb int,
	beta float32, cm DevicePtr, cType DataType, ldc int) error {
	at, ok1 := aType.cudaDataType()
	bt, ok2 := bType.cudaDataType()
	ct, ok3 := cType.cudaDataType()
	st := C.int(7) // CUBLAS_STATUS_INVALID_VALUE
	if ok1 && ok2 && ok3 && m > 0 && n > 0 && k > 0 {
		ta, tb := C.int(0), C.int(0) // CUBLAS_OP_N
		if transA {
			ta = 1 // CUBLAS_OP_T
		}
		if transB {
			tb = 1
		}
		st = C.llamacu_cublas_gemm_ex(b.h, ta, tb, C.int(m), C.int(n), C.int(k), C.float(alpha),
			C.uintptr_t(a), at, C.int(lda), C.uintptr_t(bm), bt, C.int(ldb), C.float(beta),
			C.uintptr_t(cm), ct, C.int(ldc))
	}
	if st == 0 {
		return nil
	}
	t := func(x bool) string {
		if x {
			return "T"
		}
		return "N"
	}
	return cublasCheck(fmt.Sprintf("cublasGemmEx(%s%s m=%d n=%d k=%d A %s lda=%d B %s ldb=%d C %s ldc=%d)",
		t(transA), t(transB), m, n, k, aType, lda, bType, ldb, cType, ldc), st)
}

// MatMulNT is the linear layer in row-major terms, Y = X·Wᵀ:
//
//	X (M, K) xType, W (N, K) wType (weights stored (out, in)), Y (M, N) yType
//
// all row-major and contiguous. It uses the row-major trick: a row-major
// (r, c) matrix is the column-major (c, r) matrix, its transpose, so
// Y = X·Wᵀ row-major is Yᵀ = W·Xᵀ column-major (N, M), which is
// GemmEx(T, N, m=N, n=M, k=K, A=W lda=K, B=X ldb=K, C=Y ldc=N): the
// column-major view of W is Wᵀ (K, N), transposed back by op T; the view of
// X is already Xᵀ (K, M). Asynchronous on the handle's stream.
func (b *Cublas) MatMulNT(M, N, K int, x DevicePtr, xType DataType, w DevicePtr, wType DataType,
	y DevicePtr, yType DataType) error {
	return b.GemmEx(true, false, N, M, K, 1, w, wType, K, x, xType, K, 0, y, yType, N)
}

// Close destroys the handle. Calling it twice is a no-op.
func (b *Cublas) Close() error {
	if b.h == nil {
		return nil
	}
	return b.c.Do(func() error {
		err := cublasCheck("cublasDestroy_v2", C.llamacu_cublas_destroy(b.h))
		b.h = nil
		return err
	})
}
