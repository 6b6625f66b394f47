package model

import "github.com/llamacu/llamacu/tensor"

// Buffer is an fp32 activation matrix owned by a backend, allocated once with the most rows a step
// can hold. Ops act on its first n rows; rows are contiguous, Cols() floats apart.
type Buffer interface {
	Rows() int
	Cols() int
}

// Weight is a parameter tensor resident on a backend (kept in its file dtype or converted).
type Weight interface {
	Shape() []int // row-major, as tensor.Tensor.Shape
	DType() tensor.DType
}

// KVLayout is the geometry of a paged KV cache. K and V are each stored as
//
//	(Layers, NumBlocks, BlockSize, KVHeads, HeadDim)
//
// and a sequence's token at position p lives in block BlockTable[p/BlockSize], slot p%BlockSize.
// Blocks are shared by all sequences; the host-side BlockAllocator hands them out.
type KVLayout struct {
	Layers    int
	KVHeads   int
	HeadDim   int
	BlockSize int // tokens per block
	NumBlocks int // blocks in the pool
}

// KVCache is a backend's storage for a KVLayout.
type KVCache interface {
	Layout() KVLayout
}

// Batch is one forward step: B tokens, each from some sequence at some position. Prefill (many
// tokens of one sequence), decode (one token of each of many sequences) and mixed steps are all
// batches. Within a step, tokens of one sequence must come in increasing position order, and every
// position below a token's own must already be in the cache or earlier in the same batch.
type Batch struct {
	Tokens []int32 // (B) token ids
	Pos    []int32 // (B) position of each token in its sequence
	Seq    []int32 // (B) sequence slot of each token: an index into BlockTables
	// BlockTables[s] lists the physical KV blocks of sequence slot s, logical block order.
	BlockTables [][]int32
}

// Len is B, the number of tokens in the step.
func (b *Batch) Len() int { return len(b.Tokens) }

// Backend is the seam between the forward pass and a compute device. Every op works on the first
// n rows of its buffers (n = B tokens, or the number of rows gathered for logits); buffers are fp32.
// Each op documents the plain loop it must equal; the cpu package is that reference, and the
// conformance suite (model/modeltest) checks any backend against it.
//
// Ops report no errors: shape mismatches are programmer errors (they panic, naming the shapes), and
// device errors are sticky and returned by the next Read. Implementations allocate nothing per op.
type Backend interface {
	// Name identifies the backend and its device ("cpu (8 threads)", "cuda: NVIDIA H100 …").
	Name() string
	// Upload makes a host tensor resident. The tensor's Data may be memory-mapped and must stay
	// valid while the Backend lives (the CPU backend reads F32 weights in place).
	Upload(t *tensor.Tensor) (Weight, error)
	// NewBuffer allocates an fp32 (rows, cols) activation buffer.
	NewBuffer(rows, cols int) (Buffer, error)
	// NewKVCache allocates zeroed K and V storage for the layout.
	NewKVCache(l KVLayout) (KVCache, error)

	// Embed: out[i,:] = table[tokens[i],:] for i < len(tokens). out (B, dim), table (vocab, dim).
	Embed(out Buffer, table Weight, tokens []int32)
	// RMSNorm: out[i,:] = x[i,:] / sqrt(mean_j(x[i,j]²) + eps) · w. out, x (n, dim); w (dim).
	// out may be x.
	RMSNorm(out, x Buffer, w Weight, n int, eps float32)
	// MatMul: out[i,r] = Σ_k x[i,k]·w[r,k]. out (n, N), x (n, K), w (N, K). out is not x.
	MatMul(out, x Buffer, w Weight, n int)
	// RoPE rotates, in place, each head of each row i by position pos[i], interleaved pairs:
	// for j < headDim/2, θ = pos·theta^(−2j/headDim), (x[2j], x[2j+1]) ← (x[2j]·cosθ − x[2j+1]·sinθ,
	// x[2j]·sinθ + x[2j+1]·cosθ). x (len(pos), heads·headDim).
	RoPE(x Buffer, headDim int, pos []int32, theta float32)
	// StoreKV writes row i of k and v (B, kv_heads·head_dim) into layer's cache at the slot of
	// (b.Seq[i], b.Pos[i]).
	StoreKV(c KVCache, layer int, k, v Buffer, b *Batch)
	// Attention is causal grouped-query attention over the cache. For token i (sequence s, position
	// p) and query head h with KV head g = h / (heads/kv_heads):
	//   a[t] = softmax_t( q[i,h,:]·K[s,t,g,:] / sqrt(head_dim) ), t = 0..p
	//   out[i,h,:] = Σ_t a[t]·V[s,t,g,:]
	// out, q (B, heads·head_dim). StoreKV for this step must have run first.
	Attention(out, q Buffer, c KVCache, layer int, b *Batch)
	// SwiGLU: out[i,j] = silu(gate[i,j])·up[i,j], silu(x) = x/(1+e^−x). All (n, ffn). out may be gate.
	SwiGLU(out, gate, up Buffer, n int)
	// Add: x[i,:] += y[i,:]. x, y (n, dim).
	Add(x, y Buffer, n int)
	// GatherRows: out[i,:] = x[rows[i],:]. out (len(rows), cols), x (B, cols). out is not x.
	GatherRows(out, x Buffer, rows []int32)
	// Read copies the first n rows of x to dst (len ≥ n·cols), after all queued work, and returns
	// any error the device has seen.
	Read(dst []float32, x Buffer, n int) error
	// Close releases device memory.
	Close() error
}

// Optional fast paths. A backend may implement any of these; the forward pass finds them by type
// assertion, and each doc comment gives the unfused sequence it must equal (the conformance
// suite checks the equality where a backend offers one).

