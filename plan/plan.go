// Package plan is the memory planner: for a model shape, a weight dtype, a tensor-parallel degree
// and a workload (context length × concurrent sequences), it computes what each device must hold —
// weights, KV cache, activations, fixed overhead — says whether that fits, and if not, the smallest
// TP degree or the least aggressive dtype that does. `llamacu plan` prints it; the engine calls
// CheckFits before it allocates, so that a model that cannot fit is refused with this explanation
// instead of dying of an out-of-memory error half-way through the upload.
//
// # Arithmetic
//
// Tensor parallelism follows Megatron-LM (Shoeybi et al. 2019), as llamacu's TP design does: with
// degree t,
//
//   - Wq, Wk, Wv are split by heads (each rank holds Heads/t query and KVHeads/t key/value heads),
//     W1 and W3 by output columns (FFN/t each): each rank stores 1/t of the rows of these (out, in)
//     matrices;
//   - Wo and W2 are split along their input dimension (1/t of the columns of the (out, in) matrix),
//     followed by one all-reduce;
//   - the token embedding and every RMSNorm weight are replicated on every rank;
//   - the LM head is split by vocabulary: ⌈Vocab/t⌉ rows per rank (a tied head is the replicated
//     embedding itself and costs nothing more).
//
// Matrices are stored in Options.DType (quantized blocks of 32 along each row), norm vectors in F32,
// exactly as model.Config.WeightBytes counts them; at t = 1 the two agree to the byte.
//
// The KV cache holds K and V for every layer: 2 · Layers · (KVHeads/t) · HeadDim elements of
// Options.KVDType per token per rank, for Batch sequences of Ctx positions each (rounded up to whole
// blocks of BlockSize tokens, as the paged cache allocates them).
//
// Activations are the buffers model.NewState allocates, all fp32, for a step of MaxBatchTokens rows
// (B) and min(Batch, B) logit rows (R), with the TP split applied to the sharded widths:
//
//	x, xb        2 · B · Dim
//	q, att       2 · B · Heads·HeadDim / t
//	k, v         2 · B · KVHeads·HeadDim / t
//	hb, hb2      2 · B · FFN / t
//	xl           R · Dim
//	logits       R · Vocab          (gathered over ranks for sampling)
//
// Overhead is a fixed per-device cost that the caller states: CUDAOverhead (1 GiB) covers the CUDA
// context and the loaded kernel modules (≈ 500 MiB on Hopper with CUDA 12), cuBLAS(Lt)'s workspace
// (32 MiB on Hopper), NCCL's channel buffers when t > 1 (a few hundred MiB) and allocator slack. On
// the CPU the overhead is 0 and the capacity is the host's available memory.
package plan

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/dustin/go-humanize"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// CUDAOverhead is the fixed per-GPU memory the planner reserves for the CUDA context, kernel modules,
// the cuBLAS workspace, NCCL buffers and allocator slack (see the package comment).
const CUDAOverhead int64 = 1 << 30

// DefaultBlockSize is the paged KV cache's block size in tokens when Options.BlockSize is 0.
const DefaultBlockSize = 16

// DefaultMaxBatchTokens is the activation rows of one step when Options.MaxBatchTokens is 0 (and
// Batch is smaller): a prefill chunk of 512 tokens.
const DefaultMaxBatchTokens = 512

// MaxTP is the largest tensor-parallel degree the planner considers (one node of 8 GPUs).
const MaxTP = 8

// Options is the deployment being planned. The zero value of a dtype is tensor.F32; DefaultOptions
// gives the usual GPU deployment (fp16 weights and KV cache, one 80 GiB GPU).
type Options struct {
	DType   tensor.DType // storage of the weight matrices (norms are always F32)
	KVDType tensor.DType // storage of the KV cache elements
	GPUs    int          // tensor-parallel degree t (0: 1)
	GPUMem  int64        // bytes of memory per device (0: capacity unknown, Fits is false)
	Ctx     int          // positions per sequence (0: the model's context length)
	Batch   int          // concurrent sequences (0: 1)
	// MaxBatchTokens is the most tokens one forward step processes: the rows of the activation
	// buffers (0: max(Batch, DefaultMaxBatchTokens)).
	MaxBatchTokens int
	BlockSize      int   // KV cache block size in tokens (0: DefaultBlockSize)
	Overhead       int64 // fixed bytes per device (CUDAOverhead on a GPU, 0 on the CPU)
	// MaxTP is the largest TP degree a report suggests when the deployment does not fit (0:
	// MaxTP; 1 for a single host or GPU, where only a cheaper dtype can help).
	MaxTP int
	// SplitDType is what a rank holds a column shard (Wo, W2) in when its columns are not whole
	// blocks of DType (model.SplitWidens: 7B's FFN of 43 k-quant blocks at TP 2): the shard is
	// model.SplitDType (F16), which a GPU keeps; the zero value, F32, is what the CPU backend
	// widens it to.
	SplitDType tensor.DType
}

