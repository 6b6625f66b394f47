package plan_test

import (
	"fmt"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/plan"
)

// LLaMA 2 70B in fp16 serving 32 sequences of 4096 tokens does not fit one 80 GiB GPU; the report
// says what would.
func ExampleCompute() {
	opts := plan.DefaultOptions() // fp16 weights and KV cache, one 80 GiB GPU, 1 GiB overhead
	opts.Batch, opts.Ctx = 32, 4096
	r, err := plan.Compute(model.Llama2_70B, opts)
	if err != nil {
		panic(err)
	}
	fmt.Println(r.Fits, r.FitsAtTP, r.FitsAtDType)
	opts.GPUs = 4
	r, _ = plan.Compute(model.Llama2_70B, opts)
	fmt.Printf("TP 4: %.1f GiB per GPU, fits %v\n", float64(r.Total)/(1<<30), r.Fits)
	// Output:
	// false 4 Q4_0
	// TP 4: 43.6 GiB per GPU, fits true
}

// The engine's guard before it allocates: an error that explains, instead of an out-of-memory crash.
func ExampleCheckFits() {
	opts := plan.DefaultOptions()
	opts.GPUMem, opts.Ctx, opts.Batch, opts.MaxTP = 16<<30, 4096, 8, 1 // a 16 GiB card, no TP advice
	err := plan.CheckFits(model.Llama2_7B, opts)
	fmt.Println(err)
	// Output:
	// does not fit in memory: llama-2-7b in F16 needs 30 GiB per device: weights 13 GiB, KV cache 16 GiB (8 sequences × 4096 positions, 512 KiB/token in F16), activations 92 MiB, overhead 1.0 GiB; only 16 GiB available (the weights fit, with room for 4829 KV positions: 1 sequence of 4096); reduce the context or the number of sequences
}
