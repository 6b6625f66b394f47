package serve_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/chat"
	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/serve"
)

// recoverHandler turns a handler panic into a test failure (net/http would recover it and drop
// the connection, which a client sees as an EOF).
type recoverHandler struct {
	h      http.Handler
	panics atomic.Int64
	last   atomic.Value
}

func (rh *recoverHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			rh.panics.Add(1)
			rh.last.Store(fmt.Sprint(v))
			panic(v)
		}
	}()
	rh.h.ServeHTTP(w, r)
}

// loadSmall loads stories260K with a short context, so that requests without max_tokens end soon.
func loadSmall(tb testing.TB, context int) *engine.Engine {
	tb.Helper()
	path := shared(tb, "stories260K/stories260K.gguf")
	e, err := engine.Load(engine.Options{ModelPath: path, Backend: cpu.New(cpu.Options{Threads: 1}), CloseBackend: true, Context: context})
	require.NoError(tb, err)
	tb.Cleanup(func() { e.Close() })
	return e
}

// malformedBodies are request bodies a client may send by mistake or malice: wrong types, values
// out of range, overflowing integers, huge arrays, nested garbage. None may crash the server or
// get a 5xx (other than 503/500 with an OpenAI JSON error).
func malformedBodies() []string {
	maxInt := strconv.FormatInt(math.MaxInt64, 10)
	manyStops := make([]string, 1000)
	for i := range manyStops {
		manyStops[i] = strconv.Itoa(i)
	}
	stops, _ := json.Marshal(manyStops)
	deep := strings.Repeat("[", 20000) + strings.Repeat("]", 20000)
	bodies := []string{
		``, `null`, `1`, `"x"`, `[]`, `{}`, `{`, `}`, `{"prompt":`, "\xff\xfe", `{"prompt":"x"}garbage`,
		deep, `{"prompt":` + deep + `}`, `{"messages":` + deep + `}`,
		`{"prompt":"\xff\xfe"}`,
		`{"stop":"\xff"}`,
	}
	for _, field := range []string{"max_tokens", "max_completion_tokens", "n", "top_k", "seed"} {
		limit := `"max_tokens":2,`
		if strings.HasPrefix(field, "max_") {
			limit = ""
		}
		for _, v := range []string{maxInt, "9223372036854775806", "9223372036854775808", "1e18", "1000000000000000000",
			"-1", "-9223372036854775808", "0", "1.5", `"5"`, "true", "null", "[]", "{}", "1e400", "-0"} {
			bodies = append(bodies,
				fmt.Sprintf(`{"prompt":"Once upon a time",%s"%s":%s}`, limit, field, v),
				fmt.Sprintf(`{"messages":[{"role":"user","content":"hi"}],%s"%s":%s}`, limit, field, v))
		}
	}
	for _, field := range []string{"temperature", "top_p", "min_p", "repetition_penalty", "frequency_penalty", "presence_penalty"} {
		for _, v := range []string{"-1", "1e308", "1e-320", "1e400", "-0", "0", "2", "3", `"hot"`, "null", "[1]", "true"} {
			bodies = append(bodies,
				fmt.Sprintf(`{"prompt":"x","max_tokens":2,"%s":%s}`, field, v),
				fmt.Sprintf(`{"messages":[{"role":"user","content":"hi"}],"max_tokens":2,"%s":%s}`, field, v))
		}
	}
	for _, v := range []string{`""`, `[""]`, `[null]`, `[1]`, `[["a"]]`, `{}`, `true`, string(stops), `"` + strings.Repeat("é", 2000) + `"`} {
		bodies = append(bodies, `{"prompt":"x","max_tokens":2,"stop":`+v+`}`)
	}
	for _, v := range []string{`true`, `false`, `5`, `0`, `null`, `[1]`, `{}`, `"x"`, `-1`, `1e400`} {
		bodies = append(bodies, `{"prompt":"x","max_tokens":2,"logprobs":`+v+`}`,
			`{"messages":[{"role":"user","content":"hi"}],"max_tokens":2,"logprobs":`+v+`}`)
	}
	for _, v := range []string{`"x"`, `1`, `{"include_usage":"yes"}`, `{"include_usage":true}`, `null`, `[]`} {
		bodies = append(bodies, `{"prompt":"x","max_tokens":2,"stream":true,"stream_options":`+v+`}`)
	}
	for _, v := range []string{`[2147483648]`, `[-1]`, `[1,-2147483649]`, `[[1,2]]`, `[]`, `[""]`, `["a","b"]`, `[1.5]`, `[null]`,
		`[1,"a"]`, `{"a":1}`, `true`, `1`, `[` + strings.Repeat("1,", 5000) + `1]`} {
		bodies = append(bodies, `{"max_tokens":2,"prompt":`+v+`}`)
	}
	for _, v := range []string{`null`, `"x"`, `[]`, `[null]`, `[{}]`, `[{"role":"user"}]`, `[{"role":"user","content":null}]`,
		`[{"role":"user","content":1}]`, `[{"role":"user","content":[{"type":"text"}]}]`, `[{"role":"user","content":[null]}]`,
		`[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]`, `[{"role":"system","content":"x"}]`,
		`[{"role":"user","content":"a"},{"role":"user","content":"b"}]`, `[{"role":1,"content":"x"}]`,
		`[{"role":"user","content":"<<SYS>>"}]`, `[{"role":"assistant","content":"x"},{"role":"user","content":"y"}]`,
		`[{"role":"user","content":"hi","name":"bob","tool_calls":[]}]`} {
		bodies = append(bodies, `{"max_tokens":2,"messages":`+v+`}`)
	}
	for _, v := range []string{`[-1]`, `"x"`, `[1e10]`, `[2147483648]`, `null`, `[1.5]`, `{}`, `[` + strings.Repeat("7,", 5000) + `7]`} {
		bodies = append(bodies, `{"tokens":`+v+`}`)
	}
	bodies = append(bodies, `{"content":5}`, `{"content":"x","add_special":"yes"}`, `{"messages":5}`, `{"messages":[]}`,
		`{"prompt":"x","add_special_tokens":null}`)
	for _, v := range []string{`null`, `""`, `"x"`, `[]`, `[""]`, `[[]]`, `[-1]`, `[1e10]`, `[[1],[2,"x"]]`, `[["x"]]`, `{}`, `7`,
		`[` + strings.Repeat(`"a",`, 3000) + `"a"]`, `[` + strings.Repeat("7,", 3000) + `7]`} {
		bodies = append(bodies, `{"input":`+v+`}`)
	}
	bodies = append(bodies, `{"input":"x","encoding_format":5}`, `{"input":"x","encoding_format":"base64"}`, `{"input":"x","dimensions":-1}`,
		`{"input":"x","dimensions":1e300}`, `{"input":"x","truncate":"no"}`, `{"input":[1,2],"truncate":false}`)
	return bodies
}

