//go:build cuda || cudaemu

package gpu

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/llamacu/llamacu/cuda"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tp"
)

// Tensor parallelism on GPUs. Each rank is a Backend with its own cuda.Context, hence its own
// locked OS thread, on device (Options.Device + r) mod the device count; model.NewParallel runs
// every rank's step inside that thread (RunStep). The all-reduces after attention and the FFN go
// through Backend.AllReduceSum (model.Collective), which takes one of two paths:
//
//   - NCCL (ranks on distinct GPUs, libnccl.so.2 loaded): ncclAllReduce in place on the fp32
//     rows, queued on the backend's compute stream (the Context's default stream, where every
//     kernel goes), so it is stream-ordered with the kernels around it and a CUDA graph of the
//     decode step captures it. The communicator is an NCCLComm, which also serves the host-side
//     collectives the model makes (the all-gather of vocabulary-split logits).
//   - staged (any tp.Comm, typically tp.NewInProcess): the rows are copied to pinned host memory,
//     the stream is synchronised, the host Comm sums them, and they are copied back. Every
//     all-reduce therefore waits for the GPU (no overlap, no graph capture). It exists so that
//     several ranks can share one GPU, which NCCL refuses ("Duplicate GPU detected"): the tests
//     of TP 2 and 4 on a one-GPU machine, and --tp N on fewer than N GPUs. It is slow and not
//     meant for serving.
//
// The NCCL tp.Comm lives here rather than in package cuda because it is built from a Backend's
// Context and device scratch, and AllReduceSum must recognise it to take the on-stream path;
// package cuda stays a thin wrapper of the driver and libraries, with no notion of tp.

var _ model.Collective = (*Backend)(nil)

// AllReduceSum replaces the first n rows of x by their sum over the ranks of c (model.Collective).
// With an NCCLComm on this backend's context it queues ncclAllReduce on the compute stream and
// returns at once (errors of the collective itself show at the next Read); with any other Comm it
// takes the staged host path described above.
func (b *Backend) AllReduceSum(x model.Buffer, n int, c tp.Comm) error {
	xb := buf(x)
	checkRows("AllReduceSum", n, xb)
	if b.err != nil || n == 0 {
		return b.err // (the model never calls it with one rank; tests do, to run the paths)
	}
	count := n * xb.cols
	if nc, ok := c.(*NCCLComm); ok {
		if nc.ctx != b.ctx {
			return fmt.Errorf("gpu: all-reduce: NCCL communicator of rank %d is bound to device %d's context, not this backend's (device %d)",
				nc.Rank(), nc.ctx.Device(), b.ctx.Device())
		}
		if b.rec.on {
			b.recordAllReduce(nc.comm, xb.ptr, count)
			return b.err
		}
		b.fail(nc.comm.AllReduce(xb.ptr, xb.ptr, count, cuda.TypeF32, nil))
		return b.err
	}
	b.flush() // the staged path waits for the data on the host
	return b.stagedAllReduce(xb, count, c)
}

// stagedAllReduce is the host path: device → pinned host, c.AllReduceSum, host → device. The
// staging buffer holds the whole of x (the model all-reduces one buffer, so it is allocated once).
func (b *Backend) stagedAllReduce(xb *Buffer, count int, c tp.Comm) error {
	bytes := 4 * count
	if b.stage == nil || len(b.stage.Bytes) < bytes {
		if b.stage != nil {
			b.fail(b.ctx.Synchronize()) // a queued copy may still read it
			b.fail(b.stage.Free())
			b.stage = nil
		}
		h, err := b.ctx.AllocHost(int64(max(bytes, 4*xb.rows*xb.cols)))
		if err != nil {
			b.fail(fmt.Errorf("gpu: all-reduce staging buffer: %w", err))
			return b.err
		}
		b.stage = h
	}
	host := b.stage.Floats()[:count]
	b.fail(b.ctx.CopyDtoHAsync(b.stage.Bytes[:bytes], xb.ptr, nil))
	b.fail(b.ctx.Stream().Synchronize())
	if b.err != nil {
		return b.err
	}
	if err := c.AllReduceSum(host); err != nil {
		return fmt.Errorf("gpu: staged all-reduce: %w", err)
	}
	// Truly asynchronous from pinned memory: the next staged all-reduce overwrites the buffer
	// only after its own device-to-host copy, which the stream orders after this one.
	b.fail(b.ctx.CopyHtoDAsync(xb.ptr, b.stage.Bytes[:bytes], nil))
	return b.err
}

