package serve_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/chat"
	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/sample"
	"github.com/llamacu/llamacu/serve"
)

func shared(tb testing.TB, rel string) string {
	tb.Helper()
	p := filepath.Join("..", "..", "shared", "testdata", rel)
	if _, err := os.Stat(p); err != nil {
		tb.Skipf("test data not found: %s", p)
	}
	return p
}

// gateBackend lets a test hold the scheduler inside a forward step: Lock pauses the next step.
type gateBackend struct {
	model.Backend
	sync.Mutex
}

func (g *gateBackend) Read(dst []float32, x model.Buffer, n int) error {
	g.Lock()
	g.Unlock()
	return g.Backend.Read(dst, x, n)
}

// loadEngine loads a shared test model on a one-thread CPU backend behind a gate.
func loadEngine(tb testing.TB, rel string) (*engine.Engine, *gateBackend) {
	tb.Helper()
	path := shared(tb, rel)
	g := &gateBackend{Backend: cpu.New(cpu.Options{Threads: 1})}
	e, err := engine.Load(engine.Options{ModelPath: path, Backend: g, CloseBackend: true})
	require.NoError(tb, err)
	tb.Cleanup(func() { e.Close() })
	return e, g
}

// start runs a scheduler and an HTTP server over e (compute references with Engine.Generate
// before: the backend serves one goroutine at a time).
func start(tb testing.TB, e *engine.Engine, sopts engine.SchedulerOptions, opts serve.Options) (*engine.Scheduler, *serve.Server, *httptest.Server) {
	tb.Helper()
	sched, err := engine.NewScheduler(e, sopts)
	require.NoError(tb, err)
	srv := serve.New(sched, e, opts)
	ts := httptest.NewServer(srv)
	tb.Cleanup(func() {
		ts.Close()
		require.NoError(tb, sched.Close(context.Background()))
	})
	return sched, srv, ts
}

// reference is Engine.Generate's greedy output.
type reference struct {
	text   string
	tokens int
	reason string // OpenAI finish reason
}

func generate(tb testing.TB, e *engine.Engine, req engine.Request) reference {
	tb.Helper()
	var sb strings.Builder
	n := 0
	st, err := e.Generate(context.Background(), req, func(id int32, s string) error {
		if id >= 0 {
			n++
		}
		sb.WriteString(s)
		return nil
	})
	require.NoError(tb, err)
	reason := "length"
	if st.StopReason == "eos" {
		reason = "stop"
	}
	return reference{sb.String(), n, reason}
}

func post(tb testing.TB, url string, body any, header ...string) (*http.Response, []byte) {
	tb.Helper()
	var b []byte
	switch v := body.(type) {
	case string:
		b = []byte(v)
	case []byte:
		b = v
	default:
		var err error
		b, err = json.Marshal(v)
		require.NoError(tb, err)
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	require.NoError(tb, err)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(tb, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(tb, err)
	return resp, out
}

// completion is the subset of the response bodies the tests read (both endpoints, whole or chunk).
type completion struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Text    string `json:"text"`
		Message *struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"message"`
		Delta *struct {
			Role    string  `json:"role"`
			Content *string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
		Index        int     `json:"index"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
	Error *struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    string `json:"code"`
	} `json:"error"`
}

// streamed is one SSE response read to its end.
type streamed struct {
	chunks []completion
	text   string // the content of every chunk, concatenated
	finish string
	usage  *completion
	done   bool // "data: [DONE]" seen
}

// readSSE parses server-sent events, checking that every event is "data: …" followed by an
// empty line and that every chunk's text is valid UTF-8 on its own.
func readSSE(tb testing.TB, r io.Reader) streamed {
	tb.Helper()
	var s streamed
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		require.False(tb, s.done, "data after [DONE]: %q", line)
		data, ok := strings.CutPrefix(line, "data: ")
		require.True(tb, ok, "not an SSE data line: %q", line)
		if data == "[DONE]" {
			s.done = true
			continue
		}
		var c completion
		require.NoError(tb, json.Unmarshal([]byte(data), &c), data)
		require.Nil(tb, c.Error, "error event: %s", data)
		s.chunks = append(s.chunks, c)
		if c.Usage != nil {
			s.usage = &c
		}
		for _, ch := range c.Choices {
			piece := ch.Text
			if ch.Delta != nil && ch.Delta.Content != nil {
				piece = *ch.Delta.Content
			}
			require.True(tb, utf8.ValidString(piece), "chunk splits a UTF-8 character: %q", piece)
			s.text += piece
			if ch.FinishReason != nil {
				s.finish = *ch.FinishReason
			}
		}
	}
	require.NoError(tb, sc.Err())
	return s
}

