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
	TokenLogprobs []*float32           `json:"token_logprobs"` // null: an echoed prompt's first token
	TopLogprobs   []map[string]float32 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"` // bytes of the tokens before each token
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
	if len(b) == 0 && r.tok.IsControl(id) { // BOS in an echoed prompt: "<s>", no text
		return r.tok.Piece(id), b
	}
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

func newCompletionLogprobs() *completionLogprobs {
	return &completionLogprobs{Tokens: []string{}, TokenLogprobs: []*float32{}, TopLogprobs: []map[string]float32{}, TextOffset: []int{}}
}

// appendCompletion adds token id to out with its logprob entry (nil: none, null in JSON, as for
// an echoed prompt's first token), at text offset; it returns the offset after the token.
func (r tokenRenderer) appendCompletion(out *completionLogprobs, id int32, lp *engine.Logprob, offset int) int {
	s, b := r.text(id)
	out.Tokens = append(out.Tokens, s)
	out.TextOffset = append(out.TextOffset, offset)
	if lp == nil {
		out.TokenLogprobs = append(out.TokenLogprobs, nil)
		out.TopLogprobs = append(out.TopLogprobs, nil)
		return offset + len(b)
	}
	v := finite(lp.Logprob)
	out.TokenLogprobs = append(out.TokenLogprobs, &v)
	top := make(map[string]float32, len(lp.Top))
	for _, alt := range lp.Top {
		ts, _ := r.text(alt.Token)
		if _, dup := top[ts]; !dup { // two ids with one surface: the likelier (first) one
			top[ts] = finite(alt.Logprob)
		}
	}
	out.TopLogprobs = append(out.TopLogprobs, top)
	return offset + len(b)
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