// DefaultOptions is fp16 weights and KV cache on one 80 GiB GPU with CUDAOverhead, a batch of one
// sequence at the model's full context.
func DefaultOptions() Options {
	return Options{DType: tensor.F16, KVDType: tensor.F16, GPUs: 1, GPUMem: 80 << 30, Batch: 1, Overhead: CUDAOverhead, SplitDType: model.SplitDType}
}

// Report is the memory of one deployment, per device unless the name says otherwise.
type Report struct {
	Model   string `json:"model"`
	DType   string `json:"dtype"`
	KVDType string `json:"kv_dtype"`
	GPUs    int    `json:"tp"`
	Ctx     int    `json:"ctx"`
	Batch   int    `json:"batch"`
	// MaxBatchTokens is the activation rows planned for.
	MaxBatchTokens int `json:"max_batch_tokens"`

	Params       int64 `json:"params"`        // whole model
	WeightsTotal int64 `json:"weights_total"` // whole model at DType, bytes (unsharded)
	Weights      int64 `json:"weights"`       // per device: sharded and replicated weights
	Replicated   int64 `json:"replicated"`    // of Weights: embedding and norms, held by every rank
	KVPerToken   int64 `json:"kv_per_token"`  // per device, all layers, K and V
	KVTokens     int64 `json:"kv_tokens"`     // Batch · Ctx rounded up to blocks
	KV           int64 `json:"kv"`            // per device
	Activations  int64 `json:"activations"`   // per device
	Overhead     int64 `json:"overhead"`      // per device
	Total        int64 `json:"total"`         // per device: weights + KV + activations + overhead
	GPUMem       int64 `json:"gpu_mem"`       // capacity per device (0: unknown)
	Fits         bool  `json:"fits"`
	// MaxKVTokens is how many KV positions fit beside the weights, activations and overhead (0 when
	// not even those fit); MaxBatchAtCtx is that in whole sequences of Ctx positions.
	MaxKVTokens   int64 `json:"max_kv_tokens"`
	MaxBatchAtCtx int64 `json:"max_batch_at_ctx"`

	// When it does not fit: the smallest TP degree that fits with DType (0: none up to MaxTP), and
	// the least aggressive dtype that fits at this TP degree ("" : none).
	FitsAtTP    int    `json:"fits_at_tp,omitempty"`
	FitsAtDType string `json:"fits_at_dtype,omitempty"`

	// WidenedSplit is the dtype Wo and W2 are held in when this TP degree leaves their shards
	// partial blocks of DType ("": they stay in DType).
	WidenedSplit string `json:"widened_split,omitempty"`
}

// ErrTP reports a tensor-parallel degree the model's shape cannot be split by.
var ErrTP = errors.New("plan: bad tensor-parallel degree")

// ErrDoesNotFit is returned by CheckFits when the deployment needs more memory than a device has.
var ErrDoesNotFit = errors.New("does not fit in memory")

// ErrOptions reports an impossible option (negative sizes, an unknown dtype).
var ErrOptions = errors.New("plan: bad options")

// ValidTP lists the tensor-parallel degrees up to MaxTP that cfg can be split by: divisors of
// KVHeads (hence of Heads) that also divide FFN. Column shards that are not whole quantization
// blocks of dtype are widened (Options.SplitDType), so dtype limits nothing but whole rows.
func ValidTP(cfg model.Config, dtype tensor.DType) []int {
	var out []int
	for t := 1; t <= MaxTP; t++ {
		if checkTP(cfg, dtype, t) == nil {
			out = append(out, t)
		}
	}
	return out
}

func checkTP(cfg model.Config, dtype tensor.DType, t int) error {
	bs := dtype.BlockSize()
	switch {
	case t <= 0:
		return fmt.Errorf("%w: %d", ErrTP, t)
	case cfg.KVHeads%t != 0 || cfg.Heads%t != 0:
		return fmt.Errorf("%w: %d does not divide %d KV heads", ErrTP, t, cfg.KVHeads)
	case cfg.FFN%t != 0:
		return fmt.Errorf("%w: %d does not divide the FFN width %d", ErrTP, t, cfg.FFN)
	case cfg.Dim%bs != 0:
		return fmt.Errorf("%w: rows of %d are not whole %v blocks of %d", ErrTP, cfg.Dim, dtype, bs)
	}
	return nil
}

