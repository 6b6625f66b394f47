// Package engine turns a model file into text: it loads weights onto a Backend, finds the matching
// tokenizer, and runs generation (prefill in batches, then decode) over the batch-first forward pass
// and the paged KV cache.
package engine

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/grammar"
	"github.com/llamacu/llamacu/loader"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/plan"
	"github.com/llamacu/llamacu/tensor"
	"github.com/llamacu/llamacu/tokenizer"
	"github.com/llamacu/llamacu/tp"
)

// Options says what to load and how.
type Options struct {
	// ModelPath is a llama2.c .bin, a .gguf or a Hugging Face folder. Empty means the built-in
	// synthetic model (SyntheticConfig, random weights, a byte-level vocabulary).
	ModelPath string
	// TokenizerPath overrides the tokenizer: tokenizer.model, a llama2.c tokenizer.bin, or a .gguf
	// holding a vocabulary. Empty means the one inside or beside the model.
	TokenizerPath string
	// Backend runs the model; nil means the CPU backend with Threads threads (0: all cores).
	Backend model.Backend
	// Backends, when it has more than one entry, runs the model tensor-parallel: rank r on
	// Backends[r], ranks talking through an in-process tp.Comm. It replaces Backend.
	Backends []model.Backend
	// Comms, when not nil, are the ranks' communicators (Comms[r] for Backends[r], e.g. NCCL
	// built by gpu.NewTP) instead of tp.NewInProcess. Model.Close (Engine.Close) closes them.
	Comms []tp.Comm
	// Link, when not nil, makes the model one node's part of a multi-node tensor-parallel group
	// (model.NewParallelNode): Backends and Comms are this node's ranks, Comms[0].Rank() the
	// first. On node 0 the Engine works as usual, every forward step going to the other nodes
	// too; on the others Load skips the tokenizer (they never tokenise) and the caller runs
	// Engine.Model.Follow. Model.Close (Engine.Close) closes the link.
	Link model.StepLink
	// TP, when > 1 and Backends is empty, makes Load create TP CPU backends that share Threads.
	TP int
	// CloseBackend makes Engine.Close close the backends too (always so when Load creates them).
	CloseBackend bool
	Threads      int
	// Context caps the KV cache at this many positions (0: the model's context length).
	Context int
	// Progress is called while weights upload (bytes done, bytes total); may be nil.
	Progress func(done, total int64)
	// LoRA lists adapters to merge into the weights as they load (loader.MergeLoRA): PEFT
	// folders or llama.cpp GGUF adapters, each with its strength (llama.cpp's --lora-scaled).
	LoRA []LoRAOption
	// SyntheticConfig and SyntheticSeed shape the built-in model when ModelPath is empty
	// (zero value: model.Tiny, seed 1).
	SyntheticConfig *model.Config
	SyntheticSeed   uint64
	// PrefillChunk is the most prompt tokens one forward step takes (0: PrefillChunk, 256, sized
	// for the CPU). On a GPU larger steps pay: the CLI gives the cuda backend GPUPrefillChunk.
	PrefillChunk int
}

// LoRAOption is one adapter to merge: its path and strength (1 is the adapter as trained; 0
// leaves the weights as they are).
type LoRAOption struct {
	Path  string
	Scale float64
}

// Engine is a loaded model with its tokenizer.
type Engine struct {
	Model     *model.Model
	Tokenizer *tokenizer.Tokenizer
	// Source describes where the weights came from ("stories260K.gguf (gguf)", "synthetic …").
	Source string
	// File is the opened model file (nil for the synthetic model): its tensors alias its mapping.
	File     *loader.Model
	LoadTime time.Duration
	Context  int // positions the KV cache holds
	// HostSampling makes every step read whole rows of logits and sample from them on the host,
	// even where the model selects each row's best candidates on the device (Model.DeviceTopK)
	// and the samplers need no more (sample.Sampler.TopKNeeded). The tokens are the same either
	// way; it is for A/B benchmarks and tests. Set it before generating.
	HostSampling bool
	// PrefillChunk is the most prompt tokens one forward step of Generate and Embed takes, and
	// the default of SchedulerOptions.MaxBatchTokens (Options.PrefillChunk; PrefillChunk if 0).
	PrefillChunk int

	ownBackend bool
	backends   []model.Backend
	vocabOnce  sync.Once
	vocab      *grammar.Vocab // GrammarVocab
}

// ErrTokenizer reports a missing or mismatched tokenizer.
var ErrTokenizer = errors.New("tokenizer")

