package serve_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/serve"
)

// lpBody is the part of a response (whole or chunk) the logprobs tests read.
type lpBody struct {
	Choices []struct {
		Text     string `json:"text"`
		Logprobs *struct {
			// /v1/completions
			Tokens        []string             `json:"tokens"`
			TokenLogprobs []*float32           `json:"token_logprobs"`
			TopLogprobs   []map[string]float32 `json:"top_logprobs"`
			TextOffset    []int                `json:"text_offset"`
			// /v1/chat/completions
			Content []chatLP `json:"content"`
		} `json:"logprobs"`
	} `json:"choices"`
	Usage *struct {
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
}

type chatLP struct {
	Token       string  `json:"token"`
	Logprob     float32 `json:"logprob"`
	Bytes       []int   `json:"bytes"`
	TopLogprobs []struct {
		Token   string  `json:"token"`
		Logprob float32 `json:"logprob"`
		Bytes   []int   `json:"bytes"`
	} `json:"top_logprobs"`
}

// lpWhole posts a request and decodes its 200 answer.
func lpWhole(t *testing.T, url string, body map[string]any) lpBody {
	t.Helper()
	resp, out := post(t, url, body)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	var b lpBody
	require.NoError(t, json.Unmarshal(out, &b), string(out))
	return b
}

// lpStream posts the request streamed and merges its chunks' logprobs into one body.
func lpStream(t *testing.T, url string, body map[string]any) lpBody {
	t.Helper()
	body["stream"] = true
	defer delete(body, "stream")
	resp, out := post(t, url, body)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	var all lpBody
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var c lpBody
		require.NoError(t, json.Unmarshal([]byte(data), &c), data)
		if len(c.Choices) == 0 {
			continue
		}
		if all.Choices == nil {
			all.Choices = c.Choices
			if all.Choices[0].Logprobs == nil {
				all.Choices[0].Logprobs = c.Choices[0].Logprobs
			}
			continue
		}
		all.Choices[0].Text += c.Choices[0].Text
		l, m := c.Choices[0].Logprobs, all.Choices[0].Logprobs
		switch {
		case l == nil:
		case m == nil:
			all.Choices[0].Logprobs = l
		default:
			m.Tokens = append(m.Tokens, l.Tokens...)
			m.TokenLogprobs = append(m.TokenLogprobs, l.TokenLogprobs...)
			m.TopLogprobs = append(m.TopLogprobs, l.TopLogprobs...)
			m.TextOffset = append(m.TextOffset, l.TextOffset...)
			m.Content = append(m.Content, l.Content...)
		}
	}
	return all
}

// /v1/completions with logprobs: n: one entry per generated token, whose strings make the text,
// whose offsets count the text before them, with n alternatives each; greedy decoding picks
// the first alternative. The streamed chunks carry the same entries.
func TestCompletionLogprobs(t *testing.T) {
	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	_, _, ts := start(t, e, engine.SchedulerOptions{MaxSeqs: 4}, serve.Options{})
	body := map[string]any{"prompt": "Once upon a time", "max_tokens": 40, "temperature": 0, "logprobs": 3}
	whole := lpWhole(t, ts.URL+"/v1/completions", body)
	c := whole.Choices[0]
	lp := c.Logprobs
	require.NotNil(t, lp)
	n := whole.Usage.CompletionTokens
	require.Len(t, lp.Tokens, n)
	require.Len(t, lp.TokenLogprobs, n)
	require.Len(t, lp.TopLogprobs, n)
	require.Len(t, lp.TextOffset, n)
	require.Equal(t, c.Text, strings.Join(lp.Tokens, ""))
	for i := range n {
		require.Equal(t, len(strings.Join(lp.Tokens[:i], "")), lp.TextOffset[i])
		require.LessOrEqual(t, *lp.TokenLogprobs[i], float32(0))
		require.Len(t, lp.TopLogprobs[i], 3)
		best := float32(-1e9)
		for _, v := range lp.TopLogprobs[i] {
			best = max(best, v)
		}
		require.Equal(t, best, lp.TopLogprobs[i][lp.Tokens[i]], "token %d: greedy picks the likeliest", i)
		require.Equal(t, *lp.TokenLogprobs[i], lp.TopLogprobs[i][lp.Tokens[i]])
	}
	require.Equal(t, whole.Choices[0].Logprobs, lpStream(t, ts.URL+"/v1/completions", body).Choices[0].Logprobs)

	// Without logprobs the field is null.
	delete(body, "logprobs")
	require.Nil(t, lpWhole(t, ts.URL+"/v1/completions", body).Choices[0].Logprobs)
}

