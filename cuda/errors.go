//go:build cuda

package cuda

// #include <cuda.h>
import "C"

import (
	"fmt"
	"reflect"
)

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
