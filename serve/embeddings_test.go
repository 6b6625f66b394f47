package serve_test

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/serve"
)

var embedTexts = []string{"Once upon a time", "Lily and Ben went to the park to play.", "안녕하세요, 세계!"}

// embedRefs are Engine.Embed's vectors of embedTexts (computed before the scheduler starts).
func embedRefs(t *testing.T, e *engine.Engine, how engine.Pooling, normalize bool) [][]float32 {
	t.Helper()
	var out [][]float32
	for _, text := range embedTexts {
		v, err := e.Embed(context.Background(), engine.EmbedRequest{Prompt: text, Pooling: how, Normalize: normalize})
		require.NoError(t, err)
		out = append(out, v)
	}
	return out
}

func requireVecClose(t *testing.T, want []float32, got []float64, what string) {
	t.Helper()
	require.Len(t, got, len(want), what)
	for i := range want {
		require.InDelta(t, float64(want[i]), got[i], 1e-6, "%s: element %d", what, i)
	}
}

// The official OpenAI Go SDK gets Engine.Embed's unit-length vectors for a batch of texts and
// for token ids, as floats and as base64, with the usage counted.
func TestEmbeddingsOpenAISDK(t *testing.T) {
	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	want := embedRefs(t, e, engine.PoolLast, true)
	ids := e.Tokenizer.Encode(embedTexts[1], true)
	_, _, ts := start(t, e, engine.SchedulerOptions{MaxSeqs: 2}, serve.Options{APIKey: "sk-test", ModelName: "stories260K"})
	client := openai.NewClient(option.WithBaseURL(ts.URL+"/v1/"), option.WithAPIKey("sk-test"), option.WithMaxRetries(0))
	ctx := context.Background()

	tokens := 0
	for _, text := range embedTexts {
		tokens += len(e.Tokenizer.Encode(text, true))
	}
	for _, format := range []openai.EmbeddingNewParamsEncodingFormat{"", openai.EmbeddingNewParamsEncodingFormatFloat, openai.EmbeddingNewParamsEncodingFormatBase64} {
		resp, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{
			Model: "stories260K", Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: embedTexts}, EncodingFormat: format,
		})
		require.NoError(t, err, "format %q", format)
		require.Equal(t, "stories260K", resp.Model)
		require.Len(t, resp.Data, len(embedTexts)) // 3 inputs through 2 sequence slots
		for i, d := range resp.Data {
			require.EqualValues(t, i, d.Index)
			got := d.Embedding
			if format == openai.EmbeddingNewParamsEncodingFormatBase64 { // the SDK leaves base64 as it came
				got = decodeBase64Floats(t, d.JSON.Embedding.Raw())
			}
			requireVecClose(t, want[i], got, embedTexts[i])
		}
		require.EqualValues(t, tokens, resp.Usage.PromptTokens)
		require.EqualValues(t, tokens, resp.Usage.TotalTokens)
	}

	resp, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{
		Model: "stories260K", Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfTokens: toInt64(ids)},
	})
	require.NoError(t, err)
	require.Len(t, resp.Data, 1)
	requireVecClose(t, want[1], resp.Data[0].Embedding, "token ids")
	require.EqualValues(t, len(ids), resp.Usage.PromptTokens)
}

