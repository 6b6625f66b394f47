package cpu

import (
	"fmt"
	"math"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// Embed: out[i,:] = table[tokens[i],:] for i < len(tokens). out (B, dim), table (vocab, dim).
// A token outside the table is a programmer error (the tokenizer and engine validate ids).
func (b *Backend) Embed(out model.Buffer, table model.Weight, tokens []int32) {
	ob, tw := buf(out), wt(table)
	checkRows("Embed", len(tokens), ob)
	if ob.cols != tw.cols {
		panic(fmt.Sprintf("cpu: Embed: out (%d, %d) from table %v", ob.rows, ob.cols, tw.shape))
	}
	for i, tok := range tokens {
		if tok < 0 || int(tok) >= tw.rows {
			panic(fmt.Sprintf("cpu: Embed: token %d outside table %v", tok, tw.shape))
		}
		tw.decodeRow(ob.row(i), int(tok))
	}
}

// RMSNorm: out[i,:] = x[i,:] / sqrt(mean_j(x[i,j]²) + eps) · w. out, x (n, dim); w (dim). out may
// be x. The arithmetic is llama2.c's: ss = Σx² in float32, ss = 1/sqrtf(ss/dim + eps),
// out = w·(ss·x).
func (b *Backend) RMSNorm(out, x model.Buffer, w model.Weight, n int, eps float32) {
	ob, xb, ww := buf(out), buf(x), wt(w)
	checkRows("RMSNorm", n, ob, xb)
	dim := xb.cols
	if ob.cols != dim || ww.rows*ww.cols != dim || ww.dtype != tensor.F32 {
		panic(fmt.Sprintf("cpu: RMSNorm: out (%d, %d), x (%d, %d), w %v %v (want F32 (%d))", n, ob.cols, n, dim, ww.dtype, ww.shape, dim))
	}
	t := &b.norm
	t.out, t.x, t.g, t.eps = ob, xb, ww.f32[:dim], eps
	b.pool.parallel(t, n, rowGrain(b.pool, n, dim, 4096))
	t.out, t.x, t.g = nil, nil, nil
}

// normTask normalises rows [lo, hi).
type normTask struct {
	out, x *Buffer
	g      []float32
	eps    float32
}

func (t *normTask) run(_, lo, hi int) {
	g, dim := t.g, len(t.g)
	for i := lo; i < hi; i++ {
		xr, or := t.x.row(i), t.out.row(i)
		var ss float32
		for _, v := range xr {
			ss += v * v
		}
		ss /= float32(dim)
		ss += t.eps
		ss = 1 / float32(math.Sqrt(float64(ss)))
		for j, v := range xr {
			or[j] = g[j] * (ss * v)
		}
	}
}

// RoPE rotates, in place, each head of each row i by position pos[i], interleaved pairs. x
// (len(pos), heads·headDim). As in llama2.c, freq_j = 1/powf(theta, 2j/headDim) and the angle
// pos·freq_j are float32; cos and sin are taken in float64 and rounded.
func (b *Backend) RoPE(x model.Buffer, headDim int, pos []int32, theta float32) {
	xb := buf(x)
	checkRows("RoPE", len(pos), xb)
	if headDim <= 0 || headDim%2 != 0 || xb.cols%headDim != 0 {
		panic(fmt.Sprintf("cpu: RoPE: head_dim %d does not divide a row of %d into even heads", headDim, xb.cols))
	}
	half := headDim / 2
	for w := range b.rope { // grows once per head size, not per call
		if len(b.rope[w]) < 2*half {
			b.rope[w] = make([]float32, 2*half)
		}
	}
	t := &b.rot
	t.x, t.headDim, t.pos, t.theta = xb, headDim, pos, theta
	b.pool.parallel(t, len(pos), rowGrain(b.pool, len(pos), xb.cols, 512))
	t.x, t.pos = nil, nil
}

// ropeTask rotates rows [lo, hi), with worker w's cos, sin table.
type ropeTask struct {
	x       *Buffer
	headDim int
	pos     []int32
	theta   float32
	tabs    [][]float32 // (workers, 2·headDim/2)
}

func (t *ropeTask) run(w, lo, hi int) {
	headDim, half := t.headDim, t.headDim/2
	cs, sn := t.tabs[w][:half], t.tabs[w][half:2*half]
	for i := lo; i < hi; i++ {
		p := t.pos[i]
		for j := 0; j < half; j++ {
			freq := 1 / float32(math.Pow(float64(t.theta), float64(float32(2*j)/float32(headDim))))
			val := float32(p) * freq
			cs[j] = float32(math.Cos(float64(val)))
			sn[j] = float32(math.Sin(float64(val)))
		}
		xr := t.x.row(i)
		for h := 0; h+headDim <= len(xr); h += headDim {
			v := xr[h : h+headDim : h+headDim]
			for j := 0; j < half; j++ {
				v0, v1 := v[2*j], v[2*j+1]
				v[2*j] = v0*cs[j] - v1*sn[j]
				v[2*j+1] = v0*sn[j] + v1*cs[j]
			}
		}
	}
}

// SwiGLU: out[i,j] = silu(gate[i,j])·up[i,j], silu(x) = x/(1+e^−x). All (n, ffn). out may be
// gate (or up).
func (b *Backend) SwiGLU(out, gate, up model.Buffer, n int) {
	ob, gb, ub := buf(out), buf(gate), buf(up)
	checkRows("SwiGLU", n, ob, gb, ub)
	if ob.cols != gb.cols || ub.cols != gb.cols {
		panic(fmt.Sprintf("cpu: SwiGLU: out (%d, %d), gate (%d, %d), up (%d, %d)", n, ob.cols, n, gb.cols, n, ub.cols))
	}
	m := n * gb.cols
	t := &b.glu
	t.o, t.g, t.u = ob.data[:m], gb.data[:m], ub.data[:m]
	b.pool.parallel(t, m, elemGrain(b.pool, m, 2048))
	t.o, t.g, t.u = nil, nil, nil
}

// swigluTask computes elements [lo, hi).
type swigluTask struct{ o, g, u []float32 }

func (t *swigluTask) run(_, lo, hi int) {
	o, g, u := t.o[lo:hi], t.g[lo:hi], t.u[lo:hi]
	for k, v := range g {
		v *= 1 / (1 + float32(math.Exp(float64(-v))))
		o[k] = v * u[k]
	}
}

// Add: x[i,:] += y[i,:]. x, y (n, dim).
func (b *Backend) Add(x, y model.Buffer, n int) {
	xb, yb := buf(x), buf(y)
	checkRows("Add", n, xb, yb)
	if xb.cols != yb.cols {
		panic(fmt.Sprintf("cpu: Add: x (%d, %d) += y (%d, %d)", n, xb.cols, n, yb.cols))
	}
	m := n * xb.cols
	t := &b.add
	t.x, t.y = xb.data[:m], yb.data[:m]
	b.pool.parallel(t, m, elemGrain(b.pool, m, 1<<15))
	t.x, t.y = nil, nil
}

// addTask adds elements [lo, hi).
type addTask struct{ x, y []float32 }

func (t *addTask) run(_, lo, hi int) {
	xs, ys := t.x[lo:hi], t.y[lo:hi]
	for k, v := range ys {
		xs[k] += v
	}
}

// rowGrain splits n rows of cols elements across the pool when there are at least minElems
// elements (waking the workers costs microseconds), else keeps them on the caller.
func rowGrain(p *pool, n, cols, minElems int) int {
	if n*cols < minElems {
		return n
	}
	return p.grainFor(n, 1, 1)
}

// elemGrain is rowGrain for m elements, in chunks that are whole 64-byte lines.
func elemGrain(p *pool, m, minElems int) int {
	if m < minElems {
		return m
	}
	return p.grainFor(m, 1024, 16)
}

// GatherRows: out[i,:] = x[rows[i],:]. out (len(rows), cols), x (B, cols). out is not x.
func (b *Backend) GatherRows(out, x model.Buffer, rows []int32) {
	ob, xb := buf(out), buf(x)
	checkRows("GatherRows", len(rows), ob)
	if ob.cols != xb.cols || ob == xb {
		panic(fmt.Sprintf("cpu: GatherRows: out (%d, %d) from x (%d, %d) (out must not be x)", len(rows), ob.cols, xb.rows, xb.cols))
	}
	for i, r := range rows {
		if r < 0 || int(r) >= xb.rows {
			panic(fmt.Sprintf("cpu: GatherRows: row %d outside x (%d, %d)", r, xb.rows, xb.cols))
		}
		copy(ob.row(i), xb.row(int(r)))
	}
}