// /v1/chat/completions with logprobs: true and top_logprobs: one entry per generated token
// with its bytes; streamed chunks carry the same entries.
func TestChatLogprobs(t *testing.T) {
	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	_, _, ts := start(t, e, engine.SchedulerOptions{MaxSeqs: 4}, serve.Options{})
	body := map[string]any{"messages": []map[string]string{{"role": "user", "content": "Tell me a story"}},
		"max_tokens": 30, "temperature": 0, "logprobs": true, "top_logprobs": 2}
	whole := lpWhole(t, ts.URL+"/v1/chat/completions", body)
	lp := whole.Choices[0].Logprobs
	require.NotNil(t, lp)
	require.Len(t, lp.Content, whole.Usage.CompletionTokens)
	for i, c := range lp.Content {
		var b []byte
		for _, x := range c.Bytes {
			b = append(b, byte(x))
		}
		require.Equal(t, c.Token, string(b))
		require.Len(t, c.TopLogprobs, 2)
		require.Equal(t, c.Token, c.TopLogprobs[0].Token, "token %d: greedy picks the likeliest", i)
		require.Equal(t, c.Logprob, c.TopLogprobs[0].Logprob)
		require.GreaterOrEqual(t, c.TopLogprobs[0].Logprob, c.TopLogprobs[1].Logprob)
	}
	require.Equal(t, lp.Content, lpStream(t, ts.URL+"/v1/chat/completions", body).Choices[0].Logprobs.Content)
}

// A byte-fallback token (one byte of a Korean syllable) is shown as OpenAI spells it,
// "bytes:\xNN", with that one byte in the chat form's bytes.
func TestLogprobsByteTokens(t *testing.T) {
	e, _ := loadEngine(t, "tiny-random/llama-2-tiny-random.gguf")
	_, _, ts := start(t, e, engine.SchedulerOptions{MaxSeqs: 4}, serve.Options{})
	seen := 0
	for seed := range 4 {
		body := map[string]any{"messages": []map[string]string{{"role": "user", "content": "안녕하세요, 반갑습니다"}},
			"max_tokens": 60, "temperature": 1.5, "seed": seed, "logprobs": true}
		for _, c := range lpWhole(t, ts.URL+"/v1/chat/completions", body).Choices[0].Logprobs.Content {
			if strings.HasPrefix(c.Token, "bytes:") {
				require.Len(t, c.Bytes, 1)
				require.Equal(t, fmt.Sprintf("bytes:\\x%02x", c.Bytes[0]), c.Token)
				require.GreaterOrEqual(t, c.Bytes[0], 0x80)
				seen++
			}
		}
	}
	t.Logf("%d byte tokens", seen)
	require.Positive(t, seen)
}

