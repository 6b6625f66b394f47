//go:build cuda || cudaemu

package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/llamacu/llamacu/cuda"
	"github.com/llamacu/llamacu/gpu"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
	"github.com/llamacu/llamacu/tp"
)

// The CUDA backend on device 0 ($LLAMACU_DEVICE selects another). Weight matrices are stored in
// fp16 on the device ($LLAMACU_WEIGHTS=bf16 for bf16, =stored to keep each file's dtype, F32
// included), except Q8_0, Q4_0, Q4_K, Q5_K and Q6_K ones, which stay quantised ($LLAMACU_QUANT=widen converts them too); the KV cache is fp16 ($LLAMACU_KV=f32 for fp32). Prefill attention runs on the
// tensor cores where it can ($LLAMACU_PREFILL=v3: the previous tensor-core kernel, =simt: the
// fp32 SIMT kernel, for comparisons); what its cuBLAS GEMMs write (q, k, v; the feed-forward
// block's gate and up, and SwiGLU's output) stays in the weight dtype ($LLAMACU_INTERMEDIATES=f32:
// through fp32, for comparisons).
// Repeated steps (decode) replay as CUDA graphs ($LLAMACU_GRAPHS=0: launch by launch). Decode
// matmuls run the split-K GEMV kernels for one row and the tensor-core ones (v4) for 2–8
// ($LLAMACU_GEMV=v3: split-K for every step, =v2: the version before it, =v4-all: v4 for one
// row too, for comparisons),
// the q/k/v one with RoPE and the KV store in its epilogue ($LLAMACU_ROPE=separate: their own
// launch), and at one row the residual add and RMSNorm before the q/k/v and gate/up GEMVs
// folded into them ($LLAMACU_NORM=separate: their own launch); decode attention on the fp16 cache runs v5 (tensor cores) where query heads share a
// KV head and v4 (cp.async-pipelined) where they do not, and otherwise v3 in steps of 8 or more
// decode rows and v2 below ($LLAMACU_DECODE=v5, =v4, =v3 or =v2 forces one).
// $LLAMACU_PDL=1 launches kernels with programmatic dependent launch on sm_90 (each overlaps the
// end of the one before; off until measured).
//
// With --tp N the N ranks go to devices $LLAMACU_DEVICE+r mod the device count, and talk over
// NCCL when each has a GPU of its own and libnccl.so.2 loads, else over the staged in-process
// path (ranks sharing a GPU; slow, for tests). $LLAMACU_TP_COMM=nccl or =staged forces one.
func init() {
	backends["cuda"] = func(int) (model.Backend, error) {
		opts, err := cudaOptions()
		if err != nil {
			return nil, err
		}
		return gpu.New(opts)
	}
	groupBuilders["cuda"] = buildCUDAGroup
}

// cudaOptions reads the backend's settings from the environment.
func cudaOptions() (gpu.Options, error) {
	opts := gpu.Options{Weights: tensor.F16}
	if d := os.Getenv("LLAMACU_DEVICE"); d != "" {
		if _, err := fmt.Sscanf(d, "%d", &opts.Device); err != nil {
			return opts, fmt.Errorf("%w: LLAMACU_DEVICE=%q is not a device number", errUsage, d)
		}
	}
	kv, err := kvType()
	if err != nil {
		return opts, err
	}
	opts.KVF32 = kv == "f32"
	for _, sw := range cudaSwitches {
		v := strings.ToLower(os.Getenv(sw.env))
		set, ok := sw.choices[v]
		if !ok {
			return opts, fmt.Errorf("%w: %s=%q: want %s", errUsage, sw.env, v, sw.want)
		}
		if set != nil {
			set(&opts)
		}
	}
	return opts, nil
}