// closeCollective frees the staging buffer (Backend.Close).
func (b *Backend) closeCollective() error {
	if b.stage == nil {
		return nil
	}
	err := b.stage.Free()
	b.stage = nil
	return err
}

// ---------------------------------------------------------------- NCCL communicator

// NCCLComm is a tp.Comm over NCCL for one rank, bound to its Backend's context. Backend.
// AllReduceSum recognises it and reduces device buffers on the compute stream; its own
// AllReduceSum and AllGather work on host slices through a device staging area (for the logits
// gather, once per step). Like every tp.Comm it is used by one goroutine — its rank's.
type NCCLComm struct {
	ctx  *cuda.Context
	comm *cuda.Comm

	stage      cuda.DevicePtr // grow-only device scratch for host-slice collectives
	stageBytes int64
	once       sync.Once
	closeErr   error
}

var _ tp.Comm = (*NCCLComm)(nil)

// Rank is this rank's place in the whole group (across nodes).
func (c *NCCLComm) Rank() int { return c.comm.Rank() }

// Size is the number of ranks in the group (across nodes).
func (c *NCCLComm) Size() int { return c.comm.Size() }

// ensure grows the staging area to bytes (on the context's thread).
func (c *NCCLComm) ensure(bytes int64) error {
	if bytes <= c.stageBytes {
		return nil
	}
	bytes = max(bytes, 2*c.stageBytes, 1<<12)
	if c.stage != 0 {
		if err := c.ctx.Synchronize(); err != nil {
			return err
		}
		if err := c.ctx.Free(c.stage); err != nil {
			return err
		}
		c.stage, c.stageBytes = 0, 0
	}
	p, err := c.ctx.Alloc(bytes)
	if err != nil {
		return fmt.Errorf("gpu: NCCL staging area of %d bytes: %w", bytes, err)
	}
	c.stage, c.stageBytes = p, bytes
	return nil
}

// AllReduceSum sums buf over the ranks: copied to the device, ncclAllReduce, copied back.
func (c *NCCLComm) AllReduceSum(buf []float32) error {
	if len(buf) == 0 {
		return nil
	}
	return c.ctx.Do(func() error {
		if err := c.ensure(4 * int64(len(buf))); err != nil {
			return err
		}
		if err := c.ctx.CopyHtoDAsync(c.stage, cuda.Bytes(buf), nil); err != nil {
			return err
		}
		if err := c.comm.AllReduce(c.stage, c.stage, len(buf), cuda.TypeF32, nil); err != nil {
			return err
		}
		if err := c.ctx.CopyDtoHAsync(cuda.Bytes(buf), c.stage, nil); err != nil {
			return err
		}
		return c.ctx.Stream().Synchronize()
	})
}

// AllGather concatenates every rank's src, in rank order, into dst (len Size·len(src)).
func (c *NCCLComm) AllGather(dst, src []float32) error {
	if len(dst) != c.Size()*len(src) {
		return fmt.Errorf("gpu: NCCL all-gather: dst has %d elements, want %d×%d", len(dst), c.Size(), len(src))
	}
	if len(src) == 0 {
		return nil
	}
	return c.ctx.Do(func() error {
		sb := 4 * int64(len(src))
		if err := c.ensure(sb * int64(1+c.Size())); err != nil {
			return err
		}
		send, recv := c.stage, c.stage+cuda.DevicePtr(sb)
		if err := c.ctx.CopyHtoDAsync(send, cuda.Bytes(src), nil); err != nil {
			return err
		}
		if err := c.comm.AllGather(send, recv, len(src), cuda.TypeF32, nil); err != nil {
			return err
		}
		if err := c.ctx.CopyDtoHAsync(cuda.Bytes(dst), recv, nil); err != nil {
			return err
		}
		return c.ctx.Stream().Synchronize()
	})
}

// Barrier returns when every rank has called it: NCCL has no barrier, so it all-reduces one
// float and waits for it.
func (c *NCCLComm) Barrier() error {
	var one [1]float32
	return c.AllReduceSum(one[:])
}

// Close aborts the communicator (ncclCommAbort, from the calling goroutine: a collective of this
// rank stuck on the GPU — a peer died — is cancelled and the context's thread freed), then frees
// its staging area; later calls return the first call's result. This is how the model's abort
// of a failed tensor-parallel step reaches a rank blocked in NCCL.
func (c *NCCLComm) Close() error {
	c.once.Do(func() {
		err := c.comm.Abort()
		if c.stage != 0 {
			err = errors.Join(err, c.ctx.Free(c.stage))
			c.stage, c.stageBytes = 0, 0
		}
		if errors.Is(err, cuda.ErrClosed) {
			err = nil // the context went first: the driver has released everything
		}
		c.closeErr = err
	})
	return c.closeErr
}

