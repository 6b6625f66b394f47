package serve_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/grammar"
	"github.com/llamacu/llamacu/serve"
)

// Each way of asking for structured output reaches the engine's grammar: the text the client
// gets is a sentence of it, whole or streamed.
func TestStructuredOutput(t *testing.T) {
	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	_, _, ts := start(t, e, engine.SchedulerOptions{MaxSeqs: 4}, serve.Options{})

	schema := map[string]any{
		"type": "object",
		"properties": map[string]any{
			"mood": map[string]any{"enum": []string{"happy", "sad"}},
			"age":  map[string]any{"type": "integer"},
		},
		"required": []string{"mood", "age"},
	}
	isObject := func(t *testing.T, text string) map[string]any {
		var v map[string]any
		require.NoError(t, json.Unmarshal([]byte(text), &v), "%q", text)
		return v
	}
	for _, tc := range []struct {
		name  string
		extra map[string]any
		check func(t *testing.T, text, finish string)
	}{
		{"guided_choice", map[string]any{"guided_choice": []string{"red", "green", "blue"}},
			func(t *testing.T, text, finish string) {
				assert.Contains(t, []string{"red", "green", "blue"}, text)
				assert.Equal(t, "stop", finish)
			}},
		{"guided_regex", map[string]any{"guided_regex": `[A-Z][a-z]+ (is|was) \d{1,2} years old\.`},
			func(t *testing.T, text, finish string) {
				assert.Regexp(t, `^[A-Z][a-z]+ (is|was) \d{1,2} years old\.$`, text)
				assert.Equal(t, "stop", finish)
			}},
		{"json_schema with a pattern", map[string]any{"json_schema": map[string]any{"type": "object",
			"properties": map[string]any{"id": map[string]any{"type": "string", "pattern": `^[A-Z]{2}-\d{3}$`}}, "required": []string{"id"}}},
			func(t *testing.T, text, finish string) {
				assert.Regexp(t, `^[A-Z]{2}-\d{3}$`, isObject(t, text)["id"])
			}},
		{"grammar", map[string]any{"grammar": `root ::= "The " [a-z]+ " is " ("big" | "small") "."`},
			func(t *testing.T, text, finish string) {
				assert.Regexp(t, `^The [a-z]+ is (big|small)\.$`, text)
				assert.Equal(t, "stop", finish)
			}},
		{"response_format json_schema", map[string]any{"response_format": map[string]any{
			"type": "json_schema", "json_schema": map[string]any{"name": "feeling", "schema": schema, "strict": true}}},
			func(t *testing.T, text, finish string) {
				v := isObject(t, text)
				assert.Contains(t, []any{"happy", "sad"}, v["mood"])
				assert.IsType(t, float64(0), v["age"])
				assert.Equal(t, "stop", finish)
			}},
		{"guided_json as a string", map[string]any{"guided_json": mustJSON(t, schema)},
			func(t *testing.T, text, finish string) { isObject(t, text) }},
		{"json_schema (llama.cpp)", map[string]any{"json_schema": schema},
			func(t *testing.T, text, finish string) { isObject(t, text) }},
		{"response_format json_object", map[string]any{"response_format": map[string]any{"type": "json_object"}},
			func(t *testing.T, text, finish string) {
				// Cut at max_tokens or not, the text is the start of a JSON object.
				m := grammar.JSON().NewMatcher(byteVocab())
				for i := 0; i < len(text); i++ {
					require.NoError(t, m.Accept(int32(text[i])), "%q at byte %d", text, i)
				}
				if finish == "stop" {
					isObject(t, text)
				}
			}},
		{"response_format text", map[string]any{"response_format": map[string]any{"type": "text"}},
			func(t *testing.T, text, finish string) { assert.NotEmpty(t, text) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := map[string]any{"prompt": "Once upon a time", "max_tokens": 60, "temperature": 0}
			for k, v := range tc.extra {
				body[k] = v
			}
			resp, out := post(t, ts.URL+"/v1/completions", body)
			require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
			var c completion
			require.NoError(t, json.Unmarshal(out, &c))
			text := c.Choices[0].Text
			t.Logf("%q", text)
			tc.check(t, text, *c.Choices[0].FinishReason)

			body["stream"] = true
			_, s := postStream(t, ts.URL+"/v1/completions", body)
			assert.Equal(t, text, s.text, "streamed")
		})
	}

	// Chat answers are shown without their first space; the grammar matches what is shown.
	body := map[string]any{"messages": []map[string]string{{"role": "user", "content": "How do you feel?"}},
		"max_tokens": 60, "temperature": 0, "response_format": map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "f", "schema": schema}}}
	resp, out := post(t, ts.URL+"/v1/chat/completions", body)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	var c completion
	require.NoError(t, json.Unmarshal(out, &c))
	t.Logf("%q", c.Choices[0].Message.Content)
	isObject(t, c.Choices[0].Message.Content)
}

// byteVocab is a vocabulary of the 256 bytes (id = byte) and EOS (256): a matcher over it
// checks a text byte by byte.
func byteVocab() *grammar.Vocab {
	tokens := make([][]byte, 257)
	for b := range 256 {
		tokens[b] = []byte{byte(b)}
	}
	return grammar.NewVocab(tokens, nil, 256)
}

