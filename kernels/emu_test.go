package kernels

// Emulated kernel tests: every kernel of kernels/*.cu, compiled for the host by g++ against the
// small CUDA shim in emu/ (emu/emu.h explains the execution model and its limits) and run on the
// CPU by emu/harness.cpp, is compared with the cpu backend — the reference the GPU conformance
// suite uses — on small shapes chosen to reach every code path (tails, fallbacks, GQA widths,
// paged block tables, flash-decoding splits, prefill tiles mixed with decode rows).
//
// Launch geometry mirrors the Go launchers (gpu/*.go, build tag cuda, so not importable here):
// each launch below names the gpu function it copies, and TestEmuLaunchSitesUnchanged fails
// when a launch site in gpu/*.go changes, so that the mirror is updated with it.
//
// The test reads every kernels/*.cu, *.cuh and emu/* file itself, so that `go test`'s result
// cache (which only sees files the test process opens) is invalidated when a kernel changes.

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/sample"
	"github.com/llamacu/llamacu/tensor"
)

// ---------------------------------------------------------------- the emulator

// emulator is the built harness.
type emulator struct {
	bin string

	mu       sync.Mutex
	launched map[string]int // kernel → launches
}

// buildEmulator compiles emu/harness.cpp (which #includes all.cu) into dir.
func buildEmulator(t *testing.T, dir string) *emulator {
	t.Helper()
	gxx, err := exec.LookPath("g++")
	if err != nil {
		t.Skip("g++ not found: the emulated kernel tests need a C++20 compiler (CI has g++ 12)")
	}
	// Read the sources (see the file comment: this keys go test's cache on them).
	h := sha256.New()
	for _, pat := range []string{"*.cu", "*.cuh", "emu/*"} {
		paths, _ := filepath.Glob(pat)
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			h.Write(b)
		}
	}
	bin := filepath.Join(dir, "emu")
	cmd := exec.Command(gxx, "-std=c++20", "-O1", "-pthread", "-fno-strict-aliasing", "-ffp-contract=off",
		"-Wno-unknown-pragmas", "-I", "emu", "-o", bin, filepath.Join("emu", "harness.cpp"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the emulator: %v\n%s", err, out)
	}
	t.Logf("built %s (sources sha256 %x)", bin, h.Sum(nil)[:6])
	return &emulator{bin: bin, launched: map[string]int{}}
}

// dim3 is a grid or block shape.
type dim3 struct{ X, Y, Z int }

func d1(x int) dim3        { return dim3{x, 1, 1} }
func d2(x, y int) dim3     { return dim3{x, y, 1} }
func d3(x, y, z int) dim3  { return dim3{x, y, z} }
func roundUp(a, m int) int { return (a + m - 1) / m * m }
func ceilDiv(a, b int) int { return (a + b - 1) / b }

// gridFor is gpu/backend.go's gridFor: blocks of threads over n items, capped at 65535.
func gridFor(n, threads int) dim3 { return d1(max(1, min(ceilDiv(n, threads), 65535))) }

// dev is a device buffer of a script.
type dev struct {
	id   uint32
	size int
}

// arg is one kernel argument: a pointer (buffer, byte offset), an int32 or a float32.
type arg struct {
	kind byte
	id   uint32
	off  uint64
	bits uint32
}

func ptr(d dev) arg            { return arg{kind: 'p', id: d.id} }
func ptrAt(d dev, off int) arg { return arg{kind: 'p', id: d.id, off: uint64(off)} }
func null() arg                { return arg{kind: 'p'} }
func i32(v int) arg            { return arg{kind: 'i', bits: uint32(int32(v))} }
func f32(v float32) arg        { return arg{kind: 'f', bits: math.Float32bits(v)} }

// script is a sequence of buffer definitions, launches and reads for one harness run.
type script struct {
	b       bytes.Buffer
	next    uint32
	reads   []*[]byte
	kernels []string
}

func (s *script) put(vs ...any) {
	for _, v := range vs {
		if err := binary.Write(&s.b, binary.LittleEndian, v); err != nil {
			panic(err)
		}
	}
}

// buf defines a device buffer holding data.
func (s *script) buf(data []byte) dev {
	s.next++
	s.put(byte('B'), s.next, uint64(len(data)))
	s.b.Write(data)
	return dev{id: s.next, size: len(data)}
}

// launch queues kernel name on grid × block.
func (s *script) launch(name string, grid, block dim3, args ...arg) {
	s.put(byte('L'), uint32(len(name)))
	s.b.WriteString(name)
	s.put(uint32(grid.X), uint32(grid.Y), uint32(grid.Z), uint32(block.X), uint32(block.Y), uint32(block.Z), uint32(len(args)))
	for _, a := range args {
		s.put(a.kind)
		switch a.kind {
		case 'p':
			s.put(a.id, a.off)
		default:
			s.put(a.bits)
		}
	}
	s.kernels = append(s.kernels, name)
}

// read asks for d's contents after the launches queued so far; *got is set by run.
func (s *script) read(d dev) *[]byte {
	s.put(byte('R'), d.id)
	p := new([]byte)
	s.reads = append(s.reads, p)
	return p
}

// run executes s.
func (e *emulator) run(t testing.TB, s *script) { t.Helper(); e.runEnv(t, s) }

// runEnv is run with environment variables (NAME=value) added for the emulator.
func (e *emulator) runEnv(t testing.TB, s *script, env ...string) {
	t.Helper()
	s.put(byte('Q'))
	cmd := exec.Command(e.bin)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdin = &s.b
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("emulator (%s): %v: %s", strings.Join(s.kernels, ", "), err, strings.TrimSpace(stderr.String()))
	}
	r := bytes.NewReader(stdout.Bytes())
	for _, p := range s.reads {
		var n uint64
		if err := binary.Read(r, binary.LittleEndian, &n); err != nil {
			t.Fatalf("emulator output: %v", err)
		}
		*p = make([]byte, n)
		if _, err := io.ReadFull(r, *p); err != nil {
			t.Fatalf("emulator output: %v", err)
		}
	}
	e.mu.Lock()
	for _, k := range s.kernels {
		e.launched[k]++
	}
	e.mu.Unlock()
}

// ---------------------------------------------------------------- data

func f32Bytes(v []float32) []byte { return tensor.Encode(tensor.F32, v) }
func i32Bytes(v []int32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(x))
	}
	return b
}
func bytesF32(b []byte) []float32 {
	v := make([]float32, len(b)/4)
	tensor.Decode(v, tensor.F32, b)
	return v
}
func bytesI32(b []byte) []int32 {
	v := make([]int32, len(b)/4)
	for i := range v {
		v[i] = int32(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

// decodeAs widens a buffer of dtype d (F32, F16, BF16) to float32.
func decodeAs(d tensor.DType, b []byte) []float32 {
	n := len(b) / 4
	if d != tensor.F32 {
		n = len(b) / 2
	}
	v := make([]float32, n)
	tensor.Decode(v, d, b)
	return v
}

// roundTo rounds v to dtype d and back (what a store in d keeps).
func roundTo(d tensor.DType, v []float32) []float32 { return decodeAs(d, tensor.Encode(d, v)) }

func normal(r *rand.Rand, n int, scale float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64()) * scale
	}
	return v
}

// nanFill is the initial content of output buffers: a kernel that leaves an element unwritten
// leaves a NaN, which fails every comparison.
func nanFill(n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(math.NaN())
	}
	return v
}

// ---------------------------------------------------------------- the cpu reference

func newCPU(t testing.TB) *cpu.Backend {
	be := cpu.New(cpu.Options{Threads: 1})
	t.Cleanup(func() { be.Close() })
	return be
}

// hostBuf returns a cpu buffer (rows, cols) holding data (rows·cols values or nil) and its storage.
func hostBuf(t testing.TB, be *cpu.Backend, rows, cols int, data []float32) (model.Buffer, []float32) {
	t.Helper()
	b, err := be.NewBuffer(rows, cols)
	if err != nil {
		t.Fatal(err)
	}
	host := b.(*cpu.Buffer).HostFloats()
	copy(host, data)
	return b, host
}

func upload(t testing.TB, be *cpu.Backend, d tensor.DType, rows, cols int, data []float32) model.Weight {
	t.Helper()
	shape := []int{rows, cols}
	if rows == 1 {
		shape = []int{cols}
	}
	w, err := be.Upload(&tensor.Tensor{Name: "w", DType: d, Shape: shape, Data: tensor.Encode(d, data)})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// tol is the pass rule |got − want| ≤ atol + rtol·mag (mag[i], or |want[i]| when mag is nil).
type tol struct{ atol, rtol float64 }

var exact = tol{}

func compare(t testing.TB, what string, got, want []float32, mag []float64, tl tol) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	bad, maxAbs := 0, 0.0
	var first strings.Builder
	for i, w := range want {
		g := float64(got[i])
		m := math.Abs(float64(w))
		if mag != nil {
			m = mag[i]
		}
		d := math.Abs(g - float64(w))
		if g == float64(w) || (math.IsNaN(g) && math.IsNaN(float64(w))) {
			d = 0
		} else if math.IsNaN(d) {
			d = math.Inf(1)
		}
		maxAbs = max(maxAbs, d)
		if !(d <= tl.atol+tl.rtol*m) {
			if bad < 5 {
				fmt.Fprintf(&first, "\n\t[%d] got %.9g want %.9g (|diff| %.3g)", i, g, w, d)
			}
			bad++
		}
	}
	t.Logf("%s: max abs err %.3g", what, maxAbs)
	if bad > 0 {
		t.Errorf("%s: %d of %d values out of tolerance (atol %g, rtol %g; max abs err %.3g); first:%s", what, bad, len(want), tl.atol, tl.rtol, maxAbs, first.String())
	}
}

// ---------------------------------------------------------------- tests

func TestEmulatedKernels(t *testing.T) {
	e := buildEmulator(t, t.TempDir())
	t.Run("kernels", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			f    func(*testing.T, *emulator)
		}{
			{"Embed", testEmbed}, {"RMSNorm", testRMSNorm}, {"RoPE", testRoPE},
			{"StoreKV", testStoreKV}, {"RoPEStoreKV", testRoPEStoreKV}, {"RoPEStoreFrom", testRoPEStoreFrom}, {"QKVRoPE", testQKVRoPE},
			{"Attention", testAttention},
			{"MatMul", testMatMul}, {"GEMVMMA", testGEMVMMA}, {"GEMM", testGEMM}, {"Convert", testConvert},
			{"SwiGLU", testSwiGLU}, {"SwiGLUHalf", testSwiGLUHalf}, {"Add", testAdd}, {"Gather", testGather}, {"Argmax", testArgmax},
			{"TopK", testTopK}, {"Quant", testQuant}, {"KQuant", testKQuant}, {"Fused", testFused}, {"FoldNorm", testFoldNorm},
			{"Faults", testFaults}, {"Hazards", testHazards},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				tc.f(t, e)
			})
		}
	})
	// The harness's table must list every kernel compiled, and every kernel must have been
	// launched (unless -run selected some subtests only).
	out, err := exec.Command(e.bin, "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	table := strings.Fields(string(out))
	syms := kernelSymbols(t, e.bin)
	if !slices.Equal(table, syms) {
		t.Errorf("the harness's kernel table (emu/harness.cpp KERNELS) differs from the extern \"C\" __global__ functions compiled:\n table %v\n kernels %v", table, syms)
	}
	if f := flag.Lookup("test.run"); f != nil && !strings.Contains(f.Value.String(), "/") && !t.Failed() {
		var missed []string
		for _, k := range syms {
			if e.launched[k] == 0 {
				missed = append(missed, k)
			}
		}
		if len(missed) > 0 {
			t.Errorf("kernels never launched by the emulated tests: %v", missed)
		}
	}
}

// kernelSymbols lists the functions in the binary's emu_kernels section (emu.h puts every
// __global__ function there), sorted.
func kernelSymbols(t *testing.T, bin string) []string {
	f, err := elf.Open(bin)
	if err != nil {
		t.Skipf("cannot read the emulator binary as ELF (%v): kernel list not checked", err)
	}
	defer f.Close()
	sec := f.Section("emu_kernels")
	if sec == nil {
		t.Fatal("the emulator binary has no emu_kernels section")
	}
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FUNC && int(s.Section) < len(f.Sections) && f.Sections[s.Section] == sec {
			names = append(names, s.Name)
		}
	}
	sort.Strings(names)
	return names
}

// testFaults checks the harness's own guards: an out-of-bounds access and a deadlock are
// reported, not ignored.
func testFaults(t *testing.T, e *emulator) {
	// gather_rows_f32 of row 3 of a 2-row x reads past the buffer: the guard page faults.
	s := &script{}
	x := s.buf(f32Bytes(make([]float32, 2*16)))
	out := s.buf(f32Bytes(make([]float32, 16)))
	rows := s.buf(i32Bytes([]int32{3}))
	s.launch("gather_rows_f32", d1(1), d1(256), ptr(out), ptr(x), ptr(rows), i32(16), i32(1))
	s.put(byte('Q'))
	cmd := exec.Command(e.bin)
	cmd.Stdin = &s.b
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(stderr.String(), "gather_rows_f32") {
		t.Errorf("out-of-bounds gather: err %v, stderr %q; want a reported fault", err, stderr.String())
	}
	// argmax_f32 with 48 threads: its warp shuffles would need a full second warp.
	s = &script{}
	xb := s.buf(f32Bytes(make([]float32, 8)))
	ob := s.buf(make([]byte, 4))
	s.launch("argmax_f32", d1(1), d1(48), ptr(ob), ptr(xb), i32(8))
	s.put(byte('Q'))
	cmd = exec.Command(e.bin)
	cmd.Stdin = &s.b
	stderr.Reset()
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil || !strings.Contains(stderr.String(), "partial warp") {
		t.Errorf("argmax with a partial warp: err %v, stderr %q; want it reported", err, stderr.String())
	}
}

