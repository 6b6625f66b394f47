package grammar

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/tokenizer"
)

// llama2Vocab is the LLaMA 2 tokenizer's vocabulary as the engine builds it.
func llama2Vocab(t testing.TB) (*tokenizer.Tokenizer, *Vocab) {
	tok, err := tokenizer.LoadModelProto(filepath.Join("..", "..", "shared", "testdata", "llama2-tokenizer", "tokenizer.model"))
	require.NoError(t, err)
	tokens := make([][]byte, tok.VocabSize())
	for id := range tokens {
		tokens[id] = tok.TokenBytes(int32(id))
	}
	raw := func(id int32) bool {
		return tok.Type(id) == tokenizer.TypeByte || tok.Type(id) == tokenizer.TypeUnknown
	}
	return tok, NewVocab(tokens, raw, tok.EOS())
}

// randomVocab has short tokens over JSON's punctuation, letters, digits, spaces and the bytes of
// two Hangul syllables, so that tokens end inside characters.
func randomVocab(rng *rand.Rand) *Vocab {
	alphabet := []string{"{", "}", "[", "]", "\"", ":", ",", " ", "\n", "a", "b", "1", "0", "-", ".", "e", "t", "r", "u", "\\", "n", "l", "f", "s",
		"\xea", "\xb0", "\x80", "\xed", "\x95", "\x9c"}
	tokens := [][]byte{nil, nil} // 0: EOS, 1: BOS (never allowed)
	for _, s := range alphabet {
		tokens = append(tokens, []byte(s))
	}
	for range 400 {
		var tok []byte
		for range 2 + rng.IntN(5) {
			tok = append(tok, alphabet[rng.IntN(len(alphabet))]...)
		}
		tokens = append(tokens, tok)
	}
	return NewVocab(tokens, nil, 0)
}

// Mask is the fast twin of asking Allows for every token: on random walks through the JSON
// grammar they must agree on every token at every step.
func TestMaskAgreesWithAllows(t *testing.T) {
	tok, llama := llama2Vocab(t)
	rng := rand.New(rand.NewPCG(1, 2))
	vocabs := map[string]*Vocab{"random": randomVocab(rng), "llama2": llama}
	for name, v := range vocabs {
		t.Run(name, func(t *testing.T) {
			logits := make([]float32, v.Size())
			plain := make([]float32, v.Size())
			for walk := range 4 {
				m := JSON().NewMatcher(v)
				ref := JSON().NewMatcher(v) // the same walk without the transition cache
				ref.noCache = true
				if walk%2 == 1 {
					m.DropLeadingSpace()
					ref.DropLeadingSpace()
				}
				for step := range 12 {
					for i := range logits {
						logits[i] = 0
					}
					n, err := m.Mask(logits)
					require.NoError(t, err)
					clear(plain)
					_, err = ref.Mask(plain)
					require.NoError(t, err)
					require.Equal(t, plain, logits, "walk %d step %d: cached and uncached masks differ", walk, step)
					var allowed []int32
					for id := range logits {
						a := !math.IsInf(float64(logits[id]), -1)
						require.Equal(t, m.Allows(int32(id)), a, "walk %d step %d token %d %q", walk, step, id, v.bytes[id])
						if a && !v.isEOS(int32(id)) {
							allowed = append(allowed, int32(id))
						}
					}
					count := 0
					for _, l := range logits {
						if l == 0 {
							count++
						}
					}
					require.Equal(t, count, n)
					if m.Done() {
						require.Empty(t, allowed)
						break
					}
					require.NotEmpty(t, allowed, "walk %d step %d", walk, step)
					next := allowed[rng.IntN(len(allowed))]
					require.NoError(t, m.Accept(next))
					require.NoError(t, ref.Accept(next))
				}
			}
		})
	}
	_ = tok
}

