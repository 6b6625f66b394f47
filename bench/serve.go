package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ServeSchema names the JSON layout of ServeReport.
const ServeSchema = "llamacu-bench-serve/1"

// ServeOptions configure a serving benchmark against an OpenAI-compatible server.
type ServeOptions struct {
	// URL is the server's base URL ("http://127.0.0.1:8080"); "/v1/completions" is appended unless
	// the URL already ends with it.
	URL    string
	APIKey string // sent as "Authorization: Bearer KEY" when not empty
	Model  string // the request's "model" field (omitted when empty)
	// Requests is how many requests each concurrency level sends.
	Requests int
	InputLen int // words in each prompt (≈ tokens: each is a common English word)
	// PrefixLen words open every prompt, the same for all (a shared system prompt: what a prefix
	// cache serves), before InputLen words of its own (vLLM's --random-prefix-len).
	PrefixLen int
	// IgnoreEOS asks the server to generate OutputLen tokens whatever it samples (ignore_eos).
	IgnoreEOS bool
	OutputLen int    // max_tokens of each request
	Seed      uint64 // picks the prompts (0: 1)
	// Timeout bounds each request (0: 10 minutes).
	Timeout time.Duration
	Client  *http.Client // nil: a client without a global timeout
}

// RequestResult is the timing of one streamed request.
type RequestResult struct {
	OK           bool
	Err          string
	OutputTokens int             // usage.completion_tokens when the server sends it, else content chunks
	Chunks       int             // SSE events that carried text
	TTFT         time.Duration   // request sent → first text
	E2E          time.Duration   // request sent → stream closed
	ITL          []time.Duration // gaps between consecutive text events
}

// ServeResult is one concurrency level. Latency summaries are in milliseconds.
type ServeResult struct {
	Concurrency  int      `json:"concurrency"`
	Requests     int      `json:"requests"`
	Completed    int      `json:"completed"`
	Failed       int      `json:"failed"`
	EarlyStops   int      `json:"early_stops"` // completed with fewer tokens than output_len (EOS)
	DurationS    float64  `json:"duration_s"`
	InputTokens  int      `json:"input_tokens,omitempty"` // usage.prompt_tokens summed, when reported
	OutputTokens int      `json:"output_tokens"`
	RequestsPerS float64  `json:"requests_per_s"`
	OutputTokS   float64  `json:"output_tok_s"`
	TTFTms       Summary  `json:"ttft_ms"`
	TPOTms       Summary  `json:"tpot_ms"` // (E2E − TTFT) / (output tokens − 1), per request
	ITLms        Summary  `json:"itl_ms"`  // every gap between text events, all requests pooled
	E2Ems        Summary  `json:"e2e_ms"`
	Errors       []string `json:"errors,omitempty"` // the first few failures
}

// ServeReport is a serving benchmark over several concurrency levels.
type ServeReport struct {
	Schema    string        `json:"schema"`
	Tool      string        `json:"tool"`
	Date      string        `json:"date"`
	Commit    string        `json:"commit"`
	URL       string        `json:"url"`
	Model     string        `json:"model,omitempty"`
	Requests  int           `json:"requests"`
	InputLen  int           `json:"input_len"`
	PrefixLen int           `json:"prefix_len,omitempty"`
	OutputLen int           `json:"output_len"`
	Seed      uint64        `json:"seed"`
	Results   []ServeResult `json:"results"`
}

// NewServeReport starts a report for o.
func NewServeReport(o ServeOptions) *ServeReport {
	return &ServeReport{Schema: ServeSchema, Tool: "llamacu", Date: time.Now().UTC().Format(time.RFC3339), Commit: Commit(),
		URL: o.URL, Model: o.Model, Requests: o.Requests, InputLen: o.InputLen, PrefixLen: o.PrefixLen, OutputLen: o.OutputLen, Seed: max(o.Seed, 1)}
}

// datasetWords are common English words, each one LLaMA token with its leading space.
var datasetWords = strings.Fields(`the of and to a in is was that for it with as he on be at by his had not are but from or
have an they which one you were her all she there would their we him been has when who will more no if out so said what
up its about into than them can only other new some could time these two may then do first any my now such like our over
man me even most made after also did many before must through back years where much your way well down should because
each just those people how too little state good very make world still own see men work long get here between both life
being under never day same another know while last might us great old year off come since against go came right used take
three`)

// Dataset returns n prompts of inputLen words drawn from a fixed list by a seeded generator: the
// same (seed, n, inputLen) always gives the same prompts, so runs are comparable. Each word is a
// single token in LLaMA's vocabulary, so a prompt is ≈ inputLen tokens (plus BOS).
func Dataset(seed uint64, n, inputLen int) []string {
	rng := splitmix(max(seed, 1))
	out := make([]string, n)
	words := make([]string, inputLen)
	for i := range out {
		for j := range words {
			words[j] = datasetWords[rng.next()%uint64(len(datasetWords))]
		}
		out[i] = strings.Join(words, " ")
	}
	return out
}