func postStream(tb testing.TB, url string, body any, header ...string) (*http.Response, streamed) {
	tb.Helper()
	b, err := json.Marshal(body)
	require.NoError(tb, err)
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	require.NoError(tb, err)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(tb, err)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		out, _ := io.ReadAll(resp.Body)
		tb.Fatalf("status %d: %s", resp.StatusCode, out)
	}
	require.Equal(tb, "text/event-stream", resp.Header.Get("Content-Type"))
	return resp, readSSE(tb, resp.Body)
}

var prompts = []string{"Once upon a time", "", "Lily and Tom went to the park. They saw", "The cat"}

// Greedy completions through HTTP equal Engine.Generate, streamed or not.
func TestCompletionsMatchGenerate(t *testing.T) {
	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	refs := make([]reference, len(prompts))
	for i, p := range prompts {
		refs[i] = generate(t, e, engine.Request{Prompt: p, MaxTokens: 60, Sampling: sample.GreedyParams()})
	}
	_, _, ts := start(t, e, engine.SchedulerOptions{MaxSeqs: 4}, serve.Options{ModelName: "stories260K"})
	for i, p := range prompts {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			body := map[string]any{"model": "whatever", "prompt": p, "max_tokens": 60, "temperature": 0}
			resp, out := post(t, ts.URL+"/v1/completions", body)
			require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
			var c completion
			require.NoError(t, json.Unmarshal(out, &c))
			require.Equal(t, "text_completion", c.Object)
			require.Equal(t, "stories260K", c.Model)
			require.True(t, strings.HasPrefix(c.ID, "cmpl-"))
			require.Len(t, c.Choices, 1)
			require.Equal(t, refs[i].text, c.Choices[0].Text)
			require.Equal(t, refs[i].reason, *c.Choices[0].FinishReason)
			nPrompt := len(e.Tokenizer.Encode(p, true))
			require.Equal(t, nPrompt, c.Usage.PromptTokens)
			require.Equal(t, refs[i].tokens, c.Usage.CompletionTokens)
			require.Equal(t, nPrompt+refs[i].tokens, c.Usage.TotalTokens)

			body["stream"] = true
			body["stream_options"] = map[string]any{"include_usage": true}
			_, s := postStream(t, ts.URL+"/v1/completions", body)
			require.True(t, s.done)
			require.Equal(t, refs[i].text, s.text)
			require.Equal(t, refs[i].reason, s.finish)
			require.NotNil(t, s.usage)
			require.Empty(t, s.usage.Choices)
			require.Equal(t, *c.Usage, *s.usage.Usage)
			for _, ch := range s.chunks {
				require.Equal(t, s.chunks[0].ID, ch.ID, "one id per stream")
			}
		})
	}
	// Without max_tokens, a completion stops after 16 tokens (OpenAI's default).
	resp, out := post(t, ts.URL+"/v1/completions", map[string]any{"prompt": "Once upon a time", "temperature": 0})
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	var c completion
	require.NoError(t, json.Unmarshal(out, &c))
	require.Equal(t, 16, c.Usage.CompletionTokens)
	// Token ids as the prompt, verbatim.
	ids := e.Tokenizer.Encode("Once upon a time", true)
	resp, out = post(t, ts.URL+"/v1/completions", map[string]any{"prompt": ids, "temperature": 0, "max_tokens": 60})
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	require.NoError(t, json.Unmarshal(out, &c))
	require.Equal(t, refs[0].text, c.Choices[0].Text)
}

// frequency_penalty and presence_penalty change what is generated, exactly as the engine does
// with the same penalties over the last 64 tokens (llama.cpp's server).
func TestPenalties(t *testing.T) {
	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	const prompt = "Once upon a time"
	greedy := generate(t, e, engine.Request{Prompt: prompt, MaxTokens: 60, Sampling: sample.GreedyParams()})
	_, _, ts := start(t, e, engine.SchedulerOptions{MaxSeqs: 2}, serve.Options{})
	for _, tc := range []struct {
		field      string
		value      float64
		freq, pres float32
	}{{"frequency_penalty", 1.5, 1.5, 0}, {"presence_penalty", 2, 0, 2}} {
		t.Run(tc.field, func(t *testing.T) {
			sp := sample.GreedyParams()
			sp.FrequencyPenalty, sp.PresencePenalty, sp.RepeatLastN = tc.freq, tc.pres, 64
			want := generate(t, e, engine.Request{Prompt: prompt, MaxTokens: 60, Sampling: sp})
			require.NotEqual(t, greedy.text, want.text, "the penalty should change stories260K's greedy text")
			resp, out := post(t, ts.URL+"/v1/completions", map[string]any{"prompt": prompt, "max_tokens": 60, "temperature": 0, tc.field: tc.value})
			require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
			var c completion
			require.NoError(t, json.Unmarshal(out, &c))
			require.Equal(t, want.text, c.Choices[0].Text)
		})
	}
}