// ---------------------------------------------------------------- building a group

// CommMode picks the communicators NewTP builds.
type CommMode int

const (
	// CommAuto uses NCCL when every rank has a GPU of its own and libnccl loads, else the staged
	// in-process path.
	CommAuto CommMode = iota
	// CommNCCL requires NCCL (an error if ranks share a GPU or libnccl does not load).
	CommNCCL
	// CommStaged uses tp.NewInProcess and the staged host all-reduce (ranks may share GPUs).
	CommStaged
)

func (m CommMode) String() string {
	switch m {
	case CommAuto:
		return "auto"
	case CommNCCL:
		return "NCCL"
	case CommStaged:
		return "staged (in-process, via pinned host memory)"
	}
	return fmt.Sprintf("CommMode(%d)", int(m))
}

// TPOptions says which ranks of a tensor-parallel group this process runs.
type TPOptions struct {
	// Size is the number of ranks in the whole group (all nodes).
	Size int
	// Local is the number of ranks in this process (0: Size). With Local < Size (several
	// nodes) the communicators must be NCCL and ID must be node 0's.
	Local int
	// First is the group rank of this process's first rank: node-rank × Local.
	First int
	// Mode picks NCCL or the staged path (CommAuto: NCCL when it can).
	Mode CommMode
	// ID is the NCCL unique id every rank joins (node 0's, shared by tp.Rendezvous). Nil: a new
	// one is made here (single node only).
	ID *cuda.NCCLUniqueID
	// Timeout bounds the NCCL start-up (0: tp.DefaultStartTimeout).
	Timeout time.Duration
}

// Group is this process's ranks of a tensor-parallel group: Backends[i] is group rank
// First+i, talking through Comms[i].
type Group struct {
	Backends []*Backend
	Comms    []tp.Comm
	Mode     CommMode // CommNCCL or CommStaged: what was built
	Devices  []int    // device of each local rank
}

// ModelBackends is Backends as model.Backends, for model.NewParallel or engine.Options.
func (g *Group) ModelBackends() []model.Backend {
	out := make([]model.Backend, len(g.Backends))
	for i, b := range g.Backends {
		out[i] = b
	}
	return out
}

// Close closes the communicators, then the backends.
func (g *Group) Close() error {
	var err error
	for _, c := range g.Comms {
		err = errors.Join(err, c.Close())
	}
	for _, b := range g.Backends {
		err = errors.Join(err, b.Close())
	}
	return err
}

// NewRanks opens n backends, local rank r on device (opts.Device + r) mod the device count, so
// that n ranks share fewer GPUs round-robin. Each has its own Context and locked thread.
func NewRanks(n int, opts Options) ([]*Backend, error) {
	if n < 1 {
		return nil, fmt.Errorf("%w: %d ranks", tp.ErrDegree, n)
	}
	count, err := cuda.DeviceCount()
	if err != nil {
		return nil, fmt.Errorf("gpu: %w", err)
	}
	if count < 1 {
		return nil, fmt.Errorf("gpu: no CUDA device (0 device(s))")
	}
	var bes []*Backend
	for r := range n {
		o := opts
		o.Device = (opts.Device + r) % count
		b, err := New(o)
		if err != nil {
			for _, p := range bes {
				p.Close()
			}
			return nil, fmt.Errorf("gpu: rank %d (device %d): %w", r, o.Device, err)
		}
		bes = append(bes, b)
	}
	return bes, nil
}

// distinctDevices reports whether no two backends share a device.
func distinctDevices(bes []*Backend) bool {
	seen := map[int]bool{}
	for _, b := range bes {
		if seen[b.ctx.Device()] {
			return false
		}
		seen[b.ctx.Device()] = true
	}
	return true
}