// echo returns the prompt before the completion; with logprobs, the prompt's tokens come first
// (BOS as "<s>", whose logprob is null: nothing precedes it), then the completion's, whose
// entries are those of the same request without echo. This is what lm-eval-harness's
// local-completions loglikelihood sends: token ids (a batch of one), echo, logprobs 1,
// max_tokens 1; it reads token_logprobs[ctxlen:-1].
func TestCompletionEcho(t *testing.T) {
	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	_, _, ts := start(t, e, engine.SchedulerOptions{MaxSeqs: 4}, serve.Options{})
	url := ts.URL + "/v1/completions"
	const prompt = "Once upon a time, there was a little girl"
	plain := lpWhole(t, url, map[string]any{"prompt": prompt, "max_tokens": 8, "temperature": 0, "logprobs": 2})
	body := map[string]any{"prompt": prompt, "max_tokens": 8, "temperature": 0, "logprobs": 2, "echo": true}
	echo := lpWhole(t, url, body)
	ids := e.Tokenizer.Encode(prompt, true)
	c, lp := echo.Choices[0], echo.Choices[0].Logprobs
	require.Equal(t, prompt+plain.Choices[0].Text, c.Text)
	require.Len(t, lp.Tokens, len(ids)+len(plain.Choices[0].Logprobs.Tokens))
	require.Equal(t, "<s>", lp.Tokens[0])
	require.Nil(t, lp.TokenLogprobs[0])
	require.Nil(t, lp.TopLogprobs[0])
	for k := 1; k < len(ids); k++ {
		require.Equal(t, strings.ReplaceAll(e.Tokenizer.Piece(ids[k]), "▁", " "), lp.Tokens[k])
		require.NotNil(t, lp.TokenLogprobs[k])
		require.LessOrEqual(t, *lp.TokenLogprobs[k], float32(0))
		require.Len(t, lp.TopLogprobs[k], 2)
	}
	// The same values up to rounding: the echo request's last prompt row went through the LM
	// head with the other prompt rows, the plain one's alone.
	for k, v := range plain.Choices[0].Logprobs.TokenLogprobs {
		require.InDelta(t, *v, *lp.TokenLogprobs[len(ids)+k], 1e-5)
	}
	require.Equal(t, plain.Choices[0].Logprobs.Tokens, lp.Tokens[len(ids):])
	// Streamed: the same text and entries, the prompt in the first chunk.
	streamed := lpStream(t, url, body)
	require.Equal(t, echo.Choices[0].Text, streamed.Choices[0].Text)
	require.Equal(t, lp.Tokens, streamed.Choices[0].Logprobs.Tokens)
	require.Equal(t, lp.TextOffset, streamed.Choices[0].Logprobs.TextOffset)
	for k, v := range lp.TokenLogprobs {
		if v == nil {
			require.Nil(t, streamed.Choices[0].Logprobs.TokenLogprobs[k])
		} else {
			require.InDelta(t, *v, *streamed.Choices[0].Logprobs.TokenLogprobs[k], 1e-5)
		}
	}

	// lm-eval's request: ids without BOS, a batch of one, max_tokens 1.
	ctx := e.Tokenizer.Encode(prompt, false)
	lm := lpWhole(t, url, map[string]any{"prompt": [][]int32{ctx}, "max_tokens": 1, "temperature": 0, "logprobs": 1, "echo": true})
	l := lm.Choices[0].Logprobs
	require.Len(t, l.Tokens, len(ctx)+1)
	require.Nil(t, l.TokenLogprobs[0])
	for k := 1; k < len(ctx); k++ {
		require.NotNil(t, l.TokenLogprobs[k], "position %d", k)
	}
	// The generated token (what lm-eval slices off with [:-1]) has its one alternative.
	require.Len(t, l.TopLogprobs[len(ctx)], 1)

	// A batch of two: each choice echoes its own prompt with its own prompt logprobs, the same
	// as the request of one.
	other := e.Tokenizer.Encode("Lily and Tom", false)
	two := lpWhole(t, url, map[string]any{"prompt": [][]int32{ctx, other}, "max_tokens": 1, "temperature": 0, "logprobs": 1, "echo": true})
	require.Len(t, two.Choices, 2)
	require.Equal(t, l.Tokens, two.Choices[0].Logprobs.Tokens)
	for k, v := range l.TokenLogprobs {
		if v == nil {
			require.Nil(t, two.Choices[0].Logprobs.TokenLogprobs[k])
		} else {
			require.InDelta(t, *v, *two.Choices[0].Logprobs.TokenLogprobs[k], 1e-5)
		}
	}
	require.Len(t, two.Choices[1].Logprobs.Tokens, len(other)+1)
	require.Nil(t, two.Choices[1].Logprobs.TokenLogprobs[0])
	require.NotNil(t, two.Choices[1].Logprobs.TokenLogprobs[1])
	require.True(t, strings.HasPrefix(two.Choices[1].Text, "Lily and Tom"), two.Choices[1].Text)
}

// A batch of prompts is one choice each, as the same prompts one by one, whole or streamed;
// usage sums them.
func TestCompletionBatch(t *testing.T) {
	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	_, _, ts := start(t, e, engine.SchedulerOptions{MaxSeqs: 4}, serve.Options{})
	url := ts.URL + "/v1/completions"
	prompts := []string{"Once upon a time", "Lily and Tom", "The cat"}
	var want []string
	total := 0
	for _, p := range prompts {
		resp, out := post(t, url, map[string]any{"prompt": p, "max_tokens": 12, "temperature": 0})
		require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
		var c completion
		require.NoError(t, json.Unmarshal(out, &c))
		want = append(want, c.Choices[0].Text)
		total += c.Usage.TotalTokens
	}
	resp, out := post(t, url, map[string]any{"prompt": prompts, "max_tokens": 12, "temperature": 0})
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	var c completion
	require.NoError(t, json.Unmarshal(out, &c))
	require.Len(t, c.Choices, len(prompts))
	for i, ch := range c.Choices {
		require.Equal(t, i, ch.Index)
		require.Equal(t, want[i], ch.Text, "prompt %d", i)
	}
	require.Equal(t, total, c.Usage.TotalTokens)

	// Streamed: each chunk names its choice; each choice's chunks make its whole answer.
	body := map[string]any{"prompt": prompts, "max_tokens": 12, "temperature": 0, "stream": true,
		"stream_options": map[string]any{"include_usage": true}}
	texts, usage := streamChoices(t, url, body)
	require.Equal(t, want, texts)
	require.Equal(t, total, usage)
	resp, out = post(t, url, `{"prompt":[ ]}`)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, string(out))
	require.Contains(t, string(out), "empty array of token ids")
}

