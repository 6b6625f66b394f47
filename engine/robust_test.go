package engine_test

import (
	"context"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/loader"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/sample"
	"github.com/llamacu/llamacu/tensor"
)

// rewriteGGUF writes stories260K.gguf again with cfg and vocab changed by edit and the tensors
// changed by editT, and returns the new file.
func rewriteGGUF(t *testing.T, edit func(c *model.Config, v *loader.Vocab), editT func(ts map[string]*tensor.Tensor)) string {
	t.Helper()
	m, err := loader.Open(shared(t, "stories260K/stories260K.gguf"))
	require.NoError(t, err)
	defer m.Close()
	cfg := m.Config
	v := *m.Vocab
	ts := map[string]*tensor.Tensor{}
	for k, x := range m.Tensors {
		c := *x
		c.Data = append([]byte(nil), x.Data...)
		ts[k] = &c
	}
	if edit != nil {
		edit(&cfg, &v)
	}
	if editT != nil {
		editT(ts)
	}
	p := filepath.Join(t.TempDir(), "m.gguf")
	f, err := os.Create(p)
	require.NoError(t, err)
	require.NoError(t, loader.WriteGGUFModel(f, cfg, &v, ts))
	require.NoError(t, f.Close())
	return p
}

func fillF32(x *tensor.Tensor, v float32) {
	for i := 0; i+4 <= len(x.Data); i += 4 {
		binary.LittleEndian.PutUint32(x.Data[i:], math.Float32bits(v))
	}
}

// Models whose numbers are bad (NaN or Inf weights) or whose shape is odd but valid load and
// generate (gibberish) or refuse with a clear error; never a panic or a hang.
func TestGenerateOddModels(t *testing.T) {
	nan := float32(math.NaN())
	cases := []struct {
		name    string
		edit    func(c *model.Config, v *loader.Vocab)
		editT   func(ts map[string]*tensor.Tensor)
		wantErr error // from Generate
	}{
		{"nan norm", nil, func(ts map[string]*tensor.Tensor) { fillF32(ts[model.NameNorm], nan) }, nil},
		{"inf embedding", nil, func(ts map[string]*tensor.Tensor) { fillF32(ts[model.NameTokEmbed], float32(math.Inf(1))) }, nil},
		{"huge context", func(c *model.Config, v *loader.Vocab) { c.MaxSeq = 1 << 24 }, nil, nil},
		{"context 2", func(c *model.Config, v *loader.Vocab) { c.MaxSeq = 2 }, nil, engine.ErrPromptTooLong},
		{"tiny rope theta", func(c *model.Config, v *loader.Vocab) { c.RopeTheta = 1e-30 }, nil, nil},
		{"no bos eos", func(c *model.Config, v *loader.Vocab) { v.BOS, v.EOS = -1, -1 }, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := rewriteGGUF(t, tc.edit, tc.editT)
			e, err := engine.Load(engine.Options{ModelPath: p, Context: 64})
			require.NoError(t, err)
			defer e.Close()
			for _, sp := range []sample.Params{{Temperature: 0}, {Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, Seed: 1}, {Temperature: 1, RepeatPenalty: 1.3, RepeatLastN: 64, Seed: 2}} {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				st, err := e.Generate(ctx, engine.Request{Prompt: "Once upon a time", MaxTokens: 16, Sampling: sp}, func(id int32, _ string) error {
					if id < -1 || int(id) >= e.Tokenizer.VocabSize() {
						t.Errorf("emitted id %d", id)
					}
					return nil
				})
				cancel()
				if tc.wantErr != nil {
					require.ErrorIs(t, err, tc.wantErr)
					continue
				}
				require.NoError(t, err)
				require.Positive(t, st.PromptTokens)
			}
		})
	}
}

// A vocabulary in the file that is not SentencePiece, or is malformed, is a tokenizer error that
// names the file.
func TestLoadRejectsBadVocabularies(t *testing.T) {
	cases := []struct {
		name string
		edit func(c *model.Config, v *loader.Vocab)
		want string
	}{
		{"gpt2 vocabulary", func(c *model.Config, v *loader.Vocab) { v.Model = "gpt2" }, `tokenizer.ggml.model is "gpt2"`},
		{"empty piece", func(c *model.Config, v *loader.Vocab) {
			v.Tokens = append([]string(nil), v.Tokens...)
			v.Tokens[100] = ""
		}, "piece 100 is empty"},
		{"unk is control", func(c *model.Config, v *loader.Vocab) { v.UNK = 1 }, "unk id 1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := rewriteGGUF(t, tc.edit, nil)
			_, err := engine.Load(engine.Options{ModelPath: p})
			require.ErrorIs(t, err, engine.ErrTokenizer)
			require.ErrorContains(t, err, tc.want)
			require.ErrorContains(t, err, p)
			_, err = engine.OpenTokenizer(p, "")
			require.ErrorIs(t, err, engine.ErrTokenizer)
			_, err = engine.LoadTokenizer(p, 0)
			require.ErrorIs(t, err, engine.ErrTokenizer)
		})
	}
}

// Requests that cannot be served are errors: ids outside the vocabulary, an empty prompt, a
// prompt that fills the context; absurd limits are clamped to the context.
func TestGenerateBadRequests(t *testing.T) {
	e, err := engine.Load(engine.Options{ModelPath: shared(t, "stories260K/stories260K.gguf"), Context: 8})
	require.NoError(t, err)
	defer e.Close()
	gen := func(req engine.Request) (engine.Stats, error) {
		return e.Generate(context.Background(), req, func(int32, string) error { return nil })
	}
	for _, ids := range [][]int32{{-1}, {1, 512}, {1, math.MaxInt32}, {}} {
		_, err := gen(engine.Request{PromptIDs: ids})
		require.Error(t, err, "%v", ids)
	}
	_, err = gen(engine.Request{Prompt: "Once upon a time there was a little girl"})
	require.ErrorIs(t, err, engine.ErrPromptTooLong)
	for _, n := range []int{-5, math.MaxInt} {
		st, err := gen(engine.Request{Prompt: "Once", MaxTokens: n})
		require.NoError(t, err)
		require.LessOrEqual(t, st.PromptTokens+st.Generated, 8)
	}
	e1, err := engine.Load(engine.Options{ModelPath: shared(t, "stories260K/stories260K.gguf"), Context: 1})
	require.NoError(t, err)
	defer e1.Close()
	_, err = e1.Generate(context.Background(), engine.Request{}, func(int32, string) error { return nil })
	require.ErrorIs(t, err, engine.ErrPromptTooLong)
}
