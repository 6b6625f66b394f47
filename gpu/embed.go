//go:build cuda || cudaemu

package gpu

import (
	"fmt"

	"github.com/llamacu/llamacu/cuda"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// Embed: out[i,:] = table[tokens[i],:] for i < len(tokens). out (B, dim), table (vocab, dim)
// F32, F16, BF16, Q8_0 or Q4_0 (kernels/embed.cu), Q4_K, Q5_K or Q6_K (kernels/kquant.cu). A
// token outside the table is a programmer error.
func (b *Backend) Embed(out model.Buffer, table model.Weight, tokens []int32) {
	ob, tw := buf(out), wt(table)
	checkRows("Embed", len(tokens), ob)
	if ob.cols != tw.cols {
		panic(fmt.Sprintf("gpu: Embed: out (%d, %d) from table %v", ob.rows, ob.cols, tw.shape))
	}
	for _, tok := range tokens {
		if tok < 0 || int(tok) >= tw.rows {
			panic(fmt.Sprintf("gpu: Embed: token %d outside table %v", tok, tw.shape))
		}
	}
	if len(tokens) == 0 || !b.ok() {
		return
	}
	tok := b.upload(&b.tokens, tokens)
	if tw.quantised() {
		b.launch(b.k.embedQ[tw.qi()], cuda.Dim3{X: len(tokens)}, cuda.Dim3{X: 256},
			cuda.Ptr(ob.ptr), cuda.Ptr(tw.ptr), cuda.Ptr(tw.scales), cuda.Ptr(tok), i32(tw.cols))
		return
	}
	f := b.k.embedF32
	switch tw.dtype {
	case tensor.F16:
		f = b.k.embedF16
	case tensor.BF16:
		f = b.k.embedBF16
	}
	b.launch(f, cuda.Dim3{X: len(tokens)}, cuda.Dim3{X: 256},
		cuda.Ptr(ob.ptr), cuda.Ptr(tw.ptr), cuda.Ptr(tok), i32(tw.cols))
}
