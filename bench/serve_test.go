package bench

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeServer streams max_tokens fake tokens per request over SSE: the first after ttft, the rest
// itl apart, then a usage chunk and [DONE]. Prompts starting with stopWord end after 3 tokens
// (an "EOS"). It checks the request as an OpenAI client would send it.
type fakeServer struct {
	t        *testing.T
	ttft     time.Duration
	itl      time.Duration
	stopWord string
	key      string
	seen     atomic.Int64
	bad      atomic.Int64
	inFlight atomic.Int64
	maxSeen  atomic.Int64
	fail     func(n int64) int // status to answer instead, or 0
	prompts  sync.Map          // every prompt received
}

func (f *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := f.seen.Add(1)
	cur := f.inFlight.Add(1)
	finished := false
	end := func() { // before the last bytes: the client may start its next request on [DONE]
		if !finished {
			finished = true
			f.inFlight.Add(-1)
		}
	}
	defer end()
	for {
		m := f.maxSeen.Load()
		if cur <= m || f.maxSeen.CompareAndSwap(m, cur) {
			break
		}
	}
	var req struct {
		Prompt        string         `json:"prompt"`
		MaxTokens     int            `json:"max_tokens"`
		Temperature   *float64       `json:"temperature"`
		Stream        bool           `json:"stream"`
		StreamOptions map[string]any `json:"stream_options"`
		Model         string         `json:"model"`
		IgnoreEOS     bool           `json:"ignore_eos"`
	}
	if r.Method != http.MethodPost || r.URL.Path != "/v1/completions" || !f.authorized(r) ||
		json.NewDecoder(r.Body).Decode(&req) != nil || !req.Stream || req.Temperature == nil || *req.Temperature != 0 ||
		req.MaxTokens < 1 || req.Prompt == "" || req.Model != "fake" {
		f.bad.Add(1)
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	f.prompts.Store(req.Prompt, true)
	if f.fail != nil {
		if code := f.fail(n); code != 0 {
			http.Error(w, `{"error":{"message":"overloaded"}}`, code)
			return
		}
	}
	w.Header().Set("Content-Type", "text/event-stream")
	fl := w.(http.Flusher)
	tokens := req.MaxTokens
	if strings.HasPrefix(req.Prompt, f.stopWord+" ") && !req.IgnoreEOS {
		tokens = 3
	}
	time.Sleep(f.ttft)
	for i := 0; i < tokens; i++ {
		if i > 0 {
			time.Sleep(f.itl)
		}
		fmt.Fprintf(w, "data: {\"choices\":[{\"text\":\" tok%d\",\"index\":0,\"finish_reason\":null}]}\n\n", i)
		fl.Flush()
	}
	end()
	fmt.Fprintf(w, ": a comment line\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d}}\n\ndata: [DONE]\n\n",
		len(strings.Fields(req.Prompt))+1, tokens)
	fl.Flush()
}

func (f *fakeServer) authorized(r *http.Request) bool {
	if f.key == "" {
		return r.Header.Get("Authorization") == ""
	}
	return r.Header.Get("Authorization") == "Bearer "+f.key
}

func TestDataset(t *testing.T) {
	a := Dataset(7, 5, 12)
	require.Equal(t, a, Dataset(7, 5, 12), "seeded")
	require.NotEqual(t, a, Dataset(8, 5, 12))
	require.Len(t, a, 5)
	for _, p := range a {
		require.Len(t, strings.Fields(p), 12)
	}
	require.NotEqual(t, a[0], a[1])
}

func TestRunServe(t *testing.T) {
	const ttft, itl = 40 * time.Millisecond, 8 * time.Millisecond
	// Find a word that starts some prompts of the dataset, to make those stop early.
	prompts := Dataset(3, 12, 6)
	stop := strings.Fields(prompts[0])[0]
	early := 0
	for _, p := range prompts {
		if strings.HasPrefix(p, stop+" ") {
			early++
		}
	}
	f := &fakeServer{t: t, ttft: ttft, itl: itl, stopWord: stop, key: "sekrit"}
	srv := httptest.NewServer(f)
	defer srv.Close()
	o := ServeOptions{URL: srv.URL + "/", APIKey: "sekrit", Model: "fake", Requests: 12, InputLen: 6, OutputLen: 10, Seed: 3}
	for _, conc := range []int{1, 4} {
		t.Run(fmt.Sprint(conc), func(t *testing.T) {
			f.maxSeen.Store(0)
			res, err := RunServe(context.Background(), o, conc)
			require.NoError(t, err)
			require.Zero(t, f.bad.Load(), "every request was well formed")
			require.Equal(t, conc, res.Concurrency)
			require.Equal(t, 12, res.Completed, res.Errors)
			require.Zero(t, res.Failed)
			require.Equal(t, early, res.EarlyStops)
			require.Equal(t, (12-early)*10+early*3, res.OutputTokens)
			require.Equal(t, 12*7, res.InputTokens, "usage.prompt_tokens summed")
			require.LessOrEqual(t, f.maxSeen.Load(), int64(conc), "never more than the concurrency in flight")

			ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
			// Lower bounds are exact (the server sleeps at least that long); upper bounds allow a
			// loaded 2-core machine's scheduling noise.
			require.GreaterOrEqual(t, res.TTFTms.Min, ms(ttft))
			require.Less(t, res.TTFTms.Median, ms(ttft)+200)
			// A single gap may be short (its first token arrived late), the mean may not.
			require.GreaterOrEqual(t, res.ITLms.Mean, ms(itl)*0.9)
			require.Less(t, res.ITLms.Median, ms(itl)+50)
			require.GreaterOrEqual(t, res.TPOTms.Median, ms(itl)*0.9)
			require.Less(t, res.TPOTms.Median, ms(itl)+50)
			require.Equal(t, (12-early)*9+early*2, res.ITLms.N, "one gap between each pair of tokens")
			// A full request takes ttft + 9 itl = 112 ms; E2E is at least that.
			require.GreaterOrEqual(t, res.E2Ems.Max, ms(ttft+9*itl))
			require.GreaterOrEqual(t, res.E2Ems.P99, res.E2Ems.P90)
			require.GreaterOrEqual(t, res.E2Ems.P90, res.E2Ems.Median)
			// Throughput: 12 requests of ≥ 40 ms each, conc at a time.
			wall := res.DurationS
			require.GreaterOrEqual(t, wall, float64(12/conc)*ms(ttft)/1000)
			require.InDelta(t, float64(res.Completed)/wall, res.RequestsPerS, 1e-9)
			require.InDelta(t, float64(res.OutputTokens)/wall, res.OutputTokS, 1e-9)
		})
	}
}

// IgnoreEOS sends ignore_eos: no request stops early.
func TestRunServeIgnoreEOS(t *testing.T) {
	prompts := Dataset(3, 12, 6)
	f := &fakeServer{t: t, stopWord: strings.Fields(prompts[0])[0]}
	srv := httptest.NewServer(f)
	defer srv.Close()
	o := ServeOptions{URL: srv.URL, Model: "fake", Requests: 12, InputLen: 6, OutputLen: 5, Seed: 3, IgnoreEOS: true}
	res, err := RunServe(context.Background(), o, 3)
	require.NoError(t, err)
	require.Equal(t, 12, res.Completed, res.Errors)
	require.Zero(t, res.EarlyStops)
	require.Equal(t, 12*5, res.OutputTokens)
}

// --prefix-len: every prompt opens with the same words, then its own --input-len; the report
// says so.
func TestRunServePrefix(t *testing.T) {
	f := &fakeServer{t: t, stopWord: "-"}
	srv := httptest.NewServer(f)
	defer srv.Close()
	o := ServeOptions{URL: srv.URL, Model: "fake", Requests: 6, InputLen: 5, PrefixLen: 20, OutputLen: 2, Seed: 4}
	res, err := RunServe(context.Background(), o, 2)
	require.NoError(t, err)
	require.Equal(t, 6, res.Completed, res.Errors)
	var prefix string
	n := 0
	f.prompts.Range(func(k, _ any) bool {
		w := strings.Fields(k.(string))
		require.Len(t, w, 25)
		p := strings.Join(w[:20], " ")
		if prefix == "" {
			prefix = p
		}
		require.Equal(t, prefix, p, "one prefix for all")
		n++
		return true
	})
	require.Equal(t, 6, n, "distinct prompts after the prefix")
	rep := NewServeReport(o)
	rep.Results = append(rep.Results, res)
	var md strings.Builder
	require.NoError(t, rep.WriteMarkdown(&md))
	require.Contains(t, md.String(), "after a 20-word prefix shared by all")
}

func TestRunServeFailures(t *testing.T) {
	f := &fakeServer{t: t, key: "k", stopWord: "-", fail: func(n int64) int {
		if n%3 == 0 {
			return http.StatusTooManyRequests
		}
		return 0
	}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	o := ServeOptions{URL: srv.URL, APIKey: "k", Model: "fake", Requests: 9, InputLen: 2, OutputLen: 2}
	res, err := RunServe(context.Background(), o, 1)
	require.NoError(t, err)
	require.Equal(t, 6, res.Completed)
	require.Equal(t, 3, res.Failed)
	require.Contains(t, res.Errors[0], "HTTP 429")

	o.APIKey = "wrong"
	res, err = RunServe(context.Background(), o, 2)
	require.NoError(t, err)
	require.Equal(t, 9, res.Failed)
	require.Contains(t, res.Errors[0], "HTTP 400")

	// A stream cut before [DONE] is a failure, not a short success.
	cut := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "data: {\"choices\":[{\"text\":\"a\"}]}\n\n")
	}))
	defer cut.Close()
	res, err = RunServe(context.Background(), ServeOptions{URL: cut.URL, Requests: 2, InputLen: 1, OutputLen: 4}, 1)
	require.NoError(t, err)
	require.Equal(t, 2, res.Failed)
	require.Contains(t, res.Errors[0], "[DONE]")

	_, err = RunServe(context.Background(), ServeOptions{URL: cut.URL, Requests: 0, InputLen: 1, OutputLen: 1}, 1)
	require.ErrorIs(t, err, ErrOptions)
}

func TestServeReportFormats(t *testing.T) {
	f := &fakeServer{t: t, key: "", stopWord: "-"}
	srv := httptest.NewServer(f)
	defer srv.Close()
	o := ServeOptions{URL: srv.URL, Model: "fake", Requests: 4, InputLen: 3, OutputLen: 3, Seed: 1}
	rep := NewServeReport(o)
	for _, c := range []int{1, 2} {
		res, err := RunServe(context.Background(), o, c)
		require.NoError(t, err)
		rep.Results = append(rep.Results, res)
	}
	var js, md, cs bytes.Buffer
	require.NoError(t, rep.Write(&js, "json"))
	var back ServeReport
	require.NoError(t, json.Unmarshal(js.Bytes(), &back))
	require.Equal(t, ServeSchema, back.Schema)
	require.Len(t, back.Results, 2)
	require.NoError(t, rep.Write(&md, "md"))
	require.Contains(t, md.String(), "| 2 | 4 | 0 | 0 |")
	require.NoError(t, rep.Write(&cs, "csv"))
	rows, err := csv.NewReader(&cs).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 3)
	require.Len(t, rows[1], len(rows[0]))
}