// Compute plans cfg under opts. It fails on bad options or a TP degree the shape cannot be split
// by; the error then names the valid degrees.
func Compute(cfg model.Config, opts Options) (Report, error) {
	if err := cfg.Validate(); err != nil {
		return Report{}, err
	}
	o, err := normalise(cfg, opts)
	if err != nil {
		return Report{}, err
	}
	t := o.GPUs
	if err := checkTP(cfg, o.DType, t); err != nil {
		valid := ValidTP(cfg, o.DType)
		return Report{}, fmt.Errorf("%w (%s has %d query / %d KV heads, FFN %d; valid degrees up to %d: %s)",
			err, name(cfg), cfg.Heads, cfg.KVHeads, cfg.FFN, MaxTP, joinInts(valid))
	}
	r := Report{
		Model: name(cfg), DType: o.DType.String(), KVDType: o.KVDType.String(), GPUs: t, Ctx: o.Ctx, Batch: o.Batch,
		MaxBatchTokens: o.MaxBatchTokens, Params: cfg.ParamCount(), WeightsTotal: cfg.WeightBytes(o.DType),
		GPUMem: o.GPUMem, Overhead: o.Overhead,
	}
	r.Weights, r.Replicated, err = weightsPerRank(cfg, o.DType, o.SplitDType, t)
	if model.SplitWidens(o.DType, cfg.FFN, t) || model.SplitWidens(o.DType, cfg.Heads*cfg.HeadDim(), t) {
		r.WidenedSplit = o.SplitDType.String()
	}
	if err != nil {
		return Report{}, err
	}
	kvElems := int64(2*cfg.Layers) * int64(cfg.KVHeads/t*cfg.HeadDim())
	if r.KVPerToken, err = o.KVDType.Bytes(kvElems); err != nil {
		return Report{}, fmt.Errorf("%w: KV cache in %v: %v", ErrOptions, o.KVDType, err)
	}
	perSeq := int64((o.Ctx + o.BlockSize - 1) / o.BlockSize * o.BlockSize)
	// Sizes are bounded (normalise, cfg.Validate), their products are not: refuse, in float64
	// before any int64 product can wrap around, a deployment no device could ever hold.
	need := float64(r.Weights) + float64(perSeq)*float64(o.Batch)*float64(r.KVPerToken) +
		activationsF(cfg, t, o.MaxBatchTokens, min(o.Batch, o.MaxBatchTokens)) + float64(o.Overhead)
	if need > maxPlanBytes {
		return Report{}, fmt.Errorf("%w: %d sequence(s) × %d positions, %d tokens per step need about %.3g bytes per device, more than any device holds",
			ErrOptions, o.Batch, o.Ctx, o.MaxBatchTokens, need)
	}
	r.KVTokens = perSeq * int64(o.Batch)
	r.KV = r.KVTokens * r.KVPerToken
	r.Activations = activations(cfg, t, o.MaxBatchTokens, min(o.Batch, o.MaxBatchTokens))
	r.Total = r.Weights + r.KV + r.Activations + r.Overhead
	r.Fits = o.GPUMem > 0 && r.Total <= o.GPUMem
	if free := o.GPUMem - r.Weights - r.Activations - r.Overhead; free > 0 && r.KVPerToken > 0 {
		r.MaxKVTokens = free / r.KVPerToken
		r.MaxBatchAtCtx = r.MaxKVTokens / perSeq
	}
	if !r.Fits && o.GPUMem > 0 {
		for _, tt := range ValidTP(cfg, o.DType) {
			if tt <= t || tt > o.MaxTP {
				continue
			}
			oo := opts
			oo.GPUs = tt
			if rr, err := Compute(cfg, oo); err == nil && rr.Fits {
				r.FitsAtTP = tt
				break
			}
		}
		for _, d := range cheaper(o.DType) {
			oo := opts
			oo.DType = d
			if rr, err := Compute(cfg, oo); err == nil && rr.Fits {
				r.FitsAtDType = d.String()
				break
			}
		}
	}
	return r, nil
}

