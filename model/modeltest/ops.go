package modeltest

import (
	"fmt"
	"math"
	"testing"

	"github.com/llamacu/llamacu/tensor"
)

// fits reports whether a row of cols elements is whole blocks of d.
func fits(d tensor.DType, cols int) bool { return cols%d.BlockSize() == 0 }

func (h *harness) testEmbed(t *testing.T) {
	type tc struct {
		vocab, dim int
		tokens     []int32
		large      bool
	}
	cases := []tc{
		{vocab: 1, dim: 1, tokens: []int32{0}},
		{vocab: 5, dim: 32, tokens: []int32{4, 0, 4, 2}},
		{vocab: 300, dim: 1023, tokens: []int32{299, 1, 150}},
		{vocab: 300, dim: 1024, tokens: []int32{0, 299, 7, 7, 8}},
		{vocab: 300, dim: 1025, tokens: []int32{17}},
		{vocab: 512, dim: 64, tokens: []int32{1, 511, 256, 3, 3, 0, 100}},
		{vocab: 32000, dim: 4096, tokens: []int32{1, 31999, 15000, 0, 29871}, large: true},
	}
	// F32 first: every other case loads its inputs through it.
	for _, d := range h.o.DTypes {
		for _, c := range cases {
			if (c.large && !h.o.Large) || !fits(d, c.dim) {
				continue
			}
			name := fmt.Sprintf("%v/%s", d, dims(c.vocab, c.dim))
			t.Run(name, func(t *testing.T) {
				r := rng("embed/" + name)
				w, vals := h.upload(t, "embed.table", d, []int{c.vocab, c.dim}, normal(r, c.vocab*c.dim, 1))
				out := h.input(t, len(c.tokens)+2, c.dim, nil)
				h.be.Embed(out, w, c.tokens)
				got := h.read(t, out, len(c.tokens))
				want := make([]float64, 0, len(got))
				for _, tok := range c.tokens {
					want = append(want, f64s(vals[int(tok)*c.dim:(int(tok)+1)*c.dim])...)
				}
				h.compare(t, "Embed", got, want, nil, nil)
				h.checkUntouched(t, "Embed", out, len(c.tokens))
			})
		}
	}
}

func (h *harness) testRead(t *testing.T) {
	r := rng("read")
	data := normal(r, 5*7, 1)
	b := h.input(t, 5, 7, data)
	for _, n := range []int{0, 1, 3, 5} {
		t.Run(fmt.Sprint("n=", n), func(t *testing.T) {
			dst := make([]float32, n*7+3) // longer than needed: the tail must stay untouched
			for i := range dst {
				dst[i] = -1
			}
			if err := h.be.Read(dst, b, n); err != nil {
				t.Fatalf("Read(%d rows): %v", n, err)
			}
			for i := 0; i < n*7; i++ {
				if dst[i] != data[i] {
					t.Fatalf("Read: element %d = %g, want %g", i, dst[i], data[i])
				}
			}
			for i := n * 7; i < len(dst); i++ {
				if dst[i] != -1 {
					t.Fatalf("Read wrote element %d past %d rows", i, n)
				}
			}
		})
	}
}

func (h *harness) testUpload(t *testing.T) {
	bad := []*tensor.Tensor{
		{Name: "short", DType: tensor.F32, Shape: []int{4, 4}, Data: make([]byte, 60)},
		{Name: "half-block", DType: tensor.Q8_0, Shape: []int{2, 16}, Data: make([]byte, 34)},
		{Name: "zero", DType: tensor.F32, Shape: []int{0, 4}, Data: nil},
	}
	for _, tt := range bad {
		t.Run(tt.Name, func(t *testing.T) {
			if _, err := h.be.Upload(tt); err == nil {
				t.Errorf("Upload(%s %v %v with %d bytes) = nil error", tt.Name, tt.DType, tt.Shape, len(tt.Data))
			}
		})
	}
	t.Run("shape-dtype", func(t *testing.T) {
		for _, d := range h.o.DTypes {
			cols := max(64, d.BlockSize())
			w, _ := h.upload(t, "w", d, []int{3, cols}, make([]float32, 3*cols))
			if s := w.Shape(); len(s) != 2 || s[0] != 3 || s[1] != cols {
				t.Errorf("%v weight Shape() = %v, want [3 %d]", d, s, cols)
			}
		}
	})
}

