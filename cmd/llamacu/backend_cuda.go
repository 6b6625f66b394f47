//go:build cuda

package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/llamacu/llamacu/gpu"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// The CUDA backend on device 0 ($LLAMACU_DEVICE selects another). Weight matrices are stored in
// fp16 on the device ($LLAMACU_WEIGHTS=bf16 for bf16, =stored to keep each file's dtype, F32
// included); the KV cache is fp16 ($LLAMACU_KV=f32 for fp32).
func init() {
	backends["cuda"] = func(int) (model.Backend, error) {
		opts := gpu.Options{Weights: tensor.F16}
		if d := os.Getenv("LLAMACU_DEVICE"); d != "" {
			if _, err := fmt.Sscanf(d, "%d", &opts.Device); err != nil {
				return nil, fmt.Errorf("%w: LLAMACU_DEVICE=%q is not a device number", errUsage, d)
			}
		}
		switch w := strings.ToLower(os.Getenv("LLAMACU_WEIGHTS")); w {
		case "", "f16", "fp16":
		case "bf16":
			opts.Weights = tensor.BF16
		case "stored":
			opts.Weights = tensor.F32
		default:
			return nil, fmt.Errorf("%w: LLAMACU_WEIGHTS=%q: want f16, bf16 or stored", errUsage, w)
		}
		opts.KVF32 = strings.EqualFold(os.Getenv("LLAMACU_KV"), "f32")
		return gpu.New(opts)
	}
}