func (o ServeOptions) endpoint() string {
	u := strings.TrimRight(o.URL, "/")
	if strings.HasSuffix(u, "/v1/completions") {
		return u
	}
	return u + "/v1/completions"
}

// completionRequest is the body of a streamed /v1/completions request. ignore_eos is not in the
// OpenAI API (vLLM, llama.cpp's server and llamacu accept it): without it (ServeOptions.IgnoreEOS)
// outputs may end early at EOS, and the benchmark counts the tokens actually returned and
// reports how many requests stopped short.
type completionRequest struct {
	IgnoreEOS     bool           `json:"ignore_eos,omitempty"`
	Model         string         `json:"model,omitempty"`
	Prompt        string         `json:"prompt"`
	MaxTokens     int            `json:"max_tokens"`
	Temperature   float64        `json:"temperature"`
	Stream        bool           `json:"stream"`
	StreamOptions map[string]any `json:"stream_options,omitempty"`
}

type completionChunk struct {
	Choices []struct {
		Text         string  `json:"text"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
	Error *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// RunServe sends o.Requests streamed requests, at most concurrency in flight at once (each worker
// sends its next request as soon as its last one ends), and summarises them.
func RunServe(ctx context.Context, o ServeOptions, concurrency int) (ServeResult, error) {
	if o.Requests < 1 || o.InputLen < 1 || o.OutputLen < 1 || concurrency < 1 || o.PrefixLen < 0 {
		return ServeResult{}, fmt.Errorf("%w: requests, input-len, output-len and concurrency must be ≥ 1", ErrOptions)
	}
	if o.Client == nil {
		o.Client = &http.Client{}
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Minute
	}
	prompts := Dataset(o.Seed, o.Requests, o.InputLen)
	if o.PrefixLen > 0 {
		prefix := Dataset(o.Seed^0x5eed, 1, o.PrefixLen)[0]
		for i := range prompts {
			prompts[i] = prefix + " " + prompts[i]
		}
	}
	results := make([]RequestResult, len(prompts))
	inputTokens := make([]int, len(prompts))
	next := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < min(concurrency, len(prompts)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				results[i], inputTokens[i] = o.one(ctx, prompts[i])
			}
		}()
	}
	for i := range prompts {
		if ctx.Err() != nil {
			results[i] = RequestResult{Err: ctx.Err().Error()}
			continue
		}
		next <- i
	}
	close(next)
	wg.Wait()
	dur := time.Since(start)
	res := summariseServe(results, dur, o.OutputLen)
	res.Concurrency = concurrency
	for _, n := range inputTokens {
		res.InputTokens += n
	}
	return res, ctx.Err()
}

func summariseServe(rs []RequestResult, dur time.Duration, outputLen int) ServeResult {
	res := ServeResult{Requests: len(rs), DurationS: dur.Seconds()}
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	var ttft, tpot, itl, e2e []float64
	for _, r := range rs {
		if !r.OK {
			res.Failed++
			if len(res.Errors) < 5 {
				res.Errors = append(res.Errors, r.Err)
			}
			continue
		}
		res.Completed++
		res.OutputTokens += r.OutputTokens
		if r.OutputTokens < outputLen {
			res.EarlyStops++
		}
		ttft = append(ttft, ms(r.TTFT))
		e2e = append(e2e, ms(r.E2E))
		if r.OutputTokens > 1 {
			tpot = append(tpot, ms(r.E2E-r.TTFT)/float64(r.OutputTokens-1))
		}
		for _, d := range r.ITL {
			itl = append(itl, ms(d))
		}
	}
	if s := dur.Seconds(); s > 0 {
		res.RequestsPerS = float64(res.Completed) / s
		res.OutputTokS = float64(res.OutputTokens) / s
	}
	res.TTFTms, res.TPOTms, res.ITLms, res.E2Ems = Summarize(ttft), Summarize(tpot), Summarize(itl), Summarize(e2e)
	return res
}

// one sends a request and times its stream; it returns the result and the prompt tokens the server
// reported (0 if none).
func (o ServeOptions) one(ctx context.Context, prompt string) (RequestResult, int) {
	var r RequestResult
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	body, _ := json.Marshal(completionRequest{IgnoreEOS: o.IgnoreEOS, Model: o.Model, Prompt: prompt, MaxTokens: o.OutputLen, Temperature: 0, Stream: true,
		StreamOptions: map[string]any{"include_usage": true}})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.endpoint(), bytes.NewReader(body))
	if err != nil {
		r.Err = err.Error()
		return r, 0
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	if o.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+o.APIKey)
	}
	start := time.Now()
	resp, err := o.Client.Do(req)
	if err != nil {
		r.Err = err.Error()
		return r, 0
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		r.Err = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(msg)))
		return r, 0
	}
	var (
		last       time.Time
		usage      *int
		promptToks int
		done       bool
	)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		data, ok := strings.CutPrefix(line, "data:")
		if !ok {
			continue // comments, event names, blank separators
		}
		data = strings.TrimSpace(data)
		if data == "[DONE]" {
			done = true
			break
		}
		now := time.Now()
		var c completionChunk
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			r.Err = fmt.Sprintf("bad SSE event %q: %v", truncate(data, 80), err)
			return r, 0
		}
		if c.Error != nil {
			r.Err = "server error: " + c.Error.Message
			return r, 0
		}
		if c.Usage != nil {
			n := c.Usage.CompletionTokens
			usage, promptToks = &n, c.Usage.PromptTokens
		}
		if len(c.Choices) == 0 || c.Choices[0].Text == "" {
			continue
		}
		if r.Chunks == 0 {
			r.TTFT = now.Sub(start)
		} else {
			r.ITL = append(r.ITL, now.Sub(last))
		}
		last = now
		r.Chunks++
	}
	r.E2E = time.Since(start)
	if err := sc.Err(); err != nil {
		r.Err = err.Error()
		return r, 0
	}
	if !done {
		r.Err = "stream ended without data: [DONE]"
		return r, 0
	}
	if r.Chunks == 0 && (usage == nil || *usage == 0) {
		r.Err = "no tokens streamed"
		return r, 0
	}
	r.OutputTokens = r.Chunks
	if usage != nil {
		r.OutputTokens = *usage
	}
	r.OK = true
	return r, promptToks
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// WriteJSON writes r as indented JSON.
func (r *ServeReport) WriteJSON(w io.Writer) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// WriteMarkdown writes a table per metric family, one row per concurrency level.
func (r *ServeReport) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	prefix := ""
	if r.PrefixLen > 0 {
		prefix = fmt.Sprintf(" after a %d-word prefix shared by all", r.PrefixLen)
	}
	fmt.Fprintf(&b, "## serving: %s\n\n- %d requests per level, input %d words%s, output ≤ %d tokens (temperature 0, seed %d)\n- %s, commit %s, %s\n\n",
		r.URL, r.Requests, r.InputLen, prefix, r.OutputLen, r.Seed, r.Tool, r.Commit, r.Date)
	b.WriteString("| concurrency | done | failed | early stop | req/s | output tok/s | TTFT mean / median / p90 / p99 ms | TPOT mean / median / p90 / p99 ms | ITL mean / median / p90 / p99 ms | E2E mean / median / p90 / p99 ms |\n")
	b.WriteString("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	q := func(s Summary) string {
		return fmt.Sprintf("%.1f / %.1f / %.1f / %.1f", s.Mean, s.Median, s.P90, s.P99)
	}
	for _, x := range r.Results {
		fmt.Fprintf(&b, "| %d | %d | %d | %d | %.2f | %.1f | %s | %s | %s | %s |\n", x.Concurrency, x.Completed, x.Failed, x.EarlyStops,
			x.RequestsPerS, x.OutputTokS, q(x.TTFTms), q(x.TPOTms), q(x.ITLms), q(x.E2Ems))
	}
	for _, x := range r.Results {
		for _, e := range x.Errors {
			fmt.Fprintf(&b, "\nconcurrency %d: %s\n", x.Concurrency, e)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteCSV writes one row per concurrency level.
func (r *ServeReport) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	head := []string{"url", "concurrency", "requests", "completed", "failed", "early_stops", "duration_s", "output_tokens", "requests_per_s", "output_tok_s"}
	for _, m := range []string{"ttft", "tpot", "itl", "e2e"} {
		for _, s := range []string{"mean", "median", "p90", "p99"} {
			head = append(head, m+"_"+s+"_ms")
		}
	}
	if err := cw.Write(head); err != nil {
		return err
	}
	f := func(x float64) string { return strconv.FormatFloat(x, 'f', 3, 64) }
	for _, x := range r.Results {
		row := []string{r.URL, strconv.Itoa(x.Concurrency), strconv.Itoa(x.Requests), strconv.Itoa(x.Completed), strconv.Itoa(x.Failed),
			strconv.Itoa(x.EarlyStops), f(x.DurationS), strconv.Itoa(x.OutputTokens), f(x.RequestsPerS), f(x.OutputTokS)}
		for _, s := range []Summary{x.TTFTms, x.TPOTms, x.ITLms, x.E2Ems} {
			row = append(row, f(s.Mean), f(s.Median), f(s.P90), f(s.P99))
		}
		if err := cw.Write(row); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// Write writes r in format "md", "json" or "csv".
func (r *ServeReport) Write(w io.Writer, format string) error {
	return writeFormat(w, format, r.WriteMarkdown, r.WriteJSON, r.WriteCSV)
}
