package loader

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// tinyConfig keeps the corruption tests' files a few kilobytes.
func tinyConfig(tied bool) model.Config {
	return model.Config{Name: "tiny", Dim: 8, Layers: 1, Heads: 2, KVHeads: 1, FFN: 16, Vocab: 8,
		MaxSeq: 16, NormEps: 1e-5, RopeTheta: 10000, TiedOutput: tied}
}

// rawST builds a safetensors file from a header value and a data section.
func rawST(tb testing.TB, header any, pad int, data []byte) []byte {
	tb.Helper()
	js, err := json.Marshal(header)
	if err != nil {
		tb.Fatal(err)
	}
	js = append(js, bytes.Repeat([]byte(" "), pad)...)
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(js)))
	return append(append(out, js...), data...)
}

// editST rewrites a safetensors file's header through edit, which may also return bytes to append
// to the data section. The data section is otherwise kept as it is.
func editST(tb testing.TB, path string, edit func(h map[string]any) []byte) {
	tb.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(raw)
	var h map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw[8 : 8+n]))
	dec.UseNumber()
	if err := dec.Decode(&h); err != nil {
		tb.Fatal(err)
	}
	extra := edit(h)
	if err := os.WriteFile(path, rawST(tb, h, 0, append(slices.Clone(raw[8+n:]), extra...)), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// editJSON rewrites a JSON file (config.json, the index) through edit.
func editJSON(tb testing.TB, path string, edit func(m map[string]any)) {
	tb.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		tb.Fatal(err)
	}
	edit(m)
	js, _ := json.Marshal(m)
	if err := os.WriteFile(path, js, 0o644); err != nil {
		tb.Fatal(err)
	}
}

func entry(h map[string]any, name string) map[string]any { return h[name].(map[string]any) }

// dataEnd is the end of the data section a header describes.
func dataEnd(h map[string]any) int64 {
	var end int64
	for k, v := range h {
		if k == stMetadataKey {
			continue
		}
		e, _ := v.(map[string]any)["data_offsets"].([]any)[1].(json.Number).Int64()
		end = max(end, e)
	}
	return end
}

