package serve

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/llamacu/llamacu/chat"
	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/grammar"
	"github.com/llamacu/llamacu/sample"
)

// Ollama's native API, for the clients that speak it (Open WebUI, Continue, LangChain's
// Ollama classes, ollama's own libraries):
//
//	POST /api/generate   prompt → response, newline-delimited JSON unless "stream": false
//	POST /api/chat       messages → message, in the Llama 2 chat format
//	GET  /api/tags       the one model served (also /api/ps); POST /api/show its details
//	GET  /api/version
//
// Requests take ollama's "options" (temperature, top_k, top_p, min_p, seed, num_predict, stop,
// repeat_penalty, repeat_last_n, presence_penalty, frequency_penalty) with ollama's defaults,
// and "format" ("json", or a JSON Schema). /api/generate uses the prompt as it is, unless a
// "system" message is given (then system and prompt become one Llama 2 chat turn; "raw": true
// keeps the prompt as it is regardless), and continues from "context", the token ids an
// earlier response returned (which the prefix cache then reads instead of prefilling).
// Errors are ollama's {"error": "..."}; options that change sampling in ways this engine does
// not implement (mirostat, tfs_z, typical_p) are refused unless they are set to their "off"
// values, and unknown options are refused.

// ollamaAPIVersion is the ollama release whose API shapes these endpoints follow; clients that
// check /api/version for features compare against it.
const ollamaAPIVersion = "0.5.0"

type ollamaRequest struct {
	Model     string          `json:"model"`
	Prompt    string          `json:"prompt"`
	System    string          `json:"system"`
	Template  string          `json:"template"`
	Context   []int32         `json:"context"`
	Raw       bool            `json:"raw"`
	Messages  []ollamaMessage `json:"messages"`
	Stream    *bool           `json:"stream"`
	Format    json.RawMessage `json:"format"`
	Options   map[string]any  `json:"options"`
	KeepAlive any             `json:"keep_alive"` // the model stays loaded: accepted and ignored
	Images    []string        `json:"images"`
	Tools     []any           `json:"tools"`
}

type ollamaMessage struct {
	Role    string   `json:"role"`
	Content string   `json:"content"`
	Images  []string `json:"images,omitempty"`
}

// ollamaResponse is one line of an answer (and, with done, its last).
type ollamaResponse struct {
	Model      string         `json:"model"`
	CreatedAt  string         `json:"created_at"`
	Response   *string        `json:"response,omitempty"`
	Message    *ollamaMessage `json:"message,omitempty"`
	Done       bool           `json:"done"`
	DoneReason string         `json:"done_reason,omitempty"`
	Context    []int32        `json:"context,omitempty"`
	ollamaStats
}

// ollamaStats are the final line's counts and nanosecond durations.
type ollamaStats struct {
	TotalDuration      int64 `json:"total_duration,omitempty"`
	LoadDuration       int64 `json:"load_duration,omitempty"`
	PromptEvalCount    int   `json:"prompt_eval_count,omitempty"`
	PromptEvalDuration int64 `json:"prompt_eval_duration,omitempty"`
	EvalCount          int   `json:"eval_count,omitempty"`
	EvalDuration       int64 `json:"eval_duration,omitempty"`
}

func ollamaError(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, map[string]string{"error": fmt.Sprintf(format, args...)})
}

