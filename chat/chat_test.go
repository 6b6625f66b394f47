package chat_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/chat"
	"github.com/llamacu/llamacu/tokenizer"
)

var llama2Path = filepath.Join("..", "..", "shared", "testdata", "llama2-tokenizer", "tokenizer.model")

// llama2 loads the LLaMA 2 tokenizer.model from the shared test data, skipping when it is absent.
func llama2(tb testing.TB) *tokenizer.Tokenizer {
	tb.Helper()
	if _, err := os.Stat(llama2Path); err != nil {
		tb.Skipf("test data not found: %s", llama2Path)
	}
	tok, err := tokenizer.LoadModelProto(llama2Path)
	require.NoError(tb, err)
	return tok
}

// reference is testdata/llama2-chat-ids.json, written by testdata/gen.mjs with llama.cpp's
// tokenizer from Meta's chat_completion prompt strings.
type reference struct {
	Tokenizer struct {
		Implementation string `json:"implementation"`
		BOS            int32  `json:"bos"`
		EOS            int32  `json:"eos"`
	} `json:"tokenizer"`
	Cases []struct {
		Name     string         `json:"name"`
		Messages []chat.Message `json:"messages"`
		Segments []struct {
			Text string  `json:"text"`
			EOS  bool    `json:"eos"`
			IDs  []int32 `json:"ids"`
		} `json:"segments"`
		IDs []int32 `json:"ids"`
	} `json:"cases"`
}

func loadReference(tb testing.TB) reference {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "llama2-chat-ids.json"))
	require.NoError(tb, err)
	var ref reference
	require.NoError(tb, json.Unmarshal(b, &ref))
	require.NotEmpty(tb, ref.Cases)
	return ref
}

// TestEncodeMatchesLlamaCpp compares Encode with llama.cpp's tokenization of the prompt strings
// Meta's reference builds (1, 2 and 3 turns, with and without a system prompt, and edge cases).
func TestEncodeMatchesLlamaCpp(t *testing.T) {
	tok := llama2(t)
	ref := loadReference(t)
	require.Equal(t, tok.BOS(), ref.Tokenizer.BOS)
	require.Equal(t, tok.EOS(), ref.Tokenizer.EOS)
	for _, tc := range ref.Cases {
		t.Run(tc.Name, func(t *testing.T) {
			// Each segment alone: tells a tokenizer difference from a format difference.
			for i, seg := range tc.Segments {
				require.Equal(t, seg.IDs, tok.Encode(seg.Text, false), "segment %d %q", i, seg.Text)
			}
			got, err := chat.Encode(tok, tc.Messages)
			require.NoError(t, err)
			require.Equal(t, tc.IDs, got)
			// Fit with room to spare keeps everything.
			kept, ids, err := chat.Fit(tok, tc.Messages, len(tc.IDs))
			require.NoError(t, err)
			require.Equal(t, tc.Messages, kept)
			require.Equal(t, tc.IDs, ids)
		})
	}
}

// The reference cases cover the turn counts the format distinguishes.
func TestReferenceCoversTurns(t *testing.T) {
	ref := loadReference(t)
	seen := map[string]bool{}
	for _, tc := range ref.Cases {
		sys := tc.Messages[0].Role == chat.System
		users := 0
		for _, m := range tc.Messages {
			if m.Role == chat.User {
				users++
			}
		}
		seen[fmt.Sprintf("%d/%v", users, sys)] = true
	}
	for _, k := range []string{"1/false", "1/true", "2/false", "2/true", "3/false", "3/true"} {
		require.True(t, seen[k], "no reference case with turns/system = %s", k)
	}
}

// byteTok is a stand-in tokenizer: one id per byte (after a dummy-prefix space), BOS 1, EOS 2.
type byteTok struct{}

func (byteTok) Encode(text string, addBOS bool) []int32 {
	var ids []int32
	if addBOS {
		ids = append(ids, 1)
	}
	if text == "" {
		return ids
	}
	for _, b := range []byte(" " + text) {
		ids = append(ids, int32(b)+3)
	}
	return ids
}
func (byteTok) BOS() int32 { return 1 }
func (byteTok) EOS() int32 { return 2 }

func msgs(pairs ...string) []chat.Message {
	var out []chat.Message
	for i := 0; i+1 < len(pairs); i += 2 {
		out = append(out, chat.Message{Role: chat.Role(pairs[i]), Content: pairs[i+1]})
	}
	return out
}

func TestRefusals(t *testing.T) {
	cases := []struct {
		name string
		msgs []chat.Message
		want error
	}{
		{"empty", nil, chat.ErrOrder},
		{"system alone", msgs("system", "s"), chat.ErrOrder},
		{"system not first", msgs("user", "a", "system", "s"), chat.ErrOrder},
		{"system second after system", msgs("system", "s", "system", "t", "user", "u"), chat.ErrOrder},
		{"system mid-conversation", msgs("user", "a", "assistant", "b", "system", "s", "user", "c"), chat.ErrOrder},
		{"assistant first", msgs("assistant", "a", "user", "b"), chat.ErrOrder},
		{"assistant after system", msgs("system", "s", "assistant", "a", "user", "b"), chat.ErrOrder},
		{"two users", msgs("user", "a", "user", "b"), chat.ErrOrder},
		{"two assistants", msgs("user", "a", "assistant", "b", "assistant", "c", "user", "d"), chat.ErrOrder},
		{"ends with assistant", msgs("user", "a", "assistant", "b"), chat.ErrOrder},
		{"unknown role", msgs("user", "a", "tool", "b", "user", "c"), chat.ErrOrder},
		{"[INST] in user", msgs("user", "hi [INST] x"), chat.ErrUnsafe},
		{"[/INST] in user", msgs("user", "hi [/INST] x"), chat.ErrUnsafe},
		{"<<SYS>> in user", msgs("user", "<<SYS>>"), chat.ErrUnsafe},
		{"<</SYS>> in system", msgs("system", "a <</SYS>> b", "user", "u"), chat.ErrUnsafe},
		{"[INST] in assistant", msgs("user", "a", "assistant", "[INST]", "user", "b"), chat.ErrUnsafe},
		{"tag in an earlier turn", msgs("user", "[/INST]", "assistant", "b", "user", "c"), chat.ErrUnsafe},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.ErrorIs(t, chat.Validate(tc.msgs), tc.want)
			_, err := chat.Encode(byteTok{}, tc.msgs)
			require.ErrorIs(t, err, tc.want)
			_, _, err = chat.Fit(byteTok{}, tc.msgs, 1<<20)
			require.ErrorIs(t, err, tc.want)
		})
	}
}

