package serve

import (
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/tokenizer"
)

// minLogprob stands for a log probability of −Inf, which JSON cannot carry (OpenAI and vLLM
// send −9999 too).
const minLogprob = -9999

// completionLogprobs is /v1/completions' logprobs object (OpenAI's legacy API).
type completionLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float32            `json:"token_logprobs"`
	TopLogprobs   []map[string]float32 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"` // bytes of the completion before each token
}

// chatLogprobs is /v1/chat/completions' logprobs object.
type chatLogprobs struct {
	Content []chatTokenLogprob `json:"content"`
}

type chatTokenLogprob struct {
	chatTopLogprob
	TopLogprobs []chatTopLogprob `json:"top_logprobs"`
}

type chatTopLogprob struct {
	Token   string  `json:"token"`
	Logprob float32 `json:"logprob"`
	Bytes   []int   `json:"bytes"` // the token's UTF-8 bytes (a byte piece: one byte of a character)
}

// tokenRenderer turns token ids into OpenAI's token strings.
type tokenRenderer struct{ tok *tokenizer.Tokenizer }

// text is the token's surface, or OpenAI's "bytes:\xNN" spelling for a byte that is not a
// character on its own (one byte of a Korean syllable, say), so that every string is valid.
func (r tokenRenderer) text(id int32) (string, []byte) {
	b := r.tok.TokenBytes(id)
	if utf8.Valid(b) {
		return string(b), b
	}
	var sb strings.Builder
	sb.WriteString("bytes:")
	for _, c := range b {
		fmt.Fprintf(&sb, "\\x%02x", c)
	}
	return sb.String(), b
}

func finite(lp float32) float32 {
	if math.IsInf(float64(lp), -1) || lp != lp {
		return minLogprob
	}
	return lp
}

func ints(b []byte) []int {
	out := make([]int, len(b))
	for i, c := range b {
		out[i] = int(c)
	}
	return out
}

// completion builds the legacy logprobs object of lps; offset is the completion's bytes before
// the first of them.
func (r tokenRenderer) completion(lps []*engine.Logprob, offset int) *completionLogprobs {
	out := &completionLogprobs{Tokens: []string{}, TokenLogprobs: []float32{}, TopLogprobs: []map[string]float32{}, TextOffset: []int{}}
	for _, lp := range lps {
		s, b := r.text(lp.Token)
		out.Tokens = append(out.Tokens, s)
		out.TokenLogprobs = append(out.TokenLogprobs, finite(lp.Logprob))
		out.TextOffset = append(out.TextOffset, offset)
		offset += len(b)
		top := make(map[string]float32, len(lp.Top))
		for _, alt := range lp.Top {
			ts, _ := r.text(alt.Token)
			if _, dup := top[ts]; !dup { // two ids with one surface: the likelier (first) one
				top[ts] = finite(alt.Logprob)
			}
		}
		out.TopLogprobs = append(out.TopLogprobs, top)
	}
	return out
}

// chat builds the chat logprobs object of lps.
func (r tokenRenderer) chat(lps []*engine.Logprob) *chatLogprobs {
	out := &chatLogprobs{Content: make([]chatTokenLogprob, 0, len(lps))}
	entry := func(t engine.TokenLogprob) chatTopLogprob {
		s, b := r.text(t.Token)
		return chatTopLogprob{Token: s, Logprob: finite(t.Logprob), Bytes: ints(b)}
	}
	for _, lp := range lps {
		c := chatTokenLogprob{chatTopLogprob: entry(lp.TokenLogprob), TopLogprobs: make([]chatTopLogprob, 0, len(lp.Top))}
		for _, alt := range lp.Top {
			c.TopLogprobs = append(c.TopLogprobs, entry(alt))
		}
		out.Content = append(out.Content, c)
	}
	return out
}