// testHazards checks that the emulator finds the two cp.async hazards of a double-buffered loop
// (emu/selftest.h): a warp copying into a stage the other warp still reads, and a read before
// the copies land. By default each copy group lands when issued or when waited for (a hash
// picks) and warps drift apart, so both show; $LLAMACU_EMU_CPASYNC=late (every copy at its wait,
// the emulator's earlier model) hides the first, =early the second.
func testHazards(t *testing.T, e *emulator) {
	const tiles, blocks = 12, 8
	in := make([]float32, 256*tiles)
	for i := range in {
		in[i] = float32(i%251 + 1) // small integers: every sum exact
	}
	want := make([]float32, 64*blocks)
	for b := range blocks {
		for th := range 64 {
			for k := range tiles {
				for j := range 4 {
					want[b*64+th] += in[256*k+(4*th+128+j)%256]
				}
			}
		}
	}
	for _, c := range []struct {
		racy  int
		mode  string
		found bool
	}{
		{0, "", false}, {0, "late", false}, {0, "early", false},
		{1, "", true}, {1, "early", true}, {1, "late", false},
		{2, "", true}, {2, "late", true}, {2, "early", false},
	} {
		t.Run(fmt.Sprintf("racy=%d/mode=%q", c.racy, c.mode), func(t *testing.T) {
			s := &script{}
			id, od := s.buf(f32Bytes(in)), s.buf(f32Bytes(nanFill(64*blocks)))
			s.launch("emu_selftest_pipeline", d1(blocks), d1(64), ptr(od), ptr(id), i32(tiles), i32(c.racy))
			got := s.read(od)
			var env []string
			if c.mode != "" {
				env = []string{"LLAMACU_EMU_CPASYNC=" + c.mode}
			}
			e.runEnv(t, s, env...)
			wrong := 0
			for i, g := range bytesF32(*got) {
				if g != want[i] {
					wrong++
				}
			}
			if found := wrong > 0; found != c.found {
				t.Errorf("%d of %d sums wrong: hazard found %v, want %v", wrong, len(want), found, c.found)
			}
		})
	}
}

// ---- Embed (gpu/embed.go: grid (len(tokens)), block 256)

func testEmbed(t *testing.T, e *emulator) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, d := range []tensor.DType{tensor.F32, tensor.F16, tensor.BF16} {
		for _, dim := range []int{5, 300} {
			t.Run(fmt.Sprintf("%v/dim%d", d, dim), func(t *testing.T) {
				vocab := 7
				table := normal(r, vocab*dim, 1)
				tokens := []int32{3, 0, 6, 3}
				be := newCPU(t)
				w := upload(t, be, d, vocab, dim, table)
				ob, want := hostBuf(t, be, len(tokens), dim, nil)
				be.Embed(ob, w, tokens)

				s := &script{}
				out := s.buf(f32Bytes(nanFill(len(tokens) * dim)))
				tb := s.buf(tensor.Encode(d, table))
				tok := s.buf(i32Bytes(tokens))
				s.launch("embed_"+strings.ToLower(d.String()), d1(len(tokens)), d1(256), ptr(out), ptr(tb), ptr(tok), i32(dim))
				got := s.read(out)
				e.run(t, s)
				compare(t, "Embed", bytesF32(*got), want, nil, exact)
			})
		}
	}
}

// ---- RMSNorm (gpu/rmsnorm.go: v2 with min(1024, roundup32(dim/4)) threads when dim % 4 == 0 and
// dim/4 ≤ 4·1024, else v1 with 256; grid (n))

func testRMSNorm(t *testing.T, e *emulator) {
	r := rand.New(rand.NewPCG(2, 2))
	for _, c := range []struct{ n, dim int }{{3, 7}, {2, 64}, {2, 260}, {1, 4100}, {1, 16384}} {
		for _, inPlace := range []bool{false, true} {
			t.Run(fmt.Sprintf("%dx%d/inplace=%v", c.n, c.dim, inPlace), func(t *testing.T) {
				x := normal(r, (c.n+1)*c.dim, 2) // one row more than n: must stay untouched
				w := normal(r, c.dim, 1)
				const eps = 1e-5
				be := newCPU(t)
				xb, _ := hostBuf(t, be, c.n+1, c.dim, x)
				ob, want := hostBuf(t, be, c.n+1, c.dim, x)
				be.RMSNorm(ob, xb, upload(t, be, tensor.F32, 1, c.dim, w), c.n, eps)

				kernels := []string{"rmsnorm_f32_v1"}
				d4 := c.dim / 4
				if c.dim%4 == 0 && d4 <= 4*1024 {
					kernels = append(kernels, "rmsnorm_f32")
				}
				for _, k := range kernels {
					threads := 256
					if k == "rmsnorm_f32" {
						threads = min(1024, roundUp(d4, 32))
					}
					s := &script{}
					xd := s.buf(f32Bytes(x))
					od := xd
					if !inPlace {
						od = s.buf(f32Bytes(x))
					}
					wd := s.buf(f32Bytes(w))
					s.launch(k, d1(c.n), d1(threads), ptr(od), ptr(xd), ptr(wd), i32(c.dim), f32(eps))
					got := s.read(od)
					e.run(t, s)
					compare(t, k, bytesF32(*got), want, nil, tol{1e-6, 2e-6})
				}
			})
		}
	}
}

// ---- RoPE (gpu/rope.go: grid (len(pos)), block 128)

func testRoPE(t *testing.T, e *emulator) {
	r := rand.New(rand.NewPCG(3, 3))
	for _, c := range []struct {
		hd, heads int
		theta     float32
		pos       []int32
	}{
		{64, 3, 10000, []int32{0, 1, 17, 4095}},
		{128, 2, 10000, []int32{5, 300, 100000}},
		{2, 4, 500000, []int32{7, 0}},
		{1024, 1, 10000, []int32{3, 2047}},
	} {
		t.Run(fmt.Sprintf("hd%d/heads%d", c.hd, c.heads), func(t *testing.T) {
			n, cols := len(c.pos), c.hd*c.heads
			x := normal(r, (n+1)*cols, 1)
			be := newCPU(t)
			xb, want := hostBuf(t, be, n+1, cols, x)
			be.RoPE(xb, c.hd, c.pos, c.theta)

			s := &script{}
			xd := s.buf(f32Bytes(x))
			pd := s.buf(i32Bytes(c.pos))
			s.launch("rope_f32", d1(n), d1(128), ptr(xd), ptr(pd), i32(cols), i32(c.hd), f32(c.theta))
			got := s.read(xd)
			e.run(t, s)
			// The kernel computes the angles as the cpu backend does: equal up to libm's last bit.
			compare(t, "rope_f32", bytesF32(*got), want, nil, tol{1e-6, 1e-6})
		})
	}
}

// ---- paged KV cache geometry shared by StoreKV, RoPEStoreKV and Attention

// kvCase is a batch over a paged cache: seqs[s] = (first position, rows) of sequence slot s.
type kvCase struct {
	name                     string
	heads, kvHeads, hd, bs   int
	layers, layer, numBlocks int
	seqs                     [][2]int
	qScale                   float32
}

// batch builds the model.Batch of c: rows of each sequence in order, block tables drawn from a
// shuffled pool (so that logical and physical blocks differ), a few blocks left unused.
func (c kvCase) batch(r *rand.Rand) *model.Batch {
	bt := &model.Batch{}
	perm := r.Perm(c.numBlocks)
	k := 0
	for s, sq := range c.seqs {
		nb := ceilDiv(sq[0]+sq[1], c.bs)
		tab := make([]int32, nb)
		for i := range tab {
			tab[i] = int32(perm[k])
			k++
		}
		bt.BlockTables = append(bt.BlockTables, tab)
		for i := 0; i < sq[1]; i++ {
			bt.Tokens = append(bt.Tokens, 0)
			bt.Pos = append(bt.Pos, int32(sq[0]+i))
			bt.Seq = append(bt.Seq, int32(s))
		}
	}
	if k > c.numBlocks {
		panic("kvCase: pool too small")
	}
	return bt
}

func (c kvCase) layout() model.KVLayout {
	return model.KVLayout{Layers: c.layers, KVHeads: c.kvHeads, HeadDim: c.hd, BlockSize: c.bs, NumBlocks: c.numBlocks}
}

// batchSlab is gpu/kvcache.go's prepareBatch packing, pos (B) | row_tab (B) | tables, where
// tables concatenates the block tables of the sequences used, in order of first use.
func batchSlab(bt *model.Batch) []int32 {
	B := bt.Len()
	host := append([]int32{}, bt.Pos...)
	host = append(host, make([]int32, B)...)
	off := map[int32]int32{}
	for i, s := range bt.Seq {
		o, ok := off[s]
		if !ok {
			o = int32(len(host) - 2*B)
			off[s] = o
			host = append(host, bt.BlockTables[s]...)
		}
		host[B+i] = o
	}
	return host
}

// kvDtype is a cache element type: F32 or F16.
func kvName(d tensor.DType) string { return strings.ToLower(d.String()) }

// ---- StoreKV (gpu/kvcache.go: grid (B), block 128)

var kvCases = []kvCase{
	{name: "bs16/gqa2", heads: 4, kvHeads: 2, hd: 64, bs: 16, layers: 2, layer: 1, numBlocks: 9, seqs: [][2]int{{0, 5}, {30, 1}, {17, 2}}, qScale: 1},
	{name: "bs1/gqa1", heads: 2, kvHeads: 2, hd: 8, bs: 1, layers: 1, layer: 0, numBlocks: 12, seqs: [][2]int{{3, 2}, {0, 6}}, qScale: 1},
}

func testStoreKV(t *testing.T, e *emulator) {
	r := rand.New(rand.NewPCG(4, 4))
	for _, c := range kvCases {
		for _, kd := range []tensor.DType{tensor.F32, tensor.F16} {
			t.Run(c.name+"/"+kvName(kd), func(t *testing.T) {
				bt := c.batch(r)
				B, kvDim := bt.Len(), c.kvHeads*c.hd
				k, v := normal(r, B*kvDim, 1), normal(r, B*kvDim, 1)
				be := newCPU(t)
				cc, _ := be.NewKVCache(c.layout())
				kb, _ := hostBuf(t, be, B, kvDim, roundTo(kd, k))
				vb, _ := hostBuf(t, be, B, kvDim, roundTo(kd, v))
				cache := cc.(*cpu.KVCache)
				// Sentinels in the cache: the slots not written must keep them.
				for i := range cache.K() {
					cache.K()[i], cache.V()[i] = float32(i%7), -float32(i%5)
				}
				kInit, vInit := slices.Clone(cache.K()), slices.Clone(cache.V())
				be.StoreKV(cc, c.layer, kb, vb, bt)

				s := &script{}
				kc := s.buf(tensor.Encode(kd, kInit))
				vc := s.buf(tensor.Encode(kd, vInit))
				kd1, vd1 := s.buf(f32Bytes(k)), s.buf(f32Bytes(v))
				meta := s.buf(i32Bytes(batchSlab(bt)))
				s.launch("store_kv_"+kvName(kd), d1(B), d1(128), ptr(kc), ptr(vc), ptr(kd1), ptr(vd1),
					ptr(meta), ptrAt(meta, 4*B), ptrAt(meta, 8*B), i32(kvDim), i32(c.layer), i32(c.numBlocks), i32(c.bs))
				gk, gv := s.read(kc), s.read(vc)
				e.run(t, s)
				compare(t, "K", decodeAs(kd, *gk), cache.K(), nil, exact)
				compare(t, "V", decodeAs(kd, *gv), cache.V(), nil, exact)
			})
		}
	}
}

// ---- RoPEStoreKV (gpu/rope.go: grid (B), block 128) = RoPE(q); RoPE(k); StoreKV(k, v)

// ropeStoreRef is the cpu's RoPE(q); RoPE(k); StoreKV(k, v) of a case's batch: the rotated q and
// k, and the cache.
func ropeStoreRef(t *testing.T, c kvCase, bt *model.Batch, q, k, v []float32, theta float32) (wantQ, wantK []float32, cache *cpu.KVCache) {
	B, kvDim, qCols := bt.Len(), c.kvHeads*c.hd, c.heads*c.hd
	be := newCPU(t)
	cc, _ := be.NewKVCache(c.layout())
	qb, wantQ := hostBuf(t, be, B, qCols, q)
	kb, wantK := hostBuf(t, be, B, kvDim, k)
	vb, _ := hostBuf(t, be, B, kvDim, v)
	be.RoPE(qb, c.hd, bt.Pos, theta)
	be.RoPE(kb, c.hd, bt.Pos, theta)
	be.StoreKV(cc, c.layer, kb, vb, bt)
	return wantQ, wantK, cc.(*cpu.KVCache)
}

func testRoPEStoreKV(t *testing.T, e *emulator) {
	r := rand.New(rand.NewPCG(5, 5))
	const theta = 10000
	for _, c := range kvCases {
		for _, kd := range []tensor.DType{tensor.F32, tensor.F16} {
			t.Run(c.name+"/"+kvName(kd), func(t *testing.T) {
				bt := c.batch(r)
				B, kvDim, qCols := bt.Len(), c.kvHeads*c.hd, c.heads*c.hd
				q, k, v := normal(r, B*qCols, 1), normal(r, B*kvDim, 1), normal(r, B*kvDim, 1)
				wantQ, wantK, cache := ropeStoreRef(t, c, bt, q, k, v, theta)

				s := &script{}
				qd, kd1, vd1 := s.buf(f32Bytes(q)), s.buf(f32Bytes(k)), s.buf(f32Bytes(v))
				n := len(cache.K())
				kc, vc := s.buf(tensor.Encode(kd, make([]float32, n))), s.buf(tensor.Encode(kd, make([]float32, n)))
				meta := s.buf(i32Bytes(batchSlab(bt)))
				s.launch("rope_qk_store_kv_"+kvName(kd), d1(B), d1(128), ptr(qd), ptr(kd1), ptr(vd1), ptr(kc), ptr(vc),
					ptr(meta), ptrAt(meta, 4*B), ptrAt(meta, 8*B), i32(qCols), i32(kvDim), i32(c.hd), f32(theta),
					i32(c.layer), i32(c.numBlocks), i32(c.bs))
				gq, gk, gkc, gvc := s.read(qd), s.read(kd1), s.read(kc), s.read(vc)
				e.run(t, s)
				rope := tol{1e-6, 1e-6}
				compare(t, "q", bytesF32(*gq), wantQ, nil, rope)
				compare(t, "k", bytesF32(*gk), wantK, nil, rope)
				// The cache holds the rotated k (rounded to the cache dtype) and v.
				compare(t, "K cache", decodeAs(kd, *gkc), roundTo(kd, cache.K()), nil, tol{1e-6, 2e-6})
				compare(t, "V cache", decodeAs(kd, *gvc), roundTo(kd, cache.V()), nil, exact)
			})
		}
	}
}

