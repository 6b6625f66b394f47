//go:build cudaemu && !cuda

package cuda

// cuBLAS and NCCL for the emulated driver, in Go: GemmEx reads its operands from the emulated
// device, multiplies in float64 and writes C back (the arithmetic of a reference, not of tensor
// cores); NCCL's ranks are Contexts of this process that meet in memory, summing in rank order.

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/llamacu/llamacu/tensor"
)

// ---------------------------------------------------------------- cuBLAS

type Cublas struct{ cublasState }

type cublasState struct {
	c      *Context
	stream *Stream
	closed bool
}

// LoadCublas gives an emulated cuBLAS handle.
func (c *Context) LoadCublas() (*Cublas, error) { return &Cublas{cublasState{c: c}}, nil }

// Library says the handle is emulated.
func (b *Cublas) Library() string { return "emulated cuBLAS (float64 GEMM in Go)" }

// Version reports 12.8.
func (b *Cublas) Version() (int, error) { return 120800, nil }

// SetStream sets the stream GemmEx queues on.
func (b *Cublas) SetStream(s *Stream) error { b.stream = s; return nil }

// SetWorkspace is accepted and unused.
func (b *Cublas) SetWorkspace(p DevicePtr, bytes int64) error { return nil }

// Close destroys the handle.
func (b *Cublas) Close() error { b.closed = true; return nil }

// MatMulNT is Y (M,N) = X (M,K) · Wᵀ with W (N,K), all row-major (see the real binding).
func (b *Cublas) MatMulNT(M, N, K int, x DevicePtr, xType DataType, w DevicePtr, wType DataType,
	y DevicePtr, yType DataType) error {
	return b.GemmEx(true, false, N, M, K, 1, w, wType, K, x, xType, K, 0, y, yType, N)
}

