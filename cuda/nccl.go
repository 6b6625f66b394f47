//go:build cuda

package cuda

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cuda.h>

// NCCL entry points, found with dlsym (nccl.h, NCCL >= 2.x). ncclComm_t is
// an opaque pointer, the enums are ints, cudaStream_t is CUstream.
typedef struct { char internal[128]; } llamacu_ncclUniqueId;
typedef int (*llamacu_ncclGetVersion_t)(int *version);
typedef int (*llamacu_ncclGetUniqueId_t)(llamacu_ncclUniqueId *id);
typedef int (*llamacu_ncclCommInitRank_t)(void **comm, int nranks, llamacu_ncclUniqueId id, int rank);
typedef int (*llamacu_ncclCommDestroy_t)(void *comm);
typedef int (*llamacu_ncclCommAbort_t)(void *comm);
typedef int (*llamacu_ncclAllReduce_t)(const void *send, void *recv, size_t count, int dtype, int op, void *comm, CUstream s);
typedef int (*llamacu_ncclAllGather_t)(const void *send, void *recv, size_t sendcount, int dtype, void *comm, CUstream s);
typedef const char *(*llamacu_ncclGetErrorString_t)(int result);

static struct {
	void *lib;
	llamacu_ncclGetVersion_t get_version;
	llamacu_ncclGetUniqueId_t get_unique_id;
	llamacu_ncclCommInitRank_t comm_init_rank;
	llamacu_ncclCommDestroy_t comm_destroy;
	llamacu_ncclCommAbort_t comm_abort;
	llamacu_ncclAllReduce_t all_reduce;
	llamacu_ncclAllGather_t all_gather;
	llamacu_ncclGetErrorString_t error_string;
} llamacu_nccl;

static char llamacu_nccl_msg[256];

// Loads the library at path. Returns NULL or an error message.
static const char *llamacu_nccl_load(const char *path) {
	void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		const char *e = dlerror();
		snprintf(llamacu_nccl_msg, sizeof llamacu_nccl_msg, "%s", e ? e : "dlopen failed");
		return llamacu_nccl_msg;
	}
#define LLAMACU_SYM(field, name) \
	*(void **)&llamacu_nccl.field = dlsym(lib, name); \
	if (!llamacu_nccl.field) { \
		snprintf(llamacu_nccl_msg, sizeof llamacu_nccl_msg, "%s: no symbol %s", path, name); \
		dlclose(lib); \
		return llamacu_nccl_msg; \
	}
	LLAMACU_SYM(get_version, "ncclGetVersion")
	LLAMACU_SYM(get_unique_id, "ncclGetUniqueId")
	LLAMACU_SYM(comm_init_rank, "ncclCommInitRank")
	LLAMACU_SYM(comm_destroy, "ncclCommDestroy")
	LLAMACU_SYM(comm_abort, "ncclCommAbort")
	LLAMACU_SYM(all_reduce, "ncclAllReduce")
	LLAMACU_SYM(all_gather, "ncclAllGather")
	LLAMACU_SYM(error_string, "ncclGetErrorString")
#undef LLAMACU_SYM
	llamacu_nccl.lib = lib;
	return 0;
}

static int llamacu_nccl_version(int *v) { return llamacu_nccl.get_version(v); }
static int llamacu_nccl_unique_id(void *id128) {
	return llamacu_nccl.get_unique_id((llamacu_ncclUniqueId *)id128);
}
// The id goes by value to ncclCommInitRank: copy it into a C struct.
static int llamacu_nccl_comm_init_rank(void **comm, int nranks, const void *id128, int rank) {
	llamacu_ncclUniqueId id;
	memcpy(id.internal, id128, sizeof id.internal);
	return llamacu_nccl.comm_init_rank(comm, nranks, id, rank);
}
static int llamacu_nccl_comm_destroy(void *comm) { return llamacu_nccl.comm_destroy(comm); }
static int llamacu_nccl_comm_abort(void *comm) { return llamacu_nccl.comm_abort(comm); }
// op 0 is ncclSum.
static int llamacu_nccl_all_reduce_sum(uintptr_t send, uintptr_t recv, size_t count, int dtype, void *comm, CUstream s) {
	return llamacu_nccl.all_reduce((const void *)send, (void *)recv, count, dtype, 0, comm, s);
}
static int llamacu_nccl_all_gather(uintptr_t send, uintptr_t recv, size_t count, int dtype, void *comm, CUstream s) {
	return llamacu_nccl.all_gather((const void *)send, (void *)recv, count, dtype, comm, s);
}
static const char *llamacu_nccl_error_string(int r) { return llamacu_nccl.error_string(r); }
*/
import "C"

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"
)

