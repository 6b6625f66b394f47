package cpu_test

import (
	"fmt"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/tensor"
)

// A matrix-vector product on the CPU backend: inputs reach a buffer through Embed (here from an
// F32 "table" of one row), results come back through Read.
func Example() {
	be := cpu.New(cpu.Options{Threads: 2})
	defer be.Close()

	w, _ := be.Upload(&tensor.Tensor{Name: "w", DType: tensor.F32, Shape: []int{2, 3},
		Data: tensor.Encode(tensor.F32, []float32{1, 0, 0, 1, 2, 3})}) // (N=2, K=3)
	table, _ := be.Upload(&tensor.Tensor{Name: "x", DType: tensor.F32, Shape: []int{1, 3},
		Data: tensor.Encode(tensor.F32, []float32{4, 5, 6})})

	x, _ := be.NewBuffer(1, 3)   // (n, K)
	out, _ := be.NewBuffer(1, 2) // (n, N)
	be.Embed(x, table, []int32{0})
	be.MatMul(out, x, w, 1)

	got := make([]float32, 2)
	if err := be.Read(got, out, 1); err != nil {
		fmt.Println(err)
	}
	fmt.Println(be.Name() != "", got)
	// Output: true [4 32]
}
