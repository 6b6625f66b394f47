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
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/sample"
	"github.com/llamacu/llamacu/serve"
)

// loadPrompts and their max_tokens: client i sends loadPrompts[i%8] with 24 + 8·(i%8) tokens.
var loadPrompts = []string{
	"Once upon a time", "", "Lily and Tom went to the park. They saw a big dog.", "The cat",
	"One day, a little girl named Sue found a red ball.", "Tim had a toy car.", "The sun was hot.", "Mom said",
}

func loadMaxTokens(i int) int { return 24 + 8*(i%len(loadPrompts)) }

// clientResult is what one streaming client saw.
type clientResult struct {
	status     int
	text       string
	finish     string
	completion int // usage.completion_tokens
	done       bool
	retries    int // 429s before it got in
	hungUp     bool
	err        error
}

// streamOnce posts one streaming completion. With hangUpAfter > 0 it closes the connection after
// that many events.
func streamOnce(client *http.Client, url string, body []byte, hangUpAfter int) clientResult {
	var r clientResult
	resp, err := client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		r.err = err
		return r
	}
	defer resp.Body.Close()
	r.status = resp.StatusCode
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return r
	}
	sc := bufio.NewScanner(resp.Body)
	events := 0
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			r.err = fmt.Errorf("not an SSE line: %q", line)
			return r
		}
		if data == "[DONE]" {
			r.done = true
			continue
		}
		var c completion
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			r.err = err
			return r
		}
		if c.Error != nil {
			r.err = fmt.Errorf("error event: %s", c.Error.Message)
			return r
		}
		for _, ch := range c.Choices {
			r.text += ch.Text
			if ch.FinishReason != nil {
				r.finish = *ch.FinishReason
			}
		}
		if c.Usage != nil {
			r.completion = c.Usage.CompletionTokens
		}
		events++
		if hangUpAfter > 0 && events == hangUpAfter {
			r.hungUp = true
			return r // closing the body drops the connection
		}
	}
	r.err = sc.Err()
	return r
}

// runClients starts n streaming clients at once. Clients with hangUp(i) > 0 disconnect midway;
// a client answered 429 retries after a short pause (up to a limit), so every other one
// completes.
func runClients(t *testing.T, base string, n int, maxTokens func(i int) int, hangUp func(i int) int) ([]clientResult, time.Duration) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: 0}}
	defer client.CloseIdleConnections()
	results := make([]clientResult, n)
	var ready, wg sync.WaitGroup
	startGun := make(chan struct{})
	ready.Add(n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body, _ := json.Marshal(map[string]any{
				"prompt": loadPrompts[i%len(loadPrompts)], "max_tokens": maxTokens(i), "temperature": 0,
				"stream": true, "stream_options": map[string]bool{"include_usage": true},
			})
			ready.Done()
			<-startGun
			retries := 0
			for {
				r := streamOnce(client, base+"/v1/completions", body, hangUp(i))
				if r.status == http.StatusTooManyRequests && retries < 2000 {
					retries++
					time.Sleep(time.Duration(2+i%5) * time.Millisecond)
					continue
				}
				r.retries = retries
				results[i] = r
				return
			}
		}()
	}
	ready.Wait()
	start := time.Now()
	close(startGun)
	wg.Wait()
	return results, time.Since(start)
}

