// Package cuda is the project's only door to the GPU: the only package that
// imports gorgonia.org/cu, plus the little cgo that gorgonia lacks (an
// allocation-free kernel launch, CUDA graphs, function attributes, pinned
// host memory, and dlopen of cuBLAS and NCCL). cuda/api.go lists the API by
// file.
//
// # Build
//
// Every file except this one is built only with -tags cuda: gorgonia.org/cu
// calls cuInit in its init() and exits the process (status 1) when there is
// no GPU, and a binary that links it needs libcuda.so.1 to start. The
// default build therefore sees an empty package. Building needs cuda.h and
// libcuda.so (here: /usr/include/cuda.h and the CUDA 11.8 toolkit's
// /usr/lib/x86_64-linux-gnu/libcuda.so stub), found by gorgonia's and this
// package's cgo flags (-lcuda; -ldl for dlopen). Only libcuda (the driver
// API, forward compatible) is linked, so a binary built here against the
// 11.8 headers runs on any driver ≥ 11.8 and needs only the driver's
// libcuda.so.1 at run time. cuBLAS and NCCL are dlopened when first asked
// for: $LLAMACU_CUBLAS / $LLAMACU_NCCL (a file, or a directory holding it)
// first, then libcublas.so.13, .12, .11 and libnccl.so.2 from the library
// path; LoadCublas and LoadNCCL wrap ErrNoCublas / ErrNoNCCL when none
// loads.
//
// # Threads and contexts
//
// Open(device) starts a goroutine locked to its OS thread, retains the
// device's primary context and makes it current there; the runtime-API
// libraries (cuBLAS, NCCL) use that same context. Context.Do(f) runs f on
// that thread; every method of the package calls Do itself, so callers may
// use any goroutine, and calls nested inside Do run directly (the package
// knows its thread through a C thread-local variable). Each call from
// outside costs a goroutine hand-off of a few microseconds, so a hot loop
// (a forward pass) should run inside one Do. One Context per GPU.
//
// # Streams and synchronisation
//
// Streams are non-blocking (they do not synchronise with the legacy
// default stream); a nil *Stream means the Context's own default stream,
// Context.Stream. CopyHtoD, CopyDtoH, CopyFloats* and Memset are fully
// synchronous: they wait for all work in the context first and return when
// done. The *Async copies, CopyDtoD, MemsetAsync, Launch, cuBLAS and NCCL
// calls are queued on a stream.
//
// # Kernel parameters (firm rule)
//
// Each kernel parameter is an Arg built with Ptr, I32, U32, F32, I64 or
// U64, stored in its own 8-byte slot with the value in the low bytes
// (little-endian); no struct is ever passed by value. gorgonia's
// Function.Launch would copy every parameter as 8 bytes from the pointer it
// is given (and C-malloc two arrays per launch), so this package calls
// cuLaunchKernel itself with the Context's 64 C-memory slots, filled on the
// context's thread: Launch inside Do makes no allocation. Launch errors
// name the kernel, the grid, the block, the shared memory and the argument
// count. Where the driver has cuFuncGetParamInfo (12.4 and later, looked up
// at run time), Module.Function reads each kernel's parameter list,
// and every launch checks the argument count and each argument's size
// (4 bytes: I32, U32, F32; 8 bytes: Ptr, I64, U64) against it.
//
// Besides Launch, the calls a decode step makes (CopyHtoDAsync, CopyDtoD,
// MemsetAsync, Event.Record, Stream.Synchronize, Graph.Launch, GemmEx,
// MatMulNT, Comm.AllReduce/AllGather) are allocation-free inside Do.
//
// # CUDA graphs
//
// Stream.BeginCapture (thread-local capture mode), queue the work, then
// Stream.EndCapture instantiates a Graph; Graph.Launch replays it. Captured
// parameters are frozen: per-step values must come from device memory.
//
// # cuBLAS
//
// Context.LoadCublas gives a handle; GemmEx is column-major cublasGemmEx
// with fp32 compute and tensor cores. For row-major data use MatMulNT,
// Y (M,N) = X (M,K) · Wᵀ with W (N,K): since a row-major matrix read as
// column-major is its transpose, Yᵀ = W·Xᵀ is computed as the column-major
// GEMM (op T on W, op N on X, m=N, n=M, k=K, lda=ldb=K, ldc=N).
//
// # NCCL
//
// LoadNCCL, then GetUniqueID on one rank, CommInitRank on every rank
// concurrently (one goroutine and one Context per GPU), then AllReduce (sum)
// and AllGather on each rank's stream.
//
// # Errors
//
// Failures are *Error values naming the library ("cuda", "cublas",
// "nccl"), the operation with its sizes, and the code with its name
// (cuGetErrorName, cuBLAS status, ncclGetErrorString).
package cuda