// Load opens the model and its tokenizer and uploads the weights.
func Load(opts Options) (*Engine, error) {
	start := time.Now()
	if opts.PrefillChunk < 0 {
		return nil, fmt.Errorf("engine: PrefillChunk %d: want ≥ 0 (0: %d)", opts.PrefillChunk, PrefillChunk)
	}
	e := &Engine{ownBackend: opts.CloseBackend, PrefillChunk: opts.PrefillChunk}
	bes := opts.Backends
	if len(bes) == 0 && opts.Backend != nil {
		bes = []model.Backend{opts.Backend}
	}
	if len(bes) == 0 {
		n := max(opts.TP, 1)
		threads := opts.Threads
		if threads <= 0 {
			threads = runtime.GOMAXPROCS(0)
		}
		for range n {
			bes = append(bes, cpu.New(cpu.Options{Threads: max(1, threads/n)}))
		}
		e.ownBackend = true
	}
	e.backends = bes
	loaded := false
	defer func() {
		if !loaded && e.ownBackend {
			for _, b := range bes {
				b.Close()
			}
		}
	}()
	var (
		cfg      model.Config
		src      model.TensorSource
		unmerged []lowRankPair // LoRA pairs on quantized weights, added after the weights load
	)
	if opts.ModelPath == "" {
		cfg = model.Tiny
		if opts.SyntheticConfig != nil {
			cfg = *opts.SyntheticConfig
		}
		seed := opts.SyntheticSeed
		if seed == 0 {
			seed = 1
		}
		src = model.Synthetic(cfg, seed, tensor.F32)
		e.Source = fmt.Sprintf("built-in synthetic model %s (random weights, seed %d: the text is gibberish)", cfg.Name, seed)
		tok, err := SyntheticTokenizer(cfg.Vocab)
		if err != nil {
			return nil, err
		}
		e.Tokenizer = tok
	} else {
		f, err := loader.Open(opts.ModelPath)
		if err != nil {
			return nil, err
		}
		e.File = f
		cfg = f.Config
		src = f.Tensor
		e.Source = fmt.Sprintf("%s (%s)", opts.ModelPath, f.Format)
		if !follower(opts) {
			tok, err := findTokenizer(opts.TokenizerPath, f)
			if err != nil {
				f.Close()
				return nil, err
			}
			e.Tokenizer = tok
		}
	}
	if e.Tokenizer != nil && e.Tokenizer.VocabSize() != cfg.Vocab {
		e.closeFile()
		return nil, fmt.Errorf("%w: the tokenizer has %d pieces but the model's vocabulary is %d", ErrTokenizer, e.Tokenizer.VocabSize(), cfg.Vocab)
	}
	if len(opts.LoRA) > 0 {
		adapters := make([]*loader.LoRA, 0, len(opts.LoRA))
		scales := make([]float64, 0, len(opts.LoRA))
		defer func() { // merged as the weights load: the adapters' files are done with after
			for _, a := range adapters {
				a.Close()
			}
		}()
		for _, o := range opts.LoRA {
			if math.IsNaN(o.Scale) || math.IsInf(o.Scale, 0) {
				e.closeFile()
				return nil, fmt.Errorf("%w: %s: scale %v", loader.ErrLoRA, o.Path, o.Scale)
			}
			a, err := loader.OpenLoRA(o.Path, cfg)
			if err != nil {
				e.closeFile()
				return nil, err
			}
			adapters, scales = append(adapters, a), append(scales, o.Scale)
			e.Source += fmt.Sprintf(" + LoRA %s (%d weights, rank %d, scale %g)", o.Path, len(a.Pairs), anyPair(a).Rank(), o.Scale)
		}
		var merge []*loader.LoRA
		var err error
		if merge, unmerged, err = splitLoRA(src, adapters, scales); err != nil {
			e.closeFile()
			return nil, err
		}
		src = loader.MergeLoRA(src, merge, scales)
		if len(unmerged) > 0 {
			e.Source += fmt.Sprintf(" (%d pairs on quantized weights applied unmerged)", len(unmerged))
		}
	}
	e.Context = cfg.MaxSeq
	if opts.Context > 0 && opts.Context < e.Context {
		e.Context = opts.Context
	}
	tpSize := len(bes)
	if opts.Link != nil && len(opts.Comms) > 0 {
		tpSize = opts.Comms[0].Size()
	}
	if err := checkMemory(cfg, e.File, bes, tpSize, e.Context); err != nil {
		e.closeFile()
		return nil, err
	}
	var m *model.Model
	var err error
	switch {
	case opts.Link != nil:
		if len(opts.Comms) != len(bes) {
			err = fmt.Errorf("engine: a multi-node group needs a communicator per backend (%d backends, %d communicators)", len(bes), len(opts.Comms))
		} else {
			m, err = model.NewParallelNode(bes, cfg, src, opts.Comms, opts.Link, opts.Progress)
		}
	case len(bes) == 1:
		m, err = model.New(bes[0], cfg, src, opts.Progress)
	default:
		comms := opts.Comms
		if comms == nil {
			comms, err = tp.NewInProcess(len(bes))
		}
		if err == nil {
			m, err = model.NewParallel(bes, cfg, src, comms, opts.Progress)
		}
	}
	if err == nil {
		for _, p := range unmerged {
			if err = m.AddLowRank(p.name, p.a, p.b); err != nil {
				m.Close()
				break
			}
		}
	}
	if err != nil {
		e.closeFile()
		return nil, err
	}
	loaded = true
	e.Model = m
	e.LoadTime = time.Since(start)
	return e, nil
}