// ---- rope_qk_store_kv_<kv>_from_<dt> (gpu/fused.go's prefill path: grid (B), block 128) =
// RoPE(q); RoPE(k); StoreKV(k, v) on q, k, v given in fp16 or bf16, q written as fp32.

func testRoPEStoreFrom(t *testing.T, e *emulator) {
	r := rand.New(rand.NewPCG(7, 7))
	const theta = 10000
	for _, c := range kvCases {
		for _, d := range []tensor.DType{tensor.F16, tensor.BF16} {
			for _, kd := range []tensor.DType{tensor.F32, tensor.F16} {
				t.Run(fmt.Sprintf("%s/from-%s/%s", c.name, kvName(d), kvName(kd)), func(t *testing.T) {
					bt := c.batch(r)
					B, kvDim, qCols := bt.Len(), c.kvHeads*c.hd, c.heads*c.hd
					// The projections as cuBLAS leaves them: in d.
					q, k, v := roundTo(d, normal(r, B*qCols, 1)), roundTo(d, normal(r, B*kvDim, 1)), roundTo(d, normal(r, B*kvDim, 1))
					wantQ, _, cache := ropeStoreRef(t, c, bt, q, k, v, theta)

					s := &script{}
					qo := s.buf(f32Bytes(nanFill(B * qCols)))
					qd, kd1, vd1 := s.buf(tensor.Encode(d, q)), s.buf(tensor.Encode(d, k)), s.buf(tensor.Encode(d, v))
					n := len(cache.K())
					kc, vc := s.buf(tensor.Encode(kd, make([]float32, n))), s.buf(tensor.Encode(kd, make([]float32, n)))
					meta := s.buf(i32Bytes(batchSlab(bt)))
					s.launch("rope_qk_store_kv_"+kvName(kd)+"_from_"+kvName(d), d1(B), d1(128), ptr(qo), ptr(qd), ptr(kd1), ptr(vd1), ptr(kc), ptr(vc),
						ptr(meta), ptrAt(meta, 4*B), ptrAt(meta, 8*B), i32(qCols), i32(kvDim), i32(c.hd), f32(theta),
						i32(c.layer), i32(c.numBlocks), i32(c.bs))
					gq, gkc, gvc := s.read(qo), s.read(kc), s.read(vc)
					e.run(t, s)
					compare(t, "q", bytesF32(*gq), wantQ, nil, tol{1e-6, 1e-6})
					compare(t, "K cache", decodeAs(kd, *gkc), roundTo(kd, cache.K()), nil, tol{1e-6, 2e-6})
					compare(t, "V cache", decodeAs(kd, *gvc), roundTo(kd, cache.V()), nil, exact)
				})
			}
		}
	}
}

// ---- MatMulQKVRoPEStoreKV (gpu/fused.go: grid ceil((Nq + 2·Nkv)·4 / 16), block 128) =
// MatMul(q), MatMul(k), MatMul(v); RoPE(q); RoPE(k); StoreKV(k, v)

func testQKVRoPE(t *testing.T, e *emulator) {
	r := rand.New(rand.NewPCG(6, 6))
	// K: 12 f16 vectors and 3 chunks of 32, so that v3's and v4's K groups are uneven.
	const theta, K = 10000, 96
	for _, c := range kvCases {
		for _, d := range []tensor.DType{tensor.F16, tensor.BF16, tensor.F32, tensor.Q8_0, tensor.Q4_0} {
			quant := d == tensor.Q8_0 || d == tensor.Q4_0
			for _, kd := range []tensor.DType{tensor.F32, tensor.F16} {
				// The case's batch and its first 1, 2 and 3 rows: every compiled batch width.
				for _, rows := range []int{1, 2, 3, 8} {
					t.Run(fmt.Sprintf("%s/%s/kv-%s/n=%d", c.name, kvName(d), kvName(kd), rows), func(t *testing.T) {
						bt := c.batch(r)
						if bt.Len() < rows {
							t.Fatalf("batch of %d rows, want at least %d", bt.Len(), rows)
						}
						bt.Tokens, bt.Pos, bt.Seq = bt.Tokens[:rows], bt.Pos[:rows], bt.Seq[:rows]
						B, kvDim, qCols := bt.Len(), c.kvHeads*c.hd, c.heads*c.hd
						width := 1
						for width < B {
							width *= 2
						}
						x := normal(r, B*K, 1)
						ns := []int{qCols, kvDim, kvDim}
						var ws [3][]float32
						be := newCPU(t)
						xb, _ := hostBuf(t, be, B, K, x)
						var outs [3]model.Buffer
						var want [3][]float32
						var enc [3][]byte // as the device holds them (Q8_0, Q4_0: repacked)
						for i, N := range ns {
							if quant {
								q := tensor.Encode(d, normal(r, N*K, 1))
								ws[i] = make([]float32, N*K)
								tensor.Decode(ws[i], d, q)
								enc[i] = repackQuantForTest(d, q, N, K)
							} else {
								ws[i] = roundTo(d, normal(r, N*K, 1))
								enc[i] = tensor.Encode(d, ws[i])
							}
							outs[i], want[i] = hostBuf(t, be, B, N, nil)
							be.MatMul(outs[i], xb, upload(t, be, tensor.F32, N, K, ws[i]), B)
						}
						cc, _ := be.NewKVCache(c.layout())
						cache := cc.(*cpu.KVCache)
						be.RoPE(outs[0], c.hd, bt.Pos, theta)
						be.RoPE(outs[1], c.hd, bt.Pos, theta)
						be.StoreKV(cc, c.layer, outs[1], outs[2], bt)

						// v3 (grid ceil(rows·4/16), 128 threads; not for Q8_0, Q4_0) and, for all
						// but fp32 weights, v4 with each split (a block per 16-row tile of each
						// matrix, 32·ks threads).
						type launch struct {
							name        string
							grid, block dim3
						}
						var launches []launch
						if !quant {
							launches = append(launches, launch{fmt.Sprintf("gemv_%s_v3_qkv_rope_%s_n%d", kvName(d), kvName(kd), width), d1(ceilDiv((qCols+2*kvDim)*4, 16)), d1(128)})
						}
						if d != tensor.F32 {
							for _, ks := range []int{4, 8} {
								launches = append(launches, launch{fmt.Sprintf("gemv_%s_v4_qkv_rope_%s_k%d", kvName(d), kvName(kd), ks),
									d1(ceilDiv(qCols, 16) + 2*ceilDiv(kvDim, 16)), d1(32 * ks)})
							}
						}
						for _, l := range launches {
							s := &script{}
							xd := s.buf(f32Bytes(x))
							var od [3]dev
							var wargs []arg // each matrix's pointer, or its quants' and scales'
							for i, N := range ns {
								od[i] = s.buf(f32Bytes(nanFill(B * N)))
								wd := s.buf(enc[i])
								wargs = append(wargs, ptr(wd))
								if quant {
									wargs = append(wargs, ptrAt(wd, len(enc[i])-N*K/32*2))
								}
							}
							n := len(cache.K())
							kc, vc := s.buf(tensor.Encode(kd, make([]float32, n))), s.buf(tensor.Encode(kd, make([]float32, n)))
							meta := s.buf(i32Bytes(batchSlab(bt)))
							s.launch(l.name, l.grid, l.block, slices.Concat([]arg{ptr(od[0]), ptr(od[1]), ptr(od[2]), ptr(xd)}, wargs,
								[]arg{ptr(kc), ptr(vc), ptr(meta), ptrAt(meta, 4*B), ptrAt(meta, 8*B), i32(B), i32(qCols), i32(kvDim), i32(K), i32(c.hd), f32(theta),
									i32(c.layer), i32(c.numBlocks), i32(c.bs)})...)
							var got [3]*[]byte
							for i := range od {
								got[i] = s.read(od[i])
							}
							gkc, gvc := s.read(kc), s.read(vc)
							e.run(t, s)
							// The sums' tolerance is the matmul's (a rotation keeps each pair's norm).
							for i, what := range []string{"q", "k", "v"} {
								compare(t, l.name+" "+what, bytesF32(*got[i]), want[i], nil, tol{1e-5, 1e-5})
							}
							// fp16: sums a rounding apart may round to neighbouring halves.
							ct := tol{1e-5, 2e-5}
							if kd == tensor.F16 {
								ct = tol{1e-5, 1e-3}
							}
							compare(t, l.name+" K cache", decodeAs(kd, *gkc), roundTo(kd, cache.K()), nil, ct)
							compare(t, l.name+" V cache", decodeAs(kd, *gvc), roundTo(kd, cache.V()), nil, ct)
						}
					})
				}
			}
		}
	}
}

// ---- Attention (gpu/attention.go)

// Constants of kernels/attention.cu, as gpu/attention.go names them.
const (
	decChunkMax   = 512
	decGMax       = 8
	decHDMax      = 128
	pfQuery       = 32
	pfHDMax       = 128
	pmQuery       = 64
	prefillMinRun = 4
	decMinChunk   = 64
)

// attnPlan is gpu/attention.go's makePlan: runs of consecutive positions of one sequence go to
// the prefill kernel when ≥ prefillMinRun long, other rows to decode, and geometries neither
// handles (or naive) to v1. chunkOverride > 0 replaces the planner's chunk.
type attnPlan struct {
	v1, dec       []int32
	tiles         []int32 // (first row, rows) pairs
	chunk, splits int
	mma           bool // tiles go to attention_prefill_f16_v4_hd<hd> (tensor cores)
	prefillV3     bool // … or to v3's (Options.PrefillV3)
	decV3         bool // decode rows go to attention_decode_v3_<kv>_g<GM> + attention_reduce_f32_v2
	decV4         bool // … or to attention_decode_v4_f16_hd<hd>_g<GM> (+ attention_reduce_f32_v2)
	decV5         bool // … or to attention_decode_v5_f16_hd<hd> (decV4's plan and modes)
	noMerge       bool // v4: always merge with attention_reduce_f32_v2, never in the kernel
}

func decodeFits(g, hd int, f32 bool) bool {
	vec := 8
	if f32 {
		vec = 4
	}
	if g > decGMax || hd > decHDMax || hd%vec != 0 {
		return false
	}
	nv := hd / vec
	return nv >= 1 && nv <= 32 && nv&(nv-1) == 0
}

func prefillFits(g, hd int) bool { return hd%2 == 0 && hd <= pfHDMax && g <= pfQuery }

func decodeV4Fits(g, hd int, f32 bool) bool { return !f32 && (hd == 64 || hd == 128) && g <= decGMax }

func prefillMMA(g, hd int, f32 bool) bool { return !f32 && (hd == 64 || hd == 128) && g <= pmQuery }

// v4 plans decode rows for attention_decode_v4 where it applies (gpu Options.Decode 0 or 4).
func makePlan(bt *model.Batch, heads, kvHeads, hd int, f32, naive, simt, v4 bool, sms, chunkOverride int) attnPlan {
	g := heads / kvHeads
	dec := !naive && decodeFits(g, hd, f32)
	pre := !naive && prefillFits(g, hd)
	var p attnPlan
	p.decV4 = dec && v4 && decodeV4Fits(g, hd, f32)
	p.mma = pre && !simt && prefillMMA(g, hd, f32)
	rowsPerTile := pfQuery / g
	if p.mma {
		rowsPerTile = pmQuery / g
	}
	B := bt.Len()
	for i := 0; i < B; {
		j := i + 1
		for j < B && bt.Seq[j] == bt.Seq[i] && bt.Pos[j] == bt.Pos[j-1]+1 {
			j++
		}
		switch {
		case pre && j-i >= prefillMinRun:
			for r := i; r < j; r += rowsPerTile {
				p.tiles = append(p.tiles, int32(r), int32(min(rowsPerTile, j-r)))
			}
		case dec:
			for r := i; r < j; r++ {
				p.dec = append(p.dec, int32(r))
			}
		default:
			for r := i; r < j; r++ {
				p.v1 = append(p.v1, int32(r))
			}
		}
		i = j
	}
	p.chunk, p.splits = decChunkMax, 1
	if len(p.dec) > 0 {
		maxCtx := 0
		for _, r := range p.dec {
			maxCtx = max(maxCtx, int(bt.Pos[r])+1)
		}
		blocks := len(p.dec) * kvHeads
		var chunk int
		if p.decV4 {
			chunk, _ = decodeSplitsV4(maxCtx, blocks, sms, 3, g)
		} else {
			splits := ceilDiv(4*sms, blocks)
			splits = max(1, min(splits, ceilDiv(maxCtx, decMinChunk)))
			chunk = min((ceilDiv(maxCtx, splits)+31)/32*32, decChunkMax)
		}
		if chunkOverride > 0 {
			chunk = chunkOverride
		}
		p.chunk, p.splits = chunk, ceilDiv(maxCtx, chunk)
	}
	return p
}

