package sample_test

import (
	"fmt"

	"github.com/llamacu/llamacu/sample"
)

func Example() {
	logits := []float32{0.5, 2.0, 1.9, -1.0} // (vocab) one decode step's output

	// Greedy decoding: the argmax.
	greedy, err := sample.New(sample.GreedyParams(), len(logits))
	if err != nil {
		panic(err)
	}
	fmt.Println("greedy:", greedy.Sample(logits, nil))

	// A repetition penalty of 1.1 on the token just produced: 2.0/1.1 < 1.9.
	p := sample.GreedyParams()
	p.RepeatPenalty, p.RepeatLastN = 1.1, 64
	penalised, _ := sample.New(p, len(logits))
	fmt.Println("after token 1, penalised:", penalised.Sample(logits, []int32{1}))

	// llama.cpp's defaults, seeded: a random draw, the same for the same seed.
	d := sample.DefaultParams()
	d.Seed = 2024
	a, _ := sample.New(d, len(logits))
	b, _ := sample.New(d, len(logits))
	fmt.Println("same seed, same token:", a.Sample(logits, nil) == b.Sample(logits, nil))

	// Invalid parameters are an error, not a panic.
	d.TopP = 1.5
	_, err = sample.New(d, len(logits))
	fmt.Println(err)

	// Output:
	// greedy: 1
	// after token 1, penalised: 2
	// same seed, same token: true
	// sample: invalid parameters: top_p 1.5: must be in [0, 1] (0 or 1 disables it)
}

// A sampler whose top-k is on reads only the k best logits of a row: the candidates a device
// top-k returns (model.Model.ForwardTopK), here made on the host by TopK. SampleTop draws the
// same token as Sample on the whole row.
func ExampleSampler_SampleTop() {
	logits := []float32{0.1, 3.0, -2.0, 2.5, 0.7, 2.9, -0.4, 1.0} // (vocab)
	p := sample.DefaultParams()                                   // top-k 40, top-p 0.95, min-p 0.05
	p.TopK, p.Seed = 3, 7
	whole, _ := sample.New(p, len(logits))
	top, _ := sample.New(p, len(logits))

	k := top.TopKNeeded()
	vals, ids := make([]float32, k), make([]int32, k)
	sample.TopK(vals, ids, logits, k)
	fmt.Println("candidates:", ids, vals)
	for range 5 {
		fmt.Print(whole.Sample(logits, nil) == top.SampleTop(vals, ids), " ")
	}
	fmt.Println()

	// Output:
	// candidates: [1 5 3] [3 2.9 2.5]
	// true true true true true
}
