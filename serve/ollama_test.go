package serve_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/chat"
	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/sample"
	"github.com/llamacu/llamacu/serve"
)

type ollamaLine struct {
	Model     string `json:"model"`
	CreatedAt string `json:"created_at"`
	Response  string `json:"response"`
	Message   *struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"message"`
	Done            bool    `json:"done"`
	DoneReason      string  `json:"done_reason"`
	Context         []int32 `json:"context"`
	PromptEvalCount int     `json:"prompt_eval_count"`
	EvalCount       int     `json:"eval_count"`
	TotalDuration   int64   `json:"total_duration"`
	EvalDuration    int64   `json:"eval_duration"`
	Error           string  `json:"error"`
}

// ollamaPost posts body and reads the answer: one object, or newline-delimited lines.
func ollamaPost(t *testing.T, url string, body map[string]any) (int, []ollamaLine) {
	t.Helper()
	resp, out := post(t, url, body)
	var lines []ollamaLine
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l ollamaLine
		require.NoError(t, json.Unmarshal(sc.Bytes(), &l), "%s", sc.Text())
		lines = append(lines, l)
	}
	return resp.StatusCode, lines
}

// text concatenates what the lines say (response or message content).
func text(lines []ollamaLine) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l.Response)
		if l.Message != nil {
			b.WriteString(l.Message.Content)
		}
	}
	return b.String()
}

// ollama's /api/generate and /api/chat answer what the engine generates, streamed as
// newline-delimited JSON or whole, with ollama's counts, and "context" continues a text.
func TestOllamaGenerateAndChat(t *testing.T) {
	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	const prompt = "Once upon a time"
	greedy := sample.Params{Temperature: 0}
	ref := generate(t, e, engine.Request{Prompt: prompt, MaxTokens: 40, Sampling: greedy})
	ids := e.Tokenizer.Encode(prompt, true)
	var gen []int32
	_, err := e.Generate(t.Context(), engine.Request{PromptIDs: ids, MaxTokens: 40, Sampling: greedy}, func(id int32, _ string) error {
		if id >= 0 {
			gen = append(gen, id)
		}
		return nil
	})
	require.NoError(t, err)
	context := append(append([]int32(nil), ids...), gen...)
	next := append(append([]int32(nil), context...), e.Tokenizer.Encode(" Then", false)...)
	refNext := generate(t, e, engine.Request{PromptIDs: next, MaxTokens: 30, Sampling: greedy})

	msgs := []chat.Message{{Role: chat.System, Content: "Be brief."}, {Role: chat.User, Content: "Tell me a story"}}
	chatIDs, err := chat.Encode(e.Tokenizer, msgs)
	require.NoError(t, err)
	refChat := generate(t, e, engine.Request{PromptIDs: chatIDs, MaxTokens: 40, Sampling: greedy})

	_, _, ts := start(t, e, engine.SchedulerOptions{MaxSeqs: 2}, serve.Options{ModelName: "stories"})
	opts := map[string]any{"temperature": 0, "repeat_penalty": 1, "num_predict": 40, "mirostat": 0, "num_ctx": 2048}

	status, lines := ollamaPost(t, ts.URL+"/api/generate", map[string]any{"model": "stories", "prompt": prompt, "options": opts})
	require.Equal(t, http.StatusOK, status)
	require.Greater(t, len(lines), 2, "streamed by default")
	last := lines[len(lines)-1]
	for _, l := range lines[:len(lines)-1] {
		assert.False(t, l.Done)
		assert.Equal(t, "stories", l.Model)
		assert.NotEmpty(t, l.CreatedAt)
	}
	assert.True(t, last.Done)
	assert.Equal(t, ref.text, text(lines))
	assert.Equal(t, "length", last.DoneReason)
	assert.Equal(t, len(ids), last.PromptEvalCount)
	assert.Equal(t, 40, last.EvalCount)
	assert.Equal(t, context, last.Context)
	assert.Positive(t, last.TotalDuration)

	status, whole := ollamaPost(t, ts.URL+"/api/generate", map[string]any{"prompt": prompt, "options": opts, "stream": false})
	require.Equal(t, http.StatusOK, status)
	require.Len(t, whole, 1)
	assert.Equal(t, ref.text, whole[0].Response)
	assert.True(t, whole[0].Done)

	nextOpts := map[string]any{"temperature": 0, "repeat_penalty": 1, "num_predict": 30}
	status, whole = ollamaPost(t, ts.URL+"/api/generate", map[string]any{"prompt": " Then", "context": last.Context, "options": nextOpts, "stream": false})
	require.Equal(t, http.StatusOK, status)
	assert.Equal(t, refNext.text, whole[0].Response, "continued from context")

	chatBody := map[string]any{"messages": msgs, "options": opts}
	status, lines = ollamaPost(t, ts.URL+"/api/chat", chatBody)
	require.Equal(t, http.StatusOK, status)
	assert.Equal(t, strings.TrimPrefix(refChat.text, " "), text(lines))
	assert.Equal(t, "assistant", lines[0].Message.Role)
	assert.True(t, lines[len(lines)-1].Done)
	assert.Empty(t, lines[len(lines)-1].Context, "chat answers carry no context")

	// /api/generate with a system message is one chat turn.
	status, whole = ollamaPost(t, ts.URL+"/api/generate", map[string]any{"system": "Be brief.", "prompt": "Tell me a story", "options": opts, "stream": false})
	require.Equal(t, http.StatusOK, status)
	assert.Equal(t, strings.TrimPrefix(refChat.text, " "), whole[0].Response)

	// format: a JSON Schema.
	schema := map[string]any{"type": "object", "properties": map[string]any{"mood": map[string]any{"enum": []string{"happy", "sad"}}}, "required": []string{"mood"}}
	status, whole = ollamaPost(t, ts.URL+"/api/chat", map[string]any{"messages": msgs, "options": opts, "format": schema, "stream": false})
	require.Equal(t, http.StatusOK, status)
	var v struct{ Mood string }
	require.NoError(t, json.Unmarshal([]byte(whole[0].Message.Content), &v), whole[0].Message.Content)
	assert.Contains(t, []string{"happy", "sad"}, v.Mood)
}

func TestOllamaInfoAndErrors(t *testing.T) {
	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	_, _, ts := start(t, e, engine.SchedulerOptions{MaxSeqs: 2}, serve.Options{ModelName: "stories"})

	for _, path := range []string{"/api/tags", "/api/ps"} {
		resp, out := get(t, ts.URL+path)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		var tags struct {
			Models []struct {
				Name    string
				Details struct{ Family string }
			}
		}
		require.NoError(t, json.Unmarshal(out, &tags))
		require.Len(t, tags.Models, 1)
		assert.Equal(t, "stories", tags.Models[0].Name)
		assert.Equal(t, "llama", tags.Models[0].Details.Family)
	}
	resp, out := get(t, ts.URL+"/api/version")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, string(out), `"version"`)
	resp, out = post(t, ts.URL+"/api/show", map[string]any{"model": "stories"})
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, string(out), `"llama.context_length"`)

	for _, tc := range []struct {
		path string
		body map[string]any
		want string
	}{
		{"/api/generate", map[string]any{"prompt": "x", "options": map[string]any{"bogus": 1}}, `unknown option \"bogus\"`},
		{"/api/generate", map[string]any{"prompt": "x", "options": map[string]any{"mirostat": 2}}, "mirostat is not supported"},
		{"/api/generate", map[string]any{"prompt": "x", "options": map[string]any{"temperature": "hot"}}, "must be a number"},
		{"/api/generate", map[string]any{"prompt": "x", "options": map[string]any{"top_k": 1.5}}, "must be an integer"},
		{"/api/generate", map[string]any{"prompt": "x", "options": map[string]any{"num_predict": -3}}, "num_predict"},
		{"/api/generate", map[string]any{"prompt": "x", "options": map[string]any{"stop": 5}}, "option stop"},
		{"/api/generate", map[string]any{"prompt": "x", "format": "xml"}, `format must be \"json\"`},
		{"/api/generate", map[string]any{"prompt": "x", "format": map[string]any{"type": "string", "pattern": "a(?=b)"}}, "pattern: regex at offset 2: lookaround is not supported"},
		{"/api/generate", map[string]any{"prompt": "x", "images": []string{"AAAA"}}, "images are not supported"},
		{"/api/generate", map[string]any{"prompt": "x", "template": "{{ .Prompt }}"}, "template is not supported"},
		{"/api/generate", map[string]any{"prompt": "x", "context": []int{99999}}, "outside the vocabulary"},
		{"/api/chat", map[string]any{"messages": []any{}}, "messages must not be empty"},
		{"/api/chat", map[string]any{"messages": []map[string]string{{"role": "assistant", "content": "hi"}}}, "messages"},
		{"/api/chat", map[string]any{"messages": []map[string]string{{"role": "user", "content": "hi"}}, "tools": []any{map[string]any{}}}, "tools are not supported"},
		{"/api/generate", map[string]any{"prompt": "x", "context": make([]int, e.Context+1)}, "context"},
	} {
		resp, out := post(t, ts.URL+tc.path, tc.body)
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "%v: %s", tc.body, out)
		var body struct{ Error string }
		require.NoError(t, json.Unmarshal(out, &body), "%s", out)
		assert.Contains(t, body.Error, strings.ReplaceAll(tc.want, `\"`, `"`), "%v", tc.body)
	}
	resp, out = get(t, ts.URL+"/api/nothing")
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	assert.Contains(t, string(out), `{"error":"no such endpoint`)

	_, _, locked := start(t, e, engine.SchedulerOptions{MaxSeqs: 1}, serve.Options{APIKey: "k"})
	resp, out = get(t, locked.URL+"/api/tags")
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	assert.Contains(t, string(out), `{"error":"a valid API key`)
}

func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, out
}
