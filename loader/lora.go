package loader

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// LoRA adapters (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"): a
// fine-tune that leaves each adapted weight W (out, in) as it is and learns a pair A (r, in),
// B (out, r) of small rank r beside it, so that the tuned model uses
//
//	W' = W + scale·B·A,   scale = alpha / r   (rsLoRA: alpha / √r)
//
// Two files hold them: Hugging Face PEFT's folder (adapter_config.json with r, lora_alpha and
// target_modules, and adapter_model.safetensors with base_model.model.<module>.lora_A.weight and
// lora_B.weight), and llama.cpp's GGUF adapter (general.type "adapter", adapter.type "lora",
// adapter.lora.alpha, tensors <weight>.lora_a and .lora_b, as convert_lora_to_gguf.py writes).
// MergeLoRA adds them to the base weights as they load, as llama.cpp's export-lora does: the
// forward pass is the base model's, at its speed.

// ErrLoRA is wrapped by every adapter error.
var ErrLoRA = errors.New("LoRA adapter")

// LoRA is an opened adapter. Its tensors alias the mapped file: Close it after the merge.
type LoRA struct {
	Path  string
	Pairs map[string]LoRAPair // by the canonical name of the weight adapted (model.LayerName(l, model.NameWq) …)

	closers []func() error
}

// LoRAPair is one adapted weight's A (r, in) and B (out, r), both in Meta's row order (the Q
// and K rows of a Hugging Face adapter are permuted as the base weights are), and its scale.
type LoRAPair struct {
	A, B  *tensor.Tensor
	Scale float64 // alpha / r, or alpha / √r for rsLoRA
}

// Rank is r.
func (p LoRAPair) Rank() int { return p.A.Shape[0] }

// Close unmaps the adapter's file.
func (l *LoRA) Close() error {
	var errs []error
	for _, c := range l.closers {
		errs = append(errs, c())
	}
	l.closers = nil
	return errors.Join(errs...)
}

