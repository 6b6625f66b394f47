//go:build cuda

package cuda

// #include <cuda.h>
import "C"

import (
	"errors"
	"fmt"
	"reflect"
)

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

// cuErrorName is cuGetErrorName's name for a CUresult.
func cuErrorName(code int) string {
	var s *C.char
	if C.cuGetErrorName(C.CUresult(code), &s) != C.CUDA_SUCCESS || s == nil {
		return fmt.Sprintf("CUDA_ERROR_UNKNOWN_CODE_%d", code)
	}
	return C.GoString(s)
}

// check wraps a CUresult from this package's own cgo calls.
func check(op string, r C.CUresult) error {
	if r == C.CUDA_SUCCESS {
		return nil
	}
	return &Error{Lib: "cuda", Op: op, Code: int(r), Name: cuErrorName(int(r))}
}

// wrap turns an error from gorgonia.org/cu (its unexported cuResult, an int
// type) into an *Error naming op. Other errors are wrapped with op as text.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if v := reflect.ValueOf(err); v.Kind() >= reflect.Int && v.Kind() <= reflect.Int64 {
		code := int(v.Int())
		return &Error{Lib: "cuda", Op: op, Code: code, Name: cuErrorName(code)}
	}
	return fmt.Errorf("cuda: %s: %w", op, err)
}