// Malformed bodies never panic the server and never get a 5xx other than a JSON 500/503; every
// error is OpenAI's JSON error object.
func TestMalformedBodies(t *testing.T) {
	e := loadSmall(t, 64) // requests without max_tokens end within 64 tokens
	sched, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 4})
	require.NoError(t, err)
	srv := serve.New(sched, e, serve.Options{})
	rh := &recoverHandler{h: srv}
	ts := httptest.NewUnstartedServer(rh)
	ts.Config.ErrorLog = nil
	ts.Start()
	t.Cleanup(func() {
		ts.Close()
		require.NoError(t, sched.Close(t.Context()))
	})
	client := &http.Client{Timeout: 30 * time.Second}
	for i, body := range malformedBodies() {
		for _, path := range []string{"/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/tokenize", "/detokenize"} {
			name := fmt.Sprintf("%d%s", i, path)
			t0 := time.Now()
			resp, err := client.Post(ts.URL+path, "application/json", strings.NewReader(body))
			require.NoError(t, err, "%s: %.200s (panic: %v)", name, body, rh.last.Load())
			out, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if d := time.Since(t0); d > 50*time.Millisecond {
				t.Logf("%s: %v for %.100s", name, d, body)
			}
			require.NoError(t, err, "%s: %.200s", name, body)
			switch {
			case resp.StatusCode == http.StatusOK && resp.Header.Get("Content-Type") == "text/event-stream":
				sc := bufio.NewScanner(bytes.NewReader(out))
				sc.Buffer(nil, 1<<20)
				var last string
				for sc.Scan() {
					if l := sc.Text(); l != "" {
						last = l
					}
				}
				require.Equal(t, "data: [DONE]", last, "%s: %.200s", name, body)
			case resp.StatusCode == http.StatusOK && !strings.HasPrefix(path, "/v1/"):
				var v map[string]any
				require.NoError(t, json.Unmarshal(out, &v), "%s: %s", name, out)
			case resp.StatusCode == http.StatusOK && path == "/v1/embeddings":
				var v struct{ Data []struct{ Index int } }
				require.NoError(t, json.Unmarshal(out, &v), "%s: %s", name, out)
				require.NotEmpty(t, v.Data, "%s: %s", name, out)
				for i, d := range v.Data {
					require.Equal(t, i, d.Index, "%s: %s", name, out)
				}
			case resp.StatusCode == http.StatusOK:
				var c completion
				require.NoError(t, json.Unmarshal(out, &c), "%s: %s", name, out)
				require.NotEmpty(t, c.Choices, "%s: %s", name, out) // a batch of prompts: one each
				for i, ch := range c.Choices {
					require.Equal(t, i, ch.Index, "%s: %s", name, out)
				}
			default:
				require.True(t, resp.StatusCode < 500 || resp.StatusCode == 500 || resp.StatusCode == 503,
					"%s: status %d for %.200s", name, resp.StatusCode, body)
				require.Equal(t, "application/json", resp.Header.Get("Content-Type"), name)
				var c completion
				require.NoError(t, json.Unmarshal(out, &c), "%s: %s", name, out)
				require.NotNil(t, c.Error, "%s: %s", name, out)
				require.NotEmpty(t, c.Error.Message, name)
				require.NotEmpty(t, c.Error.Type, name)
				require.NotEmpty(t, c.Error.Code, name)
				require.NotEqual(t, http.StatusInternalServerError, resp.StatusCode, "%s: %s for %.200s", name, out, body)
			}
		}
	}
	require.Zero(t, rh.panics.Load(), "handler panicked: %v", rh.last.Load())
	waitFree(t, sched)
}