// normalise fills the zero options with their defaults and rejects impossible ones.
func normalise(cfg model.Config, o Options) (Options, error) {
	if o.GPUs == 0 {
		o.GPUs = 1
	}
	if o.Ctx == 0 {
		o.Ctx = cfg.MaxSeq
	}
	if o.Batch == 0 {
		o.Batch = 1
	}
	if o.MaxBatchTokens == 0 {
		o.MaxBatchTokens = max(o.Batch, DefaultMaxBatchTokens)
	}
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.MaxTP == 0 {
		o.MaxTP = MaxTP
	}
	switch {
	case o.GPUs < 0 || o.Ctx < 0 || o.Batch < 0 || o.MaxBatchTokens < 0 || o.BlockSize < 0 || o.GPUMem < 0 || o.Overhead < 0 || o.MaxTP < 0:
		return o, fmt.Errorf("%w: negative size in %+v", ErrOptions, o)
	case o.Ctx > maxPlanCount || o.Batch > maxPlanCount || o.MaxBatchTokens > maxPlanCount || o.BlockSize > maxPlanCount || o.Overhead > maxPlanBytes:
		return o, fmt.Errorf("%w: absurdly large: context %d, batch %d, tokens per step %d, block size %d, overhead %d",
			ErrOptions, o.Ctx, o.Batch, o.MaxBatchTokens, o.BlockSize, o.Overhead)
	case o.DType.BlockBytes() == 0:
		return o, fmt.Errorf("%w: weight dtype: %w: %v", ErrOptions, tensor.ErrUnknownDType, o.DType)
	case o.KVDType.BlockBytes() == 0:
		return o, fmt.Errorf("%w: KV dtype: %w: %v", ErrOptions, tensor.ErrUnknownDType, o.KVDType)
	}
	return o, nil
}

// weightsPerRank is the bytes one rank of t holds, and how much of that is replicated; a column
// shard that is not whole blocks of d counts in split.
func weightsPerRank(cfg model.Config, d, split tensor.DType, t int) (total, replicated int64, err error) {
	dim, hd, L := int64(cfg.Dim), int64(cfg.HeadDim()), int64(cfg.Layers)
	mat := func(rows, cols int64) int64 {
		if err != nil {
			return 0
		}
		var b int64
		if cols%int64(d.BlockSize()) != 0 {
			err = fmt.Errorf("%w: rows of %d are not whole %v blocks in %s", ErrTP, cols, d, name(cfg))
			return 0
		}
		b, err = d.Bytes(rows * cols)
		return b
	}
	qRows := int64(cfg.Heads/t) * hd    // this rank's query heads
	kvRows := int64(cfg.KVHeads/t) * hd // this rank's KV heads
	ffn := int64(cfg.FFN / t)
	colShard := func(rows, cols int64) int64 { // Wo, W2: split along their input
		if err == nil && cols%int64(d.BlockSize()) != 0 {
			var b int64
			b, err = split.Bytes(rows * cols)
			return b
		}
		return mat(rows, cols)
	}
	perLayer := mat(qRows, dim) + 2*mat(kvRows, dim) + // Wq, Wk, Wv: row split by heads
		colShard(dim, qRows) + // Wo
		2*mat(ffn, dim) + colShard(dim, ffn) // W1, W3 row split; W2
	norms := (2*L + 1) * dim * 4
	embed := mat(int64(cfg.Vocab), dim)
	replicated = embed + norms
	total = L*perLayer + replicated
	if !cfg.TiedOutput {
		total += mat((int64(cfg.Vocab)+int64(t)-1)/int64(t), dim) // LM head, vocab split
	}
	return total, replicated, err
}

// maxPlanBytes bounds what Compute plans per device (4 EiB): far beyond any device, and small
// enough that every sum of the report fits an int64.
const maxPlanBytes = 1 << 62

// maxPlanCount bounds the counts of Options (positions, sequences, tokens per step, block size).
const maxPlanCount = 1 << 40

// activationsF is activations in float64, which cannot overflow.
func activationsF(cfg model.Config, t, b, r int) float64 {
	q := float64(cfg.Heads / t * cfg.HeadDim())
	kv := float64(cfg.KVHeads / t * cfg.HeadDim())
	f := float64(cfg.FFN / t)
	B, R := float64(b), float64(r)
	return 4 * (2*B*float64(cfg.Dim) + 2*B*q + 2*B*kv + 2*B*f + R*float64(cfg.Dim) + R*float64(cfg.Vocab))
}

// activations is the fp32 State buffers of one rank: b rows, r logit rows (see the package comment).
func activations(cfg model.Config, t, b, r int) int64 {
	B, R := int64(b), int64(r)
	q := int64(cfg.Heads / t * cfg.HeadDim())
	kv := int64(cfg.KVHeads / t * cfg.HeadDim())
	f := int64(cfg.FFN / t)
	floats := 2*B*int64(cfg.Dim) + 2*B*q + 2*B*kv + 2*B*f + R*int64(cfg.Dim) + R*int64(cfg.Vocab)
	return floats * 4
}

