package loader

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// randomPairs makes a rank-r pair, F32, for each of the given weights of cfg.
func randomPairs(cfg model.Config, r int, names ...string) map[string]LoRAPair {
	rng := rand.New(rand.NewPCG(9, 9))
	shapes := map[string][]int{}
	for _, ws := range cfg.WeightShapes() {
		shapes[ws.Name] = ws.Shape
	}
	rnd := func(n int) []byte {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64() * 0.1)
		}
		return tensor.Encode(tensor.F32, v)
	}
	pairs := map[string]LoRAPair{}
	for _, name := range names {
		out, in := shapes[name][0], shapes[name][1]
		pairs[name] = LoRAPair{
			A: &tensor.Tensor{Name: name + ".A", DType: tensor.F32, Shape: []int{r, in}, Data: rnd(r * in)},
			B: &tensor.Tensor{Name: name + ".B", DType: tensor.F32, Shape: []int{out, r}, Data: rnd(out * r)},
		}
	}
	return pairs
}

func writeAdapterGGUF(t *testing.T, pairs map[string]LoRAPair, alpha float32) string {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, WriteLoRAGGUF(&buf, pairs, alpha))
	path := filepath.Join(t.TempDir(), "adapter.gguf")
	require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o644))
	return path
}

// A merged weight is W + strength·(alpha/r)·B·A, summed over adapters, computed here in
// float64; an F16 weight stays F16 (the sum rounded once); other tensors pass through as they are.
func TestMergeLoRA(t *testing.T) {
	cfg := model.Tiny
	wq, w2 := model.LayerName(1, model.NameWq), model.LayerName(3, model.NameW2)
	p1 := randomPairs(cfg, 4, wq, w2)
	p2 := randomPairs(cfg, 2, wq)
	for k, p := range p2 { // other values than p1's
		p.A = &tensor.Tensor{Name: "a2", DType: tensor.F32, Shape: p.A.Shape, Data: tensor.Encode(tensor.F32, scaled(p.A.Float32s(), -0.7))}
		p2[k] = p
	}
	a1, err := OpenLoRA(writeAdapterGGUF(t, p1, 8), cfg)
	require.NoError(t, err)
	defer a1.Close()
	a2, err := OpenLoRA(writeAdapterGGUF(t, p2, 1), cfg)
	require.NoError(t, err)
	defer a2.Close()
	require.Equal(t, 2.0, a1.Pairs[wq].Scale) // alpha 8, r 4
	require.Equal(t, 0.5, a2.Pairs[wq].Scale)

	for _, dt := range []tensor.DType{tensor.F32, tensor.F16, tensor.BF16} {
		base := model.Synthetic(cfg, 3, dt)
		merged := MergeLoRA(base, []*LoRA{a1, a2}, []float64{0.5, 3})
		for _, name := range []string{wq, w2} {
			w, err := base(name)
			require.NoError(t, err)
			got, err := merged(name)
			require.NoError(t, err)
			require.Equal(t, dt, got.DType)
			require.Equal(t, w.Shape, got.Shape)
			want := w.Float32s()
			out, in := w.Shape[0], w.Shape[1]
			for _, c := range []struct {
				p        map[string]LoRAPair
				strength float64
				alpha    float64
			}{{p1, 0.5, 8}, {p2, 3, 1}} {
				p, ok := c.p[name]
				if !ok {
					continue
				}
				a, b, r := p.A.Float32s(), p.B.Float32s(), p.Rank()
				for o := range out {
					for k := range in {
						d := 0.0
						for j := range r {
							d += float64(b[o*r+j]) * float64(a[j*in+k])
						}
						want[o*in+k] += float32(c.strength * c.alpha / float64(r) * d)
					}
				}
			}
			g := got.Float32s()
			tol := map[tensor.DType]float64{tensor.F32: 1e-5, tensor.F16: 1e-3, tensor.BF16: 8e-3}[dt]
			for i := range want {
				if d := math.Abs(float64(g[i] - want[i])); d > tol*(1+math.Abs(float64(want[i]))) {
					t.Fatalf("%v %s element %d: merged %g, want %g", dt, name, i, g[i], want[i])
				}
			}
			require.NotEqual(t, w.Float32s(), g, "%v %s: the merge changed nothing", dt, name)
		}
		other, err := merged(model.LayerName(0, model.NameWv))
		require.NoError(t, err)
		orig, _ := base(model.LayerName(0, model.NameWv))
		require.Equal(t, orig.Data, other.Data)
	}
}