// logit_bias: −100 on greedy's first token makes another the first, and the answer is the
// engine's with the same bias; keys outside the vocabulary or values outside ±100 are 400s.
func TestLogitBias(t *testing.T) {
	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	const prompt = "Once upon a time"
	plain := e.Tokenizer.Encode(prompt, true)
	var first int32 = -1
	_, err := e.Generate(context.Background(), engine.Request{PromptIDs: plain, MaxTokens: 1, Sampling: sample.GreedyParams()},
		func(id int32, _ string) error {
			if first < 0 {
				first = id
			}
			return nil
		})
	require.NoError(t, err)
	sp := sample.GreedyParams()
	sp.LogitBias = map[int32]float32{first: -100}
	want := generate(t, e, engine.Request{PromptIDs: plain, MaxTokens: 20, Sampling: sp})
	_, _, ts := start(t, e, engine.SchedulerOptions{MaxSeqs: 2}, serve.Options{})
	body := map[string]any{"prompt": prompt, "max_tokens": 20, "temperature": 0, "logit_bias": map[string]float64{strconv.Itoa(int(first)): -100}}
	resp, out := post(t, ts.URL+"/v1/completions", body)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	var c completion
	require.NoError(t, json.Unmarshal(out, &c))
	require.Equal(t, want.text, c.Choices[0].Text)
	require.False(t, strings.HasPrefix(c.Choices[0].Text, e.Tokenizer.Decode([]int32{first})), "the banned token came first")
	for _, bad := range []map[string]float64{{"99999": 1}, {"x": 1}, {"-3": 1}, {"5": 101}} {
		body["logit_bias"] = bad
		resp, out := post(t, ts.URL+"/v1/completions", body)
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, string(out))
		require.Contains(t, string(out), "logit_bias")
	}
}

// ignore_eos (vLLM's): max_tokens tokens whatever the model samples — what serving benchmarks
// send for fixed output lengths.
func TestIgnoreEOS(t *testing.T) {
	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	_, _, ts := start(t, e, engine.SchedulerOptions{MaxSeqs: 2}, serve.Options{})
	body := map[string]any{"prompt": "Once upon a time", "max_tokens": 400, "temperature": 0}
	resp, out := post(t, ts.URL+"/v1/completions", body)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	var c completion
	require.NoError(t, json.Unmarshal(out, &c))
	require.Equal(t, "stop", *c.Choices[0].FinishReason, "the test needs a story that ends before 400 tokens")
	require.Less(t, c.Usage.CompletionTokens, 400)
	body["ignore_eos"] = true
	resp, out = post(t, ts.URL+"/v1/completions", body)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	require.NoError(t, json.Unmarshal(out, &c))
	require.Equal(t, "length", *c.Choices[0].FinishReason)
	require.Equal(t, 400, c.Usage.CompletionTokens)
}

// A conversation's second turn reads its first turn's KV blocks from the prefix cache: usage
// says how many prompt tokens were cached (OpenAI's prompt_tokens_details.cached_tokens), the
// metrics count them, and the answer is the engine's solo answer.
func TestChatPrefixCache(t *testing.T) {
	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	_, _, ts := start(t, e, engine.SchedulerOptions{MaxSeqs: 2}, serve.Options{})
	type usage struct {
		PromptTokens        int `json:"prompt_tokens"`
		PromptTokensDetails *struct {
			CachedTokens int `json:"cached_tokens"`
		} `json:"prompt_tokens_details"`
	}
	ask := func(msgs []chat.Message) (string, usage) {
		resp, out := post(t, ts.URL+"/v1/chat/completions", map[string]any{"messages": msgs, "max_tokens": 30, "temperature": 0})
		require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
		var c struct {
			Choices []struct {
				Message struct{ Content string } `json:"message"`
			} `json:"choices"`
			Usage usage `json:"usage"`
		}
		require.NoError(t, json.Unmarshal(out, &c))
		return c.Choices[0].Message.Content, c.Usage
	}
	msgs := []chat.Message{{Role: chat.System, Content: "You tell short stories about animals."}, {Role: chat.User, Content: "Tell me a story"}}
	first, u1 := ask(msgs)
	require.Nil(t, u1.PromptTokensDetails, "nothing cached yet")
	msgs = append(msgs, chat.Message{Role: chat.Assistant, Content: first}, chat.Message{Role: chat.User, Content: "What happened next?"})
	second, u2 := ask(msgs)
	require.NotNil(t, u2.PromptTokensDetails)
	// At least the first turn's prompt (system prompt and question) in whole 16-token blocks.
	firstIDs, err := chat.Encode(e.Tokenizer, msgs[:2])
	require.NoError(t, err)
	require.GreaterOrEqual(t, u2.PromptTokensDetails.CachedTokens, (len(firstIDs)-1)/16*16)
	require.Less(t, u2.PromptTokensDetails.CachedTokens, u2.PromptTokens)
	ids, err := chat.Encode(e.Tokenizer, msgs)
	require.NoError(t, err)
	ref := generate(t, e, engine.Request{PromptIDs: ids, MaxTokens: 30, Sampling: sample.GreedyParams()})
	require.Equal(t, strings.TrimPrefix(ref.text, " "), second)
	require.Equal(t, float64(u2.PromptTokensDetails.CachedTokens), scrape(t, ts.URL)["llamacu_prompt_cached_tokens_total"])
}