// cudaSwitches are the backend's A/B settings: each variable's accepted values (lower case; ""
// is unset) and what each sets, nil for the default.
var cudaSwitches = []struct {
	env     string
	choices map[string]func(*gpu.Options)
	want    string // for the error message
}{
	{"LLAMACU_WEIGHTS", map[string]func(*gpu.Options){"": nil, "f16": nil, "fp16": nil,
		"bf16": func(o *gpu.Options) { o.Weights = tensor.BF16 }, "stored": func(o *gpu.Options) { o.Weights = tensor.F32 }},
		"f16, bf16 or stored"},
	{"LLAMACU_QUANT", map[string]func(*gpu.Options){"": nil, "native": nil, "widen": func(o *gpu.Options) { o.WidenQuant = true }},
		"native or widen"},
	{"LLAMACU_GRAPHS", map[string]func(*gpu.Options){"": graphsOn, "1": graphsOn, "0": nil},
		"1 (replay repeated steps as CUDA graphs, the default) or 0"},
	{"LLAMACU_PREFILL", map[string]func(*gpu.Options){"": nil, "mma": nil, "v4": nil,
		"v3": func(o *gpu.Options) { o.PrefillV3 = true }, "simt": func(o *gpu.Options) { o.SIMTPrefill = true }},
		"mma (tensor cores, v4: the default), v3 (the previous tensor-core kernel) or simt"},
	{"LLAMACU_DECODE", map[string]func(*gpu.Options){"": nil, "auto": nil,
		"v5": func(o *gpu.Options) { o.Decode = 5 }, "v4": func(o *gpu.Options) { o.Decode = 4 },
		"v2": func(o *gpu.Options) { o.Decode = 2 }, "v3": func(o *gpu.Options) { o.Decode = 3 }},
		"auto (decode attention on an fp16 cache: v5 on the tensor cores for grouped-query heads, v4 for one query head per KV head; the default), v5, v4, v3 or v2"},
	{"LLAMACU_GEMV", map[string]func(*gpu.Options){"": nil, "v4": nil,
		"v4-all": func(o *gpu.Options) { o.GEMVv4OneRow = true },
		"v3":     func(o *gpu.Options) { o.GEMVv3 = true }, "v2": func(o *gpu.Options) { o.GEMVv2 = true }},
		"v4 (tensor cores for 2–8 rows, v3 for one: the default), v4-all (v4 for one row too), v3 (K split over warps, every step) or v2"},
	{"LLAMACU_PDL", map[string]func(*gpu.Options){"": nil, "0": nil, "1": func(o *gpu.Options) { o.PDL = true }},
		"0 (launch kernels in stream order, the default) or 1 (programmatic dependent launch on sm_90)"},
	{"LLAMACU_ROPE", map[string]func(*gpu.Options){"": nil, "fused": nil, "separate": func(o *gpu.Options) { o.SeparateRoPE = true }},
		"fused (RoPE and the KV store in the q/k/v GEMV's epilogue, the default) or separate"},
	{"LLAMACU_NORM", map[string]func(*gpu.Options){"": nil, "folded": nil, "separate": func(o *gpu.Options) { o.SeparateNorm = true }},
		"folded (a one-row decode step's residual add and RMSNorm inside the q/k/v and gate/up GEMVs, the default) or separate (add_rmsnorm_f32's own launch)"},
	{"LLAMACU_INTERMEDIATES", map[string]func(*gpu.Options){"": nil, "half": nil, "f32": func(o *gpu.Options) { o.F32Intermediates = true }},
		"half (prefill's GEMM outputs kept in the weight dtype, the default) or f32"},
}

func graphsOn(o *gpu.Options) { o.Graphs = true }

// buildCUDAGroup opens this node's ranks and their communicators. With several nodes, node 0
// makes the NCCL id and the rendezvous hands it to the others (refusing a node whose model
// fingerprint differs); every rank then joins the one NCCL communicator, and the rendezvous
// connections (the group's TCP node) carry node 0's forward steps to the other nodes.
func buildCUDAGroup(g groupSpec) (rankGroup, error) {
	opts, err := cudaOptions()
	if err != nil {
		return rankGroup{}, err
	}
	to := gpu.TPOptions{Size: g.tp, Local: g.local(), First: g.first()}
	switch m := strings.ToLower(os.Getenv("LLAMACU_TP_COMM")); m {
	case "", "auto":
	case "nccl":
		to.Mode = gpu.CommNCCL
	case "staged":
		to.Mode = gpu.CommStaged
	default:
		return rankGroup{}, fmt.Errorf("%w: LLAMACU_TP_COMM=%q: want auto, nccl or staged", errUsage, m)
	}
	var node *tp.TCPNode
	if g.nodes > 1 {
		lib, err := cuda.LoadNCCL()
		if err != nil {
			return rankGroup{}, fmt.Errorf("node %d: multi-node tensor parallelism: %w", g.nodeRank, err)
		}
		var payload []byte
		if g.nodeRank == 0 {
			id, err := lib.GetUniqueID()
			if err != nil {
				return rankGroup{}, err
			}
			payload = id[:]
		}
		if node, err = joinNodes(context.Background(), g, payload); err != nil {
			return rankGroup{}, err
		}
		p := node.Payload()
		var id cuda.NCCLUniqueID
		if len(p) != len(id) {
			node.Close()
			return rankGroup{}, fmt.Errorf("node %d: rendezvous at %s: node 0 sent %d bytes, not an NCCL id (%d)", g.nodeRank, g.rendezvous, len(p), len(id))
		}
		copy(id[:], p)
		to.ID, to.Mode = &id, gpu.CommNCCL
	}
	grp, err := gpu.NewTP(opts, to)
	if err != nil {
		if node != nil {
			node.Close()
		}
		return rankGroup{}, err
	}
	fmt.Fprintf(g.stderr, "tensor parallel: ranks %d..%d of %d on devices %v, %v communicators\n",
		to.First, to.First+g.local()-1, g.tp, grp.Devices, grp.Mode)
	return rankGroup{backends: grp.ModelBackends(), comms: grp.Comms, node: node}, nil
}