func TestOpenHFCorrupt(t *testing.T) {
	const (
		single = hfSingleName
		shard1 = "model-00001-of-00002.safetensors"
		shard2 = "model-00002-of-00002.safetensors"
		norm   = "model.norm.weight"
		ln1    = "model.layers.0.input_layernorm.weight"
		ln2    = "model.layers.0.post_attention_layernorm.weight"
	)
	writeRaw := func(name string, b []byte) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) { os.WriteFile(filepath.Join(dir, name), b, 0o644) }
	}
	edit := func(name string, f func(h map[string]any) []byte) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) { editST(t, filepath.Join(dir, name), f) }
	}
	editCfg := func(f func(m map[string]any)) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) { editJSON(t, filepath.Join(dir, hfConfigName), f) }
	}
	editIndex := func(f func(wm map[string]any)) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			editJSON(t, filepath.Join(dir, hfIndexName), func(m map[string]any) { f(m["weight_map"].(map[string]any)) })
		}
	}
	cases := []struct {
		name   string
		shards int
		break_ func(t *testing.T, dir string)
		want   []error
		in     []string // the message names the file and tensor
	}{
		{"empty file", 1, writeRaw(single, nil), []error{ErrTruncated}, []string{single}},
		{"truncated header length", 1, writeRaw(single, []byte{16, 0, 0, 0, 0}), []error{ErrTruncated}, []string{single}},
		{"header length past the end", 1, func(t *testing.T, dir string) {
			p := filepath.Join(dir, single)
			raw, _ := os.ReadFile(p)
			binary.LittleEndian.PutUint64(raw, uint64(len(raw)))
			os.WriteFile(p, raw, 0o644)
		}, []error{ErrTruncated}, []string{single, "runs past the end"}},
		{"absurd header length", 1, writeRaw(single, binary.LittleEndian.AppendUint64(nil, 1<<62)), []error{ErrCorrupt}, []string{single}},
		{"truncated header JSON", 1, func(t *testing.T, dir string) {
			p := filepath.Join(dir, single)
			raw, _ := os.ReadFile(p)
			n := binary.LittleEndian.Uint64(raw)
			os.WriteFile(p, raw[:8+n/2], 0o644)
		}, []error{ErrTruncated}, []string{single}},
		{"invalid JSON", 1, writeRaw(single, append(binary.LittleEndian.AppendUint64(nil, 8), `{"a": ,}`...)), []error{ErrCorrupt}, []string{single, "JSON"}},
		{"header not an object", 1, writeRaw(single, append(binary.LittleEndian.AppendUint64(nil, 8), `[1, 2]  `...)), []error{ErrCorrupt}, []string{single}},
		{"truncated data", 1, func(t *testing.T, dir string) {
			p := filepath.Join(dir, single)
			raw, _ := os.ReadFile(p)
			os.WriteFile(p, raw[:len(raw)-10], 0o644)
		}, []error{ErrTruncated}, []string{single, norm}},
		{"offsets out of range", 1, edit(single, func(h map[string]any) []byte {
			entry(h, ln1)["data_offsets"] = []int64{0, 1 << 40}
			return nil
		}), []error{ErrTruncated}, []string{single, ln1}},
		{"offsets backwards", 1, edit(single, func(h map[string]any) []byte {
			entry(h, ln1)["data_offsets"] = []int64{32, 0}
			return nil
		}), []error{ErrCorrupt}, []string{single, ln1, "backwards"}},
		{"offsets not a pair", 1, edit(single, func(h map[string]any) []byte {
			entry(h, ln1)["data_offsets"] = []int64{0}
			return nil
		}), []error{ErrCorrupt}, []string{single, ln1}},
		{"overlapping tensors", 1, edit(single, func(h map[string]any) []byte {
			entry(h, ln2)["data_offsets"] = entry(h, ln1)["data_offsets"]
			return nil
		}), []error{ErrCorrupt}, []string{single, ln2, ln1, "overlap"}},
		{"partly overlapping tensors", 1, edit(single, func(h map[string]any) []byte {
			o := entry(h, ln1)["data_offsets"].([]any)
			b, _ := o[0].(json.Number).Int64()
			entry(h, ln2)["data_offsets"] = []int64{b + 4, b + 36}
			return nil
		}), []error{ErrCorrupt}, []string{single, "overlap"}},
		{"dtype and shape disagree with the size", 1, edit(single, func(h map[string]any) []byte {
			entry(h, norm)["shape"] = []int{9}
			return nil
		}), []error{ErrCorrupt}, []string{single, norm, "needs 36 bytes"}},
		{"negative dimension", 1, edit(single, func(h map[string]any) []byte {
			entry(h, norm)["shape"] = []int{-8}
			return nil
		}), []error{ErrCorrupt}, []string{single, norm}},
		{"unknown dtype I32", 1, edit(single, func(h map[string]any) []byte {
			entry(h, norm)["dtype"] = "I32"
			return nil
		}), []error{tensor.ErrUnknownDType}, []string{single, norm, "I32"}},
		{"unknown dtype I8", 1, edit(single, func(h map[string]any) []byte {
			entry(h, norm)["dtype"], entry(h, norm)["shape"] = "I8", []int{32}
			return nil
		}), []error{tensor.ErrUnknownDType}, []string{single, norm, "I8"}},
		{"unknown dtype F64", 1, edit(single, func(h map[string]any) []byte {
			entry(h, norm)["dtype"], entry(h, norm)["shape"] = "F64", []int{4}
			return nil
		}), []error{tensor.ErrUnknownDType}, []string{single, norm, "F64"}},
		{"entry without data_offsets", 1, edit(single, func(h map[string]any) []byte {
			delete(entry(h, norm), "data_offsets")
			return nil
		}), []error{ErrCorrupt}, []string{single, norm}},
		{"entry of the wrong type", 1, edit(single, func(h map[string]any) []byte {
			h[norm] = "F32"
			return nil
		}), []error{ErrCorrupt}, []string{single, norm}},
		{"metadata not strings", 1, edit(single, func(h map[string]any) []byte {
			h[stMetadataKey] = map[string]any{"format": 3}
			return nil
		}), []error{ErrCorrupt}, []string{single, stMetadataKey}},
		{"missing tensor", 1, edit(single, func(h map[string]any) []byte {
			delete(h, "model.layers.0.mlp.up_proj.weight")
			return nil
		}), []error{ErrMissing}, []string{"layers.0.feed_forward.w3.weight", "model.layers.0.mlp.up_proj.weight"}},
		{"extra unknown tensor", 1, edit(single, func(h map[string]any) []byte {
			end := dataEnd(h)
			h["model.layers.0.mlp.extra.weight"] = map[string]any{"dtype": "F32", "shape": []int{2}, "data_offsets": []int64{end, end + 8}}
			return make([]byte, 8)
		}), []error{ErrUnused}, []string{single, "model.layers.0.mlp.extra.weight"}},
		{"extra layer", 1, edit(single, func(h map[string]any) []byte {
			end := dataEnd(h)
			h["model.layers.1.input_layernorm.weight"] = map[string]any{"dtype": "F32", "shape": []int{8}, "data_offsets": []int64{end, end + 32}}
			return make([]byte, 32)
		}), []error{ErrUnused}, []string{"layers.1.attention_norm.weight"}},
		{"shape disagrees with config.json", 1, editCfg(func(m map[string]any) { m["vocab_size"] = 9 }),
			[]error{ErrShape}, []string{single, model.NameTokEmbed, "[8 8]", "[9 8]"}},
		{"config.json missing", 1, func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, hfConfigName)) },
			[]error{ErrFormat, fs.ErrNotExist}, []string{hfConfigName}},
		{"config.json with wrong types", 1, editCfg(func(m map[string]any) { m["hidden_size"] = "8" }),
			[]error{ErrCorrupt, model.ErrBadConfig}, []string{hfConfigName, "hidden_size"}},
		{"config.json not JSON", 1, writeRaw(hfConfigName, []byte("{hidden_size: 8}")),
			[]error{ErrCorrupt, model.ErrBadConfig}, []string{hfConfigName}},
		{"config.json inconsistent", 1, editCfg(func(m map[string]any) { m["num_attention_heads"] = 3 }),
			[]error{ErrCorrupt, model.ErrBadConfig}, []string{hfConfigName, "3 heads"}},
		{"config.json not llama", 1, editCfg(func(m map[string]any) { m["model_type"] = "mistral" }),
			[]error{ErrCorrupt, model.ErrBadConfig}, []string{hfConfigName, "mistral"}},
		{"no weights", 1, func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, single)) },
			[]error{ErrFormat}, []string{hfSingleName, hfIndexName}},
		{"missing shard file", 2, func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, shard2)) },
			[]error{ErrMissing, fs.ErrNotExist}, []string{shard2, hfIndexName}},
		{"index names a tensor its shard lacks", 2, editIndex(func(wm map[string]any) { wm["model.layers.0.mlp.extra.weight"] = shard1 }),
			[]error{ErrMissing}, []string{shard1, "model.layers.0.mlp.extra.weight"}},
		{"index puts a tensor in the wrong shard", 2, editIndex(func(wm map[string]any) { wm[norm] = shard1 }),
			[]error{ErrCorrupt}, []string{shard2, norm, "puts it in " + shard1}},
		{"index omits a tensor", 2, editIndex(func(wm map[string]any) { delete(wm, norm) }),
			[]error{ErrCorrupt}, []string{shard2, norm, "does not list it"}},
		{"index escapes the folder", 2, editIndex(func(wm map[string]any) { wm[norm] = "../" + shard2 }),
			[]error{ErrCorrupt}, []string{hfIndexName, norm}},
		{"index not JSON", 2, writeRaw(hfIndexName, []byte(`{"weight_map": `)),
			[]error{ErrCorrupt}, []string{hfIndexName}},
		{"index without weight_map", 2, writeRaw(hfIndexName, []byte(`{"metadata": {}}`)),
			[]error{ErrCorrupt}, []string{hfIndexName, "weight_map"}},
		{"corrupt shard", 2, edit(shard1, func(h map[string]any) []byte {
			entry(h, ln1)["dtype"] = "U8"
			return nil
		}), []error{tensor.ErrUnknownDType}, []string{shard1, ln1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tinyConfig(false)
			dir := exportTB(t, cfg, randomTensors(t, cfg, 5), ExportOptions{Shards: tc.shards})
			tc.break_(t, dir)
			var m *Model
			var err error
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("panic: %v", r)
					}
				}()
				m, err = Open(dir)
			}()
			if err == nil {
				m.Close()
				t.Fatal("opened a broken folder")
			}
			for _, w := range tc.want {
				if !errors.Is(err, w) {
					t.Errorf("error does not wrap %q: %v", w, err)
				}
			}
			var te *TensorError
			if !errors.As(err, &te) {
				t.Errorf("not a *TensorError: %T %v", err, err)
			}
			t.Log(err)
			for _, s := range tc.in {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error does not mention %q: %v", s, err)
				}
			}
		})
	}
}