// lowRankPair is a LoRA pair left unmerged: A (r, in) and B (out, r) with the scale folded in.
type lowRankPair struct {
	name string
	a, b *tensor.Tensor
}

// splitLoRA sorts the adapters' pairs by the weights they adapt: those of F32, F16 or BF16
// weights are merged as the weights load (the adapters returned hold only those); those of
// quantized weights, where a merge would need a re-quantization, are applied at run time
// (model.AddLowRank), as llama.cpp applies every adapter.
func splitLoRA(src model.TensorSource, adapters []*loader.LoRA, scales []float64) ([]*loader.LoRA, []lowRankPair, error) {
	merge := make([]*loader.LoRA, len(adapters))
	var unmerged []lowRankPair
	for i, a := range adapters {
		merge[i] = &loader.LoRA{Path: a.Path, Pairs: map[string]loader.LoRAPair{}}
		for _, name := range slices.Sorted(maps.Keys(a.Pairs)) {
			p := a.Pairs[name]
			w, err := src(name)
			if err != nil {
				return nil, nil, err
			}
			if !w.DType.Quantized() {
				merge[i].Pairs[name] = p
				continue
			}
			if scales[i] == 0 {
				continue
			}
			s := float32(scales[i] * p.Scale)
			b := p.B.Float32s()
			for j := range b {
				b[j] *= s
			}
			unmerged = append(unmerged, lowRankPair{name: name,
				a: &tensor.Tensor{Name: p.A.Name, DType: tensor.F32, Shape: p.A.Shape, Data: tensor.Encode(tensor.F32, p.A.Float32s())},
				b: &tensor.Tensor{Name: p.B.Name, DType: tensor.F32, Shape: p.B.Shape, Data: tensor.Encode(tensor.F32, b)}})
		}
	}
	return merge, unmerged, nil
}

// anyPair is one of an adapter's pairs (the first by name), to describe it.
func anyPair(l *loader.LoRA) loader.LoRAPair {
	return l.Pairs[slices.Min(slices.Collect(maps.Keys(l.Pairs)))]
}

// Close releases the backend (when Load created it) and the model file.
func (e *Engine) Close() error {
	var errs []error
	if e.Model != nil {
		errs = append(errs, e.Model.Close())
	}
	if e.ownBackend {
		for _, b := range e.backends {
			errs = append(errs, b.Close())
		}
		e.backends = nil
	}
	errs = append(errs, e.closeFile())
	return errors.Join(errs...)
}

func (e *Engine) closeFile() error {
	if e.File == nil {
		return nil
	}
	err := e.File.Close()
	e.File = nil
	return err
}

// findTokenizer picks the tokenizer: the explicit path, else the vocabulary inside the file, else
// a tokenizer file beside it.
func findTokenizer(path string, f *loader.Model) (*tokenizer.Tokenizer, error) {
	if path == "" && f.Vocab != nil {
		return fromLoaderVocab(f.Vocab, f.Path)
	}
	if path == "" {
		path = f.TokenizerPath
	}
	if path == "" {
		return nil, fmt.Errorf("%w: %s has no vocabulary inside and no tokenizer.model beside it: pass --tokenizer", ErrTokenizer, f.Path)
	}
	return LoadTokenizer(path, f.Config.Vocab)
}

// LoadTokenizer reads a tokenizer file: a SentencePiece tokenizer.model, a llama2.c tokenizer.bin
// (which needs the model's vocabulary size, vocab), or the vocabulary of a .gguf file.
func LoadTokenizer(path string, vocab int) (*tokenizer.Tokenizer, error) {
	if st, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTokenizer, err)
	} else if st.IsDir() {
		return nil, fmt.Errorf("%w: %s is a directory, not a tokenizer file", ErrTokenizer, path)
	} else if !st.Mode().IsRegular() {
		// A FIFO would block for ever.
		return nil, fmt.Errorf("%w: %s: not a regular file (a named pipe, device or socket)", ErrTokenizer, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTokenizer, err)
	}
	magic := make([]byte, 4)
	_, _ = f.Read(magic)
	f.Close()
	switch {
	case string(magic) == "GGUF":
		v, err := loader.ReadGGUFVocab(path)
		if err != nil {
			return nil, err
		}
		return fromLoaderVocab(v, path)
	case strings.HasSuffix(path, ".bin"):
		if vocab <= 0 {
			return nil, fmt.Errorf("%w: %s: a llama2.c tokenizer.bin needs the model's vocabulary size (pass --model too)", ErrTokenizer, path)
		}
		return tokenizer.LoadLlama2cBin(path, vocab)
	}
	return tokenizer.LoadModelProto(path)
}