// decodeSplitsV4 is gpu/attention.go's (d4BlockCost 16, d4Tile 32).
func decodeSplitsV4(maxCtx, blocks, sms, perSM, g int) (chunk, splits int) {
	most := max(1, min(ceilDiv(maxCtx, decMinChunk), 1024))
	best := math.MaxInt
	for s := 1; s <= most; s++ {
		c := ceilDiv(maxCtx, s*32) * 32
		n := ceilDiv(maxCtx, c)
		k := ceilDiv(n*blocks, sms)
		cost := c*max(k, perSM) + k*16
		if n > 1 {
			cost += k * 2 * g
		}
		if cost < best {
			best, chunk, splits = cost, c, n
		}
	}
	return chunk, splits
}

var attnCases = []kvCase{
	// decode rows crossing 64-token splits, a large q scale (peaked softmax), GQA 2
	{name: "h4kv2/hd128/bs16", heads: 4, kvHeads: 2, hd: 128, bs: 16, layers: 2, layer: 1, numBlocks: 30, seqs: [][2]int{{300, 2}, {130, 1}, {0, 1}}, qScale: 8},
	// prefill of 37 rows (tiles of 32/G = 10 rows) + 2 decode rows, block size 5, GQA 1
	{name: "h2kv2/hd16/bs5", heads: 2, kvHeads: 2, hd: 16, bs: 5, layers: 1, layer: 0, numBlocks: 40, seqs: [][2]int{{0, 37}, {60, 2}}, qScale: 1},
	// GQA 8 with head_dim 64, a prefill run of 6 after a cached prefix, block size 1
	{name: "h8kv1/hd64/bs1", heads: 8, kvHeads: 1, hd: 64, bs: 1, layers: 1, layer: 0, numBlocks: 130, seqs: [][2]int{{40, 6}, {70, 1}, {3, 2}}, qScale: 2},
	// GQA 4, head_dim 32: 3 rows (below prefillMinRun) of one sequence go to decode
	{name: "h8kv2/hd32/bs16", heads: 8, kvHeads: 2, hd: 32, bs: 16, layers: 1, layer: 0, numBlocks: 12, seqs: [][2]int{{90, 3}, {10, 5}}, qScale: 1},
	// GQA 3: the g4 decode kernel with G < GM
	{name: "h6kv2/hd32/bs4", heads: 6, kvHeads: 2, hd: 32, bs: 4, layers: 1, layer: 0, numBlocks: 30, seqs: [][2]int{{50, 1}, {0, 4}}, qScale: 1},
	// prefill at head_dim 128 (tensor cores with an fp16 cache): 64-row tiles, a run after a cached
	// prefix crossing 64-key tiles, block size 16, GQA 1; and GQA 4 at head_dim 64 (16-row tiles)
	{name: "h2kv2/hd128/bs16/prefill", heads: 2, kvHeads: 2, hd: 128, bs: 16, layers: 1, layer: 0, numBlocks: 20, seqs: [][2]int{{0, 70}, {33, 40}, {90, 1}}, qScale: 1},
	{name: "h8kv2/hd64/bs8/prefill", heads: 8, kvHeads: 2, hd: 64, bs: 8, layers: 1, layer: 0, numBlocks: 26, seqs: [][2]int{{100, 30}, {40, 1}}, qScale: 3},
	// decode v4's widest group (G = 8) at head_dim 128: a row crossing 32-key tiles and splits,
	// two rows of one sequence, and a row with one key (3 of a tile's 4 warps see none)
	{name: "h8kv1/hd128/bs16/decode", heads: 8, kvHeads: 1, hd: 128, bs: 16, layers: 1, layer: 0, numBlocks: 20, seqs: [][2]int{{200, 1}, {33, 2}, {0, 1}}, qScale: 4},
	// GQA 3 at head_dim 128 (the g4 kernels with G < GM), two KV heads
	{name: "h6kv2/hd128/bs8/decode", heads: 6, kvHeads: 2, hd: 128, bs: 8, layers: 2, layer: 1, numBlocks: 24, seqs: [][2]int{{150, 1}, {6, 3}}, qScale: 2},
	// head_dim 64 with GQA 1 and 2 (the rest of v4's kernels)
	{name: "h4kv4/hd64/bs16/decode", heads: 4, kvHeads: 4, hd: 64, bs: 16, layers: 1, layer: 0, numBlocks: 12, seqs: [][2]int{{90, 1}, {60, 2}}, qScale: 2},
	{name: "h4kv2/hd64/bs4/decode", heads: 4, kvHeads: 2, hd: 64, bs: 4, layers: 1, layer: 0, numBlocks: 20, seqs: [][2]int{{70, 1}}, qScale: 1},
	// GQA 16 (> 8: no decode kernel, v1 with idle lanes as head_dim 24 < 32; prefill tiles of 2 rows)
	{name: "h16kv1/hd24/bs16", heads: 16, kvHeads: 1, hd: 24, bs: 16, layers: 1, layer: 0, numBlocks: 6, seqs: [][2]int{{20, 5}, {33, 1}}, qScale: 1},
}

func testAttention(t *testing.T, e *emulator) {
	for ci, c := range attnCases {
		for _, kd := range []tensor.DType{tensor.F32, tensor.F16} {
			t.Run(c.name+"/"+kvName(kd), func(t *testing.T) {
				r := rand.New(rand.NewPCG(6, uint64(ci)))
				bt := c.batch(r)
				B, qCols := bt.Len(), c.heads*c.hd
				q := normal(r, B*qCols, c.qScale)
				be := newCPU(t)
				cc, _ := be.NewKVCache(c.layout())
				cache := cc.(*cpu.KVCache)
				// The whole cache random (unused slots too), rounded to the cache dtype so that
				// both sides attend over the same values.
				copy(cache.K(), roundTo(kd, normal(r, len(cache.K()), 1)))
				copy(cache.V(), roundTo(kd, normal(r, len(cache.V()), 1)))
				qb, _ := hostBuf(t, be, B, qCols, q)
				ob, want := hostBuf(t, be, B, qCols, nil)
				be.Attention(ob, qb, cc, c.layer, bt)
				maxV := 0.0
				for _, x := range cache.V() {
					maxV = max(maxV, math.Abs(float64(x)))
				}
				mag := make([]float64, len(want))
				for i := range mag {
					mag[i] = maxV
				}

				f32 := kd == tensor.F32
				// The default plans (decode v4 where it applies), and v2's and v3's decode.
				plans := map[string]attnPlan{
					"naive":   makePlan(bt, c.heads, c.kvHeads, c.hd, f32, true, false, true, 132, 0),
					"H100":    makePlan(bt, c.heads, c.kvHeads, c.hd, f32, false, false, true, 132, 0),
					"simt":    makePlan(bt, c.heads, c.kvHeads, c.hd, f32, false, true, true, 132, 0),
					"1sm":     makePlan(bt, c.heads, c.kvHeads, c.hd, f32, false, false, true, 1, 0),
					"chunk32": makePlan(bt, c.heads, c.kvHeads, c.hd, f32, false, false, true, 132, 32),
				}
				for _, v := range []struct {
					name       string
					sms, chunk int
				}{{"H100", 132, 0}, {"1sm", 1, 0}, {"chunk32", 132, 32}} {
					p := makePlan(bt, c.heads, c.kvHeads, c.hd, f32, false, false, false, v.sms, v.chunk)
					if plans[v.name].decV4 {
						plans[v.name+"/v2"] = p
					}
					p.decV3 = true
					plans[v.name+"/v3"] = p
				}
				// The previous tensor-core prefill kernel (Options.PrefillV3).
				p := plans["H100"]
				p.prefillV3 = true
				plans["H100/prefill-v3"] = p
				// v5 (tensor cores) on v4's plans, and on 16-key chunks (one tile a split: the most
				// splits, merged by the kernel or by the reduce kernel).
				for _, pn := range []string{"H100", "1sm", "chunk32"} {
					if p := plans[pn]; p.decV4 {
						p.decV5 = true
						plans[pn+"/v5"] = p
					}
				}
				if p := makePlan(bt, c.heads, c.kvHeads, c.hd, f32, false, false, true, 132, 16); p.decV4 {
					p.decV5 = true
					plans["chunk16/v5"] = p
				}
				// v4 and v5 with their partials merged by the reduce kernel where they would merge
				// them themselves.
				for _, pn := range []string{"H100", "chunk32", "H100/v5", "chunk32/v5", "chunk16/v5"} {
					if p := plans[pn]; p.decV4 && p.splits > 1 && p.splits*c.heads/c.kvHeads <= 32 {
						p.noMerge = true
						plans[pn+"/no-merge"] = p
					}
				}
				for _, pn := range slices.Sorted(maps.Keys(plans)) {
					p := plans[pn]
					s := &script{}
					got, counts := attentionScript(s, c, kd, bt, p, q, cache.K(), cache.V())
					e.run(t, s)
					if counts != nil && !bytes.Equal(*counts, make([]byte, len(*counts))) {
						t.Errorf("plan %s: decode v4's split counts not left zero: %v", pn, *counts)
					}
					what := fmt.Sprintf("plan %s (v1 %d rows, decode %d rows in %d splits of %d, v3 %v, v4 %v, v5 %v, prefill %d tiles, mma %v)", pn, len(p.v1), len(p.dec), p.splits, p.chunk, p.decV3, p.decV4, p.decV5, len(p.tiles)/2, p.mma)
					tl := tol{2e-6, 2e-5}
					if p.mma && len(p.tiles) > 0 {
						// fp16 Q (scaled) and P on the tensor cores: 2⁻¹¹ relative on each score's
						// terms and on each weight.
						tl = tol{2e-3, 3e-3}
					}
					compare(t, what, bytesF32(*got), want, mag, tl)
				}
			})
		}
	}
}

// attentionScript mirrors gpu/attention.go's Attention for plan p. counts is v4 decode's split
// counters after the launches (nil without v4), which must be zero again.
func attentionScript(s *script, c kvCase, kd tensor.DType, bt *model.Batch, p attnPlan, q, K, V []float32) (out, counts *[]byte) {
	B, qCols, hd := bt.Len(), c.heads*c.hd, c.hd
	od := s.buf(f32Bytes(nanFill(B * qCols)))
	qd := s.buf(f32Bytes(q))
	kc, vc := s.buf(tensor.Encode(kd, K)), s.buf(tensor.Encode(kd, V))
	meta := s.buf(i32Bytes(batchSlab(bt)))
	plan := append(append(append([]int32{}, p.v1...), p.dec...), p.tiles...)
	pd := s.buf(i32Bytes(append(plan, 0))) // never empty
	nV1, nDec, nTiles := len(p.v1), len(p.dec), len(p.tiles)/2
	kv := kvName(kd)
	common := []arg{ptr(meta), ptrAt(meta, 4*B), ptrAt(meta, 8*B), i32(c.heads), i32(c.kvHeads), i32(hd), i32(c.layer), i32(c.numBlocks), i32(c.bs)}
	if nV1 > 0 {
		s.launch("attention_"+kv+"_v1", d2(c.heads, nV1), d1(roundUp(hd, 32)),
			append([]arg{ptr(od), ptr(qd), ptr(kc), ptr(vc), ptr(pd)}, common...)...)
	}
	if nDec > 0 {
		g := c.heads / c.kvHeads
		gm := 1
		for gm < g {
			gm *= 2
		}
		direct := 0
		po, pml := null(), null()
		if p.splits == 1 {
			direct = 1
		} else {
			n := nDec * c.heads * p.splits
			po, pml = ptr(s.buf(f32Bytes(nanFill(n*hd)))), ptr(s.buf(f32Bytes(nanFill(n*2))))
		}
		decRows := ptrAt(pd, 4*nV1)
		args := append([]arg{ptr(od), po, pml, ptr(qd), ptr(kc), ptr(vc), decRows}, common...)
		dec, reduce := fmt.Sprintf("attention_decode_%s_g%d", kv, gm), "attention_reduce_f32"
		var cb dev
		switch {
		case p.decV4:
			// gpu/attention.go's v4 modes: 1 direct, 2 merged by the kernel when G·splits ≤ 32
			// (counts zeroed, and zero again after), else 0 and the reduce kernel. No head_dim
			// argument: v4 is compiled per head_dim.
			if direct == 0 && g*p.splits <= 32 && !p.noMerge {
				direct = 2
			}
			cb = s.buf(make([]byte, 4*nDec*c.kvHeads))
			dec, reduce = fmt.Sprintf("attention_decode_v4_f16_hd%d_g%d", hd, gm), "attention_reduce_f32_v2"
			if p.decV5 {
				dec = fmt.Sprintf("attention_decode_v5_f16_hd%d", hd) // one kernel for every G ≤ 8
			}
			args = slices.Insert(slices.Delete(args, 12, 13), 3, ptr(cb))
		case p.decV3:
			dec, reduce = fmt.Sprintf("attention_decode_v3_%s_g%d", kv, gm), "attention_reduce_f32_v2"
		}
		s.launch(dec, d3(p.splits, c.kvHeads, nDec), d1(128),
			append(args, i32(p.chunk), i32(p.splits), i32(direct))...)
		if direct == 0 {
			s.launch(reduce, d2(c.heads, nDec), d1(128), ptr(od), po, pml, decRows, common[0],
				i32(c.heads), i32(hd), i32(p.chunk), i32(p.splits))
		}
		if p.decV4 {
			counts = s.read(cb)
		}
	}
	if nTiles > 0 && p.mma {
		args := append([]arg{ptr(od), ptr(qd), ptr(kc), ptr(vc), ptrAt(pd, 4*(nV1+nDec))}, common[0], common[1], common[2],
			common[3], common[4], common[6], common[7], common[8])
		if p.prefillV3 {
			s.launch(fmt.Sprintf("attention_prefill_f16_v3_hd%d", hd), d2(nTiles, c.kvHeads), d1(128), args...)
		} else {
			s.launch(fmt.Sprintf("attention_prefill_f16_v4_hd%d", hd), d2(c.kvHeads, nTiles), d1(128), args...)
		}
	} else if nTiles > 0 {
		s.launch("attention_prefill_"+kv, d2(nTiles, c.kvHeads), d1(128),
			append([]arg{ptr(od), ptr(qd), ptr(kc), ptr(vc), ptrAt(pd, 4*(nV1+nDec))}, common...)...)
	}
	return s.read(od), counts
}