func (h *harness) testRMSNorm(t *testing.T) {
	type tc struct {
		n, dim int
		scale  float64
		eps    float32
		large  bool
	}
	cases := []tc{
		{n: 1, dim: 1, scale: 1, eps: 1e-5},
		{n: 1, dim: 7, scale: 1, eps: 1e-5},
		{n: 3, dim: 64, scale: 3, eps: 1e-5},
		{n: 2, dim: 1023, scale: 1, eps: 1e-5},
		{n: 2, dim: 1024, scale: 1, eps: 1e-6},
		{n: 2, dim: 1025, scale: 1, eps: 1e-5},
		{n: 3, dim: 288, scale: 1e-3, eps: 1e-5}, // eps comparable to the mean square
		{n: 5, dim: 4096, scale: 1, eps: 1e-5},
		{n: 9, dim: 8192, scale: 1, eps: 1e-5, large: true},
	}
	for _, c := range cases {
		if c.large && !h.o.Large {
			continue
		}
		for _, alias := range []bool{false, true} {
			name := fmt.Sprintf("%s/eps=%g/scale=%g", dims(c.n, c.dim), c.eps, c.scale)
			if alias {
				name += "/in-place"
			}
			t.Run(name, func(t *testing.T) {
				r := rng("rmsnorm/" + name)
				xs := normal(r, c.n*c.dim, c.scale)
				g := normal(r, c.dim, 1)
				w, gv := h.upload(t, "norm", tensor.F32, []int{c.dim}, g)
				rows := c.n + 1
				x := h.input(t, rows, c.dim, xs)
				out := x
				if !alias {
					out = h.input(t, rows, c.dim, nil)
				}
				h.be.RMSNorm(out, x, w, c.n, c.eps)
				want := make([]float64, c.n*c.dim)
				for i := 0; i < c.n; i++ {
					ss := 0.0
					for j := 0; j < c.dim; j++ {
						v := float64(xs[i*c.dim+j])
						ss += v * v
					}
					inv := 1 / math.Sqrt(ss/float64(c.dim)+float64(c.eps))
					for j := 0; j < c.dim; j++ {
						want[i*c.dim+j] = float64(xs[i*c.dim+j]) * inv * float64(gv[j])
					}
				}
				h.compare(t, "RMSNorm", h.read(t, out, c.n), want, nil, nil)
				h.checkUntouched(t, "RMSNorm", out, c.n)
				if !alias {
					h.compare(t, "RMSNorm input x (must be unchanged)", h.read(t, x, c.n), f64s(xs), nil, nil)
				}
			})
		}
	}
}