// OpenLoRA opens an adapter for a model of config cfg: a PEFT folder (or its
// adapter_config.json), or a GGUF adapter file. Every pair is checked against cfg's shapes.
func OpenLoRA(path string, cfg model.Config) (*LoRA, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	var l *LoRA
	switch {
	case st.IsDir():
		l, err = openPEFT(path, cfg)
	case filepath.Base(path) == "adapter_config.json":
		l, err = openPEFT(filepath.Dir(path), cfg)
	default:
		l, err = openLoRAGGUF(path)
	}
	if err != nil {
		return nil, err
	}
	if err := l.check(cfg); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

func loraError(path, name, format string, args ...any) error {
	return &TensorError{Path: path, Tensor: name, Err: fmt.Errorf("%w: %s", ErrLoRA, fmt.Sprintf(format, args...))}
}

// check validates every pair against the weight it adapts.
func (l *LoRA) check(cfg model.Config) error {
	if len(l.Pairs) == 0 {
		return loraError(l.Path, "", "no lora_A/lora_B pairs")
	}
	shapes := map[string][]int{}
	for _, ws := range cfg.WeightShapes() {
		shapes[ws.Name] = ws.Shape
	}
	for name, p := range l.Pairs {
		w, ok := shapes[name]
		switch {
		case !ok || len(w) != 2 || name == model.NameTokEmbed:
			return loraError(l.Path, name, "adapts no matrix of this model that LoRA may change (the attention and feed-forward projections, the LM head)")
		case p.A == nil || p.B == nil:
			return loraError(l.Path, name, "has only one of lora_A and lora_B")
		case len(p.A.Shape) != 2 || len(p.B.Shape) != 2 || p.A.Shape[0] != p.B.Shape[1] || p.A.Shape[0] == 0:
			return loraError(l.Path, name, "lora_A %v and lora_B %v are not (r, in) and (out, r)", p.A.Shape, p.B.Shape)
		case p.A.Shape[1] != w[1] || p.B.Shape[0] != w[0]:
			return loraError(l.Path, name, "lora_B·lora_A is %d×%d, the weight %d×%d", p.B.Shape[0], p.A.Shape[1], w[0], w[1])
		case math.IsNaN(p.Scale) || math.IsInf(p.Scale, 0):
			return loraError(l.Path, name, "scale %v", p.Scale)
		}
		for _, t := range []*tensor.Tensor{p.A, p.B} {
			if t.DType != tensor.F32 && t.DType != tensor.F16 && t.DType != tensor.BF16 {
				return loraError(l.Path, t.Name, "dtype %v: adapters are read in F32, F16 or BF16", t.DType)
			}
			if err := t.Validate(); err != nil {
				return &TensorError{Path: l.Path, Tensor: t.Name, Err: err}
			}
		}
	}
	return nil
}

// peftConfig is the part of adapter_config.json that decides the arithmetic.
type peftConfig struct {
	PeftType      string         `json:"peft_type"`
	R             *float64       `json:"r"`
	LoraAlpha     *float64       `json:"lora_alpha"`
	UseRSLoRA     bool           `json:"use_rslora"`
	UseDoRA       bool           `json:"use_dora"`
	FanInFanOut   bool           `json:"fan_in_fan_out"`
	Bias          string         `json:"bias"`
	ModulesToSave []string       `json:"modules_to_save"`
	AlphaPattern  map[string]any `json:"alpha_pattern"`
}

// peftPrefix begins every tensor name PEFT saves.
const peftPrefix = "base_model.model."

func openPEFT(dir string, cfg model.Config) (*LoRA, error) {
	cfgPath := filepath.Join(dir, "adapter_config.json")
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, err
	}
	var pc peftConfig
	if err := json.Unmarshal(b, &pc); err != nil {
		return nil, loraError(cfgPath, "", "%v", err)
	}
	switch {
	case pc.PeftType != "" && pc.PeftType != "LORA":
		return nil, loraError(cfgPath, "", "peft_type %q: only LORA adapters are read", pc.PeftType)
	case pc.R == nil || *pc.R < 1 || pc.LoraAlpha == nil:
		return nil, loraError(cfgPath, "", "r (≥ 1) and lora_alpha are required")
	case pc.UseDoRA:
		return nil, loraError(cfgPath, "", "use_dora: DoRA's magnitude vectors are not supported")
	case pc.FanInFanOut:
		return nil, loraError(cfgPath, "", "fan_in_fan_out: a LLaMA adapter stores (out, in) weights")
	case pc.Bias != "" && pc.Bias != "none":
		return nil, loraError(cfgPath, "", "bias %q: adapters that train biases are not supported (LLaMA has none)", pc.Bias)
	case len(pc.ModulesToSave) > 0:
		return nil, loraError(cfgPath, "", "modules_to_save %v: the adapter replaces whole modules, not supported", pc.ModulesToSave)
	case len(pc.AlphaPattern) > 0:
		return nil, loraError(cfgPath, "", "alpha_pattern: per-module alphas are not supported")
	}
	wpath := filepath.Join(dir, "adapter_model.safetensors")
	if _, err := os.Stat(wpath); err != nil {
		if _, binErr := os.Stat(filepath.Join(dir, "adapter_model.bin")); binErr == nil {
			return nil, loraError(dir, "", "adapter_model.bin is a pickle: save the adapter as safetensors (safe_serialization=True)")
		}
		return nil, err
	}
	f, unmap, err := mapSafetensors(wpath)
	if err != nil {
		return nil, err
	}
	l := &LoRA{Path: dir, Pairs: map[string]LoRAPair{}, closers: []func() error{unmap}}
	for name, t := range f.Tensors {
		rest, ok := strings.CutPrefix(name, peftPrefix)
		var module, which string
		if ok {
			module, which, ok = cutLoRASuffix(rest, ".lora_A.weight", ".lora_B.weight")
		}
		if !ok {
			l.Close()
			return nil, loraError(wpath, name, "not a LoRA tensor this loader knows (base_model.model.<module>.lora_A.weight or lora_B.weight)")
		}
		canon, _ := hfCanonicalName(module + ".weight")
		if canon == "" {
			l.Close()
			return nil, loraError(wpath, name, "adapts %q, not a LLaMA weight", module)
		}
		p := l.Pairs[canon]
		t.Name = name
		if which == "A" {
			p.A = t
		} else {
			if heads := roPEHeads(cfg, canon); heads > 0 && len(t.Shape) == 2 && t.Shape[0]%heads == 0 && (t.Shape[0]/heads)%2 == 0 {
				t = &tensor.Tensor{Name: name, DType: t.DType, Shape: t.Shape, Data: permuteRoPERows(t.Data, t.Shape[0], heads, false)}
			}
			p.B = t
		}
		l.Pairs[canon] = p
	}
	for canon, p := range l.Pairs {
		if p.A == nil || len(p.A.Shape) != 2 {
			continue // check reports it
		}
		r := float64(p.A.Shape[0])
		p.Scale = *pc.LoraAlpha / r
		if pc.UseRSLoRA {
			p.Scale = *pc.LoraAlpha / math.Sqrt(r)
		}
		l.Pairs[canon] = p
	}
	return l, nil
}