// NCCL is libnccl.so.2, dlopened at run time (the binary links only
// libcuda). One per process: LoadNCCL returns the same value every time.
type NCCL struct{ ncclState }

type ncclState struct {
	path    string
	version int // e.g. 21903 for 2.19.3
}

var ncclLib struct {
	sync.Mutex
	n    *NCCL
	err  error
	done bool
}

// LoadNCCL dlopens $LLAMACU_NCCL (a file or a directory) or libnccl.so.2.
// The error wraps ErrNoNCCL when no library loads (tests skip on it).
func LoadNCCL() (*NCCL, error) {
	ncclLib.Lock()
	defer ncclLib.Unlock()
	if ncclLib.done {
		return ncclLib.n, ncclLib.err
	}
	ncclLib.done = true
	var msgs []string
	for _, p := range libCandidates("LLAMACU_NCCL", []string{"libnccl.so.2"}) {
		cp := C.CString(p)
		msg := C.llamacu_nccl_load(cp)
		C.free(unsafe.Pointer(cp))
		if msg != nil {
			msgs = append(msgs, C.GoString(msg))
			continue
		}
		n := &NCCL{ncclState{path: p}}
		var v C.int
		if r := C.llamacu_nccl_version(&v); r == 0 {
			n.version = int(v)
		}
		ncclLib.n = n
		return n, nil
	}
	ncclLib.err = fmt.Errorf("%w: %s", ErrNoNCCL, strings.Join(msgs, "; "))
	return nil, ncclLib.err
}

// Library is the file or soname that was dlopened.
func (n *NCCL) Library() string { return n.path }

// Version is ncclGetVersion's code: 10000*major + 100*minor + patch for
// NCCL >= 2.9 (e.g. 21903 = 2.19.3).
func (n *NCCL) Version() int { return n.version }

func ncclCheck(op string, r C.int) error {
	if r == 0 {
		return nil
	}
	name := fmt.Sprintf("ncclResult %d", int(r))
	if s := C.llamacu_nccl_error_string(r); s != nil {
		name = C.GoString(s)
	}
	return &Error{Lib: "nccl", Op: op, Code: int(r), Name: name}
}

// ncclDataType maps to ncclDataType_t: ncclFloat16 6, ncclFloat32 7,
// ncclBfloat16 9 (NCCL >= 2.10).
func (t DataType) ncclDataType() (C.int, bool) {
	switch t {
	case TypeF32:
		return 7, true
	case TypeF16:
		return 6, true
	case TypeBF16:
		return 9, true
	}
	return 0, false
}

// GetUniqueID makes a new communicator id (ncclGetUniqueId). It needs no
// Context.
func (n *NCCL) GetUniqueID() (NCCLUniqueID, error) {
	var id NCCLUniqueID
	err := ncclCheck("ncclGetUniqueId", C.llamacu_nccl_unique_id(unsafe.Pointer(&id[0])))
	return id, err
}

// Comm is one rank's NCCL communicator, bound to a Context's device.
type Comm struct{ commState }

type commState struct {
	c            *Context
	comm         unsafe.Pointer
	nranks, rank int
	mu           sync.Mutex  // Abort against Close
	dead         atomic.Bool // aborted: comm is freed
}