func scaled(v []float32, s float32) []float32 {
	for i := range v {
		v[i] *= s
	}
	return v
}

// A PEFT folder holds the same adapter as the GGUF one: the same A, the same B once its Q and K
// rows are back in Meta's order, the same scale.
func TestPEFTEqualsGGUF(t *testing.T) {
	cfg := model.Tiny
	names := []string{model.LayerName(0, model.NameWq), model.LayerName(0, model.NameWk), model.LayerName(2, model.NameWo),
		model.LayerName(3, model.NameW1), model.LayerName(3, model.NameW3)}
	pairs := randomPairs(cfg, 4, names...)
	dir := filepath.Join(t.TempDir(), "peft")
	require.NoError(t, ExportPEFT(dir, cfg, pairs, 16))
	peft, err := OpenLoRA(dir, cfg)
	require.NoError(t, err)
	defer peft.Close()
	gg, err := OpenLoRA(writeAdapterGGUF(t, pairs, 16), cfg)
	require.NoError(t, err)
	defer gg.Close()
	require.Len(t, peft.Pairs, len(names))
	for _, n := range names {
		require.Equal(t, gg.Pairs[n].A.Float32s(), peft.Pairs[n].A.Float32s(), n)
		require.Equal(t, gg.Pairs[n].B.Float32s(), peft.Pairs[n].B.Float32s(), n)
		require.Equal(t, 4.0, peft.Pairs[n].Scale, n)
		require.Equal(t, gg.Pairs[n].Scale, peft.Pairs[n].Scale, n)
	}
	// The rows of B really are stored permuted for Q and K (the check above would pass if
	// neither side permuted).
	f, unmap, err := mapSafetensors(filepath.Join(dir, "adapter_model.safetensors"))
	require.NoError(t, err)
	defer unmap()
	stored := f.Tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
	require.NotNil(t, stored)
	require.NotEqual(t, pairs[names[0]].B.Data, stored.Data)
	require.Equal(t, pairs[names[2]].B.Data, f.Tensors["base_model.model.model.layers.2.self_attn.o_proj.lora_B.weight"].Data)
	// The config opens too.
	viaConfig, err := OpenLoRA(filepath.Join(dir, "adapter_config.json"), cfg)
	require.NoError(t, err)
	viaConfig.Close()
}