// ollamaOptions turns ollama's options into sampling parameters, stop strings and the token
// budget (0: until the context is full).
func ollamaOptions(opts map[string]any) (sample.Params, []string, int, error) {
	// ollama's defaults (api/types.go DefaultOptions).
	sp := sample.Params{Temperature: 0.8, TopK: 40, TopP: 0.9, RepeatPenalty: 1.1, RepeatLastN: 64, Seed: rand.Uint64()}
	var stops []string
	maxTokens := 0
	num := func(k string, v any) (float64, error) {
		f, ok := v.(float64)
		if !ok || math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, fmt.Errorf("option %s must be a number, got %v", k, v)
		}
		return f, nil
	}
	integer := func(k string, v any) (int, error) {
		f, err := num(k, v)
		limit := float64(1 << 31)
		if k == "seed" {
			limit = 1 << 63
		}
		if err == nil && (f != math.Trunc(f) || math.Abs(f) >= limit) {
			err = fmt.Errorf("option %s must be an integer, got %v", k, v)
		}
		return int(f), err
	}
	floats := map[string]*float32{"temperature": &sp.Temperature, "top_p": &sp.TopP, "min_p": &sp.MinP,
		"repeat_penalty": &sp.RepeatPenalty, "presence_penalty": &sp.PresencePenalty, "frequency_penalty": &sp.FrequencyPenalty}
	for _, k := range slices.Sorted(maps.Keys(opts)) { // sorted: the first bad option is reported, always the same
		v := opts[k]
		var err error
		var f float64
		var n int
		if dst, ok := floats[k]; ok {
			f, err = num(k, v)
			*dst = float32(f)
			if err != nil {
				return sp, nil, 0, err
			}
			continue
		}
		switch k {
		case "top_k":
			n, err = integer(k, v)
			sp.TopK = max(n, 0)
		case "repeat_last_n":
			n, err = integer(k, v)
			sp.RepeatLastN = n
		case "seed":
			n, err = integer(k, v)
			sp.Seed = uint64(int64(n))
		case "num_predict": // -1: no limit, -2: fill the context; both end at the context here
			if n, err = integer(k, v); err == nil && n < -2 {
				err = fmt.Errorf("option num_predict must be ≥ -2, got %d", n)
			}
			maxTokens = max(n, 0)
		case "stop":
			stops, err = stopStrings(v)
		case "mirostat", "tfs_z", "typical_p":
			off := map[string]float64{"mirostat": 0, "tfs_z": 1, "typical_p": 1}[k]
			if f, err = num(k, v); err == nil && f != off {
				err = fmt.Errorf("option %s is not supported (only %v, off)", k, off)
			}
		case "mirostat_eta", "mirostat_tau", "num_ctx", "num_keep", "num_batch", "num_gpu", "main_gpu", "num_thread",
			"use_mmap", "use_mlock", "numa", "low_vram", "penalize_newline", "vocab_only", "f16_kv", "logits_all":
			// The server's own settings (its context, threads, GPU) decide these.
		default:
			err = fmt.Errorf("unknown option %q", k)
		}
		if err != nil {
			return sp, nil, 0, err
		}
	}
	return sp, stops, maxTokens, sp.Validate()
}

func stopStrings(v any) ([]string, error) {
	list, ok := v.([]any)
	if s, one := v.(string); one {
		list, ok = []any{s}, true
	}
	if !ok || len(list) > maxStops {
		return nil, fmt.Errorf("option stop must be a string or at most %d strings", maxStops)
	}
	var out []string
	for _, x := range list {
		s, ok := x.(string)
		if !ok || s == "" {
			return nil, fmt.Errorf("option stop must list non-empty strings")
		}
		out = append(out, s)
	}
	return out, nil
}

// ollamaFormat compiles "format": "json" (a JSON object) or a JSON Schema.
func ollamaFormat(raw json.RawMessage) (*grammar.Grammar, error) {
	if !present(raw) || bytes.Equal(raw, []byte(`""`)) {
		return nil, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if s != "json" {
			return nil, fmt.Errorf(`format must be "json" or a JSON Schema, got %q`, s)
		}
		return grammar.JSON(), nil
	}
	return grammar.FromJSONSchema(raw)
}