// CommInitRank joins rank (0 ≤ rank < nranks) to the communicator id, on
// c's device. It blocks until all nranks ranks have joined, so call it for
// every rank concurrently, one goroutine per rank, each with its own
// Context (two ranks on one Context would deadlock its thread).
func (n *NCCL) CommInitRank(c *Context, nranks int, id NCCLUniqueID, rank int) (*Comm, error) {
	if nranks < 1 || rank < 0 || rank >= nranks {
		return nil, fmt.Errorf("cuda: ncclCommInitRank: rank %d of %d out of range", rank, nranks)
	}
	m := &Comm{}
	err := c.Do(func() error {
		var comm unsafe.Pointer
		op := fmt.Sprintf("ncclCommInitRank(rank %d of %d, device %d)", rank, nranks, c.ordinal)
		// The id is copied to a C struct by the trampoline.
		if err := ncclCheck(op, C.llamacu_nccl_comm_init_rank(&comm, C.int(nranks), unsafe.Pointer(&id[0]), C.int(rank))); err != nil {
			return err
		}
		m.c, m.comm, m.nranks, m.rank = c, comm, nranks, rank
		return nil
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// Rank and Size are the communicator's rank of this Comm and rank count.
func (m *Comm) Rank() int { return m.rank }

// Size is the number of ranks.
func (m *Comm) Size() int { return m.nranks }

// AllReduce sums count elements of send over all ranks into recv (in place
// when send == recv), asynchronously on s (nil: the default stream). Every
// rank must make the same call; it may be captured into a graph. Called
// inside Do it makes no allocation.
func (m *Comm) AllReduce(send, recv DevicePtr, count int, dt DataType, s *Stream) error {
	if m.c.onThread() {
		return m.collective(false, send, recv, count, dt, s)
	}
	return m.c.Do(func() error { return m.collective(false, send, recv, count, dt, s) })
}

// AllGather concatenates each rank's sendCount elements into recv
// (nranks·sendCount elements, in rank order), asynchronously on s.
func (m *Comm) AllGather(send, recv DevicePtr, sendCount int, dt DataType, s *Stream) error {
	if m.c.onThread() {
		return m.collective(true, send, recv, sendCount, dt, s)
	}
	return m.c.Do(func() error { return m.collective(true, send, recv, sendCount, dt, s) })
}

// collective runs on the context's thread.
func (m *Comm) collective(gather bool, send, recv DevicePtr, count int, dt DataType, s *Stream) error {
	if m.dead.Load() || m.comm == nil {
		return fmt.Errorf("nccl: collective on rank %d: %w", m.rank, ErrClosed)
	}
	t, ok := dt.ncclDataType()
	r := C.int(4) // ncclInvalidArgument
	if ok && count >= 0 {
		cs := cStream(m.c.cuStream(s))
		if gather {
			r = C.llamacu_nccl_all_gather(C.uintptr_t(send), C.uintptr_t(recv), C.size_t(count), t, m.comm, cs)
		} else {
			r = C.llamacu_nccl_all_reduce_sum(C.uintptr_t(send), C.uintptr_t(recv), C.size_t(count), t, m.comm, cs)
		}
	}
	if r == 0 {
		return nil
	}
	name := "ncclAllReduce(sum, %d x %s, rank %d of %d)"
	if gather {
		name = "ncclAllGather(%d x %s per rank, rank %d of %d)"
	}
	return ncclCheck(fmt.Sprintf(name, count, dt, m.rank, m.nranks), r)
}

// Close destroys the communicator (ncclCommDestroy). Calling it twice is a
// no-op.
func (m *Comm) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.comm == nil || m.dead.Load() {
		return nil
	}
	return m.c.Do(func() error {
		err := ncclCheck("ncclCommDestroy", C.llamacu_nccl_comm_destroy(m.comm))
		m.comm = nil
		return err
	})
}

// Abort aborts the communicator (ncclCommAbort): this rank's NCCL work still queued or running
// on the GPU is cancelled, whatever waits for it returns an error, and the communicator is
// freed. Unlike Close it does not go through the context's thread, so it may be called from any
// goroutine while that thread is blocked in a collective that can never complete (a rank died or
// hung). Later collectives return ErrClosed; Close and Abort are then no-ops.
func (m *Comm) Abort() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.comm == nil || m.dead.Load() {
		return nil
	}
	m.dead.Store(true)
	return ncclCheck(fmt.Sprintf("ncclCommAbort(rank %d of %d)", m.rank, m.nranks), C.llamacu_nccl_comm_abort(m.comm))
}