// fromLoaderVocab builds the tokenizer of a vocabulary stored in a model file (path, for errors).
// Only SentencePiece vocabularies (tokenizer.ggml.model "llama", or unset) are read: a GPT-2
// style BPE vocabulary ("gpt2", as Llama 3 GGUF files have) spells its pieces differently and
// would tokenise wrongly, or fail with an obscure message, if read as SentencePiece.
func fromLoaderVocab(v *loader.Vocab, path string) (*tokenizer.Tokenizer, error) {
	if v.Model != "" && v.Model != "llama" {
		return nil, fmt.Errorf("%w: %s: tokenizer.ggml.model is %q; llamacu reads SentencePiece (\"llama\") vocabularies only: pass --tokenizer with the model's tokenizer.model",
			ErrTokenizer, path, v.Model)
	}
	// LLaMA's SentencePiece model adds the dummy "▁" prefix (GGUF: add_space_prefix, default true).
	tok, err := tokenizer.FromVocab(tokenizer.Vocab{Tokens: v.Tokens, Scores: v.Scores, Types: v.Types, BOS: v.BOS, EOS: v.EOS, UNK: v.UNK, PAD: v.PAD, AddDummyPrefix: true})
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrTokenizer, path, err)
	}
	return tok, nil
}

// OpenTokenizer loads a tokenizer without uploading any weights: from tokPath if given (a
// tokenizer.bin takes its vocabulary size from modelPath's header, or reads to the end of the file
// without one), else the one in or beside modelPath. A vocabulary-only GGUF works as either.
func OpenTokenizer(modelPath, tokPath string) (*tokenizer.Tokenizer, error) {
	if modelPath == "" {
		return LoadTokenizer(tokPath, 0)
	}
	f, err := loader.Open(modelPath)
	if err != nil {
		if v, verr := loader.ReadGGUFVocab(modelPath); verr == nil && tokPath == "" {
			return fromLoaderVocab(v, modelPath)
		}
		return nil, err
	}
	defer f.Close()
	return findTokenizer(tokPath, f)
}

// follower reports whether opts load a node other than 0 of a multi-node group.
func follower(opts Options) bool {
	return opts.Link != nil && len(opts.Comms) > 0 && opts.Comms[0].Rank() != 0
}

// checkMemory refuses, with the planner's explanation, a model whose weights, KV cache (one
// sequence of ctx positions) and activations would not fit the host's available memory, instead
// of letting the allocation crash. It runs for CPU backends; a GPU backend checks its own memory.
// bes are this process's ranks of a group of tpSize (more on other nodes).
func checkMemory(cfg model.Config, f *loader.Model, bes []model.Backend, tpSize, ctx int) error {
	for _, b := range bes {
		if _, ok := b.(*cpu.Backend); !ok {
			return nil
		}
	}
	avail, err := plan.HostMemory()
	if err != nil || avail <= 0 {
		return nil // unknown capacity: nothing to check against
	}
	dtype := cpuPlanDType(f)
	n := len(bes)
	return plan.CheckFits(cfg, plan.Options{DType: dtype, KVDType: tensor.F32, GPUs: tpSize, GPUMem: avail / int64(n),
		Ctx: ctx, Batch: 1, MaxBatchTokens: PrefillChunk, MaxTP: 1})
}

// cpuPlanDType is the one weight dtype the planner counts a file in for the CPU backend, which
// widens F16 and BF16 matrices to F32 and keeps quantised ones as they are: F32 if any matrix is
// not quantised; else the quantised type with the most bits per weight (a Q4_K_M file, Q4_K and
// Q6_K, as all Q6_K: an overestimate). Column shards that are not whole blocks of it are
// counted as the F32 the CPU widens them to (plan.Options.SplitDType's zero value).
func cpuPlanDType(f *loader.Model) tensor.DType {
	if f == nil {
		return tensor.F32
	}
	widest := tensor.DType(-1)
	for _, t := range f.Tensors {
		if len(t.Shape) != 2 {
			continue
		}
		if !t.DType.Quantized() {
			return tensor.F32
		}
		if widest == -1 || t.DType.BitsPerWeight() > widest.BitsPerWeight() {
			widest = t.DType
		}
	}
	if widest == -1 {
		return tensor.F32
	}
	return widest
}
