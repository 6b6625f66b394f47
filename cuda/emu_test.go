//go:build cudaemu && !cuda

package cuda

// Tests of the emulated driver's own promises (emu.go): the checks that make it worth running
// package gpu on, and the GPU semantics it must keep (capture rules, sticky errors, cuBLAS's
// column-major GEMM, NCCL's collectives).

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/llamacu/llamacu/kernels"
)

func openEmu(t *testing.T, device int) (*Context, *Module) {
	t.Helper()
	c, err := Open(device)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	m, err := c.LoadModule(kernels.EmuImage)
	if err != nil {
		t.Fatal(err)
	}
	return c, m
}

func floatsAt(t *testing.T, c *Context, p DevicePtr, n int) []float32 {
	t.Helper()
	out := make([]float32, n)
	if err := c.CopyFloatsDtoH(out, p); err != nil {
		t.Fatal(err)
	}
	return out
}

func allocFloats(t *testing.T, c *Context, v []float32) DevicePtr {
	t.Helper()
	p, err := c.Alloc(int64(4 * len(v)))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CopyFloatsHtoD(p, v); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestEmuMemory(t *testing.T) {
	c, _ := openEmu(t, 0)
	p, err := c.Alloc(64)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range floatsAt(t, c, p, 16) {
		if !math.IsNaN(float64(v)) {
			t.Fatalf("fresh memory [%d] = %v, want NaN (uninitialised reads must show)", i, v)
		}
	}
	if err := c.CopyFloatsHtoD(p+8, []float32{1, 2}); err != nil {
		t.Fatal(err)
	}
	if err := c.MemsetAsync(p+16, 8, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.CopyDtoD(p+24, p+8, 8, nil); err != nil {
		t.Fatal(err)
	}
	got := floatsAt(t, c, p, 8)
	if got[2] != 1 || got[3] != 2 || got[4] != 0 || got[5] != 0 || got[6] != 1 || got[7] != 2 {
		t.Fatalf("after writes, memset and copy: %v", got)
	}
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"past the end", c.CopyFloatsHtoD(p+60, []float32{1, 2})},
		{"unallocated", c.CopyHtoD(DevicePtr(99)<<emuAddrShift, []byte{1})},
		{"free inside", c.Free(p + 4)},
	} {
		var e *Error
		if !errors.As(tc.err, &e) || e.Code != 1 {
			t.Errorf("%s: got %v, want CUDA_ERROR_INVALID_VALUE", tc.name, tc.err)
		}
	}
	if err := c.Free(p); err != nil {
		t.Fatal(err)
	}
	if err := c.CopyHtoD(p, []byte{1}); err == nil {
		t.Error("a copy into freed memory succeeded")
	}
	if free, total, _ := c.MemInfo(); free != total {
		t.Errorf("MemInfo after freeing everything: %d of %d free", free, total)
	}
}

// TestEmuKernelFaultIsSticky: a kernel writing past its buffer stops the emulator; the error
// names the kernel and every later call reports it, as a GPU's sticky launch failure does.
func TestEmuKernelFaultIsSticky(t *testing.T) {
	c, m := openEmu(t, 0)
	f, err := m.Function("add_f32_v1")
	if err != nil {
		t.Fatal(err)
	}
	x := allocFloats(t, c, make([]float32, 4))
	if err := f.Launch(Dim3{X: 1}, Dim3{X: 256}, 0, nil, Ptr(x), Ptr(x), I32(256)); err != nil {
		t.Fatal(err) // queued: faults show at the next synchronisation
	}
	err = c.Synchronize()
	if err == nil || !strings.Contains(err.Error(), "add_f32_v1") || !strings.Contains(err.Error(), "SIGSEGV") {
		t.Fatalf("Synchronize after an out-of-bounds kernel: %v", err)
	}
	if _, err2 := c.Alloc(4); !errors.Is(err2, &Error{Lib: "cuda", Code: 719}) {
		t.Errorf("a call after the fault: %v, want the sticky CUDA_ERROR_LAUNCH_FAILED", err2)
	}
}

func TestEmuLaunchChecksParameters(t *testing.T) {
	c, m := openEmu(t, 0)
	if _, err := m.Function("no_such_kernel"); !errors.Is(err, &Error{Lib: "cuda", Code: 500}) {
		t.Errorf("unknown kernel: %v", err)
	}
	f, _ := m.Function("add_f32")
	x := allocFloats(t, c, []float32{1, 2, 3, 4})
	// An 8-byte slot where the kernel takes a 4-byte int.
	f.Launch(Dim3{X: 1}, Dim3{X: 32}, 0, nil, Ptr(x), Ptr(x), I64(4))
	if err := c.Synchronize(); err == nil || !strings.Contains(err.Error(), "takes 4 bytes") {
		t.Fatalf("wrong parameter size: %v", err)
	}
}