// TestOpenHFVariants covers the legal variations of an HF folder.
func TestOpenHFVariants(t *testing.T) {
	const invFreq = "model.layers.0.self_attn.rotary_emb.inv_freq"
	cases := []struct {
		name      string
		tied      bool
		opts      ExportOptions
		modify    func(t *testing.T, dir string)
		wantTied  bool
		wantSkips []string // substrings, in order
	}{
		{"inv_freq is skipped", false, ExportOptions{}, func(t *testing.T, dir string) {
			editST(t, filepath.Join(dir, hfSingleName), func(h map[string]any) []byte {
				end := dataEnd(h)
				h[invFreq] = map[string]any{"dtype": "F32", "shape": []int{2}, "data_offsets": []int64{end, end + 8}}
				return make([]byte, 8)
			})
		}, false, []string{invFreq}},
		{"tied with an identical lm_head", true, ExportOptions{UntieOutput: true}, func(t *testing.T, dir string) {
			editJSON(t, filepath.Join(dir, hfConfigName), func(m map[string]any) { m["tie_word_embeddings"] = true })
		}, true, []string{hfLMHead}},
		{"tied flag with a different lm_head", false, ExportOptions{}, func(t *testing.T, dir string) {
			editJSON(t, filepath.Join(dir, hfConfigName), func(m map[string]any) { m["tie_word_embeddings"] = true })
		}, false, nil},
		{"untied flag without lm_head", true, ExportOptions{}, func(t *testing.T, dir string) {
			editJSON(t, filepath.Join(dir, hfConfigName), func(m map[string]any) { delete(m, "tie_word_embeddings") })
		}, true, nil},
		{"unaligned header padded with spaces and holes", false, ExportOptions{}, func(t *testing.T, dir string) {
			p := filepath.Join(dir, hfSingleName)
			raw, _ := os.ReadFile(p)
			n := binary.LittleEndian.Uint64(raw)
			var h map[string]any
			json.Unmarshal(raw[8:8+n], &h)
			body := append([]byte{0, 0, 0}, raw[8+n:]...) // a 3-byte hole before every tensor
			for k, v := range h {
				if k != stMetadataKey {
					o := v.(map[string]any)["data_offsets"].([]any)
					v.(map[string]any)["data_offsets"] = []float64{o[0].(float64) + 3, o[1].(float64) + 3}
				}
			}
			os.WriteFile(p, rawST(t, h, 5, body), 0o644)
		}, false, nil},
		{"sharded, both index and single present", false, ExportOptions{Shards: 3}, func(t *testing.T, dir string) {
			// transformers prefers model.safetensors; so do we. Make the shards unreadable to prove it.
			other := exportTB(t, tinyConfig(false), randomTensors(t, tinyConfig(false), 9), ExportOptions{})
			raw, _ := os.ReadFile(filepath.Join(other, hfSingleName))
			os.WriteFile(filepath.Join(dir, hfSingleName), raw, 0o644)
			os.WriteFile(filepath.Join(dir, "model-00001-of-00003.safetensors"), nil, 0o644)
		}, false, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tinyConfig(tc.tied)
			src := randomTensors(t, cfg, 11)
			dir := exportTB(t, cfg, src, tc.opts)
			tc.modify(t, dir)
			m, err := Open(dir)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer m.Close()
			if m.Config.TiedOutput != tc.wantTied {
				t.Errorf("TiedOutput = %v, want %v", m.Config.TiedOutput, tc.wantTied)
			}
			_, hasOut := m.Tensors[model.NameOutput]
			if hasOut == tc.wantTied {
				t.Errorf("output.weight present = %v with TiedOutput %v", hasOut, tc.wantTied)
			}
			if len(m.Skipped) != len(tc.wantSkips) {
				t.Fatalf("Skipped = %q, want %q", m.Skipped, tc.wantSkips)
			}
			for i, s := range tc.wantSkips {
				if !strings.Contains(m.Skipped[i], s) {
					t.Errorf("Skipped[%d] = %q, want it to mention %q", i, m.Skipped[i], s)
				}
			}
			if tc.opts.Shards <= 1 { // (the last case reads another model)
				wq := model.LayerName(0, model.NameWq)
				if d := firstMismatch(src[wq].Float32s(), m.Tensors[wq].Float32s()); d != "" {
					t.Errorf("%s: %s", wq, d)
				}
			}
		})
	}
}