// GemmEx is column-major C = alpha·op(A)·op(B) + beta·C, with the real binding's type rules.
func (b *Cublas) GemmEx(transA, transB bool, m, n, k int, alpha float32,
	a DevicePtr, aType DataType, lda int, bm DevicePtr, bType DataType, ldb int,
	beta float32, cm DevicePtr, cType DataType, ldc int) error {
	c := b.c
	op := fmt.Sprintf("cublasGemmEx(%v, %v, m=%d, n=%d, k=%d, %v·%v→%v, lda=%d, ldb=%d, ldc=%d)",
		transA, transB, m, n, k, aType, bType, cType, lda, ldb, ldc)
	invalid := &Error{Lib: "cublas", Op: op, Code: 7, Name: "CUBLAS_STATUS_INVALID_VALUE"}
	if b.closed || m < 0 || n < 0 || k < 0 || aType != bType || (cType != aType && cType != TypeF32) ||
		aType.Size() == 0 || lda < max(1, rowsOf(transA, m, k)) || ldb < max(1, rowsOf(transB, k, n)) || ldc < max(1, m) {
		return invalid
	}
	if m == 0 || n == 0 {
		return nil
	}
	return c.Do(func() error {
		return c.enqueue(b.stream, op, false, func() error {
			A, err := c.readMatrix(op, a, aType, lda, rowsOf(transA, m, k), colsOf(transA, m, k))
			if err != nil {
				return err
			}
			B, err := c.readMatrix(op, bm, bType, ldb, rowsOf(transB, k, n), colsOf(transB, k, n))
			if err != nil {
				return err
			}
			var C []float64
			if beta != 0 {
				if C, err = c.readMatrix(op, cm, cType, ldc, m, n); err != nil {
					return err
				}
			}
			out := make([]float64, ldc*(n-1)+m)
			for j := 0; j < n; j++ {
				for i := 0; i < m; i++ {
					var s float64
					for p := 0; p < k; p++ {
						var av, bv float64
						if transA {
							av = A[p+i*lda]
						} else {
							av = A[i+p*lda]
						}
						if transB {
							bv = B[j+p*ldb]
						} else {
							bv = B[p+j*ldb]
						}
						s += av * bv
					}
					s *= float64(alpha)
					if beta != 0 {
						s += float64(beta) * C[i+j*ldc]
					}
					out[i+j*ldc] = s
				}
			}
			// Write column by column, leaving the rows between m and ldc alone.
			es := cType.Size()
			col := make([]byte, m*es)
			for j := 0; j < n; j++ {
				encode(col, cType, out[j*ldc:j*ldc+m])
				if err := c.write(op, cm+DevicePtr(j*ldc*es), col); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// rowsOf and colsOf give the stored shape of an operand whose op is (r, cc).
func rowsOf(trans bool, r, cc int) int {
	if trans {
		return cc
	}
	return r
}

func colsOf(trans bool, r, cc int) int {
	if trans {
		return r
	}
	return cc
}

// readMatrix reads a column-major (rows, cols) matrix with leading dimension ld as float64s,
// indexed [i + j·ld].
func (c *Context) readMatrix(op string, p DevicePtr, t DataType, ld, rows, cols int) ([]float64, error) {
	n := ld*(cols-1) + rows
	raw := make([]byte, n*t.Size())
	if err := c.readInto(op, raw, p); err != nil {
		return nil, err
	}
	out := make([]float64, n)
	for i := range out {
		switch t {
		case TypeF32:
			out[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])))
		case TypeF16:
			out[i] = float64(tensor.F16ToF32(binary.LittleEndian.Uint16(raw[2*i:])))
		case TypeBF16:
			out[i] = float64(tensor.BF16ToF32(binary.LittleEndian.Uint16(raw[2*i:])))
		}
	}
	return out, nil
}

func encode(dst []byte, t DataType, v []float64) {
	for i, x := range v {
		switch t {
		case TypeF32:
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(float32(x)))
		case TypeF16:
			binary.LittleEndian.PutUint16(dst[2*i:], tensor.F32ToF16(float32(x)))
		case TypeBF16:
			binary.LittleEndian.PutUint16(dst[2*i:], tensor.F32ToBF16(float32(x)))
		}
	}
}

// ---------------------------------------------------------------- NCCL

type NCCL struct{ ncclState }

type ncclState struct{}

// LoadNCCL gives the emulated NCCL.
func LoadNCCL() (*NCCL, error) { return &NCCL{}, nil }

// Library says NCCL is emulated.
func (n *NCCL) Library() string { return "emulated NCCL (ranks meet in process)" }

// Version reports 2.21.
func (n *NCCL) Version() int { return 22100 }

// GetUniqueID makes a random communicator id.
func (n *NCCL) GetUniqueID() (NCCLUniqueID, error) {
	var id NCCLUniqueID
	_, err := rand.Read(id[:])
	return id, err
}

// ncclGroup is the meeting place of one communicator's ranks.
type ncclGroup struct {
	mu     sync.Mutex
	cond   *sync.Cond
	n      int
	joined int
	closed bool

	// The collective in progress: each rank's contribution, then the result.
	gen     uint64
	in      [][]byte
	arrived int
	left    int
	out     []byte
	err     error
}

var ncclGroups = struct {
	sync.Mutex
	m map[NCCLUniqueID]*ncclGroup
}{m: map[NCCLUniqueID]*ncclGroup{}}

// ncclInitTimeout bounds how long CommInitRank waits for the other ranks (real NCCL waits
// forever; an emulated test should not).
const ncclInitTimeout = 2 * time.Minute

type Comm struct{ commState }

type commState struct {
	g      *ncclGroup
	c      *Context
	rank   int
	nranks int
	closed atomic.Bool // Close may come from any goroutine (Abort)
}

// CommInitRank joins rank of nranks to the communicator id; it returns when all have joined.
func (n *NCCL) CommInitRank(c *Context, nranks int, id NCCLUniqueID, rank int) (*Comm, error) {
	if nranks < 1 || rank < 0 || rank >= nranks {
		return nil, fmt.Errorf("cuda: ncclCommInitRank: rank %d of %d out of range", rank, nranks)
	}
	ncclGroups.Lock()
	g := ncclGroups.m[id]
	if g == nil {
		g = &ncclGroup{n: nranks, in: make([][]byte, nranks)}
		g.cond = sync.NewCond(&g.mu)
		ncclGroups.m[id] = g
	}
	ncclGroups.Unlock()
	op := fmt.Sprintf("ncclCommInitRank(rank %d of %d)", rank, nranks)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.n != nranks {
		return nil, &Error{Lib: "nccl", Op: op + fmt.Sprintf(": the communicator has %d ranks", g.n), Code: 4, Name: "ncclInvalidArgument"}
	}
	g.joined++
	g.cond.Broadcast()
	deadline := time.AfterFunc(ncclInitTimeout, func() { g.mu.Lock(); g.cond.Broadcast(); g.mu.Unlock() })
	defer deadline.Stop()
	start := time.Now()
	for g.joined < g.n {
		if time.Since(start) >= ncclInitTimeout {
			return nil, &Error{Lib: "nccl", Op: op + ": timed out waiting for the other ranks", Code: 6, Name: "ncclRemoteError"}
		}
		g.cond.Wait()
	}
	return &Comm{commState{g: g, c: c, rank: rank, nranks: nranks}}, nil
}

// Rank is this rank.
func (m *Comm) Rank() int { return m.rank }

// Size is the number of ranks.
func (m *Comm) Size() int { return m.nranks }

// AllReduce sums count elements of send over the ranks into recv (send == recv allowed).
func (m *Comm) AllReduce(send, recv DevicePtr, count int, dt DataType, s *Stream) error {
	return m.collective(false, send, recv, count, dt, s)
}

// AllGather concatenates every rank's sendCount elements into recv, in rank order.
func (m *Comm) AllGather(send, recv DevicePtr, sendCount int, dt DataType, s *Stream) error {
	return m.collective(true, send, recv, sendCount, dt, s)
}

func (m *Comm) collective(gather bool, send, recv DevicePtr, count int, dt DataType, s *Stream) error {
	name := "ncclAllReduce"
	if gather {
		name = "ncclAllGather"
	}
	op := fmt.Sprintf("%s(%d × %v, rank %d of %d)", name, count, dt, m.rank, m.nranks)
	if m.closed.Load() || count < 0 || dt.Size() == 0 {
		return &Error{Lib: "nccl", Op: op, Code: 4, Name: "ncclInvalidArgument"}
	}
	c := m.c
	return c.Do(func() error {
		return c.enqueue(s, op, false, func() error {
			in := make([]byte, count*dt.Size())
			if err := c.proc.sync(op); err != nil {
				return err
			}
			if err := c.readInto(op, in, send); err != nil {
				return err
			}
			out, err := m.g.exchange(m.rank, in, gather, dt)
			if err != nil {
				return &Error{Lib: "nccl", Op: op + ": " + err.Error(), Code: 6, Name: "ncclRemoteError"}
			}
			return c.write(op, recv, out)
		})
	})
}

// exchange contributes in as rank and returns the result once every rank has contributed.
func (g *ncclGroup) exchange(rank int, in []byte, gather bool, dt DataType) ([]byte, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.left > 0 { // the previous collective is still being collected
		g.cond.Wait()
	}
	gen := g.gen
	g.in[rank] = in
	g.arrived++
	if g.arrived == g.n {
		g.out, g.err = combine(g.in, gather, dt)
		g.gen++
		g.arrived, g.left = 0, g.n
		g.cond.Broadcast()
	}
	for g.gen == gen && !g.closed {
		g.cond.Wait()
	}
	if g.gen == gen {
		return nil, fmt.Errorf("a rank closed its communicator")
	}
	out, err := g.out, g.err
	if g.left--; g.left == 0 {
		g.in = make([][]byte, g.n)
		g.cond.Broadcast()
	}
	return out, err
}

// combine sums (in rank order, in float32 as NCCL does) or concatenates the contributions.
func combine(in [][]byte, gather bool, dt DataType) ([]byte, error) {
	for r, b := range in {
		if len(b) != len(in[0]) {
			return nil, fmt.Errorf("rank %d gave %d bytes, rank 0 %d", r, len(b), len(in[0]))
		}
	}
	if gather {
		var out []byte
		for _, b := range in {
			out = append(out, b...)
		}
		return out, nil
	}
	es := dt.Size()
	n := len(in[0]) / es
	sum := make([]float64, n)
	for i := range sum {
		var acc float32
		for _, b := range in {
			var v float32
			switch dt {
			case TypeF32:
				v = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
			case TypeF16:
				v = tensor.F16ToF32(binary.LittleEndian.Uint16(b[2*i:]))
			case TypeBF16:
				v = tensor.BF16ToF32(binary.LittleEndian.Uint16(b[2*i:]))
			}
			acc += v
		}
		sum[i] = float64(acc)
	}
	out := make([]byte, len(in[0]))
	encode(out, dt, sum)
	return out, nil
}

// Abort is Close: the emulated ranks wait in Go, and closing the group wakes them with an error
// from any goroutine.
func (m *Comm) Abort() error { return m.Close() }

// Close leaves the communicator; collectives waiting on this rank fail.
func (m *Comm) Close() error {
	if m.closed.Swap(true) {
		return nil
	}
	m.g.mu.Lock()
	m.g.closed = true
	m.g.cond.Broadcast()
	m.g.mu.Unlock()
	return nil
}