func (h *harness) testMatMul(t *testing.T) {
	type tc struct {
		n, K, N int
		large   bool
	}
	cases := []tc{
		{n: 1, K: 1, N: 1},
		{n: 1, K: 3, N: 5},
		{n: 2, K: 7, N: 3},
		{n: 3, K: 32, N: 17},
		{n: 4, K: 64, N: 64},
		{n: 5, K: 96, N: 33},
		{n: 1, K: 1023, N: 7},
		{n: 1, K: 1024, N: 9},
		{n: 1, K: 1025, N: 5},
		{n: 2, K: 992, N: 1023},
		{n: 3, K: 1056, N: 1025},
		{n: 1, K: 64, N: 1024},
		{n: 16, K: 256, N: 40},
		{n: 17, K: 64, N: 24},
		{n: 33, K: 128, N: 70},
		{n: 1, K: 4096, N: 64},
		{n: 1, K: 4096, N: 4096, large: true},
		{n: 1, K: 4096, N: 11008, large: true},
		{n: 3, K: 11008, N: 4096, large: true},
		{n: 1, K: 1024, N: 28672, large: true},
		{n: 1, K: 28672, N: 512, large: true},
		{n: 2, K: 4096, N: 32000, large: true},
		{n: 64, K: 4096, N: 512, large: true},
	}
	for _, d := range h.o.DTypes {
		for _, c := range cases {
			if (c.large && !h.o.Large) || !fits(d, c.K) {
				continue
			}
			name := fmt.Sprintf("%v/n=%d/%s", d, c.n, dims(c.N, c.K))
			t.Run(name, func(t *testing.T) {
				r := rng("matmul/" + name)
				w, wv := h.upload(t, "w", d, []int{c.N, c.K}, normal(r, c.N*c.K, 1/math.Sqrt(float64(c.K))))
				xs := normal(r, c.n*c.K, 1)
				x := h.input(t, c.n+1, c.K, xs)
				out := h.input(t, c.n+2, c.N, nil)
				h.be.MatMul(out, x, w, c.n)
				want := make([]float64, c.n*c.N)
				mag := make([]float64, c.n*c.N)
				for i := 0; i < c.n; i++ {
					xr := xs[i*c.K : (i+1)*c.K]
					for j := 0; j < c.N; j++ {
						wr := wv[j*c.K : (j+1)*c.K]
						s, m := 0.0, 0.0
						for k, xv := range xr {
							p := float64(xv) * float64(wr[k])
							s += p
							m += math.Abs(p)
						}
						want[i*c.N+j], mag[i*c.N+j] = s, m
					}
				}
				h.compare(t, "MatMul", h.read(t, out, c.n), want, mag, nil)
				h.checkUntouched(t, "MatMul", out, c.n)
			})
		}
	}
}

func (h *harness) testRoPE(t *testing.T) {
	type tc struct {
		headDim, heads int
		pos            []int32
		theta          float32
	}
	cases := []tc{
		{headDim: 2, heads: 1, pos: []int32{0}, theta: 10000},
		{headDim: 4, heads: 3, pos: []int32{0, 1, 2}, theta: 10000},
		{headDim: 8, heads: 8, pos: []int32{3, 0, 7, 1}, theta: 10000}, // stories260K: dim 64, 8 heads
		{headDim: 64, heads: 4, pos: []int32{0, 5, 511, 5}, theta: 10000},
		{headDim: 128, heads: 32, pos: []int32{0, 1, 2047, 4095}, theta: 10000},
		{headDim: 128, heads: 8, pos: []int32{17, 4000}, theta: 500000},
		{headDim: 96, heads: 2, pos: []int32{9, 10, 11}, theta: 1e6},
	}
	for _, c := range cases {
		name := fmt.Sprintf("hd=%d/heads=%d/theta=%g/pos=%v", c.headDim, c.heads, c.theta, c.pos)
		t.Run(name, func(t *testing.T) {
			r := rng("rope/" + name)
			cols := c.heads * c.headDim
			n := len(c.pos)
			xs := normal(r, n*cols, 1)
			x := h.input(t, n+1, cols, xs)
			h.be.RoPE(x, c.headDim, c.pos, c.theta)
			want := make([]float64, n*cols)
			extra := make([]float64, n*cols)
			for i, p := range c.pos {
				for hh := 0; hh < c.heads; hh++ {
					for j := 0; j < c.headDim/2; j++ {
						a := float64(p) * math.Pow(float64(c.theta), -float64(2*j)/float64(c.headDim))
						k := i*cols + hh*c.headDim + 2*j
						x0, x1 := float64(xs[k]), float64(xs[k+1])
						want[k] = x0*math.Cos(a) - x1*math.Sin(a)
						want[k+1] = x0*math.Sin(a) + x1*math.Cos(a)
						allow := (math.Abs(x0) + math.Abs(x1)) * a * 0x1p-19
						extra[k], extra[k+1] = allow, allow
					}
				}
			}
			h.compare(t, "RoPE", h.read(t, x, n), want, nil, extra)
			h.checkUntouched(t, "RoPE", x, n)
		})
	}
}

