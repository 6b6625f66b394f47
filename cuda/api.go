//go:build cuda || cudaemu

package cuda

// The API, by file (doc.go has the overview and the rules):
//
//	context.go  Open, Context: Do, Close, Device, DeviceName, ComputeCapability,
//	            TotalMem, SMCount, MaxSharedMemOptin, MemInfo, Synchronize,
//	            Stream (the default stream); DriverVersion
//	memory.go   DevicePtr, Bytes; Context: Alloc, Free, CopyHtoD, CopyDtoH,
//	            CopyFloatsHtoD, CopyFloatsDtoH (synchronous), CopyHtoDAsync,
//	            CopyDtoHAsync, CopyDtoD, MemsetAsync (stream-ordered), Memset,
//	            AllocHost → HostBuffer (pinned)
//	module.go   Context.LoadModule, LoadModuleFile → Module.Function → Function:
//	            Launch(grid, block Dim3, sharedMem, *Stream, ...Arg), LaunchPDL
//	            (where Context.PDL), SetMaxDynamicSharedMem, Attribute; Arg
//	            builders Ptr, I32, U32,
//	            F32, I64, U64
//	stream.go   Context.NewStream → Stream: Synchronize, Wait, Close;
//	            Context.NewEvent → Event: Record, Synchronize, Close; ElapsedMs
//	graph.go    Stream.BeginCapture, Stream.EndCapture → Graph: Launch, Close
//	cublas.go   Context.LoadCublas → Cublas: SetStream, SetWorkspace, GemmEx,
//	            MatMulNT (row-major Y = X·Wᵀ), Version, Close; DataType
//	nccl.go     LoadNCCL → NCCL: GetUniqueID, CommInitRank → Comm: AllReduce,
//	            AllGather, Close
//	errors.go   Error, ErrClosed (and ErrNoCublas, ErrNoNCCL)

// Context is a CUDA context (the device's primary context) bound to one
// locked OS thread. All driver calls for the device run on that thread;
// every method of Context and of the objects it creates may be called from
// any goroutine (they hand the work to the thread through Do). Several
// Contexts (one per GPU) may be open at once, each with its own thread.
type Context struct{ ctxState }