// TestOpenSafetensorsFile covers Open on a .safetensors file rather than its folder.
func TestOpenSafetensorsFile(t *testing.T) {
	cfg := tinyConfig(false)
	src := randomTensors(t, cfg, 3)
	dir := exportTB(t, cfg, src, ExportOptions{DType: tensor.BF16})
	sharded := exportTB(t, cfg, src, ExportOptions{Shards: 2})

	m, err := Open(filepath.Join(dir, hfSingleName))
	if err != nil {
		t.Fatalf("Open(model.safetensors): %v", err)
	}
	if m.Path != filepath.Join(dir, hfSingleName) || len(m.Tensors) != len(cfg.WeightShapes()) {
		t.Errorf("Path %q, %d tensors", m.Path, len(m.Tensors))
	}
	m.Close()

	m, err = Open(filepath.Join(sharded, "model-00002-of-00002.safetensors"))
	if err != nil {
		t.Fatalf("Open(shard): %v", err)
	}
	if m.Path != sharded || len(m.Tensors) != len(cfg.WeightShapes()) {
		t.Errorf("a shard opens its folder: Path %q, %d tensors", m.Path, len(m.Tensors))
	}
	m.Close()

	lone := filepath.Join(t.TempDir(), "lone.safetensors")
	raw, _ := os.ReadFile(filepath.Join(dir, hfSingleName))
	os.WriteFile(lone, raw, 0o644)
	if _, err := Open(lone); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "config.json") || !strings.Contains(err.Error(), lone) {
		t.Errorf("Open(lone file) = %v, want ErrFormat asking for config.json", err)
	}
}

