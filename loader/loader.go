// Package loader reads LLaMA model files — llama2.c .bin, GGUF v2/v3 and Hugging Face folders of
// safetensors — into a model.Config and a set of tensors under the canonical names of package
// model, memory-mapped where the file allows. It normalises the RoPE pair convention (HF's
// rotate-half rows of wq/wk are permuted back to Meta's interleaved order) and checks every tensor's
// name, shape and dtype against the config. It never imports a backend.
package loader

import (
	"errors"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// Sentinel errors; every error the loader returns wraps one of these (or tensor.ErrUnknownDType)
// and names the file and, where there is one, the tensor.
var (
	ErrFormat    = errors.New("unrecognised model file format")
	ErrTruncated = errors.New("file is truncated")
	ErrCorrupt   = errors.New("file is corrupt")
	ErrMissing   = errors.New("missing tensor")
	ErrShape     = errors.New("tensor has the wrong shape")
	ErrUnused    = errors.New("unexpected tensor")
)

// Format names the kind of file a Model came from.
type Format string

// The formats Open recognises.
const (
	FormatLlama2C     Format = "llama2c"
	FormatGGUF        Format = "gguf"
	FormatSafetensors Format = "safetensors"
)

// Vocab is a tokenizer vocabulary found inside a model file (GGUF's tokenizer.ggml.*). It is plain
// data: package tokenizer builds a Tokenizer from it.
type Vocab struct {
	Model  string    // tokenizer.ggml.model, "llama" for SentencePiece
	Tokens []string  // pieces, SentencePiece spelling (▁ for space, <0xNN> for bytes)
	Scores []float32 // merge scores, len(Tokens) or empty
	Types  []int32   // SentencePiece piece types (1 normal, 2 unknown, 3 control, 4 user, 6 byte), or empty
	BOS    int32     // -1 when absent
	EOS    int32
	UNK    int32
	PAD    int32
	AddBOS bool // tokenizer.ggml.add_bos_token (default true)
}

// Model is an opened model file. Tensors alias the mapped file: keep the Model open while they are
// in use, then Close it.
type Model struct {
	Path    string
	Format  Format
	Config  model.Config
	Tensors map[string]*tensor.Tensor // canonical names (model.NameWq …), Meta RoPE order
	// Vocab is the vocabulary stored in the file, or nil (llama2.c .bin, safetensors).
	Vocab *Vocab
	// TokenizerPath is a tokenizer file found in or beside the model (tokenizer.model in an HF
	// folder; tokenizer.model or tokenizer.bin next to a .bin), or "".
	TokenizerPath string
	// Skipped lists file tensors that were deliberately not used, with the reason
	// ("rope.freqs: recomputed"), so that every tensor is used or reported.
	Skipped []string
	// Meta is the file's key/value metadata (GGUF: every key, tokenizer arrays included, as
	// GGUFInfo.Meta describes), or nil for formats without any. It does not alias the file.
	Meta map[string]any

	closers []func() error
}

func (m *Model) addCloser(c func() error) { m.closers = append(m.closers, c) }

// Close unmaps the file(s). Tensors must not be used afterwards.
func (m *Model) Close() error {
	var errs []error
	for _, c := range m.closers {
		errs = append(errs, c())
	}
	m.closers = nil
	return errors.Join(errs...)
}

// Tensor returns a canonical tensor or an error wrapping ErrMissing that names the file.
func (m *Model) Tensor(name string) (*tensor.Tensor, error) {
	if t, ok := m.Tensors[name]; ok {
		return t, nil
	}
	return nil, &TensorError{Path: m.Path, Tensor: name, Err: ErrMissing}
}

// TensorError names the file and tensor a problem was found in.
type TensorError struct {
	Path   string
	Tensor string
	Err    error
}

func (e *TensorError) Error() string {
	if e.Tensor == "" {
		return "loader: " + e.Path + ": " + e.Err.Error()
	}
	return "loader: " + e.Path + ": tensor " + quote(e.Tensor) + ": " + e.Err.Error()
}

func (e *TensorError) Unwrap() error { return e.Err }

func quote(s string) string { return "\"" + s + "\"" }