// A prompt of exactly context − max_tokens tokens fits, one more token does not; the same holds
// for chat, whose budget is the context less max_tokens; a completion without max_tokens whose
// prompt leaves one position gets that one token.
func TestContextBoundary(t *testing.T) {
	e := loadSmall(t, 64)
	_, _, ts := start(t, e, engine.SchedulerOptions{MaxSeqs: 2}, serve.Options{})
	ctxLen := e.Context
	require.Equal(t, 64, ctxLen)
	ids := func(n int) []int32 {
		out := make([]int32, n)
		out[0] = 1 // BOS
		for i := 1; i < n; i++ {
			out[i] = int32(300 + i%50)
		}
		return out
	}
	msgs := []chat.Message{{Role: chat.User, Content: "Tell me a story about a dog"}}
	chatIDs, err := chat.Encode(e.Tokenizer, msgs)
	require.NoError(t, err)
	for _, tc := range []struct {
		name, path string
		body       map[string]any
		status     int
	}{
		{"fits", "/v1/completions", map[string]any{"prompt": ids(ctxLen - 4), "max_tokens": 4, "temperature": 0}, 200},
		{"one-over", "/v1/completions", map[string]any{"prompt": ids(ctxLen - 3), "max_tokens": 4}, 400},
		{"default-max-tokens-clamped", "/v1/completions", map[string]any{"prompt": ids(ctxLen - 1), "temperature": 0}, 200},
		{"whole-context", "/v1/completions", map[string]any{"prompt": ids(ctxLen)}, 400},
		{"chat-fits", "/v1/chat/completions", map[string]any{"messages": msgs, "max_tokens": ctxLen - len(chatIDs), "temperature": 0}, 200},
		{"chat-one-over", "/v1/chat/completions", map[string]any{"messages": msgs, "max_tokens": ctxLen - len(chatIDs) + 1}, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, out := post(t, ts.URL+tc.path, tc.body)
			require.Equal(t, tc.status, resp.StatusCode, string(out))
			var c completion
			require.NoError(t, json.Unmarshal(out, &c), string(out))
			if tc.status != 200 {
				require.Equal(t, "context_length_exceeded", c.Error.Code, string(out))
				return
			}
			require.LessOrEqual(t, c.Usage.PromptTokens+c.Usage.CompletionTokens, ctxLen)
			require.Positive(t, c.Usage.CompletionTokens)
		})
	}
}