// ---- MatMul (gpu/matmul.go: v1 with grid (ceil(N/8), n), block 256 when naive or K is not a
// multiple of the 16-byte vector; else gemv_<dt>_v2_n<B> over 8-row slices, grid
// (ceil(N/16)), block 128, B the smallest width ≥ the slice's rows)

func testMatMul(t *testing.T, e *emulator) {
	r := rand.New(rand.NewPCG(7, 7))
	for _, d := range []tensor.DType{tensor.F16, tensor.BF16, tensor.F32} {
		for _, c := range []struct{ n, N, K int }{
			{1, 17, 64}, {2, 40, 24}, {3, 5, 8}, {4, 33, 136}, {5, 16, 40}, {8, 21, 16}, {11, 19, 32},
			{3, 9, 13}, {2, 7, 36}, {1, 3, 520},
		} {
			t.Run(fmt.Sprintf("%v/%dx%dx%d", d, c.n, c.N, c.K), func(t *testing.T) {
				x, w := normal(r, c.n*c.K, 1), roundTo(d, normal(r, c.N*c.K, 1))
				be := newCPU(t)
				xb, _ := hostBuf(t, be, c.n, c.K, x)
				ob, want := hostBuf(t, be, c.n, c.N, nil)
				be.MatMul(ob, xb, upload(t, be, d, c.N, c.K, w), c.n)
				mag := absDot(x, w, c.n, c.N, c.K)
				dt := strings.ToLower(d.String())
				vec := 8
				if d == tensor.F32 {
					vec = 4
				}
				type path struct {
					name string
					f    func(s *script, out, xd, wd dev)
				}
				paths := []path{{"v1", func(s *script, out, xd, wd dev) {
					s.launch("gemv_"+dt+"_v1", d2(ceilDiv(c.N, 8), c.n), d1(256), ptr(out), ptr(xd), ptr(wd), i32(c.n), i32(c.N), i32(c.K))
				}}}
				if c.K%vec == 0 {
					paths = append(paths, path{"v2", func(s *script, out, xd, wd dev) {
						for i := 0; i < c.n; i += 8 {
							m := min(8, c.n-i)
							b := 1
							for b < m {
								b *= 2
							}
							s.launch(fmt.Sprintf("gemv_%s_v2_n%d", dt, b), d1(ceilDiv(c.N, 16)), d1(128),
								ptrAt(out, 4*i*c.N), ptrAt(xd, 4*i*c.K), ptr(wd), i32(m), i32(c.N), i32(c.K))
						}
					}})
					// v3 (the default): grid ceil(N·ks/16) for ks warps per 4-row group.
					for _, ks := range []int{1, 2, 4} {
						paths = append(paths, path{fmt.Sprintf("v3 ks=%d", ks), func(s *script, out, xd, wd dev) {
							for i := 0; i < c.n; i += 8 {
								m := min(8, c.n-i)
								b := 1
								for b < m {
									b *= 2
								}
								s.launch(fmt.Sprintf("gemv_%s_v3_n%d_k%d", dt, b, ks), d1(ceilDiv(c.N*ks, 16)), d1(128),
									ptrAt(out, 4*i*c.N), ptrAt(xd, 4*i*c.K), ptr(wd), i32(m), i32(c.N), i32(c.K))
							}
						}})
					}
				}
				for _, p := range paths {
					s := &script{}
					out := s.buf(f32Bytes(nanFill((c.n + 1) * c.N))) // a row beyond n stays NaN
					xd, wd := s.buf(f32Bytes(x)), s.buf(tensor.Encode(d, w))
					p.f(s, out, xd, wd)
					got := s.read(out)
					e.run(t, s)
					g := bytesF32(*got)
					compare(t, p.name, g[:c.n*c.N], want[:c.n*c.N], mag, tol{1e-6, 1e-5})
					for i, v := range g[c.n*c.N:] {
						if !math.IsNaN(float64(v)) {
							t.Errorf("%s wrote out[%d] = %g beyond its %d rows", p.name, c.n*c.N+i, v, c.n)
							break
						}
					}
				}
			})
		}
	}
}

// absDot is Σ_k |x[i,k]·w[r,k]|, the magnitude a fp32 sum's rounding scales with.
func absDot(x, w []float32, n, N, K int) []float64 {
	mag := make([]float64, n*N)
	for i := 0; i < n; i++ {
		for r := 0; r < N; r++ {
			var s float64
			for k := 0; k < K; k++ {
				s += math.Abs(float64(x[i*K+k]) * float64(w[r*K+k]))
			}
			mag[i*N+r] = s
		}
	}
	return mag
}

// ---- GEMM v1 (gpu/matmul.go MatMulV1: grid (ceil(N/128), n), block 128)

func testGEMM(t *testing.T, e *emulator) {
	r := rand.New(rand.NewPCG(8, 8))
	for _, d := range []tensor.DType{tensor.F32, tensor.F16, tensor.BF16} {
		t.Run(d.String(), func(t *testing.T) {
			n, N, K := 3, 130, 20
			x, w := normal(r, n*K, 1), roundTo(d, normal(r, N*K, 1))
			be := newCPU(t)
			xb, _ := hostBuf(t, be, n, K, x)
			ob, want := hostBuf(t, be, n, N, nil)
			be.MatMul(ob, xb, upload(t, be, d, N, K, w), n)
			s := &script{}
			out := s.buf(f32Bytes(nanFill(n * N)))
			xd, wd := s.buf(f32Bytes(x)), s.buf(tensor.Encode(d, w))
			s.launch("gemm_"+strings.ToLower(d.String())+"_v1", d2(ceilDiv(N, 128), n), d1(128), ptr(out), ptr(xd), ptr(wd), i32(n), i32(N), i32(K))
			got := s.read(out)
			e.run(t, s)
			compare(t, "gemm_v1", bytesF32(*got), want, absDot(x, w, n, N, K), tol{1e-6, 1e-5})
		})
	}
}

// ---- convert_f32_to_<dt> (gpu/matmul.go gemmCublas: gridFor(total, 256), block 256), checked
// bit for bit against tensor.Encode (round to nearest even).

func testConvert(t *testing.T, e *emulator) {
	r := rand.New(rand.NewPCG(9, 9))
	x := normal(r, 1000, 3)
	edge := []float32{0, float32(math.Copysign(0, -1)), 65504, 65519, 65520, 1e6, -1e6, 5.960464e-08, 2.9802322e-08, 2.9802326e-08,
		1e-40, 1.0009765625, 1.00048828125, 1.00146484375, float32(math.Inf(1)), float32(math.Inf(-1)), 3.3895314e38}
	copy(x, edge)
	for _, d := range []tensor.DType{tensor.F16, tensor.BF16} {
		for _, grid := range []dim3{gridFor(len(x), 256), d1(1)} { // d1(1): the grid-stride loop
			t.Run(fmt.Sprintf("%v/grid%d", d, grid.X), func(t *testing.T) {
				s := &script{}
				out := s.buf(make([]byte, 2*len(x)))
				xd := s.buf(f32Bytes(x))
				s.launch("convert_f32_to_"+strings.ToLower(d.String()), grid, d1(256), ptr(out), ptr(xd), i32(len(x)))
				got := s.read(out)
				e.run(t, s)
				want := tensor.Encode(d, x)
				for i := range x {
					g, w := binary.LittleEndian.Uint16((*got)[2*i:]), binary.LittleEndian.Uint16(want[2*i:])
					if g != w {
						t.Errorf("x[%d] = %g: got %#04x, want %#04x", i, x[i], g, w)
					}
				}
			})
		}
	}
}

// ---- SwiGLU and Add (gpu/swiglu.go, gpu/add.go: v2 (float4) on gridFor(total/4, 256) when
// total % 4 == 0, else v1 on gridFor(total, 256); block 256). Also on a one-block grid, to run
// the grid-stride loops.

func elementwiseGrids(total int) map[string]dim3 {
	m := map[string]dim3{"v1/grid": gridFor(total, 256), "v1/grid1": d1(1)}
	if total%4 == 0 {
		m["v2/grid"], m["v2/grid1"] = gridFor(total/4, 256), d1(1)
	}
	return m
}

func testSwiGLU(t *testing.T, e *emulator) {
	r := rand.New(rand.NewPCG(10, 10))
	for _, c := range []struct{ n, ffn int }{{3, 7}, {2, 1100}} {
		total := c.n * c.ffn
		gate, up := normal(r, total, 4), normal(r, total, 1)
		gate[0], gate[1] = -100, 100 // e^−g overflows / underflows
		be := newCPU(t)
		gb, _ := hostBuf(t, be, c.n, c.ffn, gate)
		ub, _ := hostBuf(t, be, c.n, c.ffn, up)
		ob, want := hostBuf(t, be, c.n, c.ffn, nil)
		be.SwiGLU(ob, gb, ub, c.n)
		for path, grid := range elementwiseGrids(total) {
			for _, inPlace := range []bool{false, true} {
				t.Run(fmt.Sprintf("%dx%d/%s/inplace=%v", c.n, c.ffn, path, inPlace), func(t *testing.T) {
					k := "swiglu_f32"
					if strings.HasPrefix(path, "v1") {
						k = "swiglu_f32_v1"
					}
					s := &script{}
					gd, ud := s.buf(f32Bytes(gate)), s.buf(f32Bytes(up))
					od := gd
					if !inPlace {
						od = s.buf(f32Bytes(nanFill(total)))
					}
					s.launch(k, grid, d1(256), ptr(od), ptr(gd), ptr(ud), i32(total))
					got := s.read(od)
					e.run(t, s)
					compare(t, k, bytesF32(*got), want, nil, tol{1e-7, 1e-6})
				})
			}
		}
	}
}

// testSwiGLUHalf: swiglu_f16 and swiglu_bf16 (gpu/fused.go's MatMulFFN: gridFor(total/8, 256),
// block 256, total % 8 == 0, out = gate) against the cpu's SwiGLU of the same stored gate and up,
// rounded to the dtype: within one unit in the last place of it (the device's expf differs
// from Go's by a few fp32 ulp, which can move the rounding). Also on a one-block grid (the
// grid-stride loop) and out of place.
func testSwiGLUHalf(t *testing.T, e *emulator) {
	r := rand.New(rand.NewPCG(12, 12))
	for _, d := range []tensor.DType{tensor.F16, tensor.BF16} {
		for _, c := range []struct{ n, ffn int }{{1, 8}, {3, 1096}} {
			total := c.n * c.ffn
			gate, up := roundTo(d, normal(r, total, 4)), roundTo(d, normal(r, total, 1))
			gate[0], gate[1] = -100, 100 // e^−g overflows / underflows
			be := newCPU(t)
			gb, _ := hostBuf(t, be, c.n, c.ffn, gate)
			ub, _ := hostBuf(t, be, c.n, c.ffn, up)
			ob, out := hostBuf(t, be, c.n, c.ffn, nil)
			be.SwiGLU(ob, gb, ub, c.n)
			want := roundTo(d, out)
			ulp := math.Ldexp(1, -10) // fp16: 10 stored mantissa bits
			if d == tensor.BF16 {
				ulp = math.Ldexp(1, -7)
			}
			k := "swiglu_" + strings.ToLower(d.String())
			for path, grid := range map[string]dim3{"grid": gridFor(total/8, 256), "grid1": d1(1)} {
				for _, inPlace := range []bool{false, true} {
					t.Run(fmt.Sprintf("%v/%dx%d/%s/inplace=%v", d, c.n, c.ffn, path, inPlace), func(t *testing.T) {
						s := &script{}
						gd, ud := s.buf(tensor.Encode(d, gate)), s.buf(tensor.Encode(d, up))
						od := gd
						if !inPlace {
							od = s.buf(tensor.Encode(d, nanFill(total)))
						}
						s.launch(k, grid, d1(256), ptr(od), ptr(gd), ptr(ud), i32(total))
						got := s.read(od)
						e.run(t, s)
						compare(t, k, decodeAs(d, *got), want, nil, tol{1e-6, ulp})
					})
				}
			}
		}
	}
}

func testAdd(t *testing.T, e *emulator) {
	r := rand.New(rand.NewPCG(11, 11))
	for _, c := range []struct{ n, dim int }{{3, 7}, {2, 1100}} {
		total := c.n * c.dim
		x, y := normal(r, total, 1), normal(r, total, 1)
		be := newCPU(t)
		xb, want := hostBuf(t, be, c.n, c.dim, x)
		yb, _ := hostBuf(t, be, c.n, c.dim, y)
		be.Add(xb, yb, c.n)
		for path, grid := range elementwiseGrids(total) {
			t.Run(fmt.Sprintf("%dx%d/%s", c.n, c.dim, path), func(t *testing.T) {
				k := "add_f32"
				if strings.HasPrefix(path, "v1") {
					k = "add_f32_v1"
				}
				s := &script{}
				xd, yd := s.buf(f32Bytes(x)), s.buf(f32Bytes(y))
				s.launch(k, grid, d1(256), ptr(xd), ptr(yd), i32(total))
				got := s.read(xd)
				e.run(t, s)
				compare(t, k, bytesF32(*got), want, nil, exact)
			})
		}
	}
}

// ---- GatherRows (gpu/gather.go: grid (len(rows)), block 256, vec4 = cols % 4 == 0)