// cutLoRASuffix splits name at one of the two suffixes: the module and "A" or "B".
func cutLoRASuffix(name, a, b string) (module, which string, ok bool) {
	if m, ok := strings.CutSuffix(name, a); ok {
		return m, "A", true
	}
	if m, ok := strings.CutSuffix(name, b); ok {
		return m, "B", true
	}
	return "", "", false
}

// roPEHeads is the number of heads whose rows a Hugging Face checkpoint permutes in weight
// canon (Q: heads, K: KV heads), or 0.
func roPEHeads(cfg model.Config, canon string) int {
	switch {
	case strings.HasSuffix(canon, "."+model.NameWq):
		return cfg.Heads
	case strings.HasSuffix(canon, "."+model.NameWk):
		return cfg.KVHeads
	}
	return 0
}

func openLoRAGGUF(path string) (*LoRA, error) { return openMapped(path, loraGGUF) }

func (l *LoRA) addCloser(c func() error) { l.closers = append(l.closers, c) }

func loraGGUF(data []byte, path string) (*LoRA, error) {
	info, err := parseGGUF(data, path)
	if err != nil {
		return nil, err
	}
	if typ, _ := info.Meta["general.type"].(string); typ != "adapter" {
		return nil, loraError(path, "", "general.type is %q, not \"adapter\": is this a model rather than an adapter?", info.Meta["general.type"])
	}
	if typ, _ := info.Meta["adapter.type"].(string); typ != "lora" {
		return nil, loraError(path, "", "adapter.type is %q, not \"lora\"", info.Meta["adapter.type"])
	}
	if arch, _ := info.Meta["general.architecture"].(string); arch != "llama" {
		return nil, loraError(path, "", "general.architecture is %q; llamacu reads \"llama\" adapters", info.Meta["general.architecture"])
	}
	alpha, hasAlpha, err := ggufFloat(info.Meta, "adapter.lora.alpha")
	if err != nil {
		return nil, err
	}
	l := &LoRA{Path: path, Pairs: map[string]LoRAPair{}}
	for _, gt := range info.Tensors {
		base, which, ok := cutLoRASuffix(gt.Name, ".lora_a", ".lora_b")
		canon := ""
		if ok {
			canon, _ = ggufCanonicalName(base)
		}
		if canon == "" {
			return nil, loraError(path, gt.Name, "not a LoRA tensor of a LLaMA weight (<weight>.lora_a or .lora_b)")
		}
		dt, err := gt.Type.DType()
		if err != nil {
			return nil, &TensorError{Path: path, Tensor: gt.Name, Err: err}
		}
		begin := info.DataOffset + gt.Offset
		end := begin + gt.Size
		t := &tensor.Tensor{Name: gt.Name, DType: dt, Shape: gt.Shape, Data: data[begin:end:end]}
		p := l.Pairs[canon]
		if which == "A" {
			p.A = t
		} else {
			p.B = t
		}
		l.Pairs[canon] = p
	}
	for canon, p := range l.Pairs {
		p.Scale = 1 // llama.cpp: alpha 0 (or none) means scale 1
		if hasAlpha && alpha != 0 && p.A != nil && len(p.A.Shape) == 2 && p.A.Shape[0] > 0 {
			p.Scale = alpha / float64(p.A.Shape[0])
		}
		l.Pairs[canon] = p
	}
	return l, nil
}