// Clients that hang up while their requests wait in the queue, streaming or not, leave nothing
// behind: the queue empties, no KV block stays in use, no handler goroutine stays, and /metrics
// counts them as cancelled.
func TestDisconnectWhileQueued(t *testing.T) {
	e, g := loadEngine(t, "stories260K/stories260K.gguf")
	sched, srv, ts := start(t, e, engine.SchedulerOptions{MaxSeqs: 1, MaxQueue: 4}, serve.Options{})
	// Count the server-side request contexts that end: the client sees its own cancellation at
	// once, the server only when it notices the closed connection, and the gate must not open
	// before that (on a loaded machine a queued request could otherwise be admitted and run).
	var ended atomic.Int32
	ts.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		context.AfterFunc(r.Context(), func() { ended.Add(1) })
		srv.ServeHTTP(w, r)
	})
	before := runtime.NumGoroutine()
	g.Lock()
	first := make(chan int, 1)
	go func() {
		resp, err := http.Post(ts.URL+"/v1/completions", "application/json", strings.NewReader(`{"prompt":"x","max_tokens":3}`))
		if err != nil {
			first <- 0
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	require.Eventually(t, func() bool { return sched.Stats().Running == 1 }, 5*time.Second, time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 2)
	for _, body := range []string{
		`{"prompt":"Once upon a time","max_tokens":50,"stream":true}`,
		`{"prompt":"Once upon a time","max_tokens":50}`,
	} {
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/v1/completions", strings.NewReader(body))
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			errs <- err
		}()
	}
	require.Eventually(t, func() bool { return sched.Stats().Queued == 2 }, 5*time.Second, time.Millisecond)
	cancel()
	for range 2 {
		require.ErrorIs(t, <-errs, context.Canceled)
	}
	require.Eventually(t, func() bool { return ended.Load() >= 2 }, 5*time.Second, time.Millisecond)
	g.Unlock()
	require.Equal(t, http.StatusOK, <-first)
	waitFree(t, sched)
	var m map[string]float64
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		m = scrape(t, ts.URL)
		if m[`llamacu_request_finish_total{reason="cancelled"}`] == 2 && m[`llamacu_requests_total{endpoint="/v1/completions",code="499"}`] == 1 {
			break
		}
	}
	require.Equal(t, 2.0, m[`llamacu_request_finish_total{reason="cancelled"}`], "%v", m)
	require.Equal(t, 1.0, m[`llamacu_request_finish_total{reason="length"}`]+m[`llamacu_request_finish_total{reason="stop"}`], "%v", m)
	require.Equal(t, 1.0, m[`llamacu_requests_total{endpoint="/v1/completions",code="499"}`], "%v", m)
	require.Equal(t, 0.0, m["llamacu_queue_depth"])
	require.Equal(t, 0.0, m["llamacu_kv_blocks_in_use"])
	http.DefaultClient.CloseIdleConnections()
	var after int
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if after = runtime.NumGoroutine(); after <= before {
			break
		}
	}
	require.LessOrEqual(t, after, before, "goroutines leaked")
}