func mustJSON(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

func TestStructuredOutputErrors(t *testing.T) {
	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	_, _, ts := start(t, e, engine.SchedulerOptions{MaxSeqs: 2}, serve.Options{})
	for _, tc := range []struct {
		extra       map[string]any
		param, want string
	}{
		{map[string]any{"grammar": `root ::= "a"`, "guided_choice": []string{"x"}}, "guided_choice", "grammar and guided_choice both constrain"},
		{map[string]any{"response_format": map[string]any{"type": "json_object"}, "json_schema": map[string]any{"type": "object"}}, "json_schema", "both constrain"},
		{map[string]any{"grammar": "root ::= thing"}, "grammar", `undefined rule "thing"`},
		{map[string]any{"guided_grammar": "root ::= root \"a\""}, "guided_grammar", "left-recursive"},
		{map[string]any{"response_format": map[string]any{"type": "xml"}}, "response_format", `"text", "json_object" or "json_schema"`},
		{map[string]any{"response_format": map[string]any{"type": "json_schema"}}, "response_format", "needs json_schema.schema"},
		{map[string]any{"response_format": map[string]any{"type": "json_schema", "json_schema": map[string]any{"schema": map[string]any{"type": "string", "pattern": "^a+$", "maxLength": 3}}}}, "response_format", "pattern next to minLength"},
		{map[string]any{"guided_json": "{not json"}, "guided_json", ""},
		{map[string]any{"guided_regex": "(a"}, "guided_regex", "missing )"},
		{map[string]any{"guided_regex": `\bx`}, "guided_regex", "word boundary"},
		{map[string]any{"guided_choice": []string{}}, "guided_choice", "1 to 256"},
	} {
		body := map[string]any{"prompt": "Hi", "max_tokens": 5}
		for k, v := range tc.extra {
			body[k] = v
		}
		resp, out := post(t, ts.URL+"/v1/completions", body)
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, string(out))
		var c completion
		require.NoError(t, json.Unmarshal(out, &c))
		require.NotNil(t, c.Error)
		assert.Contains(t, string(out), `"param":"`+tc.param+`"`, string(out))
		assert.Contains(t, c.Error.Message, tc.want)
	}
}

// vLLM's min_tokens and stop_token_ids reach the scheduler.
func TestMinTokensAndStopTokenIDs(t *testing.T) {
	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	const prompt = "One day, a little girl named Sue found a red ball in the garden. She"
	ids := e.Tokenizer.Encode(prompt, true)
	var gen []int32
	_, err := e.Generate(context.Background(), engine.Request{PromptIDs: ids, MaxTokens: 400}, func(id int32, _ string) error {
		if id >= 0 {
			gen = append(gen, id)
		}
		return nil
	})
	require.NoError(t, err)
	require.Less(t, len(gen), 400, "the story ends")
	_, _, ts := start(t, e, engine.SchedulerOptions{MaxSeqs: 2}, serve.Options{})

	body := map[string]any{"prompt": prompt, "max_tokens": 400, "temperature": 0, "stop_token_ids": []int32{gen[5]}}
	resp, out := post(t, ts.URL+"/v1/completions", body)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	var c completion
	require.NoError(t, json.Unmarshal(out, &c))
	assert.LessOrEqual(t, c.Usage.CompletionTokens, 6)
	assert.Equal(t, "stop", *c.Choices[0].FinishReason)

	body = map[string]any{"prompt": prompt, "max_tokens": 400, "temperature": 0, "min_tokens": len(gen) + 10}
	resp, out = post(t, ts.URL+"/v1/completions", body)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	require.NoError(t, json.Unmarshal(out, &c))
	assert.GreaterOrEqual(t, c.Usage.CompletionTokens, len(gen)+10)

	for _, bad := range []map[string]any{{"min_tokens": -1}, {"min_tokens": 50, "max_tokens": 10}, {"stop_token_ids": []int{99999}}, {"stop_token_ids": make([]int, 65)}} {
		body := map[string]any{"prompt": "Hi"}
		for k, v := range bad {
			body[k] = v
		}
		resp, out := post(t, ts.URL+"/v1/completions", body)
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "%v: %s", bad, out)
	}
}

// A server with speculative decoding answers what Engine.Generate does, and counts its
// proposals in /metrics.
func TestDraftsOverHTTP(t *testing.T) {
	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	ref := generate(t, e, engine.Request{Prompt: "Once upon a time", MaxTokens: 120})
	_, _, ts := start(t, e, engine.SchedulerOptions{MaxSeqs: 2, DraftTokens: 4}, serve.Options{})
	resp, out := post(t, ts.URL+"/v1/completions", map[string]any{"prompt": "Once upon a time", "max_tokens": 120, "temperature": 0})
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	var c completion
	require.NoError(t, json.Unmarshal(out, &c))
	assert.Equal(t, ref.text, c.Choices[0].Text)
	m := scrape(t, ts.URL)
	assert.Positive(t, m["llamacu_draft_tokens_total"])
	assert.Positive(t, m["llamacu_draft_accepted_tokens_total"])
	assert.LessOrEqual(t, m["llamacu_draft_accepted_tokens_total"], m["llamacu_draft_tokens_total"])
}