func (s *Server) handleOllama(w http.ResponseWriter, r *http.Request) {
	isChat := r.URL.Path == "/api/chat"
	b := s.backendOrError(w)
	if b == nil {
		return
	}
	var req ollamaRequest
	if bad := decodeBody(w, r, s.opts.MaxBodyBytes, s.opts.BodyTimeout, &req); bad != nil {
		ollamaError(w, bad.status, "%s", bad.msg)
		return
	}
	bad := func(format string, args ...any) { ollamaError(w, http.StatusBadRequest, format, args...) }
	switch {
	case len(req.Images) > 0 || slices.ContainsFunc(req.Messages, func(m ollamaMessage) bool { return len(m.Images) > 0 }):
		bad("images are not supported: LLaMA 2 reads text only")
		return
	case len(req.Tools) > 0:
		bad("tools are not supported by the Llama 2 chat format")
		return
	case req.Template != "":
		bad("template is not supported: the Llama 2 chat format is built in (use raw for a prompt as it is)")
		return
	}
	sp, stops, maxTokens, err := ollamaOptions(req.Options)
	if err != nil {
		bad("%v", err)
		return
	}
	g, err := ollamaFormat(req.Format)
	if err != nil {
		bad("format: %v", err)
		return
	}
	tok := b.e.Tokenizer
	var ids []int32
	trim := isChat
	switch {
	case isChat:
		msgs := make([]chat.Message, len(req.Messages))
		for i, m := range req.Messages {
			msgs[i] = chat.Message{Role: chat.Role(m.Role), Content: m.Content}
		}
		if len(msgs) == 0 {
			bad("messages must not be empty")
			return
		}
		if err := chat.Validate(msgs); err != nil {
			bad("messages: %v", err)
			return
		}
		budget := b.e.Context - max(maxTokens, chatReserve(b.e.Context))
		if _, ids, err = chat.Fit(tok, msgs, max(budget, 1)); err != nil {
			bad("messages: %v", err)
			return
		}
	case req.System != "" && !req.Raw:
		msgs := []chat.Message{{Role: chat.System, Content: req.System}, {Role: chat.User, Content: req.Prompt}}
		if err := chat.Validate(msgs); err != nil {
			bad("%v", err)
			return
		}
		if ids, err = chat.Encode(tok, msgs); err != nil {
			bad("%v", err)
			return
		}
		trim = true
	default:
		for _, id := range req.Context {
			if id < 0 || int(id) >= tok.VocabSize() {
				bad("context holds token %d, outside the vocabulary", id)
				return
			}
		}
		ids = append(slices.Clone(req.Context), tok.Encode(req.Prompt, len(req.Context) == 0)...)
		if len(ids) == 0 {
			ids = []int32{tok.BOS()}
		}
	}
	if maxTokens == 0 || len(ids)+maxTokens > b.e.Context {
		maxTokens = max(1, b.e.Context-len(ids)) // ollama generates until the context is full
	}
	ereq := engine.Request{PromptIDs: ids, MaxTokens: maxTokens, Sampling: sp, Stop: stops, Grammar: g, TrimLeadingSpace: trim}
	st, err := b.sched.Submit(r.Context(), ereq)
	if err != nil {
		status, _, _ := errorFor(err)
		ollamaError(w, status, "%s", strings.TrimPrefix(err.Error(), "engine: "))
		return
	}
	s.metrics.promptTokens.Add(int64(st.PromptTokens()))
	var f format = &completionFormat{}
	if trim {
		f = chatFormat{}
	}
	c := newChoice(st, f, ereq)
	defer c.abandon(s)
	s.answerOllama(w, r, c, req, isChat, ids)
}