// RoPEStorer fuses the rotation of q and k with the paged K/V store. It must equal
//
//	RoPE(q, headDim, b.Pos, theta); RoPE(k, headDim, b.Pos, theta); StoreKV(c, layer, k, v, b)
type RoPEStorer interface {
	RoPEStoreKV(q, k, v Buffer, c KVCache, layer int, b *Batch, headDim int, theta float32)
}

// QKVMatMuler runs the query, key and value projections of one input at once. It must equal
//
//	MatMul(q, x, wq, n); MatMul(k, x, wk, n); MatMul(v, x, wv, n)
type QKVMatMuler interface {
	MatMulQKV(q, k, v, x Buffer, wq, wk, wv Weight, n int)
}

// QKVRoPEStorer runs the attention block's prologue at once: the q, k, v projections, RoPE on q
// and k, and the store of k and v into the cache at layer for the batch's positions. For q and
// the cache it must equal (n = b.Len())
//
//	MatMulQKV(q, k, v, x, wq, wk, wv, n); RoPEStoreKV(q, k, v, c, layer, b, headDim, theta)
//
// up to the rounding of q, k and v where a backend keeps them in the weights' dtype (the CUDA
// backend's prefill); k and v are scratch whose contents afterwards are unspecified (attention
// reads the cache).
type QKVRoPEStorer interface {
	MatMulQKVRoPEStoreKV(q, k, v, x Buffer, wq, wk, wv Weight, c KVCache, layer int, b *Batch, headDim int, theta float32)
}

// GateUpMatMuler runs the feed-forward block's gate and up projections and SwiGLU at once. It
// must equal (tmp, (n, ffn), is scratch whose contents afterwards are unspecified)
//
//	MatMul(out, x, gate, n); MatMul(tmp, x, up, n); SwiGLU(out, out, tmp, n)
type GateUpMatMuler interface {
	MatMulSwiGLU(out, tmp, x Buffer, gate, up Weight, n int)
}

// FFNMatMuler runs the whole feed-forward block's matrix work at once: the gate and up
// projections, SwiGLU and the down projection. It must equal (h and tmp, (n, ffn), are scratch
// whose contents afterwards are unspecified; out may be x)
//
//	MatMulSwiGLU(h, tmp, x, gate, up, n); MatMul(out, h, down, n)
//
// up to the rounding of the intermediates: a backend may keep gate, up and h in the weights'
// dtype where its matmul rounds its input to that dtype anyway (the CUDA backend's prefill does,
// so that they never make the round trip through fp32).
type FFNMatMuler interface {
	MatMulFFN(out, h, tmp, x Buffer, gate, up, down Weight, n int)
}

// AddRMSNormer fuses a residual add with the RMSNorm after it. It must equal (out may be y,
// not x)
//
//	Add(x, y, n); RMSNorm(out, x, w, n, eps)
type AddRMSNormer interface {
	AddRMSNorm(out, x, y Buffer, w Weight, n int, eps float32)
}

// NormFolder folds the residual add and the RMSNorm in front of an attention or feed-forward
// block into the block's first projections, where a fused op would otherwise read the norm's
// output from a launch of its own. The residual moves to another buffer: the kernel that folds
// the sum in still reads x while it writes x + y. For the attention block it must equal
//
//	xout = x + y; h = rmsnorm(xout)·norm; MatMulQKVRoPEStoreKV(q, k, v, h, wq, wk, wv, c, layer, b, headDim, theta)
//
// and for the feed-forward block
//
//	xout = x + y; h = rmsnorm(xout)·norm; MatMulFFN(out, hb, tmp, h, gate, up, down, n)
//
// up to fp32 rounding (the norm's 1/rms may scale the projections' sums instead of h). xout must
// not be x or y; h may be y, out may be h; h, hb, tmp and x hold unspecified values afterwards.
type NormFolder interface {
	AddRMSNormQKVRoPEStoreKV(xout, h, x, y Buffer, norm Weight, eps float32, q, k, v Buffer, wq, wk, wv Weight, c KVCache, layer int, b *Batch, headDim int, theta float32)
	AddRMSNormFFN(xout, h, x, y Buffer, norm Weight, eps float32, out, hb, tmp Buffer, gate, up, down Weight, n int)
}

// StepRunner runs a whole forward step inside f on the backend's own terms — the CUDA backend
// runs it on its context's locked OS thread, where launches are direct and allocation-free, and
// may capture it into a graph. RunStep(f) must equal f().
type StepRunner interface {
	RunStep(f func() error) error
}

// TopKer reads each row's k best logits instead of the whole row: what a sampler with top-k
// (or greedy decoding) needs, in 8·k bytes per row instead of 4·cols. It must equal
//
//	Read(rows, x, n); then for each row i < n: sample.TopK(vals[i·k:], ids[i·k:], rows[i], k)
//
// (best first; of equal values the lower column; NaN as −Inf, −0 as +0), for any
// 1 ≤ k ≤ min(x.Cols(), sample.MaxTopK), with len(vals), len(ids) ≥ n·k. Like Read, it waits for
// all queued work and returns any error the device has seen; bad sizes are an error.
type TopKer interface {
	TopK(vals []float32, ids []int32, x Buffer, n, k int) error
}

// MemoryReporter is an optional Backend interface for a backend with memory of its own (a GPU):
// the bytes free now and in all, and the bytes one element of its KV cache takes, so that a
// scheduler can size the KV cache from what the weights leave (vLLM's gpu_memory_utilization).
type MemoryReporter interface {
	FreeMemory() (free, total int64, err error)
	KVSizer
}

// KVSizer is an optional Backend interface: the bytes one element of its KV cache takes (4 for
// float32, 2 for float16), so that a scheduler sizes a KV cache by what it really holds.
type KVSizer interface {
	KVElementBytes() int
}