// TestEmuGraphCapture: captured launches do not run until replayed; a replay reads the device
// memory of its time (so per-step values must come from device memory); synchronous calls and
// pageable host copies during capture are errors that invalidate it.
func TestEmuGraphCapture(t *testing.T) {
	c, m := openEmu(t, 0)
	add, _ := m.Function("add_f32")
	x := allocFloats(t, c, []float32{1, 1, 1, 1})
	y := allocFloats(t, c, []float32{1, 2, 3, 4})
	s, _ := c.NewStream()
	if err := s.BeginCapture(); err != nil {
		t.Fatal(err)
	}
	if err := add.Launch(Dim3{X: 1}, Dim3{X: 32}, 0, s, Ptr(x), Ptr(y), I32(4)); err != nil {
		t.Fatal(err)
	}
	g, err := s.EndCapture()
	if err != nil {
		t.Fatal(err)
	}
	if got := floatsAt(t, c, x, 4); got[0] != 1 {
		t.Fatalf("capture ran the kernel: %v", got)
	}
	c.CopyFloatsHtoD(y, []float32{10, 20, 30, 40})
	for range 2 {
		if err := g.Launch(s); err != nil {
			t.Fatal(err)
		}
	}
	if got := floatsAt(t, c, x, 4); fmt.Sprint(got) != "[21 41 61 81]" {
		t.Fatalf("two replays of x += y with y updated before them: %v", got)
	}

	h, _ := c.AllocHost(16)
	for _, tc := range []struct {
		name  string
		call  func() error
		valid bool
	}{
		{"synchronize", c.Synchronize, false},
		{"pageable copy", func() error { return c.CopyHtoDAsync(x, make([]byte, 16), s) }, false},
		{"pinned copy", func() error { return c.CopyHtoDAsync(x, h.Bytes, s) }, true},
	} {
		s.BeginCapture()
		err := tc.call()
		_, endErr := s.EndCapture()
		if tc.valid && (err != nil || endErr != nil) {
			t.Errorf("%s during capture: %v, %v", tc.name, err, endErr)
		}
		if !tc.valid && (!errors.Is(err, &Error{Lib: "cuda", Code: 900}) || !errors.Is(endErr, &Error{Lib: "cuda", Code: 901})) {
			t.Errorf("%s during capture: %v then %v, want STREAM_CAPTURE_UNSUPPORTED then _INVALIDATED", tc.name, err, endErr)
		}
	}
}

// TestEmuGemmEx checks the emulated cuBLAS against a plain loop in every transpose combination
// with padded leading dimensions, and MatMulNT's row-major contract.
func TestEmuGemmEx(t *testing.T) {
	c, _ := openEmu(t, 0)
	blas, _ := c.LoadCublas()
	r := rand.New(rand.NewPCG(1, 2))
	rnd := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.IntN(7) - 3)
		}
		return v
	}
	m, n, k := 5, 3, 4
	for _, ta := range []bool{false, true} {
		for _, tb := range []bool{false, true} {
			lda, ldb, ldc := rowsOf(ta, m, k)+1, rowsOf(tb, k, n)+2, m+1
			A, B, C := rnd(lda*colsOf(ta, m, k)), rnd(ldb*colsOf(tb, k, n)), rnd(ldc*n)
			pa, pb, pc := allocFloats(t, c, A), allocFloats(t, c, B), allocFloats(t, c, C)
			if err := blas.GemmEx(ta, tb, m, n, k, 2, pa, TypeF32, lda, pb, TypeF32, ldb, -1, pc, TypeF32, ldc); err != nil {
				t.Fatal(err)
			}
			got := floatsAt(t, c, pc, ldc*n)
			for j := 0; j < n; j++ {
				for i := 0; i < ldc; i++ {
					want := C[i+j*ldc] // padding rows untouched
					if i < m {
						var s float32
						for p := 0; p < k; p++ {
							a, b := A[i+p*lda], B[p+j*ldb]
							if ta {
								a = A[p+i*lda]
							}
							if tb {
								b = B[j+p*ldb]
							}
							s += a * b
						}
						want = 2*s - C[i+j*ldc]
					}
					if got[i+j*ldc] != want {
						t.Fatalf("transA %v transB %v: C[%d,%d] = %v, want %v", ta, tb, i, j, got[i+j*ldc], want)
					}
				}
			}
		}
	}
	// Row-major Y (2,3) = X (2,4) · Wᵀ, W (3,4).
	X, W := []float32{1, 2, 3, 4, 5, 6, 7, 8}, []float32{1, 0, 0, 0, 0, 1, 0, 0, 1, 1, 1, 1}
	px, pw := allocFloats(t, c, X), allocFloats(t, c, W)
	py, _ := c.Alloc(24)
	if err := blas.MatMulNT(2, 3, 4, px, TypeF32, pw, TypeF32, py, TypeF32); err != nil {
		t.Fatal(err)
	}
	if got := floatsAt(t, c, py, 6); fmt.Sprint(got) != "[1 2 10 5 6 26]" {
		t.Fatalf("MatMulNT = %v", got)
	}
}

// TestEmuNCCL: three ranks on three emulated devices all-reduce (summing in rank order) and
// all-gather, in place and out of place.
func TestEmuNCCL(t *testing.T) {
	lib, _ := LoadNCCL()
	id, _ := lib.GetUniqueID()
	const n = 3
	var wg sync.WaitGroup
	errs := make([]error, n)
	results := make([][]float32, n)
	for r := range n {
		c, _ := openEmu(t, r)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[r] = func() error {
				comm, err := lib.CommInitRank(c, n, id, r)
				if err != nil {
					return err
				}
				defer comm.Close()
				x := allocFloats(t, c, []float32{float32(r), float32(10 * r)})
				g, _ := c.Alloc(4 * 2 * n)
				if err := comm.AllReduce(x, x, 2, TypeF32, nil); err != nil {
					return err
				}
				if err := comm.AllGather(x, g, 2, TypeF32, nil); err != nil {
					return err
				}
				results[r] = floatsAt(t, c, g, 2*n)
				return nil
			}()
		}()
	}
	wg.Wait()
	for r := range n {
		if errs[r] != nil {
			t.Fatalf("rank %d: %v", r, errs[r])
		}
		if got := fmt.Sprint(results[r]); got != "[3 30 3 30 3 30]" {
			t.Errorf("rank %d: all-gather of the all-reduced (0+1+2, 0+10+20) = %s", r, got)
		}
	}
}