func TestLoRAErrors(t *testing.T) {
	cfg := model.Tiny
	wq := model.LayerName(0, model.NameWq)
	good := randomPairs(cfg, 2, wq)
	dir := t.TempDir()
	writePEFT := func(name, conf string, pairs map[string]LoRAPair) string {
		d := filepath.Join(dir, name)
		require.NoError(t, ExportPEFT(d, cfg, pairs, 4))
		if conf != "" {
			require.NoError(t, os.WriteFile(filepath.Join(d, "adapter_config.json"), []byte(conf), 0o644))
		}
		return d
	}
	otherCfg := model.Tiny256
	wrongShape := randomPairs(otherCfg, 2, wq)
	onlyA := map[string]LoRAPair{wq: {A: good[wq].A, B: nil}}
	var onlyABuf bytes.Buffer
	require.NoError(t, WriteGGUF(&onlyABuf, map[string]any{"general.architecture": "llama", "general.type": "adapter", "adapter.type": "lora"},
		[]*tensor.Tensor{{Name: "blk.0.attn_q.weight.lora_a", DType: tensor.F32, Shape: onlyA[wq].A.Shape, Data: onlyA[wq].A.Data}}))
	onlyAPath := filepath.Join(dir, "onlya.gguf")
	require.NoError(t, os.WriteFile(onlyAPath, onlyABuf.Bytes(), 0o644))
	binDir := filepath.Join(dir, "bin")
	require.NoError(t, os.MkdirAll(binDir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(binDir, "adapter_config.json"), []byte(`{"r": 2, "lora_alpha": 4}`), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(binDir, "adapter_model.bin"), []byte("PK"), 0o644))
	var modelBuf bytes.Buffer
	require.NoError(t, WriteGGUF(&modelBuf, map[string]any{"general.architecture": "llama"}, nil))
	modelPath := filepath.Join(dir, "model.gguf")
	require.NoError(t, os.WriteFile(modelPath, modelBuf.Bytes(), 0o644))
	truncated := writeAdapterGGUF(t, good, 4)
	full, err := os.ReadFile(truncated)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(truncated, full[:len(full)-10], 0o644))
	for _, tc := range []struct {
		name, path, want string
	}{
		{"no such file", filepath.Join(dir, "nope"), "no such file"},
		{"a model, not an adapter", modelPath, `not "adapter"`},
		{"only lora_a", onlyAPath, "has only one of lora_A and lora_B"},
		{"another model's shapes", writeAdapterGGUF(t, wrongShape, 4), "lora_B·lora_A is 256×256, the weight 128×128"},
		{"truncated", truncated, "truncated"},
		{"DoRA", writePEFT("dora", `{"r": 2, "lora_alpha": 4, "use_dora": true}`, good), "DoRA"},
		{"modules_to_save", writePEFT("mts", `{"r": 2, "lora_alpha": 4, "modules_to_save": ["lm_head"]}`, good), "modules_to_save"},
		{"bias", writePEFT("bias", `{"r": 2, "lora_alpha": 4, "bias": "all"}`, good), "bias"},
		{"prefix tuning", writePEFT("prefix", `{"peft_type": "PREFIX_TUNING", "r": 2, "lora_alpha": 4}`, good), "only LORA"},
		{"no alpha", writePEFT("noalpha", `{"r": 2}`, good), "lora_alpha are required"},
		{"bad json", writePEFT("badjson", `{"r": `, good), "LoRA adapter"},
		{"pickle", binDir, "pickle"},
	} {
		l, err := OpenLoRA(tc.path, cfg)
		if err == nil {
			l.Close()
		}
		require.Error(t, err, tc.name)
		require.Contains(t, err.Error(), tc.want, tc.name)
	}
	// Wrong-shape and one-sided adapters are ErrLoRA; so is a merge into a quantized weight.
	_, err = OpenLoRA(onlyAPath, cfg)
	require.True(t, errors.Is(err, ErrLoRA), "%v", err)
	a, err := OpenLoRA(writeAdapterGGUF(t, good, 4), cfg)
	require.NoError(t, err)
	defer a.Close()
	_, err = MergeLoRA(model.Synthetic(cfg, 1, tensor.Q8_0), []*LoRA{a}, []float64{1})(wq)
	require.ErrorIs(t, err, ErrLoRA)
	require.ErrorContains(t, err, "Q8_0")
}

// BenchmarkMergeLoRA times merging a rank-16 pair into a 7B-shaped 4096×4096 F16 weight (the
// query projection): what --lora adds to loading, per weight it adapts; beside it the F16 →
// float32 → F16 round trip alone.
func BenchmarkMergeLoRA(b *testing.B) {
	cfg := model.Config{Dim: 4096, Layers: 1, Heads: 32, KVHeads: 32, FFN: 11008, Vocab: 32000, MaxSeq: 4096, NormEps: 1e-5, RopeTheta: 10000}
	wq := model.LayerName(0, model.NameWq)
	pairs := randomPairs(cfg, 16, wq)
	var buf bytes.Buffer
	require.NoError(b, WriteLoRAGGUF(&buf, pairs, 32))
	path := filepath.Join(b.TempDir(), "a.gguf")
	require.NoError(b, os.WriteFile(path, buf.Bytes(), 0o644))
	a, err := OpenLoRA(path, cfg)
	require.NoError(b, err)
	defer a.Close()
	base := model.Synthetic(cfg, 1, tensor.F16)
	w, err := base(wq)
	require.NoError(b, err)
	src := func(string) (*tensor.Tensor, error) { return w, nil }
	merge := MergeLoRA(src, []*LoRA{a}, []float64{1})
	// The baseline: the conversion to float32 and back that any merge pays.
	b.Run("convert-only", func(b *testing.B) {
		b.SetBytes(int64(len(w.Data)))
		for range b.N {
			_ = tensor.Encode(w.DType, w.Float32s())
		}
	})
	b.Run("rank16", func(b *testing.B) {
		b.SetBytes(int64(len(w.Data)))
		for range b.N {
			if _, err := merge(wq); err != nil {
				b.Fatal(err)
			}
		}
	})
}
