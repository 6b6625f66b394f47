package serve_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/chat"
	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/serve"
)

// /tokenize and /detokenize in vLLM's and llama.cpp's shapes give the engine's tokenizer's
// answers; bad ids and missing fields are 400s; the API key guards them.
func TestTokenizeEndpoints(t *testing.T) {
	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	_, _, ts := start(t, e, engine.SchedulerOptions{MaxSeqs: 2}, serve.Options{APIKey: "k"})
	auth := []string{"Authorization", "Bearer k"}
	const text = "Once upon a time, Lily"
	msgs := []chat.Message{{Role: chat.User, Content: "Tell me a story"}}
	chatIDs, err := chat.Encode(e.Tokenizer, msgs)
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		body any
		want []int32
	}{
		{"vllm", map[string]any{"prompt": text}, e.Tokenizer.Encode(text, true)},
		{"vllm-no-special", map[string]any{"prompt": text, "add_special_tokens": false}, e.Tokenizer.Encode(text, false)},
		{"llama.cpp", map[string]any{"content": text, "add_special": false}, e.Tokenizer.Encode(text, false)},
		{"messages", map[string]any{"messages": msgs}, chatIDs},
		{"empty", map[string]any{"prompt": "", "add_special_tokens": false}, []int32{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, out := post(t, ts.URL+"/tokenize", tc.body, auth...)
			require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
			var got struct {
				Tokens      []int32 `json:"tokens"`
				Count       int     `json:"count"`
				MaxModelLen int     `json:"max_model_len"`
			}
			require.NoError(t, json.Unmarshal(out, &got))
			require.Equal(t, tc.want, got.Tokens)
			require.Equal(t, len(tc.want), got.Count)
			require.Equal(t, e.Context, got.MaxModelLen)
		})
	}
	ids := e.Tokenizer.Encode(text, true)
	resp, out := post(t, ts.URL+"/detokenize", map[string]any{"tokens": ids}, auth...)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	var d struct{ Prompt, Content string }
	require.NoError(t, json.Unmarshal(out, &d))
	require.Equal(t, text, d.Prompt)
	require.Equal(t, text, d.Content)

	for _, tc := range []struct {
		path string
		body any
		msg  string
	}{
		{"/tokenize", map[string]any{}, "prompt (or content, or messages) is required"},
		{"/tokenize", map[string]any{"messages": []map[string]string{{"role": "assistant", "content": "x"}}}, "alternate"},
		{"/detokenize", map[string]any{"tokens": []int{1, 100000}}, "outside the vocabulary"},
		{"/detokenize", map[string]any{}, "tokens is required"},
	} {
		resp, out := post(t, ts.URL+tc.path, tc.body, auth...)
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, string(out))
		require.Contains(t, string(out), tc.msg)
	}
	resp, _ = post(t, ts.URL+"/tokenize", map[string]any{"prompt": "x"})
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
}