// n completions of one prompt: n choices (index 0…n−1), choice k sampled with seed+k — the
// same answers as n single requests with those seeds, whole or streamed — for both endpoints;
// greedy gives n equal answers.
func TestChoicesN(t *testing.T) {
	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	_, _, ts := start(t, e, engine.SchedulerOptions{MaxSeqs: 4}, serve.Options{})
	msgs := []map[string]string{{"role": "user", "content": "Tell me a story"}}
	for _, tc := range []struct {
		path string
		body map[string]any
	}{
		{"/v1/completions", map[string]any{"prompt": "Once upon a time", "max_tokens": 16, "temperature": 1, "seed": 7}},
		{"/v1/chat/completions", map[string]any{"messages": msgs, "max_tokens": 16, "temperature": 1, "seed": 7}},
	} {
		t.Run(tc.path, func(t *testing.T) {
			text := func(c completion, i int) string {
				if c.Choices[i].Message != nil {
					return c.Choices[i].Message.Content
				}
				return c.Choices[i].Text
			}
			var want []string
			total := 0
			for k := range 3 {
				tc.body["seed"] = 7 + k
				resp, out := post(t, ts.URL+tc.path, tc.body)
				require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
				var c completion
				require.NoError(t, json.Unmarshal(out, &c))
				want = append(want, text(c, 0))
				total += c.Usage.CompletionTokens
			}
			require.NotEqual(t, want[0], want[1], "different seeds should give different samples")
			tc.body["seed"], tc.body["n"] = 7, 3
			resp, out := post(t, ts.URL+tc.path, tc.body)
			require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
			var c completion
			require.NoError(t, json.Unmarshal(out, &c))
			require.Len(t, c.Choices, 3)
			for i := range c.Choices {
				require.Equal(t, i, c.Choices[i].Index)
				require.Equal(t, want[i], text(c, i), "choice %d", i)
			}
			require.Equal(t, total, c.Usage.CompletionTokens)

			tc.body["stream"] = true
			tc.body["stream_options"] = map[string]any{"include_usage": true}
			texts, _ := streamChoices(t, ts.URL+tc.path, tc.body)
			require.Equal(t, want, texts, "streamed choices")
			delete(tc.body, "stream")
			delete(tc.body, "stream_options")

			tc.body["temperature"] = 0
			resp, out = post(t, ts.URL+tc.path, tc.body)
			require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
			require.NoError(t, json.Unmarshal(out, &c))
			require.Equal(t, text(c, 0), text(c, 2), "greedy: n equal answers")
		})
	}
}

// streamChoices posts a streamed request and returns each choice's text (chunks joined by
// index; every chunk valid SSE, each choice ending with a finish reason) and the usage chunk's
// total tokens.
func streamChoices(t *testing.T, url string, body map[string]any) ([]string, int) {
	t.Helper()
	_, s := postStream(t, url, body)
	require.True(t, s.done)
	var texts []string
	finished := map[int]bool{}
	for _, c := range s.chunks {
		for _, ch := range c.Choices {
			for len(texts) <= ch.Index {
				texts = append(texts, "")
			}
			if ch.Delta != nil && ch.Delta.Content != nil {
				texts[ch.Index] += *ch.Delta.Content
			} else {
				texts[ch.Index] += ch.Text
			}
			if ch.FinishReason != nil {
				require.False(t, finished[ch.Index], "choice %d finished twice", ch.Index)
				finished[ch.Index] = true
			}
		}
	}
	require.Len(t, finished, len(texts))
	require.NotNil(t, s.usage)
	return texts, s.usage.Usage.TotalTokens
}