// Chat completions use the Llama 2 chat format; the answer's leading word-boundary space is not
// shown (as Meta's reference decodes it).
func TestChatCompletions(t *testing.T) {
	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	msgs := []chat.Message{{Role: chat.System, Content: "Be brief."}, {Role: chat.User, Content: "Tell me a story"}}
	ids, err := chat.Encode(e.Tokenizer, msgs)
	require.NoError(t, err)
	ref := generate(t, e, engine.Request{PromptIDs: ids, MaxTokens: 40, Sampling: sample.GreedyParams()})
	_, _, ts := start(t, e, engine.SchedulerOptions{MaxSeqs: 2}, serve.Options{})

	body := map[string]any{"model": "m", "messages": msgs, "max_tokens": 40, "temperature": 0}
	resp, out := post(t, ts.URL+"/v1/chat/completions", body)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	var c completion
	require.NoError(t, json.Unmarshal(out, &c))
	require.Equal(t, "chat.completion", c.Object)
	require.True(t, strings.HasPrefix(c.ID, "chatcmpl-"))
	require.Equal(t, "assistant", c.Choices[0].Message.Role)
	require.Equal(t, strings.TrimPrefix(ref.text, " "), c.Choices[0].Message.Content)
	require.Equal(t, len(ids), c.Usage.PromptTokens)
	require.Equal(t, ref.tokens, c.Usage.CompletionTokens)

	body["stream"] = true
	_, s := postStream(t, ts.URL+"/v1/chat/completions", body)
	require.True(t, s.done)
	require.Equal(t, c.Choices[0].Message.Content, s.text)
	require.Equal(t, *c.Choices[0].FinishReason, s.finish)
	require.Equal(t, "assistant", s.chunks[0].Choices[0].Delta.Role)
	require.Nil(t, s.usage, "usage only with stream_options.include_usage")
	for _, ch := range s.chunks {
		require.Equal(t, "chat.completion.chunk", ch.Object)
	}

	// Content as an array of text parts; "developer" is a system message.
	body = map[string]any{"messages": []map[string]any{
		{"role": "developer", "content": "Be brief."},
		{"role": "user", "content": []map[string]string{{"type": "text", "text": "Tell me "}, {"type": "text", "text": "a story"}}},
	}, "max_tokens": 40, "temperature": 0}
	resp, out = post(t, ts.URL+"/v1/chat/completions", body)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	var c2 completion
	require.NoError(t, json.Unmarshal(out, &c2))
	require.Equal(t, c.Choices[0].Message.Content, c2.Choices[0].Message.Content)
}

// Stop strings (a string or an array) cut the output before the stop string, in both modes.
func TestStopStrings(t *testing.T) {
	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	ref := generate(t, e, engine.Request{Prompt: "Once upon a time", MaxTokens: 60, Sampling: sample.GreedyParams()})
	_, _, ts := start(t, e, engine.SchedulerOptions{}, serve.Options{})
	i := strings.Index(ref.text, ".")
	require.Positive(t, i, ref.text)
	for _, stop := range []any{".", []string{"zzz", "."}} {
		body := map[string]any{"prompt": "Once upon a time", "max_tokens": 60, "temperature": 0, "stop": stop}
		_, out := post(t, ts.URL+"/v1/completions", body)
		var c completion
		require.NoError(t, json.Unmarshal(out, &c))
		require.Equal(t, ref.text[:i], c.Choices[0].Text)
		require.Equal(t, "stop", *c.Choices[0].FinishReason)
		body["stream"] = true
		_, s := postStream(t, ts.URL+"/v1/completions", body)
		require.Equal(t, ref.text[:i], s.text)
		require.Equal(t, "stop", s.finish)
	}
}

