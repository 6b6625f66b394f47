//go:build cuda || cudaemu

package gpu_test

import (
	"context"
	"fmt"
	"log"

	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/gpu"
	"github.com/llamacu/llamacu/sample"
	"github.com/llamacu/llamacu/tensor"
)

// The README's GPU example: the engine on device 0, weights in fp16, decode steps replayed as
// CUDA graphs. (Compiled, not run: it needs a model file.)
func ExampleNew() {
	be, err := gpu.New(gpu.Options{Weights: tensor.F16, Graphs: true})
	if err != nil {
		log.Fatal(err)
	}
	e, err := engine.Load(engine.Options{ModelPath: "llama-2-7b.gguf", Backend: be, CloseBackend: true})
	if err != nil {
		log.Fatal(err)
	}
	defer e.Close()
	_, err = e.Generate(context.Background(), engine.Request{Prompt: "Once upon a time", MaxTokens: 64,
		Sampling: sample.Params{Temperature: 0}}, func(_ int32, text string) error {
		fmt.Print(text)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
}