// decodeBase64Floats reads a JSON string of base64 little-endian float32s.
func decodeBase64Floats(t *testing.T, raw string) []float64 {
	t.Helper()
	var s string
	require.NoError(t, json.Unmarshal([]byte(raw), &s), "embedding %s is not a base64 string", raw)
	b, err := base64.StdEncoding.DecodeString(s)
	require.NoError(t, err)
	require.Zero(t, len(b)%4)
	out := make([]float64, len(b)/4)
	for i := range out {
		out[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
	}
	return out
}

func toInt64(ids []int32) []int64 {
	out := make([]int64, len(ids))
	for i, id := range ids {
		out[i] = int64(id)
	}
	return out
}

// ollama's /api/embed gives unit vectors (mean-pooled here: Options.Pooling), cuts an input
// longer than the context unless told not to, and leaves out empty inputs; /api/embeddings
// gives the raw vector.
func TestOllamaEmbed(t *testing.T) {
	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	unit := embedRefs(t, e, engine.PoolMean, true)
	raw := embedRefs(t, e, engine.PoolMean, false)
	long := strings.Repeat("Lily and Ben went to the park to play. ", 160)
	longIDs := e.Tokenizer.Encode(long, true)
	require.Greater(t, len(longIDs), e.Context)
	cut, err := e.Embed(context.Background(), engine.EmbedRequest{PromptIDs: longIDs[:e.Context], Pooling: engine.PoolMean, Normalize: true})
	require.NoError(t, err)
	_, _, ts := start(t, e, engine.SchedulerOptions{}, serve.Options{Pooling: engine.PoolMean, ModelName: "stories260K"})

	var out struct {
		Model           string      `json:"model"`
		Embeddings      [][]float64 `json:"embeddings"`
		PromptEvalCount int         `json:"prompt_eval_count"`
		TotalDuration   int64       `json:"total_duration"`
	}
	resp, body := post(t, ts.URL+"/api/embed", map[string]any{"model": "stories260K", "input": append([]string{""}, embedTexts...)})
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	require.NoError(t, json.Unmarshal(body, &out))
	require.Equal(t, "stories260K", out.Model)
	require.Len(t, out.Embeddings, len(embedTexts)) // the empty input left out
	for i := range embedTexts {
		requireVecClose(t, unit[i], out.Embeddings[i], embedTexts[i])
	}
	require.Positive(t, out.TotalDuration)

	resp, body = post(t, ts.URL+"/api/embed", map[string]any{"input": long})
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	require.NoError(t, json.Unmarshal(body, &out))
	require.Len(t, out.Embeddings, 1)
	requireVecClose(t, cut, out.Embeddings[0], "a long input cut to the context")
	require.Equal(t, e.Context, out.PromptEvalCount)

	resp, body = post(t, ts.URL+"/api/embed", map[string]any{"input": long, "truncate": false})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, string(body))
	require.Contains(t, string(body), "exceeds the context length")

	resp, body = post(t, ts.URL+"/api/embed", map[string]any{"input": ""})
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	require.JSONEq(t, `[]`, jsonField(t, body, "embeddings"))

	var legacy struct {
		Embedding []float64 `json:"embedding"`
	}
	resp, body = post(t, ts.URL+"/api/embeddings", map[string]any{"model": "stories260K", "prompt": embedTexts[0]})
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	require.NoError(t, json.Unmarshal(body, &legacy))
	requireVecClose(t, raw[0], legacy.Embedding, "/api/embeddings")
}

func jsonField(t *testing.T, body []byte, key string) string {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(body, &m))
	return string(m[key])
}

// Bad embeddings requests get 400s naming what is wrong, in each API's error shape.
func TestEmbeddingsErrors(t *testing.T) {
	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	_, _, ts := start(t, e, engine.SchedulerOptions{}, serve.Options{})
	long := strings.Repeat("Lily and Ben went to the park to play. ", 160)
	for _, tc := range []struct {
		path, body string
		status     int
		want       string
	}{
		{"/v1/embeddings", `{}`, 400, "input is required"},
		{"/v1/embeddings", `{"input": ""}`, 400, "input 0 is an empty string"},
		{"/v1/embeddings", `{"input": [[1, 2], []]}`, 400, "input 1 is an empty array"},
		{"/v1/embeddings", `{"input": 7}`, 400, "input must be a string, an array of token ids"},
		{"/v1/embeddings", `{"input": [1, 99999]}`, 400, "outside the vocabulary"},
		{"/v1/embeddings", `{"input": "hi", "encoding_format": "int8"}`, 400, "encoding_format"},
		{"/v1/embeddings", `{"input": "hi", "dimensions": 32}`, 400, "64 dimensions"},
		{"/v1/embeddings", `{"input": ["hi", "` + long + `"]}`, 400, "input 1: prompt is longer than the context"},
		{"/v1/embeddings", `{"input": "hi"`, 400, ""},
		{"/api/embed", `{"input": 7}`, 400, "input must be a string or an array of strings"},
		{"/api/embed", `{"input": "hi", "dimensions": 3}`, 400, "64 dimensions"},
		{"/api/embed", `[`, 400, ""},
		{"/api/embeddings", `{"prompt": 3}`, 400, ""},
	} {
		resp, body := post(t, ts.URL+tc.path, tc.body)
		require.Equal(t, tc.status, resp.StatusCode, "%s %s: %s", tc.path, tc.body, body)
		require.Contains(t, string(body), tc.want, "%s %s", tc.path, tc.body)
		if strings.HasPrefix(tc.path, "/api/") {
			var m struct {
				Error string `json:"error"`
			}
			require.NoError(t, json.Unmarshal(body, &m), "%s", body)
			require.NotEmpty(t, m.Error)
		} else {
			require.Contains(t, string(body), `"type":"invalid_request_error"`)
		}
	}
}