func TestErrors(t *testing.T) {
	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	_, _, ts := start(t, e, engine.SchedulerOptions{MaxSeqs: 2}, serve.Options{MaxBodyBytes: 4096})
	ctxLen := e.Context
	user := []map[string]string{{"role": "user", "content": "hi"}}
	for _, tc := range []struct {
		name, path string
		body       any
		status     int
		code, msg  string
	}{
		{"malformed", "/v1/completions", `{"prompt": "x",`, 400, "invalid_json", "malformed JSON"},
		{"not-an-object", "/v1/completions", `[1,2]`, 400, "invalid_json", "JSON object"},
		{"empty-body", "/v1/completions", ``, 400, "invalid_json", "empty"},
		{"trailing-data", "/v1/completions", `{"prompt":"x"} {}`, 400, "invalid_json", "after the JSON"},
		{"max-tokens-string", "/v1/completions", `{"prompt":"x","max_tokens":"5"}`, 400, "invalid_type", "max_tokens must be of type integer"},
		{"temperature-string", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"temperature":"hot"}`, 400, "invalid_type", "temperature must be of type number"},
		{"stream-number", "/v1/completions", `{"prompt":"x","stream":1}`, 400, "invalid_type", "stream must be of type boolean"},
		{"stop-number", "/v1/completions", `{"prompt":"x","stop":5}`, 400, "invalid_type", "stop must be a string or an array"},
		{"prompt-object", "/v1/completions", `{"prompt":{"a":1}}`, 400, "invalid_type", "prompt must be"},
		{"prompt-missing", "/v1/completions", `{"max_tokens":3}`, 400, "invalid_value", "prompt is required"},
		{"n-0", "/v1/completions", map[string]any{"prompt": "x", "n": 0}, 400, "invalid_value", "n must be between 1 and 64"},
		{"n-times-prompts", "/v1/completions", map[string]any{"prompt": []string{"a", "b", "c"}, "n": 30}, 400, "invalid_value", "90 choices"},
		{"temperature-3", "/v1/completions", map[string]any{"prompt": "x", "temperature": 3}, 400, "invalid_value", "temperature must be between 0 and 2"},
		{"top-p-2", "/v1/completions", map[string]any{"prompt": "x", "top_p": 2}, 400, "invalid_value", "top_p"},
		{"frequency-penalty-3", "/v1/completions", map[string]any{"prompt": "x", "frequency_penalty": 3}, 400, "invalid_value", "frequency_penalty must be between -2 and 2"},
		{"presence-penalty--2.5", "/v1/chat/completions", map[string]any{"messages": user, "presence_penalty": -2.5}, 400, "invalid_value", "presence_penalty must be between -2 and 2"},
		{"logprobs-21", "/v1/completions", map[string]any{"prompt": "x", "logprobs": 21}, 400, "invalid_value", "logprobs must be an integer between 0 and 20"},
		{"logprobs-1.5", "/v1/completions", map[string]any{"prompt": "x", "logprobs": 1.5}, 400, "invalid_value", "logprobs must be an integer"},
		{"completion-top-logprobs", "/v1/completions", map[string]any{"prompt": "x", "logprobs": 1, "top_logprobs": 2}, 400, "invalid_value", "chat parameter"},
		{"chat-logprobs-number", "/v1/chat/completions", map[string]any{"messages": user, "logprobs": 2}, 400, "invalid_type", "logprobs must be of type boolean"},
		{"chat-top-logprobs-alone", "/v1/chat/completions", map[string]any{"messages": user, "top_logprobs": 2}, 400, "invalid_value", "requires logprobs"},
		{"chat-top-logprobs-21", "/v1/chat/completions", map[string]any{"messages": user, "logprobs": true, "top_logprobs": 21}, 400, "invalid_value", "between 0 and 20"},
		{"max-tokens-0", "/v1/completions", map[string]any{"prompt": "x", "max_tokens": 0}, 400, "invalid_value", "at least 1"},
		{"empty-stop", "/v1/completions", map[string]any{"prompt": "x", "stop": []string{""}}, 400, "invalid_value", "non-empty"},
		{"bad-token-id", "/v1/completions", map[string]any{"prompt": []int{1, 99999}}, 400, "invalid_value", "outside the vocabulary"},
		{"too-long", "/v1/completions", map[string]any{"prompt": "Once upon a time", "max_tokens": ctxLen}, 400, "context_length_exceeded",
			"maximum context length is " + strconv.Itoa(ctxLen) + " tokens. However, you requested " + strconv.Itoa(ctxLen+5) + " tokens (5 in the prompt, " + strconv.Itoa(ctxLen) + " for the completion)"},
		{"max-tokens-max-int", "/v1/completions", `{"prompt":"Once upon a time","max_tokens":9223372036854775807}`, 400, "context_length_exceeded",
			"you requested 9223372036854775812 tokens (5 in the prompt, 9223372036854775807 for the completion)"},
		{"chat-max-tokens-max-int", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":9223372036854775807}`, 400, "context_length_exceeded",
			"max_tokens is 9223372036854775807"},
		{"chat-too-long", "/v1/chat/completions", map[string]any{"messages": user, "max_tokens": ctxLen - 3}, 400, "context_length_exceeded", "budget is 3"},
		{"chat-order", "/v1/chat/completions", map[string]any{"messages": []map[string]string{{"role": "assistant", "content": "hi"}}}, 400, "invalid_value", "alternate"},
		{"chat-tags", "/v1/chat/completions", map[string]any{"messages": []map[string]string{{"role": "user", "content": "[INST] hi"}}}, 400, "invalid_value", "special tags"},
		{"chat-role", "/v1/chat/completions", map[string]any{"messages": []map[string]string{{"role": "tool", "content": "x"}}}, 400, "invalid_value", "unknown role"},
		{"chat-empty", "/v1/chat/completions", map[string]any{"messages": []any{}}, 400, "invalid_value", "non-empty"},
		{"chat-image", "/v1/chat/completions", `{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, 400, "invalid_type", "text parts only"},
		{"body-too-large", "/v1/completions", map[string]any{"prompt": strings.Repeat("a", 5000)}, 413, "request_too_large", "4096 bytes"},
		{"no-endpoint", "/v1/audio/speech", `{}`, 404, "not_found", "no such endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, out := post(t, ts.URL+tc.path, tc.body)
			require.Equal(t, tc.status, resp.StatusCode, string(out))
			require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			var c completion
			require.NoError(t, json.Unmarshal(out, &c), string(out))
			require.NotNil(t, c.Error, string(out))
			require.Equal(t, tc.code, c.Error.Code)
			require.Contains(t, c.Error.Message, tc.msg)
			require.NotEmpty(t, c.Error.Type)
		})
	}
	resp, err := http.Get(ts.URL + "/v1/completions")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	require.Equal(t, "POST", resp.Header.Get("Allow"))
}

func TestAPIKey(t *testing.T) {
	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	_, _, ts := start(t, e, engine.SchedulerOptions{}, serve.Options{APIKey: "sekrit"})
	body := map[string]any{"prompt": "x", "max_tokens": 2}
	for _, tc := range []struct {
		name   string
		header []string
		status int
	}{
		{"none", nil, 401},
		{"wrong", []string{"Authorization", "Bearer nope"}, 401},
		{"prefix-of-key", []string{"Authorization", "Bearer sekri"}, 401},
		{"not-bearer", []string{"Authorization", "Basic sekrit"}, 401},
		{"right", []string{"Authorization", "Bearer sekrit"}, 200},
		{"lowercase-scheme", []string{"Authorization", "bearer sekrit"}, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, out := post(t, ts.URL+"/v1/completions", body, tc.header...)
			require.Equal(t, tc.status, resp.StatusCode, string(out))
			if tc.status == 401 {
				require.Contains(t, string(out), `"code":"invalid_api_key"`)
			}
		})
	}
	// Probes and scrapers need no key.
	for _, p := range []string{"/health", "/metrics"} {
		resp, err := http.Get(ts.URL + p)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, 200, resp.StatusCode, p)
	}
}

// The server answers before its model is loaded: 503 until SetEngine, 200 after, 503 draining.
func TestHealthWhileLoading(t *testing.T) {
	srv := serve.New(nil, nil, serve.Options{})
	ts := httptest.NewServer(srv)
	defer ts.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(ts.URL + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/health")
	require.Equal(t, 503, code)
	require.JSONEq(t, `{"status":"loading"}`, body)
	resp, out := post(t, ts.URL+"/v1/completions", map[string]any{"prompt": "x"})
	require.Equal(t, 503, resp.StatusCode)
	require.Contains(t, string(out), "model_loading")
	code, _ = get("/v1/models")
	require.Equal(t, 503, code)
	code, body = get("/metrics")
	require.Equal(t, 200, code)
	require.Contains(t, body, "\nllamacu_ready 0\n")

	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	sched, err := engine.NewScheduler(e, engine.SchedulerOptions{})
	require.NoError(t, err)
	defer sched.Close(context.Background())
	srv.SetEngine(sched, e)
	code, body = get("/health")
	require.Equal(t, 200, code)
	require.JSONEq(t, `{"status":"ok"}`, body)
	code, body = get("/v1/models")
	require.Equal(t, 200, code)
	require.Contains(t, body, `"object":"list"`)
	require.Contains(t, body, `"id":"llamacu"`)
	code, body = get("/metrics")
	require.Equal(t, 200, code)
	require.Contains(t, body, "\nllamacu_ready 1\n")

	srv.Drain()
	code, body = get("/health")
	require.Equal(t, 503, code)
	require.JSONEq(t, `{"status":"draining"}`, body)
	resp, out = post(t, ts.URL+"/v1/completions", map[string]any{"prompt": "x"})
	require.Equal(t, 503, resp.StatusCode)
	require.Contains(t, string(out), "shutting_down")
}

// A full queue answers 429 with OpenAI's error body and Retry-After.
func TestQueueFull429(t *testing.T) {
	e, g := loadEngine(t, "stories260K/stories260K.gguf")
	sched, _, ts := start(t, e, engine.SchedulerOptions{MaxSeqs: 1, MaxQueue: 1}, serve.Options{})
	g.Lock()
	var wg sync.WaitGroup
	codes := make([]int, 2)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Post(ts.URL+"/v1/completions", "application/json", strings.NewReader(`{"prompt":"x","max_tokens":3}`))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			codes[i] = resp.StatusCode
		}()
		// The first runs (held in its step), the second waits in the queue.
		want := engine.SchedulerStats{Running: 1, Queued: i}
		require.Eventually(t, func() bool { s := sched.Stats(); return s.Running == want.Running && s.Queued == want.Queued },
			5*time.Second, time.Millisecond)
	}
	resp, out := post(t, ts.URL+"/v1/completions", map[string]any{"prompt": "x", "max_tokens": 3})
	g.Unlock()
	wg.Wait()
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, string(out))
	require.Equal(t, "1", resp.Header.Get("Retry-After"))
	var c completion
	require.NoError(t, json.Unmarshal(out, &c))
	require.Equal(t, "rate_limit_exceeded", c.Error.Code)
	require.Equal(t, []int{200, 200}, codes)
}

// A client that disconnects, streaming or not, frees its sequence and KV blocks; /metrics shows
// it.
func TestDisconnectFreesBlocks(t *testing.T) {
	// The built-in synthetic model: greedy decoding over its random weights runs to max_tokens
	// (stories260K would end its story at EOS before the client hangs up).
	g := &gateBackend{Backend: cpu.New(cpu.Options{Threads: 1})}
	e, err := engine.Load(engine.Options{Backend: g, CloseBackend: true})
	require.NoError(t, err)
	t.Cleanup(func() { e.Close() })
	sched, _, ts := start(t, e, engine.SchedulerOptions{MaxSeqs: 4}, serve.Options{})

	// Streaming: read the first chunk, then hang up.
	b, _ := json.Marshal(map[string]any{"prompt": "Once upon a time", "max_tokens": 500, "stream": true, "temperature": 0})
	resp, err := http.Post(ts.URL+"/v1/completions", "application/json", bytes.NewReader(b))
	require.NoError(t, err)
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(line, "data: {"), line)
	require.Positive(t, sched.Stats().KVBlocksInUse)
	resp.Body.Close()
	waitFree(t, sched)

	// Not streaming: the client gives up while the request runs.
	g.Lock()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/v1/completions",
		strings.NewReader(`{"prompt":"Once upon a time","max_tokens":500,"temperature":0}`))
	errc := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	require.Eventually(t, func() bool { return sched.Stats().Running == 1 }, 5*time.Second, time.Millisecond)
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)
	g.Unlock()
	waitFree(t, sched)

	// The handlers record the ends they see as they return: wait for them.
	var m map[string]float64
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		m = scrape(t, ts.URL)
		if m[`llamacu_request_finish_total{reason="cancelled"}`] == 2 && m[`llamacu_requests_total{endpoint="/v1/completions",code="499"}`] == 1 {
			break
		}
	}
	require.Equal(t, 2.0, m[`llamacu_request_finish_total{reason="cancelled"}`], "%v", m)
	require.Equal(t, 1.0, m[`llamacu_requests_total{endpoint="/v1/completions",code="499"}`], "%v", m)
	require.Equal(t, 0.0, m["llamacu_kv_blocks_in_use"])
	require.Equal(t, 0.0, m["llamacu_running_sequences"])
}

func waitFree(tb testing.TB, s *engine.Scheduler) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := s.Stats()
		if st.KVBlocksInUse == 0 && st.Running == 0 && st.Queued == 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("KV blocks not freed: %+v", st)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// scrape reads /metrics and checks the exposition format: every sample line is
// "name{labels} value", its metric family announced by # HELP and # TYPE lines first.
func scrape(tb testing.TB, base string) map[string]float64 {
	tb.Helper()
	resp, err := http.Get(base + "/metrics")
	require.NoError(tb, err)
	defer resp.Body.Close()
	require.Equal(tb, 200, resp.StatusCode)
	require.True(tb, strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4"))
	out := map[string]float64{}
	typed := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			parts := strings.Fields(f)
			require.Len(tb, parts, 2, line)
			typed[parts[0]] = parts[1]
			continue
		}
		if strings.HasPrefix(line, "# HELP ") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		require.Positive(tb, i, line)
		key, val := line[:i], line[i+1:]
		v, err := strconv.ParseFloat(val, 64)
		require.NoError(tb, err, line)
		name := key
		if j := strings.IndexByte(key, '{'); j >= 0 {
			require.True(tb, strings.HasSuffix(key, "}"), line)
			name = key[:j]
		}
		family := name
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if f, ok := strings.CutSuffix(name, suf); ok && typed[f] == "histogram" {
				family = f
			}
		}
		require.Contains(tb, typed, family, "sample before its # TYPE: %s", line)
		out[key] = v
	}
	require.NoError(tb, sc.Err())
	return out
}

func TestMetrics(t *testing.T) {
	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	_, _, ts := start(t, e, engine.SchedulerOptions{MaxSeqs: 4}, serve.Options{})
	prompt, gen := 0, 0
	for i, p := range prompts[:3] {
		body := map[string]any{"prompt": p, "max_tokens": 10 + i, "temperature": 0}
		if i%2 == 1 {
			body["stream"] = true
			body["stream_options"] = map[string]bool{"include_usage": true}
		}
		resp, out := post(t, ts.URL+"/v1/completions", body)
		require.Equal(t, 200, resp.StatusCode)
		u := &completion{}
		if i%2 == 1 {
			s := readSSE(t, bytes.NewReader(out))
			require.True(t, s.done)
			u = s.usage
		} else {
			require.NoError(t, json.Unmarshal(out, u))
		}
		prompt += u.Usage.PromptTokens
		gen += u.Usage.CompletionTokens
	}
	post(t, ts.URL+"/v1/completions", `{`)
	m := scrape(t, ts.URL)
	require.Equal(t, 3.0, m[`llamacu_requests_total{endpoint="/v1/completions",code="200"}`])
	require.Equal(t, 1.0, m[`llamacu_requests_total{endpoint="/v1/completions",code="400"}`])
	require.Equal(t, float64(prompt), m["llamacu_prompt_tokens_total"])
	require.Equal(t, float64(gen), m["llamacu_generation_tokens_total"])
	require.Equal(t, 3.0, m["llamacu_time_to_first_token_seconds_count"])
	require.Equal(t, float64(gen-3), m["llamacu_inter_token_latency_seconds_count"])
	require.Equal(t, float64(gen-3), m[`llamacu_inter_token_latency_seconds_bucket{le="+Inf"}`])
	require.Equal(t, 4.0, m[`llamacu_request_duration_seconds_count{endpoint="/v1/completions"}`])
	require.Equal(t, 0.0, m["llamacu_queue_depth"])
	require.Equal(t, 0.0, m["llamacu_kv_blocks_in_use"])
	require.Equal(t, 4.0, m["llamacu_max_sequences"])
	require.Positive(t, m["llamacu_kv_blocks_total"])
	require.Equal(t, 1.0, m["llamacu_ready"])
}

// SSE chunks never split a UTF-8 character, even when a model with random weights over the real
// LLaMA vocabulary emits arbitrary byte-fallback tokens after a Korean prompt.
func TestStreamUTF8WithByteTokens(t *testing.T) {
	e, _ := loadEngine(t, "tiny-random/llama-2-tiny-random.gguf")
	_, _, ts := start(t, e, engine.SchedulerOptions{MaxSeqs: 8}, serve.Options{})
	type result struct {
		whole  []byte
		stream []byte
		err    error
	}
	results := make([]result, 8)
	var wg sync.WaitGroup
	for seed := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[seed]
			body := map[string]any{"prompt": "안녕하세요, 반갑습니다", "max_tokens": 120, "temperature": 1.5, "seed": seed}
			b, _ := json.Marshal(body)
			if r.whole, r.err = postRaw(ts.URL+"/v1/completions", b); r.err != nil {
				return
			}
			body["stream"] = true
			b, _ = json.Marshal(body)
			r.stream, r.err = postRaw(ts.URL+"/v1/completions", b)
		}()
	}
	wg.Wait()
	nonASCII := 0
	for seed, r := range results {
		require.NoError(t, r.err)
		var whole completion
		require.NoError(t, json.Unmarshal(r.whole, &whole), string(r.whole))
		s := readSSE(t, bytes.NewReader(r.stream)) // checks each chunk is valid UTF-8
		require.Equal(t, whole.Choices[0].Text, s.text, "seed %d", seed)
		for _, c := range s.text {
			if c >= 0x80 {
				nonASCII++
			}
		}
	}
	t.Logf("%d non-ASCII characters streamed", nonASCII)
	require.Positive(t, nonASCII)
}

// postRaw posts a body and returns the response body of a 200 answer.
func postRaw(url string, body []byte) ([]byte, error) {
	resp, err := http.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d: %s", resp.StatusCode, out)
	}
	return out, err
}