// The load test: 64 concurrent streaming clients over loopback, some hanging up midway, against
// a small queue (so that some are answered 429 and retry). Every completed stream equals its solo
// greedy run (no lost or duplicated tokens), no KV block or goroutine leaks, and the aggregate
// throughput of continuous batching is compared with one request at a time, on stories260K
// (where HTTP and JSON dominate) and on a ~25M-parameter synthetic model (where the forward pass
// does).
func TestLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test skipped with -short")
	}
	const clients = 64
	stories, _ := loadEngine(t, "stories260K/stories260K.gguf")
	cfg := model.Config{Name: "bench-25m", Dim: 512, Layers: 8, Heads: 8, KVHeads: 8, FFN: 1376, Vocab: 512,
		MaxSeq: 256, NormEps: 1e-5, RopeTheta: 10000}
	synth, err := engine.Load(engine.Options{SyntheticConfig: &cfg})
	require.NoError(t, err)
	defer synth.Close()
	synthTokens := func(int) int { return 12 }
	refsFor := func(e *engine.Engine, maxTokens func(int) int) []reference {
		refs := make([]reference, len(loadPrompts))
		for i, p := range loadPrompts {
			refs[i] = generate(t, e, engine.Request{Prompt: p, MaxTokens: maxTokens(i), Sampling: sample.GreedyParams()})
		}
		return refs
	}
	storyRefs := refsFor(stories, loadMaxTokens)
	var synthRefs []reference
	if !raceEnabled {
		synthRefs = refsFor(synth, synthTokens)
	}
	before := runtime.NumGoroutine()
	deadline := time.Now().Add(60 * time.Second)

	serveWith := func(e *engine.Engine, opts engine.SchedulerOptions) (*engine.Scheduler, *httptest.Server, func()) {
		sched, err := engine.NewScheduler(e, opts)
		require.NoError(t, err)
		ts := httptest.NewServer(serve.New(sched, e, serve.Options{}))
		return sched, ts, func() {
			ts.Close()
			require.NoError(t, sched.Close(context.Background()))
		}
	}
	check := func(t *testing.T, refs []reference, results []clientResult) (completed, hungUp, retried, tokens int) {
		for i, r := range results {
			require.NoError(t, r.err, "client %d", i)
			require.Equal(t, http.StatusOK, r.status, "client %d", i)
			retried += r.retries
			if r.hungUp {
				hungUp++
				continue
			}
			ref := refs[i%len(refs)]
			require.True(t, r.done, "client %d: no [DONE]", i)
			require.Equal(t, ref.text, r.text, "client %d: text differs from the solo greedy run", i)
			require.Equal(t, ref.reason, r.finish, "client %d", i)
			require.Equal(t, ref.tokens, r.completion, "client %d", i)
			completed++
			tokens += r.completion
		}
		return
	}

	t.Run("stress", func(t *testing.T) {
		sched, ts, stop := serveWith(stories, engine.SchedulerOptions{MaxSeqs: 8, MaxQueue: 4, MaxBatchTokens: 64})
		defer stop()
		results, wall := runClients(t, ts.URL, clients, loadMaxTokens, func(i int) int {
			if i%4 == 3 {
				return 1 + i%5 // hang up after a few events
			}
			return 0
		})
		completed, hungUp, retried, tokens := check(t, storyRefs, results)
		t.Logf("stress: %d clients, %d completed, %d hung up midway, %d answers of 429 (retried); %d tokens in %v",
			clients, completed, hungUp, retried, tokens, wall.Round(time.Millisecond))
		require.Equal(t, clients/4, hungUp)
		require.Positive(t, retried, "a queue of 4 behind 8 running sequences should turn some of 64 clients away")
		waitFree(t, sched)
		// Handlers of clients that hung up record themselves as they notice: wait for them.
		var m map[string]float64
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
			if m = scrape(t, ts.URL); m[`llamacu_requests_total{endpoint="/v1/completions",code="200"}`] == clients {
				break
			}
		}
		require.Equal(t, 0.0, m["llamacu_kv_blocks_in_use"])
		require.Equal(t, 0.0, m["llamacu_running_sequences"])
		require.Equal(t, 0.0, m["llamacu_queue_depth"])
		require.Equal(t, float64(retried), m[`llamacu_requests_total{endpoint="/v1/completions",code="429"}`])
		require.Equal(t, float64(clients), m[`llamacu_requests_total{endpoint="/v1/completions",code="200"}`])
		require.True(t, time.Now().Before(deadline), "over the time budget")
	})

	for _, tc := range []struct {
		name      string
		e         *engine.Engine
		refs      []reference
		maxTokens func(int) int
	}{
		{"throughput/stories260K", stories, storyRefs, loadMaxTokens},
		{"throughput/synthetic-25M", synth, synthRefs, synthTokens},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if raceEnabled && tc.e == synth {
				t.Skip("a compute-bound timing under the race detector means nothing")
			}
			tps := map[int]float64{}
			for _, maxSeqs := range []int{1, 16} {
				_, ts, stop := serveWith(tc.e, engine.SchedulerOptions{MaxSeqs: maxSeqs, MaxQueue: clients})
				results, wall := runClients(t, ts.URL, clients, tc.maxTokens, func(int) int { return 0 })
				stop()
				completed, _, retried, tokens := check(t, tc.refs, results)
				require.Equal(t, clients, completed)
				require.Zero(t, retried)
				tps[maxSeqs] = float64(tokens) / wall.Seconds()
				t.Logf("MaxSeqs %2d: %d streaming requests, %d tokens in %v: %.0f tokens/s aggregate",
					maxSeqs, completed, tokens, wall.Round(time.Millisecond), tps[maxSeqs])
			}
			t.Logf("continuous batching (16 sequences) vs one request at a time: %.2f×", tps[16]/tps[1])
			require.True(t, time.Now().Before(deadline), "over the time budget")
		})
	}

	var after int
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if after = runtime.NumGoroutine(); after <= before {
			break
		}
	}
	if after > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("goroutines: %d before, %d after\n%s", before, after, buf[:runtime.Stack(buf, true)])
	}
}