func testGather(t *testing.T, e *emulator) {
	r := rand.New(rand.NewPCG(12, 12))
	for _, cols := range []int{6, 8, 260} {
		t.Run(fmt.Sprint(cols), func(t *testing.T) {
			B := 5
			x := normal(r, B*cols, 1)
			rows := []int32{4, 0, 4, 2}
			be := newCPU(t)
			xb, _ := hostBuf(t, be, B, cols, x)
			ob, want := hostBuf(t, be, len(rows), cols, nil)
			be.GatherRows(ob, xb, rows)
			vec4 := 0
			if cols%4 == 0 {
				vec4 = 1
			}
			s := &script{}
			out, xd, rd := s.buf(f32Bytes(nanFill(len(rows)*cols))), s.buf(f32Bytes(x)), s.buf(i32Bytes(rows))
			s.launch("gather_rows_f32", d1(len(rows)), d1(256), ptr(out), ptr(xd), ptr(rd), i32(cols), i32(vec4))
			got := s.read(out)
			e.run(t, s)
			compare(t, "gather_rows_f32", bytesF32(*got), want, nil, exact)
		})
	}
}

// ---- Argmax (gpu/argmax.go: grid (n), block 1024), against a host argmax: the lowest index of
// the maximum, NaN never wins, a row without a number gives 0.

func testArgmax(t *testing.T, e *emulator) {
	r := rand.New(rand.NewPCG(13, 13))
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	for _, cols := range []int{1, 5, 1500, 3000} {
		t.Run(fmt.Sprint(cols), func(t *testing.T) {
			var rows [][]float32
			rows = append(rows, normal(r, cols, 1))
			tie := normal(r, cols, 1) // the maximum twice, in different threads' strides
			tie[cols-1] = 9
			tie[cols/2] = 9
			rows = append(rows, tie)
			withNaN := normal(r, cols, 1)
			withNaN[0] = nan
			rows = append(rows, withNaN)
			allNaN := make([]float32, cols)
			negInf := make([]float32, cols)
			for i := range allNaN {
				allNaN[i], negInf[i] = nan, -inf
			}
			rows = append(rows, allNaN, negInf)
			var x []float32
			want := make([]int32, len(rows))
			for i, row := range rows {
				x = append(x, row...)
				best := float32(math.Inf(-1))
				for j, v := range row {
					if v > best {
						best, want[i] = v, int32(j)
					}
				}
			}
			s := &script{}
			out, xd := s.buf(make([]byte, 4*len(rows))), s.buf(f32Bytes(x))
			s.launch("argmax_f32", d1(len(rows)), d1(1024), ptr(out), ptr(xd), i32(cols))
			got := s.read(out)
			e.run(t, s)
			if g := bytesI32(*got); !slices.Equal(g, want) {
				t.Errorf("argmax_f32 of %d columns: got %v, want %v", cols, g, want)
			}
		})
	}
}

// ---- Fused decode ops (gpu/fused.go: MatMulQKV and MatMulSwiGLU launch like gemv, grid
// (ceil(rows/16)), block 128; AddRMSNorm like rmsnorm_f32), against the CPU backend's unfused
// MatMul, SwiGLU, Add and RMSNorm.

func testFused(t *testing.T, e *emulator) {
	r := rand.New(rand.NewPCG(23, 23))
	for _, d := range []tensor.DType{tensor.F16, tensor.BF16, tensor.F32} {
		dt := strings.ToLower(d.String())
		for _, c := range []struct{ n, N0, N1, N2, K int }{{1, 16, 8, 8, 64}, {3, 12, 4, 6, 40}, {8, 20, 8, 8, 16}, {2, 4, 4, 1, 136}} {
			t.Run(fmt.Sprintf("%v/%dx%d+%d+%dx%d", d, c.n, c.N0, c.N1, c.N2, c.K), func(t *testing.T) {
				b := 1
				for b < c.n {
					b *= 2
				}
				x := normal(r, c.n*c.K, 1)
				be := newCPU(t)
				xb, _ := hostBuf(t, be, c.n, c.K, x)
				ns := []int{c.N0, c.N1, c.N2}
				var ws [3][]float32
				var want [3][]float32
				for i, N := range ns {
					ws[i] = roundTo(d, normal(r, N*c.K, 1))
					var ob model.Buffer
					ob, want[i] = hostBuf(t, be, c.n, N, nil)
					be.MatMul(ob, xb, upload(t, be, d, N, c.K, ws[i]), c.n)
				}
				// The CPU's SwiGLU on its gate (the first N1 rows of out 0's matmul) and up.
				gate, gw := hostBuf(t, be, c.n, c.N1, nil)
				be.MatMul(gate, xb, upload(t, be, d, c.N1, c.K, ws[0][:c.N1*c.K]), c.n)
				up, _ := hostBuf(t, be, c.n, c.N1, want[1])
				be.SwiGLU(gate, gate, up, c.n)
				// v2, then v3 with each split (grid ceil(rows·ks/16): fused.go's gemvV3Grid).
				for _, ver := range []struct {
					suffix string
					ks     int
				}{{"v2_%s_n%d", 1}, {"v3_%s_n%d_k1", 1}, {"v3_%s_n%d_k2", 2}, {"v3_%s_n%d_k4", 4}} {
					kname := func(kind string) string {
						return "gemv_" + dt + "_" + fmt.Sprintf(ver.suffix, kind, b)
					}
					// qkv: three matmuls in one launch.
					s := &script{}
					xd := s.buf(f32Bytes(x))
					var outs, wds [3]dev
					for i, N := range ns {
						outs[i] = s.buf(f32Bytes(nanFill(c.n * N)))
						wds[i] = s.buf(tensor.Encode(d, ws[i]))
					}
					s.launch(kname("qkv"), d1(ceilDiv((c.N0+c.N1+c.N2)*ver.ks, 16)), d1(128),
						ptr(outs[0]), ptr(outs[1]), ptr(outs[2]), ptr(xd), ptr(wds[0]), ptr(wds[1]), ptr(wds[2]),
						i32(c.n), i32(c.N0), i32(c.N1), i32(c.N2), i32(c.K))
					var got [3]*[]byte
					for i := range outs {
						got[i] = s.read(outs[i])
					}
					// glu: silu(x·W0ᵀ)·(x·W1ᵀ) when the two have the same rows (N1 rows of each).
					glu := s.buf(f32Bytes(nanFill(c.n * c.N1)))
					w0top := s.buf(tensor.Encode(d, ws[0][:c.N1*c.K]))
					s.launch(kname("glu"), d1(ceilDiv(c.N1*ver.ks, 16)), d1(128),
						ptr(glu), ptr(xd), ptr(w0top), ptr(wds[1]), i32(c.n), i32(c.N1), i32(c.K))
					gotGLU := s.read(glu)
					e.run(t, s)
					for i, N := range ns {
						compare(t, fmt.Sprintf("%s out %d", kname("qkv"), i), bytesF32(*got[i]), want[i], absDot(x, ws[i], c.n, N, c.K), tol{1e-6, 1e-5})
					}
					compare(t, kname("glu"), bytesF32(*gotGLU), gw, nil, tol{1e-5, 1e-4})
				}
			})
		}
	}
	// Q8_0 and Q4_0: weights repacked as gpu/upload.go does, scales after the quants.
	for _, d := range []tensor.DType{tensor.Q8_0, tensor.Q4_0} {
		name := strings.ToLower(d.String())
		for _, c := range []struct{ n, N0, N1, N2, K int }{{1, 16, 8, 8, 64}, {3, 12, 4, 6, 32}, {8, 20, 8, 8, 96}, {2, 4, 4, 1, 128}} {
			t.Run(fmt.Sprintf("%v/%dx%d+%d+%dx%d", d, c.n, c.N0, c.N1, c.N2, c.K), func(t *testing.T) {
				b := 1
				for b < c.n {
					b *= 2
				}
				x := normal(r, c.n*c.K, 1)
				be := newCPU(t)
				xb, _ := hostBuf(t, be, c.n, c.K, x)
				ns := []int{c.N0, c.N1, c.N2}
				s := &script{}
				xd := s.buf(f32Bytes(x))
				var outs [3]dev
				var qs, ds [3]arg
				var want [3][]float32
				var ws [3][]float32
				for i, N := range ns {
					enc := tensor.Encode(d, normal(r, N*c.K, 1))
					ws[i] = make([]float32, N*c.K)
					tensor.Decode(ws[i], d, enc)
					var ob model.Buffer
					ob, want[i] = hostBuf(t, be, c.n, N, nil)
					be.MatMul(ob, xb, upload(t, be, tensor.F32, N, c.K, ws[i]), c.n)
					dev := repackQuantForTest(d, enc, N, c.K)
					wd := s.buf(dev)
					qs[i], ds[i] = ptr(wd), ptrAt(wd, len(dev)-N*c.K/32*2)
					outs[i] = s.buf(f32Bytes(nanFill(c.n * N)))
				}
				s.launch(fmt.Sprintf("gemv_%s_v2_qkv_n%d", name, b), d1(ceilDiv(c.N0+c.N1+c.N2, 16)), d1(128),
					ptr(outs[0]), ptr(outs[1]), ptr(outs[2]), ptr(xd), qs[0], ds[0], qs[1], ds[1], qs[2], ds[2],
					i32(c.n), i32(c.N0), i32(c.N1), i32(c.N2), i32(c.K))
				var got [3]*[]byte
				for i := range outs {
					got[i] = s.read(outs[i])
				}
				// glu over matrices 1 and 2 cut to the same rows (min(N1, N2)).
				rows := min(c.N1, c.N2)
				glu := s.buf(f32Bytes(nanFill(c.n * rows)))
				s.launch(fmt.Sprintf("gemv_%s_v2_glu_n%d", name, b), d1(ceilDiv(rows, 16)), d1(128),
					ptr(glu), ptr(xd), qs[1], ds[1], qs[2], ds[2], i32(c.n), i32(rows), i32(c.K))
				gotGLU := s.read(glu)
				e.run(t, s)
				for i, N := range ns {
					compare(t, fmt.Sprintf("qkv out %d", i), bytesF32(*got[i]), want[i], absDot(x, ws[i], c.n, N, c.K), tol{1e-6, 1e-5})
				}
				wantGLU := make([]float32, c.n*rows)
				for i := range c.n {
					for j := range rows {
						g, u := want[1][i*c.N1+j], want[2][i*c.N2+j]
						wantGLU[i*rows+j] = g * (1 / (1 + float32(math.Exp(float64(-g))))) * u
					}
				}
				compare(t, "glu", bytesF32(*gotGLU), wantGLU, nil, tol{1e-5, 1e-4})
			})
		}
	}
	for _, c := range []struct{ n, dim int }{{2, 64}, {1, 4100}, {3, 260}} {
		t.Run(fmt.Sprintf("add_rmsnorm/%dx%d", c.n, c.dim), func(t *testing.T) {
			x, y, w := normal(r, c.n*c.dim, 2), normal(r, c.n*c.dim, 2), normal(r, c.dim, 1)
			const eps = 1e-5
			be := newCPU(t)
			xb, xw := hostBuf(t, be, c.n, c.dim, x)
			yb, yw := hostBuf(t, be, c.n, c.dim, y)
			be.Add(xb, yb, c.n)
			be.RMSNorm(yb, xb, upload(t, be, tensor.F32, 1, c.dim, w), c.n, eps)
			// x + y in place (AddRMSNorm), and into another buffer, x kept (NormFolder's fallback).
			for _, inPlace := range []bool{true, false} {
				s := &script{}
				xd, yd, wd := s.buf(f32Bytes(x)), s.buf(f32Bytes(y)), s.buf(f32Bytes(w))
				xo := xd
				if !inPlace {
					xo = s.buf(f32Bytes(nanFill(c.n * c.dim)))
				}
				s.launch("add_rmsnorm_f32", d1(c.n), d1(min(1024, roundUp(c.dim/4, 32))), ptr(yd), ptr(xo), ptr(xd), ptr(yd), ptr(wd), i32(c.dim), f32(eps))
				gx, gxo, gy := s.read(xd), s.read(xo), s.read(yd)
				e.run(t, s)
				compare(t, "add_rmsnorm x + y", bytesF32(*gxo), xw, nil, exact)
				if !inPlace {
					compare(t, "add_rmsnorm x", bytesF32(*gx), x, nil, exact)
				}
				compare(t, "add_rmsnorm out", bytesF32(*gy), yw, nil, tol{1e-6, 2e-6})
			}
		})
	}
}

// ---- v3n: the residual add and RMSNorm folded into the one-row q/k/v + RoPE and gate/up GEMVs
// (gpu/foldnorm.go: grid ceil(rows·4/16), block 128) = add_rmsnorm into another buffer, then the
// v3 kernel: against the CPU's Add; RMSNorm; MatMul; RoPE; StoreKV (or SwiGLU).