// answerOllama writes c's events as ollama's response lines, or as one object when the
// request turned streaming off.
func (s *Server) answerOllama(w http.ResponseWriter, r *http.Request, c *choice, req ollamaRequest, isChat bool, prompt []int32) {
	stream := req.Stream == nil || *req.Stream
	model := req.Model
	if model == "" {
		model = s.opts.ModelName
	}
	line := func(text string) ollamaResponse {
		o := ollamaResponse{Model: model, CreatedAt: time.Now().UTC().Format(time.RFC3339Nano)}
		if isChat {
			o.Message = &ollamaMessage{Role: "assistant", Content: text}
		} else {
			o.Response = &text
		}
		return o
	}
	var rc *http.ResponseController
	if stream {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		rc = http.NewResponseController(w)
		_ = rc.Flush()
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	send := func(v any) error { // streaming only
		if err := enc.Encode(v); err != nil {
			return err
		}
		return rc.Flush()
	}
	var text strings.Builder
	var ids []int32
	var first time.Time
	for ev := range c.st.C {
		c.observe(s, ev)
		if !ev.Done {
			ids = append(ids, ev.Token)
			if first.IsZero() {
				first = ev.Time
			}
		}
		piece := c.cut(ev.Text)
		if !ev.Done {
			if stream && piece != "" {
				if send(line(piece)) != nil {
					return // the client has gone: the deferred abandon cancels the sequence
				}
			} else {
				text.WriteString(piece)
			}
			continue
		}
		if ev.Err != nil {
			if r.Context().Err() != nil {
				return
			}
			status, _, _ := errorFor(ev.Err)
			if stream {
				_ = send(map[string]string{"error": ev.Err.Error()})
			} else {
				ollamaError(w, status, "%s", ev.Err.Error())
			}
			return
		}
		text.WriteString(piece)
		last := line("")
		if !stream {
			last = line(text.String())
		} else if piece != "" { // text held back until the end (a stop string's prefix)
			if send(line(piece)) != nil {
				return
			}
		}
		last.Done = true
		last.DoneReason = ev.FinishReason
		if !isChat {
			last.Context = append(slices.Clone(prompt), ids...)
		}
		now := time.Now()
		submitted := c.st.Submitted()
		if first.IsZero() {
			first = now
		}
		last.ollamaStats = ollamaStats{
			TotalDuration:      now.Sub(submitted).Nanoseconds(),
			LoadDuration:       1, // the model was loaded before the request (0 would be omitted)
			PromptEvalCount:    ev.Usage.PromptTokens,
			PromptEvalDuration: first.Sub(submitted).Nanoseconds(),
			EvalCount:          ev.Usage.CompletionTokens,
			EvalDuration:       now.Sub(first).Nanoseconds(),
		}
		if stream {
			_ = send(last)
		} else {
			writeJSON(w, http.StatusOK, last)
		}
	}
}

// ollamaModel describes the served model as /api/tags and /api/show do.
func (s *Server) ollamaModel(b *backend) map[string]any {
	cfg := b.e.Model.Config
	return map[string]any{
		"name": s.opts.ModelName, "model": s.opts.ModelName,
		"modified_at": time.Unix(s.created, 0).UTC().Format(time.RFC3339),
		"size":        cfg.ParamCount(), "digest": "",
		"details": map[string]any{
			"format": "gguf", "family": "llama", "families": []string{"llama"},
			"parameter_size": fmt.Sprintf("%.1fB", float64(cfg.ParamCount())/1e9), "quantization_level": "",
		},
	}
}

func (s *Server) handleOllamaInfo(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/api/version" {
		writeJSON(w, http.StatusOK, map[string]string{"version": ollamaAPIVersion})
		return
	}
	b := s.ready.Load()
	if b == nil || s.drain.Load() {
		ollamaError(w, http.StatusServiceUnavailable, "the model is not ready")
		return
	}
	switch r.URL.Path {
	case "/api/tags", "/api/ps":
		writeJSON(w, http.StatusOK, map[string]any{"models": []any{s.ollamaModel(b)}})
	case "/api/show":
		cfg := b.e.Model.Config
		m := s.ollamaModel(b)
		writeJSON(w, http.StatusOK, map[string]any{
			"details": m["details"], "modified_at": m["modified_at"], "template": "", "parameters": "",
			"model_info": map[string]any{
				"general.architecture": "llama", "general.parameter_count": cfg.ParamCount(),
				"llama.context_length": b.e.Context, "llama.embedding_length": cfg.Dim, "llama.block_count": cfg.Layers,
				"llama.attention.head_count": cfg.Heads, "llama.attention.head_count_kv": cfg.KVHeads,
				"llama.vocab_size": cfg.Vocab,
			},
		})
	}
}