// Literal "<s>" and "</s>" are text: with the real tokenizer they never become BOS or EOS ids.
func TestLiteralBOSEOSIsText(t *testing.T) {
	tok := llama2(t)
	m := msgs("system", "</s><s>", "user", "<s>[INS]</s>", "assistant", "</s>", "user", "<s>")
	ids, err := chat.Encode(tok, m)
	require.NoError(t, err)
	var bos, eos int
	for _, id := range ids {
		switch id {
		case tok.BOS():
			bos++
		case tok.EOS():
			eos++
		}
	}
	require.Equal(t, 2, bos, "one BOS per segment")
	require.Equal(t, 1, eos, "one EOS per completed turn")
}

// conversation returns a system prompt, n (user, assistant) turns and a last user message.
func conversation(n int) []chat.Message {
	m := msgs("system", "You are a pirate. Always answer in pirate speak, arr!")
	for i := range n {
		m = append(m,
			chat.Message{Role: chat.User, Content: fmt.Sprintf("Question %d: what is %d plus %d?", i, i, i)},
			chat.Message{Role: chat.Assistant, Content: fmt.Sprintf("Arr, %d plus %d be %d, matey.", i, i, 2*i)})
	}
	return append(m, chat.Message{Role: chat.User, Content: "And what is the capital of France?"})
}

// Fit keeps the system prompt and the newest turns that fit, as many as fit, and the result is
// exactly the encoding of the messages kept.
func TestFitKeepsSystemAndNewestTurns(t *testing.T) {
	for _, name := range []string{"bytes", "llama2"} {
		t.Run(name, func(t *testing.T) {
			var tok chat.Tokenizer = byteTok{}
			if name == "llama2" {
				tok = llama2(t)
			}
			for _, sys := range []bool{true, false} {
				all := conversation(6)
				if !sys {
					all = all[1:]
				}
				full, err := chat.Encode(tok, all)
				require.NoError(t, err)
				// min: the system prompt (if any) and the last message alone.
				minMsgs := all[len(all)-1:]
				if sys {
					minMsgs = []chat.Message{all[0], all[len(all)-1]}
				}
				minIDs, err := chat.Encode(tok, minMsgs)
				require.NoError(t, err)
				for budget := len(minIDs); budget <= len(full)+1; budget++ {
					kept, ids, err := chat.Fit(tok, all, budget)
					require.NoError(t, err, "budget %d", budget)
					require.LessOrEqual(t, len(ids), budget)
					want, err := chat.Encode(tok, kept)
					require.NoError(t, err)
					require.Equal(t, want, ids, "budget %d", budget)
					// kept is the system prompt plus a suffix of the rest.
					rest := all
					if sys {
						require.Equal(t, all[0], kept[0], "budget %d: system prompt dropped", budget)
						rest, kept = all[1:], kept[1:]
					}
					dropped := len(rest) - len(kept)
					require.Equal(t, 0, dropped%2, "whole turns are dropped")
					require.Equal(t, rest[dropped:], kept)
					// Maximal: keeping one more turn would not fit.
					if dropped > 0 {
						more := append([]chat.Message{}, rest[dropped-2:]...)
						if sys {
							more = append([]chat.Message{all[0]}, more...)
						}
						moreIDs, err := chat.Encode(tok, more)
						require.NoError(t, err)
						require.Greater(t, len(moreIDs), budget, "budget %d: dropped a turn that fits", budget)
					}
				}
				_, _, err = chat.Fit(tok, all, len(minIDs)-1)
				require.ErrorIs(t, err, chat.ErrTooLong)
			}
		})
	}
}

// Over 50 turns of history the system prompt holds: Fit keeps it at the start of the prompt.
func TestSystemPromptSurvivesLongConversation(t *testing.T) {
	tok := llama2(t)
	all := conversation(50)
	full, err := chat.Encode(tok, all)
	require.NoError(t, err)
	const budget = 256
	require.Greater(t, len(full), 4*budget)
	kept, ids, err := chat.Fit(tok, all, budget)
	require.NoError(t, err)
	require.LessOrEqual(t, len(ids), budget)
	require.Equal(t, all[0], kept[0])
	require.Equal(t, all[len(all)-1], kept[len(kept)-1])
	require.Less(t, len(kept), len(all))
	require.Greater(t, len(kept), 3, "some history is kept")
	text := tok.Decode(ids)
	require.True(t, strings.HasPrefix(text, "[INST] <<SYS>>\n"+all[0].Content+"\n<</SYS>>\n\n"+kept[1].Content+" [/INST]"), text)
	require.Equal(t, 1, strings.Count(text, "<<SYS>>"))
	require.True(t, strings.HasSuffix(text, "[INST] And what is the capital of France? [/INST]"), text)
}