func (h *harness) testSwiGLU(t *testing.T) {
	type tc struct {
		n, ffn int
		scale  float64
		large  bool
	}
	cases := []tc{
		{n: 1, ffn: 1, scale: 1},
		{n: 3, ffn: 172, scale: 2},
		{n: 2, ffn: 1023, scale: 1},
		{n: 2, ffn: 1025, scale: 30}, // saturated: e^−x overflows float32 for x < −88
		{n: 4, ffn: 11008, scale: 1},
		{n: 16, ffn: 28672, scale: 1, large: true},
	}
	for _, c := range cases {
		if c.large && !h.o.Large {
			continue
		}
		for _, alias := range []string{"", "out=gate", "out=up"} {
			name := fmt.Sprintf("%s/scale=%g", dims(c.n, c.ffn), c.scale)
			if alias != "" {
				name += "/" + alias
			}
			t.Run(name, func(t *testing.T) {
				r := rng("swiglu/" + name)
				gs, us := normal(r, c.n*c.ffn, c.scale), normal(r, c.n*c.ffn, 1)
				gate := h.input(t, c.n+1, c.ffn, gs)
				up := h.input(t, c.n+1, c.ffn, us)
				out := gate
				switch alias {
				case "":
					out = h.input(t, c.n+1, c.ffn, nil)
				case "out=up":
					out = up
				}
				h.be.SwiGLU(out, gate, up, c.n)
				want := make([]float64, c.n*c.ffn)
				for i, g := range gs {
					gf := float64(g)
					want[i] = gf / (1 + math.Exp(-gf)) * float64(us[i])
				}
				h.compare(t, "SwiGLU", h.read(t, out, c.n), want, nil, nil)
				h.checkUntouched(t, "SwiGLU", out, c.n)
			})
		}
	}
}

func (h *harness) testAdd(t *testing.T) {
	for _, c := range [][2]int{{1, 1}, {3, 64}, {2, 1023}, {2, 1025}, {4, 4096}, {16, 8192}} {
		n, dim := c[0], c[1]
		t.Run(dims(n, dim), func(t *testing.T) {
			r := rng("add/" + dims(n, dim))
			xs, ys := normal(r, n*dim, 1), normal(r, n*dim, 1)
			x := h.input(t, n+1, dim, xs)
			y := h.input(t, n+1, dim, ys)
			h.be.Add(x, y, n)
			want := make([]float64, n*dim)
			for i := range want {
				want[i] = float64(xs[i]) + float64(ys[i])
			}
			h.compare(t, "Add", h.read(t, x, n), want, nil, nil)
			h.checkUntouched(t, "Add", x, n)
			h.compare(t, "Add input y (must be unchanged)", h.read(t, y, n), f64s(ys), nil, nil)
		})
	}
}

func (h *harness) testGatherRows(t *testing.T) {
	type tc struct {
		B, cols int
		rows    []int32
		large   bool
	}
	cases := []tc{
		{B: 1, cols: 1, rows: []int32{0}},
		{B: 7, cols: 13, rows: []int32{6, 0, 3, 3}},
		{B: 5, cols: 1025, rows: []int32{4}},
		{B: 9, cols: 512, rows: []int32{8, 7, 6, 5, 4, 3, 2, 1, 0}},
		{B: 16, cols: 32000, rows: []int32{15, 3, 9}, large: true},
	}
	for _, c := range cases {
		if c.large && !h.o.Large {
			continue
		}
		name := fmt.Sprintf("%s/rows=%v", dims(c.B, c.cols), c.rows)
		t.Run(name, func(t *testing.T) {
			r := rng("gather/" + name)
			xs := normal(r, c.B*c.cols, 1)
			x := h.input(t, c.B, c.cols, xs)
			out := h.input(t, len(c.rows)+1, c.cols, nil)
			h.be.GatherRows(out, x, c.rows)
			var want []float64
			for _, row := range c.rows {
				want = append(want, f64s(xs[int(row)*c.cols:(int(row)+1)*c.cols])...)
			}
			h.compare(t, "GatherRows", h.read(t, out, len(c.rows)), want, nil, nil)
			h.checkUntouched(t, "GatherRows", out, len(c.rows))
		})
	}
}