func testFoldNorm(t *testing.T, e *emulator) {
	r := rand.New(rand.NewPCG(29, 29))
	const eps, theta = 1e-5, 10000
	// h = rmsnorm(x + y)·g on the CPU: the reference input of the GEMVs, and x + y.
	ref := func(t *testing.T, be *cpu.Backend, x, y, g []float32, K int) (h model.Buffer, hw, xy []float32) {
		xb, xw := hostBuf(t, be, 1, K, x)
		yb, _ := hostBuf(t, be, 1, K, y)
		be.Add(xb, yb, 1)
		h, hw = hostBuf(t, be, 1, K, nil)
		be.RMSNorm(h, xb, upload(t, be, tensor.F32, 1, K, g), 1, eps)
		return h, hw, xw
	}
	for _, d := range []tensor.DType{tensor.F16, tensor.BF16, tensor.F32} {
		dt := kvName(d)
		// K: an uneven split over the 4 K groups (12 f16 vectors), and more than one trip (1032:
		// 129 f16 vectors).
		for _, K := range []int{96, 1032} {
			x, y, g := normal(r, K, 1), normal(r, K, 1), normal(r, K, 1)
			t.Run(fmt.Sprintf("glu/%s/K=%d", dt, K), func(t *testing.T) {
				const N = 20
				be := newCPU(t)
				h, _, xy := ref(t, be, x, y, g, K)
				w1, w3 := roundTo(d, normal(r, N*K, 1)), roundTo(d, normal(r, N*K, 1))
				gate, want := hostBuf(t, be, 1, N, nil)
				up, _ := hostBuf(t, be, 1, N, nil)
				be.MatMul(gate, h, upload(t, be, d, N, K, w1), 1)
				be.MatMul(up, h, upload(t, be, d, N, K, w3), 1)
				be.SwiGLU(gate, gate, up, 1)
				s := &script{}
				out, xo := s.buf(f32Bytes(nanFill(N))), s.buf(f32Bytes(nanFill(K)))
				xd, yd, gd := s.buf(f32Bytes(x)), s.buf(f32Bytes(y)), s.buf(f32Bytes(g))
				s.launch("gemv_"+dt+"_v3n_glu_n1", d1(ceilDiv(N*4, 16)), d1(128), ptr(out), ptr(xo), ptr(xd), ptr(yd), ptr(gd),
					ptr(s.buf(tensor.Encode(d, w1))), ptr(s.buf(tensor.Encode(d, w3))), i32(1), i32(N), i32(K), f32(eps))
				got, gotX, gotXO := s.read(out), s.read(xd), s.read(xo)
				e.run(t, s)
				compare(t, "x + y", bytesF32(*gotXO), xy, nil, exact)
				compare(t, "x (read only)", bytesF32(*gotX), x, nil, exact)
				compare(t, "silu(h·W1ᵀ)·(h·W3ᵀ)", bytesF32(*got), want, nil, tol{1e-5, 1e-4})
			})
			for _, c := range kvCases {
				for _, kd := range []tensor.DType{tensor.F32, tensor.F16} {
					t.Run(fmt.Sprintf("qkv_rope/%s/%s/kv-%s/K=%d", c.name, dt, kvName(kd), K), func(t *testing.T) {
						bt := c.batch(r)
						bt.Tokens, bt.Pos, bt.Seq = bt.Tokens[1:2], bt.Pos[1:2], bt.Seq[1:2] // one row, not at position 0
						kvDim, qCols := c.kvHeads*c.hd, c.heads*c.hd
						ns := []int{qCols, kvDim, kvDim}
						be := newCPU(t)
						h, hw, xy := ref(t, be, x, y, g, K)
						var ws [3][]float32
						var outs [3]model.Buffer
						var want [3][]float32
						for i, N := range ns {
							ws[i] = roundTo(d, normal(r, N*K, 1))
							outs[i], want[i] = hostBuf(t, be, 1, N, nil)
							be.MatMul(outs[i], h, upload(t, be, d, N, K, ws[i]), 1)
						}
						cc, _ := be.NewKVCache(c.layout())
						cache := cc.(*cpu.KVCache)
						be.RoPE(outs[0], c.hd, bt.Pos, theta)
						be.RoPE(outs[1], c.hd, bt.Pos, theta)
						be.StoreKV(cc, c.layer, outs[1], outs[2], bt)

						s := &script{}
						var od, wd [3]dev
						for i, N := range ns {
							od[i], wd[i] = s.buf(f32Bytes(nanFill(N))), s.buf(tensor.Encode(d, ws[i]))
						}
						xo := s.buf(f32Bytes(nanFill(K)))
						xd, yd, gd := s.buf(f32Bytes(x)), s.buf(f32Bytes(y)), s.buf(f32Bytes(g))
						n := len(cache.K())
						kc, vc := s.buf(tensor.Encode(kd, make([]float32, n))), s.buf(tensor.Encode(kd, make([]float32, n)))
						meta := s.buf(i32Bytes(batchSlab(bt)))
						name := fmt.Sprintf("gemv_%s_v3n_qkv_rope_%s_n1", dt, kvName(kd))
						s.launch(name, d1(ceilDiv((qCols+2*kvDim)*4, 16)), d1(128),
							ptr(od[0]), ptr(od[1]), ptr(od[2]), ptr(xo), ptr(xd), ptr(yd), ptr(gd), ptr(wd[0]), ptr(wd[1]), ptr(wd[2]),
							ptr(kc), ptr(vc), ptr(meta), ptrAt(meta, 4), ptrAt(meta, 8), i32(1), i32(qCols), i32(kvDim), i32(K),
							i32(c.hd), f32(theta), i32(c.layer), i32(c.numBlocks), i32(c.bs), f32(eps))
						var got [3]*[]byte
						for i := range od {
							got[i] = s.read(od[i])
						}
						gotXO, gkc, gvc := s.read(xo), s.read(kc), s.read(vc)
						e.run(t, s)
						compare(t, "x + y", bytesF32(*gotXO), xy, nil, exact)
						for i, what := range []string{"q", "k", "v"} {
							compare(t, name+" "+what, bytesF32(*got[i]), want[i], absDot(hw, ws[i], 1, ns[i], K), tol{1e-5, 1e-5})
						}
						ct := tol{1e-5, 2e-5}
						if kd == tensor.F16 {
							ct = tol{1e-5, 1e-3}
						}
						compare(t, name+" K cache", decodeAs(kd, *gkc), roundTo(kd, cache.K()), nil, ct)
						compare(t, name+" V cache", decodeAs(kd, *gvc), roundTo(kd, cache.V()), nil, ct)
					})
				}
			}
		}
	}
}

// ---- TopK (gpu/topk.go: grid (n), block 1024, v2 or v1 under Naive), against sample.TopK bit
// for bit: ties, NaN, ±Inf, ±0, and a row of NaN only.

func testTopK(t *testing.T, e *emulator) {
	r := rand.New(rand.NewPCG(17, 17))
	for _, cols := range []int{1, 7, 1025, 3000} {
		for _, k := range []int{1, 3, 40} {
			if k > cols {
				continue
			}
			t.Run(fmt.Sprintf("%d/k=%d", cols, k), func(t *testing.T) {
				const n = 3
				x := normal(r, n*cols, 1)
				for i := range x {
					switch r.IntN(12) {
					case 0:
						x[i] = float32(math.NaN())
					case 1:
						x[i] = float32(math.Inf(-1))
					case 2:
						x[i] = float32(math.Copysign(0, -1))
					case 3, 4:
						x[i] = float32(r.IntN(2)) // exact ties
					}
				}
				for i := range cols {
					x[2*cols+i] = float32(math.NaN())
				}
				wantV, wantI := make([]float32, n*k), make([]int32, n*k)
				for i := range n {
					sample.TopK(wantV[i*k:(i+1)*k], wantI[i*k:(i+1)*k], x[i*cols:(i+1)*cols], k)
				}
				for _, name := range []string{"topk_f32", "topk_f32_v1"} {
					s := &script{}
					vals, ids := s.buf(make([]byte, 4*n*k)), s.buf(make([]byte, 4*n*k))
					xd := s.buf(f32Bytes(x))
					s.launch(name, d1(n), d1(1024), ptr(vals), ptr(ids), ptr(xd), i32(cols), i32(k))
					gv, gi := s.read(vals), s.read(ids)
					e.run(t, s)
					if !bytes.Equal(*gv, f32Bytes(wantV)) || !slices.Equal(bytesI32(*gi), wantI) {
						t.Errorf("%s: got %v %v, want %v %v", name, bytesF32(*gv), bytesI32(*gi), wantV, wantI)
					}
				}
			})
		}
	}
}

// ---- Q8_0 and Q4_0 (gpu/matmul.go matMulQuant, gpu/embed.go): the weights repacked as
// gpu/upload.go does (every block's quants, then every fp16 d), against the CPU backend on the
// file's blocks.

// repackQuantForTest is gpu/upload.go's repackQuant: every block's quants, then every fp16 d.
func repackQuantForTest(d tensor.DType, data []byte, rows, cols int) []byte {
	nb, bb := cols/32, d.BlockBytes()
	qb := bb - 2
	out := make([]byte, rows*nb*bb)
	for blk := 0; blk < rows*nb; blk++ {
		src := data[blk*bb:]
		out[rows*nb*qb+2*blk], out[rows*nb*qb+2*blk+1] = src[0], src[1]
		copy(out[blk*qb:(blk+1)*qb], src[2:bb])
	}
	return out
}

func testQuant(t *testing.T, e *emulator) {
	r := rand.New(rand.NewPCG(19, 19))
	repack := repackQuantForTest
	for _, dt := range []tensor.DType{tensor.Q8_0, tensor.Q4_0} {
		name := strings.ToLower(dt.String())
		for _, c := range []struct{ n, N, K int }{{1, 17, 64}, {2, 40, 32}, {3, 5, 96}, {8, 21, 128}, {11, 19, 64}} {
			t.Run(fmt.Sprintf("%v/%dx%dx%d", dt, c.n, c.N, c.K), func(t *testing.T) {
				x := normal(r, c.n*c.K, 1)
				wq := tensor.Encode(dt, normal(r, c.N*c.K, 1))
				w := make([]float32, c.N*c.K)
				tensor.Decode(w, dt, wq)
				be := newCPU(t)
				xb, _ := hostBuf(t, be, c.n, c.K, x)
				ob, want := hostBuf(t, be, c.n, c.N, nil)
				be.MatMul(ob, xb, upload(t, be, tensor.F32, c.N, c.K, w), c.n)
				mag := absDot(x, w, c.n, c.N, c.K)
				dev := repack(dt, wq, c.N, c.K)
				scales := len(dev) - c.N*c.K/32*2
				for _, v := range []string{"v1", "v2"} {
					s := &script{}
					out := s.buf(f32Bytes(nanFill((c.n + 1) * c.N)))
					xd, wd := s.buf(f32Bytes(x)), s.buf(dev)
					q, d := ptr(wd), ptrAt(wd, scales)
					if v == "v1" {
						s.launch("gemv_"+name+"_v1", d2(ceilDiv(c.N, 8), c.n), d1(256), ptr(out), ptr(xd), q, d, i32(c.n), i32(c.N), i32(c.K))
					} else {
						for i := 0; i < c.n; i += 8 {
							m := min(8, c.n-i)
							b := 1
							for b < m {
								b *= 2
							}
							s.launch(fmt.Sprintf("gemv_%s_v2_n%d", name, b), d1(ceilDiv(c.N, 16)), d1(128),
								ptrAt(out, 4*i*c.N), ptrAt(xd, 4*i*c.K), q, d, i32(m), i32(c.N), i32(c.K))
						}
					}
					got := s.read(out)
					e.run(t, s)
					g := bytesF32(*got)
					compare(t, v, g[:c.n*c.N], want[:c.n*c.N], mag, tol{1e-6, 1e-5})
					for i, val := range g[c.n*c.N:] {
						if !math.IsNaN(float64(val)) {
							t.Errorf("%s wrote out[%d] = %g beyond its %d rows", v, c.n*c.N+i, val, c.n)
							break
						}
					}
				}
				// The dequantisation for cuBLAS, and the embedding lookup.
				s := &script{}
				wd := s.buf(dev)
				half := s.buf(make([]byte, 2*c.N*c.K))
				s.launch("dequant_"+name+"_f16", d1(ceilDiv(c.N*c.K, 256)), d1(256), ptr(half), ptr(wd), ptrAt(wd, scales), i32(c.N*c.K))
				toks := []int32{int32(c.N - 1), 0, int32(c.N / 2)}
				emb := s.buf(make([]byte, 4*len(toks)*c.K))
				td := s.buf(i32Bytes(toks))
				s.launch("embed_"+name, d1(len(toks)), d1(256), ptr(emb), ptr(wd), ptrAt(wd, scales), ptr(td), i32(c.K))
				gh, ge := s.read(half), s.read(emb)
				e.run(t, s)
				compare(t, "dequant_"+name+"_f16", decodeAs(tensor.F16, *gh), roundTo(tensor.F16, w), nil, exact)
				var wantE []float32
				for _, tok := range toks {
					wantE = append(wantE, w[int(tok)*c.K:(int(tok)+1)*c.K]...)
				}
				compare(t, "embed_"+name, bytesF32(*ge), wantE, nil, exact)
			})
		}
	}
}

// ---- Q4_K, Q5_K and Q6_K (kquant.cu; gpu/matmul.go matMulQuant, gpu/embed.go): ggml's own blocks
// (tensor/testdata/ggml, 8 rows × 512) and random valid blocks of a larger shape, Q4_K as the
// file stores it, Q6_K repacked as gpu/upload.go does, against tensor.Decode (ggml bit for bit).

// repackQ6KForTest is gpu/upload.go's repackQ6K: every block's first 208 bytes, then every d.
func repackQ6KForTest(data []byte, rows, cols int) []byte {
	nb := cols / 256
	out := make([]byte, rows*nb*210)
	for blk := 0; blk < rows*nb; blk++ {
		src := data[blk*210:]
		copy(out[blk*208:(blk+1)*208], src[:208])
		out[rows*nb*208+2*blk], out[rows*nb*208+2*blk+1] = src[208], src[209]
	}
	return out
}

// randomKBlocks is rows × cols of random bytes with each block's fp16 scales set to 1/64.
func randomKBlocks(r *rand.Rand, d tensor.DType, rows, cols int) []byte {
	n, _ := d.Bytes(int64(rows * cols))
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	bb := d.BlockBytes()
	for off := 0; off < len(data); off += bb {
		if d == tensor.Q4_K || d == tensor.Q5_K { // d, dmin
			binary.LittleEndian.PutUint16(data[off:], tensor.F32ToF16(1.0/64))
			binary.LittleEndian.PutUint16(data[off+2:], tensor.F32ToF16(1.0/128))
		} else { // Q6_K: d last
			binary.LittleEndian.PutUint16(data[off+bb-2:], tensor.F32ToF16(1.0/64))
		}
	}
	return data
}