// Random walks that end where the grammar allows EOS are JSON objects: encoding/json, which
// no one here wrote, agrees.
func TestJSONWalksAreValidJSON(t *testing.T) {
	tok, v := llama2Vocab(t)
	rng := rand.New(rand.NewPCG(3, 4))
	logits := make([]float32, v.Size())
	finished := 0
	for walk := range 30 {
		m := JSON().NewMatcher(v)
		var ids []int32
		for range 60 {
			if m.Accepting() && (m.Done() || rng.IntN(3) == 0) {
				require.True(t, m.Allows(tok.EOS()))
				require.NoError(t, m.Accept(tok.EOS()))
				text := tok.Decode(ids)
				var obj map[string]any
				require.NoError(t, json.Unmarshal([]byte(text), &obj), "walk %d: %q", walk, text)
				finished++
				break
			}
			clear(logits)
			_, err := m.Mask(logits)
			require.NoError(t, err)
			// Prefer short, closing tokens so that walks end: pick among the allowed tokens
			// of at most 2 bytes half the time.
			var short, all []int32
			for id, l := range logits {
				if l == 0 && int32(id) != tok.EOS() {
					all = append(all, int32(id))
					if len(v.bytes[id]) <= 2 {
						short = append(short, int32(id))
					}
				}
			}
			pick := all
			if len(short) > 0 && rng.IntN(2) == 0 {
				pick = short
			}
			id := pick[rng.IntN(len(pick))]
			require.NoError(t, m.Accept(id))
			ids = append(ids, id)
		}
	}
	t.Logf("%d of 30 walks reached the end", finished)
	assert.Greater(t, finished, 5, "walks that reached the end")
}

// Whatever bytes a fuzzer feeds, a text the JSON grammar accepts as complete is a JSON
// object by encoding/json's reckoning.
func FuzzJSONGrammarIsSound(f *testing.F) {
	for _, s := range []string{`{}`, `{"a": [1, 2.5e-3, true, null, "x\u00e9"]}`, "{\n  \"k\": {\"n\": -0}\n}", `{"a":}`, `[1]`, `{"a":01}`} {
		f.Add(s)
	}
	v := byteVocab()
	f.Fuzz(func(t *testing.T, s string) {
		m := JSON().NewMatcher(v)
		for i := 0; i < len(s); i++ {
			if m.Accept(int32(s[i])) != nil {
				return
			}
		}
		if m.Accepting() {
			var obj map[string]any
			require.NoError(t, json.Unmarshal([]byte(s), &obj), "%q", s)
		}
	})
}

func TestJSONAcceptsEncodingJSONOutput(t *testing.T) {
	values := []any{
		map[string]any{},
		map[string]any{"name": "Ada", "age": 36, "langs": []any{"en", "fr"}, "ok": true, "none": nil},
		map[string]any{"text": "따옴표 \" 역슬래시 \\ 줄바꿈 \n 탭 \t", "n": -12.5e-7, "nested": map[string]any{"a": []any{[]any{}, map[string]any{}}}},
	}
	for _, val := range values {
		for _, indent := range []string{"", "  ", "\t"} {
			b, err := json.MarshalIndent(val, "", indent)
			require.NoError(t, err)
			prefix, complete := matches(t, JSON(), string(b))
			assert.True(t, prefix && complete, "%s", b)
		}
	}
	for _, bad := range []string{`[]`, `"x"`, `{"a" 1}`, `{"a":1,}`, `{'a':1}`, `{"a":01}`, `{"a":1}}`, "{\"a\":\"\x01\"}", `{"a":NaN}`} {
		_, complete := matches(t, JSON(), bad)
		assert.False(t, complete, "%s", bad)
	}
}

// BenchmarkMaskLlama2 masks the LLaMA 2 vocabulary under the JSON grammar at three points of
// a text: "uncached" computes every byte's transition afresh (the reference), "cold" starts a
// Matcher's transition tables empty (the first Mask in a state), "warm" has seen the state
// before (later steps of the same generation); the ratio of warm and cold to uncached is what
// the cache gives.
func BenchmarkMaskLlama2(b *testing.B) {
	_, v := llama2Vocab(b)
	logits := make([]float32, v.Size())
	at := func(b *testing.B, text string) *Matcher {
		m := JSON().NewMatcher(v)
		for i := 0; i < len(text); i++ {
			require.NoError(b, m.Accept(int32(text[i])+3)) // LLaMA 2's byte tokens are <0x00> = 3 on
		}
		return m
	}
	for _, bc := range []struct{ name, text string }{
		{"start", ""},
		{"in-string", `{"answer": "The capital of France is`},
		{"after-value", `{"answer": 42`},
	} {
		for _, mode := range []string{"uncached", "cold", "warm"} {
			b.Run(bc.name+"/"+mode, func(b *testing.B) {
				m := at(b, bc.text)
				m.noCache = mode == "uncached"
				b.ReportAllocs()
				for b.Loop() {
					if mode == "cold" {
						b.StopTimer()
						m = at(b, bc.text)
						b.StartTimer()
					}
					if _, err := m.Mask(logits); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