// NewTP opens this process's ranks of a tensor-parallel group and their communicators.
// Single node (Local == Size, ID nil) with CommAuto: NCCL when the ranks land on distinct GPUs
// and libnccl loads, the staged path otherwise.
func NewTP(opts Options, o TPOptions) (*Group, error) {
	local := o.Local
	if local == 0 {
		local = o.Size
	}
	switch {
	case o.Size < 1 || local < 1 || local > o.Size || o.First < 0 || o.First+local > o.Size:
		return nil, fmt.Errorf("%w: ranks %d..%d of a group of %d", tp.ErrDegree, o.First, o.First+local-1, o.Size)
	case local < o.Size && o.Mode == CommStaged:
		return nil, fmt.Errorf("gpu: a group spanning processes (%d of %d ranks here) needs NCCL, not the staged path", local, o.Size)
	case local < o.Size && o.ID == nil:
		return nil, fmt.Errorf("gpu: a group spanning processes needs node 0's NCCL id")
	}
	bes, err := NewRanks(local, opts)
	if err != nil {
		return nil, err
	}
	g := &Group{Backends: bes}
	for _, b := range bes {
		g.Devices = append(g.Devices, b.ctx.Device())
	}
	mode := o.Mode
	if mode == CommAuto {
		mode = CommStaged
		if local < o.Size || (o.Size > 1 && distinctDevices(bes)) {
			if _, err := cuda.LoadNCCL(); err == nil {
				mode = CommNCCL
			} else if local < o.Size {
				mode = CommNCCL // fail below with NCCL's own error
			}
		}
	}
	g.Mode = mode
	if mode == CommStaged {
		g.Comms, err = tp.NewInProcess(local)
	} else {
		if !distinctDevices(bes) {
			err = fmt.Errorf("gpu: NCCL needs a GPU per rank: %d ranks on devices %v (NCCL refuses two ranks on one GPU; use the staged path)", local, g.Devices)
		} else {
			g.Comms, err = NewNCCLComms(bes, o.Size, o.First, o.ID, o.Timeout)
		}
	}
	if err != nil {
		if !errors.Is(err, tp.ErrTimeout) { // after a time-out the threads are stuck in NCCL
			for _, b := range bes {
				b.Close()
			}
		}
		return nil, err
	}
	return g, nil
}

// NewNCCLComms joins bes (group ranks first, first+1, …) to the NCCL communicator id (nil: a new
// id, which is only right when this process holds the whole group) of size ranks. Every
// ncclCommInitRank runs at once, each on its backend's thread; it returns when all size ranks —
// in this process and on other nodes — have joined. After timeout (0: tp.DefaultStartTimeout)
// it gives up with a *tp.RankError naming the ranks whose start-up never finished; their threads
// stay blocked in NCCL, so the process should exit.
func NewNCCLComms(bes []*Backend, size, first int, id *cuda.NCCLUniqueID, timeout time.Duration) ([]tp.Comm, error) {
	lib, err := cuda.LoadNCCL()
	if err != nil {
		return nil, fmt.Errorf("gpu: %w", err)
	}
	if id == nil {
		if len(bes) != size {
			return nil, fmt.Errorf("gpu: %d of %d ranks here: the other processes need node 0's NCCL id", len(bes), size)
		}
		u, err := lib.GetUniqueID()
		if err != nil {
			return nil, fmt.Errorf("gpu: %w", err)
		}
		id = &u
	}
	if timeout <= 0 {
		timeout = tp.DefaultStartTimeout
	}
	type result struct {
		i    int
		comm *cuda.Comm
		err  error
	}
	results := make(chan result, len(bes))
	for i, b := range bes {
		go func() {
			c, err := lib.CommInitRank(b.ctx, size, *id, first+i)
			results <- result{i, c, err}
		}()
	}
	comms := make([]tp.Comm, len(bes))
	done := make([]bool, len(bes))
	var errs []error
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for range bes {
		select {
		case r := <-results:
			done[r.i] = true
			if r.err != nil {
				errs = append(errs, fmt.Errorf("rank %d: %w", first+r.i, r.err))
				continue
			}
			comms[r.i] = &NCCLComm{ctx: bes[r.i].ctx, comm: r.comm}
		case <-timer.C:
			var missing []int
			for i, d := range done {
				if !d {
					missing = append(missing, first+i)
				}
			}
			err := fmt.Errorf("gpu: NCCL start-up of %d ranks (here: %d..%d) after %v: %w (a rank on another node may not have started or cannot be reached; NCCL_DEBUG=INFO tells more)",
				size, first, first+len(bes)-1, timeout, &tp.RankError{Op: "ncclCommInitRank", Missing: missing, Err: tp.ErrTimeout})
			return nil, errors.Join(append([]error{err}, errs...)...)
		}
	}
	if len(errs) > 0 {
		for _, c := range comms {
			if c != nil {
				c.Close()
			}
		}
		return nil, fmt.Errorf("gpu: NCCL start-up: %w", errors.Join(errs...))
	}
	return comms, nil
}