// cheaper lists the dtypes that store weights in fewer bytes than d, least aggressive first.
func cheaper(d tensor.DType) []tensor.DType {
	order := []tensor.DType{tensor.F32, tensor.F16, tensor.Q8_0, tensor.Q4_0}
	if d == tensor.BF16 {
		d = tensor.F16
	}
	i := slices.Index(order, d)
	if i < 0 {
		return nil
	}
	return order[i+1:]
}

// CheckFits is the engine's guard before it allocates: nil when cfg under opts fits in opts.GPUMem,
// else an error wrapping ErrDoesNotFit (or the planning error) whose text is the explanation: what
// is needed per device against what there is, and what would fit instead. opts.GPUMem ≤ 0 means
// the capacity is unknown, and CheckFits returns nil.
func CheckFits(cfg model.Config, opts Options) error {
	if opts.GPUMem <= 0 {
		return nil
	}
	r, err := Compute(cfg, opts)
	if err != nil {
		return err
	}
	if r.Fits {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrDoesNotFit, r.Explain())
}

// Explain says in one paragraph what the deployment needs per device, whether it fits, and what
// would fit instead.
func (r Report) Explain() string {
	var sb strings.Builder
	dev := "device"
	if r.GPUs > 1 {
		dev = fmt.Sprintf("device (TP %d)", r.GPUs)
	}
	fmt.Fprintf(&sb, "%s in %s needs %s per %s: weights %s, KV cache %s (%s × %d positions, %s/token in %s), activations %s, overhead %s",
		r.Model, r.DType, gib(r.Total), dev, gib(r.Weights), gib(r.KV), plural(r.Batch, "sequence"), r.Ctx, humanize.IBytes(uint64(r.KVPerToken)), r.KVDType,
		gib(r.Activations), gib(r.Overhead))
	switch {
	case r.GPUMem <= 0:
		sb.WriteString("; capacity unknown")
		return sb.String()
	case r.Fits:
		fmt.Fprintf(&sb, "; fits in %s (%s spare, room for %s of %d)", gib(r.GPUMem), gib(r.GPUMem-r.Total), plural(int(r.MaxBatchAtCtx), "sequence"), r.Ctx)
		return sb.String()
	}
	fmt.Fprintf(&sb, "; only %s available", gib(r.GPUMem))
	if r.MaxKVTokens > 0 {
		fmt.Fprintf(&sb, " (the weights fit, with room for %d KV positions: %s of %d)", r.MaxKVTokens, plural(int(r.MaxBatchAtCtx), "sequence"), r.Ctx)
	}
	var alt []string
	if r.FitsAtTP > 0 {
		alt = append(alt, fmt.Sprintf("tensor parallelism over %d devices", r.FitsAtTP))
	}
	if r.FitsAtDType != "" {
		alt = append(alt, fmt.Sprintf("%s weights", r.FitsAtDType))
	}
	if len(alt) > 0 {
		fmt.Fprintf(&sb, "; it would fit with %s", strings.Join(alt, ", or with "))
	} else {
		sb.WriteString("; reduce the context or the number of sequences")
	}
	return sb.String()
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func gib(b int64) string { return humanize.IBytes(uint64(max(b, 0))) }

func name(cfg model.Config) string {
	if cfg.Name != "" {
		return cfg.Name
	}
	return fmt.Sprintf("model (dim %d, %d layers)", cfg.Dim, cfg.Layers)
}

func joinInts(xs []int) string {
	if len(xs) == 0 {
		return "none"
	}
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ", ")
}

// HostMemory is the memory the host can still give a process: MemAvailable from /proc/meminfo
// (Linux). The CPU backend's capacity for CheckFits.
func HostMemory() (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, fmt.Errorf("plan: host memory: %w", err)
	}
	return parseMemAvailable(string(b))
}

// parseMemAvailable reads the "MemAvailable: N kB" line of /proc/meminfo.
func parseMemAvailable(meminfo string) (int64, error) {
	for _, line := range strings.Split(meminfo, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "MemAvailable:" {
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil || n < 0 {
				return 0, fmt.Errorf("plan: host memory: bad line %q", line)
			}
			if len(f) >= 3 && f[2] == "kB" {
				n <<= 10
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("plan: host memory: no MemAvailable in /proc/meminfo")
}