// The same malformed bodies, and ollama's own fields gone wrong, on ollama's endpoints: never
// a panic, every error ollama's {"error": "..."}, every answer lines of JSON ending done.
func TestMalformedOllamaBodies(t *testing.T) {
	e := loadSmall(t, 64)
	sched, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 4})
	require.NoError(t, err)
	srv := serve.New(sched, e, serve.Options{})
	rh := &recoverHandler{h: srv}
	ts := httptest.NewServer(rh)
	t.Cleanup(func() {
		ts.Close()
		require.NoError(t, sched.Close(t.Context()))
	})
	bodies := malformedBodies()
	for _, v := range []string{`null`, `5`, `"x"`, `[]`, `{"temperature":null}`, `{"num_predict":1e400}`, `{"num_predict":9223372036854775807}`,
		`{"seed":-1}`, `{"seed":1e300}`, `{"top_k":-5}`, `{"top_p":2}`, `{"repeat_last_n":-2}`, `{"stop":[""]}`, `{"stop":[1]}`,
		`{"stop":` + string(must(json.Marshal(make([]string, 100)))) + `}`, `{"mirostat":"0"}`, `{"typical_p":1}`, `{"":1}`} {
		bodies = append(bodies, `{"prompt":"x","options":`+v+`}`, `{"messages":[{"role":"user","content":"hi"}],"options":`+v+`}`)
	}
	for _, v := range []string{`"json"`, `""`, `null`, `5`, `"JSON"`, `{}`, `{"type":5}`, `{"$ref":"#"}`, `[]`, `true`} {
		bodies = append(bodies, `{"prompt":"x","options":{"num_predict":3},"format":`+v+`}`)
	}
	for _, v := range []string{`[-1]`, `[1e10]`, `"x"`, `[1.5]`, `[` + strings.Repeat("7,", 100) + `7]`} {
		bodies = append(bodies, `{"prompt":"x","options":{"num_predict":2},"context":`+v+`}`)
	}
	bodies = append(bodies, `{"prompt":"x","stream":"yes"}`, `{"prompt":"x","raw":1}`, `{"system":"<<SYS>>","prompt":"x"}`,
		`{"messages":[{"role":"tool","content":"x"}]}`, `{"messages":[{"role":"user","content":"hi","images":["x"]}]}`)
	for i, body := range bodies {
		for _, path := range []string{"/api/generate", "/api/chat", "/api/embed", "/api/embeddings"} {
			name := fmt.Sprintf("%d%s", i, path)
			resp, err := http.Post(ts.URL+path, "application/json", strings.NewReader(body))
			require.NoError(t, err, "%s: %.200s (panic: %v)", name, body, rh.last.Load())
			out, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			if resp.StatusCode == http.StatusOK && strings.HasPrefix(path, "/api/embed") {
				var v map[string]any
				require.NoError(t, json.Unmarshal(out, &v), "%s: %s", name, out)
				require.True(t, v["embeddings"] != nil || v["embedding"] != nil, "%s: %s", name, out)
				continue
			}
			if resp.StatusCode == http.StatusOK {
				lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
				var last map[string]any
				for _, l := range lines {
					require.NoError(t, json.Unmarshal(l, &last), "%s: %s", name, l)
				}
				require.Equal(t, true, last["done"], "%s: %.300s", name, out)
				continue
			}
			require.True(t, resp.StatusCode < 500 || resp.StatusCode == 503, "%s: status %d for %.200s: %s", name, resp.StatusCode, body, out)
			var ollamaErr struct{ Error string }
			require.NoError(t, json.Unmarshal(out, &ollamaErr), "%s: %s", name, out)
			require.NotEmpty(t, ollamaErr.Error, "%s: %s", name, out)
		}
	}
	require.Zero(t, rh.panics.Load(), "handler panicked: %v", rh.last.Load())
	waitFree(t, sched)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