// WriteLoRAGGUF writes pairs (canonical names, Meta row order) as llama.cpp's GGUF adapter with
// the given alpha: what OpenLoRA reads back with scale alpha / r.
func WriteLoRAGGUF(w io.Writer, pairs map[string]LoRAPair, alpha float32) error {
	meta := map[string]any{"general.architecture": "llama", "general.type": "adapter", "adapter.type": "lora", "adapter.lora.alpha": alpha}
	var ts []*tensor.Tensor
	for _, canon := range slices.Sorted(maps.Keys(pairs)) {
		g, ok := ggufName(canon)
		if !ok {
			return fmt.Errorf("%w: %q has no GGUF name", ErrLoRA, canon)
		}
		p := pairs[canon]
		ts = append(ts, &tensor.Tensor{Name: g + ".lora_a", DType: p.A.DType, Shape: p.A.Shape, Data: p.A.Data},
			&tensor.Tensor{Name: g + ".lora_b", DType: p.B.DType, Shape: p.B.Shape, Data: p.B.Data})
	}
	return WriteGGUF(w, meta, ts)
}

// MergeLoRA returns src with the adapters added to the weights they adapt, each with its own
// strength: W' = W + Σᵢ strengths[i]·scaleᵢ·Bᵢ·Aᵢ, computed in float32 and stored in W's dtype
// (F32, F16 or BF16: a quantized weight is an error, as re-quantizing would lose what the
// adapter adds — merge into the F16 model). Other tensors pass through untouched.
func MergeLoRA(src model.TensorSource, adapters []*LoRA, strengths []float64) model.TensorSource {
	return func(name string) (*tensor.Tensor, error) {
		t, err := src(name)
		if err != nil {
			return nil, err
		}
		var pairs []LoRAPair
		var scales []float64
		for i, l := range adapters {
			if p, ok := l.Pairs[name]; ok && strengths[i] != 0 {
				pairs = append(pairs, p)
				scales = append(scales, strengths[i]*p.Scale)
			}
		}
		if len(pairs) == 0 {
			return t, nil
		}
		if t.DType != tensor.F32 && t.DType != tensor.F16 && t.DType != tensor.BF16 {
			return nil, &TensorError{Path: adapters[0].Path, Tensor: name,
				Err: fmt.Errorf("%w: the base weight is %v; an adapter merges into F32, F16 or BF16 weights (use the model's F16 file)", ErrLoRA, t.DType)}
		}
		if len(t.Shape) != 2 || t.Shape[0] != pairs[0].B.Shape[0] || t.Shape[1] != pairs[0].A.Shape[1] {
			return nil, &TensorError{Path: adapters[0].Path, Tensor: name, Err: fmt.Errorf("%w: the weight is %v", ErrLoRA, t.Shape)}
		}
		w := t.Float32s() // a copy: the file's bytes stay as they are
		mergeInto(w, t.Shape[0], t.Shape[1], pairs, scales)
		return &tensor.Tensor{Name: t.Name, DType: t.DType, Shape: t.Shape, Data: tensor.Encode(t.DType, w)}, nil
	}
}