// TestParseSafetensors checks the parser on hand-built files, independent of ExportHF.
func TestParseSafetensors(t *testing.T) {
	f32 := func(v ...float32) []byte { return tensor.Encode(tensor.F32, v) }
	type ent = map[string]any
	cases := []struct {
		name    string
		file    []byte
		want    map[string][]float32 // decoded values
		shapes  map[string][]int
		wantErr error
	}{
		{"two tensors", rawST(t, ent{
			"a": ent{"dtype": "F32", "shape": []int{2}, "data_offsets": []int{0, 8}},
			"b": ent{"dtype": "BF16", "shape": []int{1, 2}, "data_offsets": []int{8, 12}},
		}, 0, append(f32(1, 2), 0x80, 0x3f, 0x40, 0xc0)), map[string][]float32{"a": {1, 2}, "b": {1, -3}},
			map[string][]int{"a": {2}, "b": {1, 2}}, nil},
		{"scalar, empty and metadata", rawST(t, ent{
			"__metadata__": ent{"format": "pt"},
			"s":            ent{"dtype": "F16", "shape": []int{}, "data_offsets": []int{0, 2}},
			"e":            ent{"dtype": "F32", "shape": []int{0, 4}, "data_offsets": []int{2, 2}},
		}, 3, []byte{0x00, 0x3c}), map[string][]float32{"s": {1}, "e": {}},
			map[string][]int{"s": {}, "e": {0, 4}}, nil},
		{"no tensors", rawST(t, ent{}, 0, nil), map[string][]float32{}, map[string][]int{}, nil},
		{"unknown field", rawST(t, ent{"a": ent{"dtype": "F32", "shape": []int{1}, "data_offsets": []int{0, 4}, "x": 1}}, 0, f32(1)),
			nil, nil, ErrCorrupt},
		{"overflowing shape", rawST(t, ent{"a": ent{"dtype": "F32", "shape": []int64{1 << 40, 1 << 40}, "data_offsets": []int{0, 0}}}, 0, nil),
			nil, nil, ErrCorrupt},
		{"overflowing shape with zero", rawST(t, ent{"a": ent{"dtype": "F32", "shape": []int64{1 << 62, 1 << 62, 0}, "data_offsets": []int{0, 0}}}, 0, nil),
			nil, nil, ErrCorrupt},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, err := parseSafetensors(tc.file, "x.safetensors")
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Tensors) != len(tc.want) {
				t.Errorf("%d tensors, want %d", len(st.Tensors), len(tc.want))
			}
			for name, want := range tc.want {
				got := st.Tensors[name]
				if got == nil || !slices.Equal(got.Shape, tc.shapes[name]) {
					t.Fatalf("%s: %+v, want shape %v", name, got, tc.shapes[name])
				}
				if d := firstMismatch(want, got.Float32s()); d != "" {
					t.Errorf("%s: %s", name, d)
				}
			}
		})
	}
}