func testKQuant(t *testing.T, e *emulator) {
	r := rand.New(rand.NewPCG(23, 23))
	for _, dt := range []tensor.DType{tensor.Q4_K, tensor.Q5_K, tensor.Q6_K} {
		name := strings.ToLower(dt.String()[:2]) + dt.String()[2:] // "q4_K"
		ggmlBlocks, err := os.ReadFile(filepath.Join("..", "tensor", "testdata", "ggml", strings.ToLower(dt.String())+".blocks"))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			n, N, K int
			data    []byte
		}{
			{1, 8, 512, ggmlBlocks}, {3, 8, 512, ggmlBlocks}, {8, 8, 512, ggmlBlocks},
			{2, 21, 2304, randomKBlocks(r, dt, 21, 2304)}, {5, 33, 9 * 256 * 4, randomKBlocks(r, dt, 33, 9*256*4)},
		} {
			t.Run(fmt.Sprintf("%v/%dx%dx%d", dt, c.n, c.N, c.K), func(t *testing.T) {
				x := normal(r, c.n*c.K, 1)
				w := make([]float32, c.N*c.K)
				tensor.Decode(w, dt, c.data)
				want := make([]float32, c.n*c.N)
				for b := 0; b < c.n; b++ {
					for j := 0; j < c.N; j++ {
						var acc float64
						for k := 0; k < c.K; k++ {
							acc += float64(w[j*c.K+k]) * float64(x[b*c.K+k])
						}
						want[b*c.N+j] = float32(acc)
					}
				}
				mag := absDot(x, w, c.n, c.N, c.K)
				dev, scales := c.data, 0
				if dt == tensor.Q6_K {
					dev = repackQ6KForTest(c.data, c.N, c.K)
					scales = len(dev) - c.N*c.K/256*2
				}
				for _, v := range []string{"v1", "v2"} {
					s := &script{}
					out := s.buf(f32Bytes(nanFill((c.n + 1) * c.N)))
					xd, wd := s.buf(f32Bytes(x)), s.buf(dev)
					q, d := ptr(wd), ptrAt(wd, scales)
					if v == "v1" {
						s.launch("gemv_"+name+"_v1", d2(ceilDiv(c.N, 8), c.n), d1(256), ptr(out), ptr(xd), q, d, i32(c.n), i32(c.N), i32(c.K))
					} else {
						for i := 0; i < c.n; i += 8 {
							m := min(8, c.n-i)
							b := 1
							for b < m {
								b *= 2
							}
							s.launch(fmt.Sprintf("gemv_%s_v2_n%d", name, b), d1(ceilDiv(c.N, 16)), d1(128),
								ptrAt(out, 4*i*c.N), ptrAt(xd, 4*i*c.K), q, d, i32(m), i32(c.N), i32(c.K))
						}
					}
					got := s.read(out)
					e.run(t, s)
					g := bytesF32(*got)
					compare(t, v, g[:c.n*c.N], want, mag, tol{1e-6, 1e-5})
					for i, val := range g[c.n*c.N:] {
						if !math.IsNaN(float64(val)) {
							t.Errorf("%s wrote out[%d] = %g beyond its %d rows", v, c.n*c.N+i, val, c.n)
							break
						}
					}
				}
				if dt == tensor.Q4_K || dt == tensor.Q5_K { // gate (these blocks) and up (random) with SwiGLU
					upData := randomKBlocks(r, dt, c.N, c.K)
					wu := make([]float32, c.N*c.K)
					tensor.Decode(wu, dt, upData)
					wantGLU := make([]float32, c.n*c.N)
					for b := 0; b < c.n; b++ {
						for j := 0; j < c.N; j++ {
							var g, u float64
							for k := 0; k < c.K; k++ {
								g += float64(w[j*c.K+k]) * float64(x[b*c.K+k])
								u += float64(wu[j*c.K+k]) * float64(x[b*c.K+k])
							}
							wantGLU[b*c.N+j] = float32(g / (1 + math.Exp(-g)) * u)
						}
					}
					b := 1
					for b < c.n {
						b *= 2
					}
					s := &script{}
					out := s.buf(f32Bytes(nanFill(c.n * c.N)))
					xd, gd, ud := s.buf(f32Bytes(x)), s.buf(dev), s.buf(upData)
					s.launch(fmt.Sprintf("gemv_%s_v2_glu_n%d", name, b), d1(ceilDiv(c.N, 16)), d1(128),
						ptr(out), ptr(xd), ptr(gd), ptr(gd), ptr(ud), ptr(ud), i32(c.n), i32(c.N), i32(c.K))
					got := s.read(out)
					e.run(t, s)
					compare(t, "glu", bytesF32(*got), wantGLU, nil, tol{1e-4, 1e-4})
				}
				// The dequantisation for cuBLAS and the embedding lookup: ggml's values exactly.
				s := &script{}
				wd := s.buf(dev)
				half := s.buf(make([]byte, 2*c.N*c.K))
				s.launch("dequant_"+name+"_f16", d1(ceilDiv(c.N*c.K, 256)), d1(256), ptr(half), ptr(wd), ptrAt(wd, scales), i32(c.N*c.K))
				toks := []int32{int32(c.N - 1), 0, int32(c.N / 2)}
				emb := s.buf(make([]byte, 4*len(toks)*c.K))
				td := s.buf(i32Bytes(toks))
				s.launch("embed_"+name, d1(len(toks)), d1(256), ptr(emb), ptr(wd), ptrAt(wd, scales), ptr(td), i32(c.K))
				gh, ge := s.read(half), s.read(emb)
				e.run(t, s)
				compare(t, "dequant_"+name+"_f16", decodeAs(tensor.F16, *gh), roundTo(tensor.F16, w), nil, exact)
				var wantE []float32
				for _, tok := range toks {
					wantE = append(wantE, w[int(tok)*c.K:(int(tok)+1)*c.K]...)
				}
				compare(t, "embed_"+name, bytesF32(*ge), wantE, nil, exact)
			})
		}
	}
}

// ---------------------------------------------------------------- the mirror of gpu/*.go

// launchSites are the launch geometries of gpu/*.go that the tests above mirror, as
// "function: grid | block" with the source text of the two cuda.Dim3 arguments, and mirrored
// helpers by a hash of their code (comments excluded). A change in gpu/*.go fails
// TestEmuLaunchSitesUnchanged: update the mirror in this file, then this list.
var launchSites = []string{
	"Add: gridFor(total/4, 256) | cuda.Dim3{X: 256}",
	"Add: gridFor(total, 256) | cuda.Dim3{X: 256}",
	"Argmax: cuda.Dim3{X: n} | cuda.Dim3{X: 1024}",
	"Attention: cuda.Dim3{X: heads, Y: p.nV1} | cuda.Dim3{X: (hd + 31) / 32 * 32}",
	"Attention: grid | cuda.Dim3{X: d4Threads}",
	"Attention: grid | cuda.Dim3{X: decThreads}",
	"Attention: cuda.Dim3{X: heads, Y: p.nDec} | cuda.Dim3{X: 128}",
	"Attention: cuda.Dim3{X: p.nTiles, Y: kvHeads} | cuda.Dim3{X: pmThreads}",
	"Attention: cuda.Dim3{X: kvHeads, Y: p.nTiles} | cuda.Dim3{X: p4Threads}",
	"Attention: cuda.Dim3{X: p.nTiles, Y: kvHeads} | cuda.Dim3{X: pfThreads}",
	"Embed: cuda.Dim3{X: len(tokens)} | cuda.Dim3{X: 256}",
	"Embed: cuda.Dim3{X: len(tokens)} | cuda.Dim3{X: 256}",
	"AddRMSNormQKVRoPEStoreKV: grid | cuda.Dim3{X: gemvThreads}",
	"AddRMSNormFFN: grid | cuda.Dim3{X: gemvThreads}",
	"MatMulQKV: cuda.Dim3{X: ceilDiv(rows, gemvRowsPerBlock)} | cuda.Dim3{X: gemvThreads}",
	"MatMulQKV: cuda.Dim3{X: ceilDiv(rows, gemvRowsPerBlock)} | cuda.Dim3{X: gemvThreads}",
	"MatMulQKV: grid | cuda.Dim3{X: gemvThreads}",
	"MatMulQKVRoPEStoreKV: cuda.Dim3{X: tiles} | cuda.Dim3{X: 32 * ks}",
	"MatMulQKVRoPEStoreKV: cuda.Dim3{X: tiles} | cuda.Dim3{X: 32 * ks}",
	"MatMulQKVRoPEStoreKV: grid | cuda.Dim3{X: gemvThreads}",
	"qkvRoPEHalf: cuda.Dim3{X: n} | cuda.Dim3{X: 128}",
	"MatMulSwiGLU: cuda.Dim3{X: ceilDiv(wg.rows, gemvRowsPerBlock)} | cuda.Dim3{X: gemvThreads}",
	"MatMulSwiGLU: cuda.Dim3{X: ceilDiv(wg.rows, gemvRowsPerBlock)} | cuda.Dim3{X: gemvThreads}",
	"MatMulSwiGLU: grid | cuda.Dim3{X: gemvThreads}",
	"addRMSNormTo: cuda.Dim3{X: n} | cuda.Dim3{X: threads}",
	"MatMulFFN: gridFor(ceilDiv(total, 8), 256) | cuda.Dim3{X: 256}",
	"GatherRows: cuda.Dim3{X: len(rows)} | cuda.Dim3{X: 256}",
	"gemv4: cuda.Dim3{X: tiles} | cuda.Dim3{X: 32 * ks}",
	"gemv4: cuda.Dim3{X: tiles} | cuda.Dim3{X: 32 * ks}",
	"gemv4QKV: cuda.Dim3{X: tiles} | cuda.Dim3{X: 32 * ks}",
	"gemv4QKV: cuda.Dim3{X: tiles} | cuda.Dim3{X: 32 * ks}",
	"gemv4GLU: cuda.Dim3{X: tiles} | cuda.Dim3{X: 32 * ks}",
	"gemv4GLU: cuda.Dim3{X: tiles} | cuda.Dim3{X: 32 * ks}",
	"StoreKV: cuda.Dim3{X: bt.Len()} | cuda.Dim3{X: 128}",
	"MatMul: cuda.Dim3{X: ceilDiv(N, 8), Y: n} | cuda.Dim3{X: 256}",
	"gemv: cuda.Dim3{X: ceilDiv(w.rows, gemvRowsPerBlock)} | cuda.Dim3{X: gemvThreads}",
	"gemv: grid | cuda.Dim3{X: gemvThreads}",
	"matMulQuant: cuda.Dim3{X: ceilDiv(N, 8), Y: n} | cuda.Dim3{X: 256}",
	"matMulQuant: gridFor(total, 256) | cuda.Dim3{X: 256}",
	"matMulQuant: cuda.Dim3{X: ceilDiv(N, gemvRowsPerBlock)} | cuda.Dim3{X: gemvThreads}",
	"cublasInput: gridFor(total, 256) | cuda.Dim3{X: 256}",
	"MatMulV1: cuda.Dim3{X: ceilDiv(ww.rows, 8), Y: n} | cuda.Dim3{X: 256}",
	"MatMulV1: cuda.Dim3{X: ceilDiv(ww.rows, 128), Y: n} | cuda.Dim3{X: 128}",
	"RMSNorm: cuda.Dim3{X: n} | cuda.Dim3{X: threads}",
	"RMSNorm: cuda.Dim3{X: n} | cuda.Dim3{X: 256}",
	"RoPE: cuda.Dim3{X: len(pos)} | cuda.Dim3{X: 128}",
	"RoPEStoreKV: cuda.Dim3{X: bt.Len()} | cuda.Dim3{X: 128}",
	"SwiGLU: gridFor(total/4, 256) | cuda.Dim3{X: 256}",
	"SwiGLU: gridFor(total, 256) | cuda.Dim3{X: 256}",
	"TopK: cuda.Dim3{X: n} | cuda.Dim3{X: 1024}",
	"helper gridFor: c178bae07148",
	"helper ceilDiv: 9ec13d69fdda",
	"helper decodeFits: afb3be25ed9f",
	"helper prefillFits: 57ab19b55cba",
	"helper prefillMMA: afa8543c2a56",
	"helper makePlan: 620ea7f61d41",
	"helper gemv: dad61b14d17d",
}

func TestEmuLaunchSitesUnchanged(t *testing.T) {
	got := gpuLaunchSites(t)
	if !slices.Equal(got, launchSites) {
		t.Errorf("gpu/*.go launch geometry changed: update the emulated tests' mirror (emu_test.go), then launchSites to:\n%s",
			"\t\""+strings.Join(got, "\",\n\t\"")+"\",")
	}
}

// mirroredHelpers are the gpu functions whose logic the tests copy (besides launch sites).
// (RMSNorm's thread count, MatMul's choice of path and its 8-row slices, and prepareBatch's
// packing are copied too, but their functions also hold validation that changes more often.)
var mirroredHelpers = []string{"gridFor", "ceilDiv", "decodeFits", "prefillFits", "prefillMMA", "makePlan", "gemv"}

// gpuLaunchSites lists every b.launch call of gpu/*.go (tests excluded) and hashes the helpers.
func gpuLaunchSites(t *testing.T) []string {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join("..", "gpu", "*.go"))
	if len(paths) == 0 {
		t.Skip("no ../gpu/*.go")
	}
	fset := token.NewFileSet()
	text := func(n ast.Node) string {
		var b strings.Builder
		if err := printer.Fprint(&b, fset, n); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	var sites []string
	helpers := map[string]string{}
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, p, nil, 0) // no comments: they may change freely
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			if slices.Contains(mirroredHelpers, fd.Name.Name) {
				helpers[fd.Name.Name] = fmt.Sprintf("%x", sha256.Sum256([]byte(text(fd))))[:12]
			}
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok || len(call.Args) < 3 {
					return true
				}
				if sel, ok := call.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "launch" {
					sites = append(sites, fmt.Sprintf("%s: %s | %s", fd.Name.Name, text(call.Args[1]), text(call.Args[2])))
				}
				return true
			})
		}
	}
	for _, h := range mirroredHelpers {
		sites = append(sites, fmt.Sprintf("helper %s: %s", h, helpers[h]))
	}
	return sites
}