// mergeInto adds Σ scales[i]·Bᵢ·Aᵢ to w (out, in), rows in parallel: each row o gains
// Σ_r scale·B[o,r]·A[r,:].
func mergeInto(w []float32, out, in int, pairs []LoRAPair, scales []float64) {
	as := make([][]float32, len(pairs))
	bs := make([][]float32, len(pairs))
	for i, p := range pairs {
		as[i], bs[i] = p.A.Float32s(), p.B.Float32s()
	}
	workers := min(runtime.GOMAXPROCS(0), out)
	var wg sync.WaitGroup
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			acc := make([]float32, in)
			for o := g; o < out; o += workers {
				clear(acc)
				for i, p := range pairs {
					r := p.Rank()
					for k := 0; k < r; k++ {
						c := float32(scales[i]) * bs[i][o*r+k]
						if c == 0 {
							continue
						}
						a := as[i][k*in : (k+1)*in]
						for j, x := range a {
							acc[j] += c * x
						}
					}
				}
				row := w[o*in : (o+1)*in]
				for j, x := range acc {
					row[j] += x
				}
			}
		}()
	}
	wg.Wait()
}

// ExportPEFT writes pairs (canonical names, Meta row order) as a Hugging Face PEFT adapter
// folder — adapter_config.json and adapter_model.safetensors, the Q and K rows of B permuted to
// the Hugging Face order — with r and lora_alpha such that OpenLoRA reads scale alpha / r back.
// Every pair must have the same rank.
func ExportPEFT(dir string, cfg model.Config, pairs map[string]LoRAPair, alpha float64) error {
	rank := -1
	targets := map[string]bool{}
	var entries []stExportEntry
	var data [][]byte
	var off int64
	for _, canon := range slices.Sorted(maps.Keys(pairs)) {
		p := pairs[canon]
		if rank >= 0 && p.Rank() != rank {
			return fmt.Errorf("%w: ranks %d and %d: PEFT's r is one number", ErrLoRA, rank, p.Rank())
		}
		rank = p.Rank()
		hfName, ok := hfName(canon)
		if !ok {
			return fmt.Errorf("%w: %q has no Hugging Face name", ErrLoRA, canon)
		}
		module := strings.TrimSuffix(hfName, ".weight")
		targets[module[strings.LastIndexByte(module, '.')+1:]] = true
		for _, half := range []struct {
			t    *tensor.Tensor
			name string
		}{{p.A, ".lora_A.weight"}, {p.B, ".lora_B.weight"}} {
			b := half.t.Data
			if heads := roPEHeads(cfg, canon); heads > 0 && half.name == ".lora_B.weight" {
				b = permuteRoPERows(b, half.t.Shape[0], heads, true)
			}
			dt, err := stDTypeName(half.t.DType)
			if err != nil {
				return err
			}
			entries = append(entries, stExportEntry{Name: peftPrefix + module + half.name, DType: dt, Shape: half.t.Shape, Begin: off, End: off + int64(len(b))})
			data = append(data, b)
			off += int64(len(b))
		}
	}
	if rank < 0 {
		return fmt.Errorf("%w: no pairs", ErrLoRA)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	conf := map[string]any{"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "target_modules": slices.Sorted(maps.Keys(targets)),
		"bias": "none", "fan_in_fan_out": false, "use_rslora": false, "task_type": "CAUSAL_LM"}
	if err := writeJSON(filepath.Join(dir, "adapter_config.json"), conf); err != nil {
		return err
	}
	return writeSafetensors(filepath.Join(dir, "adapter_model.safetensors"), entries, nil, func(w io.Writer, i int) error {
		_, err := w.Write(data[i])
		return err
	})
}

// hfName is the Hugging Face name of a canonical weight.
func hfName(canon string) (string, bool) {
	switch canon {
	case model.NameTokEmbed:
		return hfEmbed, true
	case model.NameNorm:
		return hfNorm, true
	case model.NameOutput:
		return hfLMHead, true
	}
	rest, ok := strings.CutPrefix(canon, "layers.")
	if !ok {
		return "", false
	}
	num, base, ok := strings.Cut(rest, ".")
	if !ok {
		return "", false
	}
	for _, p := range hfLayerNames {
		if p.canon == base {
			return hfLayerPrefix + num + "." + p.hf, true
		}
	}
	return "", false
}
