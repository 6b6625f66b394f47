package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/llamacu/llamacu/chat"
	"github.com/llamacu/llamacu/engine"
)

// statusClientClosed is recorded in metrics for a request whose client went away before the
// answer (nginx's convention; nothing is sent).
const statusClientClosed = 499

func (s *Server) handleCompletions(w http.ResponseWriter, r *http.Request) {
	b := s.backendOrError(w)
	if b == nil {
		return
	}
	var req completionRequest
	if bad := decodeBody(w, r, s.opts.MaxBodyBytes, s.opts.BodyTimeout, &req); bad != nil {
		bad.write(w)
		return
	}
	base, maxTokens, bad := req.request(req.MaxTokens, false)
	if bad != nil {
		bad.write(w)
		return
	}
	items := req.Prompt.items
	switch {
	case len(items) == 0:
		invalid("prompt", "prompt is required").write(w)
		return
	}
	n := req.choices()
	if len(items)*n > maxBatchPrompts {
		invalid("n", "%d prompts × n = %d choices: at most %d", len(items), len(items)*n, maxBatchPrompts).write(w)
		return
	}
	var reqs []engine.Request
	var formats []*completionFormat
	for _, it := range items {
		ids, echo := it.ids, it.text
		if it.isIDs {
			if len(ids) == 0 {
				invalid("prompt", "prompt must not be an empty array of token ids").write(w)
				return
			}
			echo = b.e.Tokenizer.Decode(ids)
		} else {
			ids = b.e.Tokenizer.Encode(it.text, true)
		}
		mt := maxTokens
		if mt == 0 {
			mt = s.opts.DefaultMaxTokens
			if room := b.e.Context - len(ids); room > 0 && room < mt {
				mt = room
			}
		}
		for k := range n { // OpenAI's order: prompt 0's n choices, then prompt 1's
			ereq := base
			ereq.PromptIDs, ereq.MaxTokens, ereq.PromptLogprobs = ids, mt, base.Logprobs && req.Echo
			ereq.Sampling.Seed += uint64(k) // n different samples, reproducible with seed
			f := &completionFormat{model: s.opts.ModelName, r: tokenRenderer{b.e.Tokenizer}, logprobs: base.Logprobs, index: len(reqs)}
			if req.Echo {
				f.echo, f.echoText, f.promptIDs = true, echo, ids
			}
			reqs, formats = append(reqs, ereq), append(formats, f)
		}
	}
	if len(reqs) == 1 {
		s.generate(w, r, b, reqs[0], &req.params, formats[0])
		return
	}
	fs := make([]format, len(formats))
	for i, f := range formats {
		fs[i] = f
	}
	if req.Stream {
		s.stream(w, r, b, reqs, &req.params, fs)
		return
	}
	generateBatch(s, w, r, b, reqs, fs, func(i int, text, reason string, lps []*engine.Logprob) completionChoice {
		return formats[i].choice(text, &reason, lps)
	}, func(choices []completionChoice, u *usageJSON) any {
		return completionBody{ID: newID("cmpl-"), Object: "text_completion", Created: time.Now().Unix(), Model: s.opts.ModelName,
			Choices: choices, Usage: u}
	})
}

// chatReserve is the room kept for the answer when a chat request sets no max_tokens and its
// conversation must be cut to fit the context: a quarter of the context, at most 512 tokens.
func chatReserve(ctx int) int { return max(1, min(512, ctx/4)) }

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	b := s.backendOrError(w)
	if b == nil {
		return
	}
	var req chatRequest
	if bad := decodeBody(w, r, s.opts.MaxBodyBytes, s.opts.BodyTimeout, &req); bad != nil {
		bad.write(w)
		return
	}
	mt := req.MaxTokens
	if req.MaxCompletionTokens != nil {
		mt = req.MaxCompletionTokens
	}
	base, maxTokens, bad := req.request(mt, true)
	if bad != nil {
		bad.write(w)
		return
	}
	msgs, bad := chatMessages(req.Messages)
	if bad != nil {
		bad.write(w)
		return
	}
	budget := b.e.Context - chatReserve(b.e.Context)
	if maxTokens >= b.e.Context {
		(&badRequest{status: http.StatusBadRequest, code: "context_length_exceeded", param: "max_tokens",
			msg: fmt.Sprintf("This model's maximum context length is %d tokens and max_tokens is %d, which leaves no room for the messages. Please reduce max_tokens.",
				b.e.Context, maxTokens)}).write(w)
		return
	}
	if maxTokens > 0 {
		budget = b.e.Context - maxTokens
	}
	_, ids, err := chat.Fit(b.e.Tokenizer, msgs, budget)
	if err != nil {
		code := "invalid_value"
		if errors.Is(err, chat.ErrTooLong) {
			code = "context_length_exceeded"
			if maxTokens > 0 {
				err = errors.New(err.Error() + " (the context length less max_tokens)")
			}
		}
		(&badRequest{status: http.StatusBadRequest, code: code, param: "messages", msg: err.Error()}).write(w)
		return
	}
	f := chatFormat{model: s.opts.ModelName, r: tokenRenderer{b.e.Tokenizer}}
	ereq := base
	ereq.PromptIDs, ereq.MaxTokens, ereq.TrimLeadingSpace = ids, maxTokens, f.trimLeading()
	n := req.choices()
	if n == 1 {
		s.generate(w, r, b, ereq, &req.params, f)
		return
	}
	reqs := make([]engine.Request, n)
	fs := make([]format, n)
	for k := range reqs {
		reqs[k] = ereq
		reqs[k].Sampling.Seed += uint64(k) // n different samples, reproducible with seed
		fs[k] = chatFormat{model: f.model, r: f.r, index: k}
	}
	if req.Stream {
		s.stream(w, r, b, reqs, &req.params, fs)
		return
	}
	generateBatch(s, w, r, b, reqs, fs, func(i int, text, reason string, lps []*engine.Logprob) chatChoice {
		return chatChoice{Index: i, Message: &chatDelta{Role: "assistant", Content: &text}, FinishReason: &reason, Logprobs: f.logprobs(lps)}
	}, func(choices []chatChoice, u *usageJSON) any {
		return chatBody{ID: newID("chatcmpl-"), Object: "chat.completion", Created: time.Now().Unix(), Model: s.opts.ModelName,
			Choices: choices, Usage: u}
	})
}

// format builds the response bodies of one endpoint. lps are the logprobs of the tokens the
// body covers: nil when the request asked for none (the body's logprobs is null).
type format interface {
	// trimLeading says whether the first space of the output is dropped: a chat answer follows
	// "[/INST]" and starts with SentencePiece's word-boundary space, which Meta's reference
	// (decoding the answer's tokens alone) does not show.
	trimLeading() bool
	start(id string, created int64) any // the first streamed chunk, or nil
	chunk(id string, created int64, text string, lps []*engine.Logprob) any
	end(id string, created int64, reason string, lps []*engine.Logprob) any
	usage(id string, created int64, u *usageJSON) any // stream_options.include_usage chunk
	whole(id string, created int64, text, reason string, u *usageJSON, lps []*engine.Logprob) any
	prompt(lps []*engine.Logprob) // the prompt's logprobs, from the stream's first event
}

// generate submits the request and writes the answer, streamed (stream) or whole.
func (s *Server) generate(w http.ResponseWriter, r *http.Request, b *backend, req engine.Request, p *params, f format) {
	if p.Stream {
		s.stream(w, r, b, []engine.Request{req}, p, []format{f})
		return
	}
	st, err := b.sched.Submit(r.Context(), req)
	if err != nil {
		writeSubmitError(w, b, req, err)
		return
	}
	s.metrics.promptTokens.Add(int64(st.PromptTokens()))
	c := newChoice(st, f, req)
	defer c.abandon(s)
	var text strings.Builder
	for ev := range st.C {
		c.observe(s, ev)
		text.WriteString(c.cut(ev.Text))
		if ev.Done {
			if ev.Err != nil {
				s.writeGenerationError(w, r, ev.Err)
				return
			}
			u := usageOf(ev.Usage)
			writeJSON(w, http.StatusOK, f.whole(responseID(f), time.Now().Unix(), text.String(), ev.FinishReason, &u, c.take()))
		}
	}
}

// responseID is a new id for a response of format f ("chatcmpl-…" or "cmpl-…").
func responseID(f format) string {
	if _, ok := f.(chatFormat); ok {
		return newID("chatcmpl-")
	}
	return newID("cmpl-")
}

// choice is one sequence of an answer being written: its stream and what its chunks need.
type choice struct {
	st    *engine.Stream
	f     format
	trim  bool              // the first text's leading space is still to drop (chat)
	lps   []*engine.Logprob // waiting for the chunk that carries their text; nil: not asked for
	last  time.Time         // when the previous token came
	ended bool              // its final event has been seen
}

func newChoice(st *engine.Stream, f format, req engine.Request) *choice {
	c := &choice{st: st, f: f, trim: f.trimLeading()}
	if req.Logprobs || req.TopLogprobs > 0 {
		c.lps = []*engine.Logprob{}
	}
	return c
}

// cut drops the answer's first leading space where the format says so.
func (c *choice) cut(text string) string {
	if c.trim && text != "" {
		c.trim = false
		return strings.TrimPrefix(text, " ")
	}
	return text
}

// take hands over the logprobs gathered since the last chunk (a character or a possible stop
// string may hold text back for a few tokens).
func (c *choice) take() []*engine.Logprob {
	if c.lps == nil {
		return nil
	}
	out := c.lps
	c.lps = []*engine.Logprob{}
	return out
}

// observe records an event: the prompt's logprobs, the metrics, the token's logprob.
func (c *choice) observe(s *Server, ev engine.Event) {
	if ev.PromptLogprobs != nil { // the first event's
		c.f.prompt(ev.PromptLogprobs)
	}
	if ev.Done {
		c.ended = true
		s.metrics.finished(ev.FinishReason, ev.Usage.CompletionTokens)
		return
	}
	if c.last.IsZero() {
		s.metrics.ttft.observe(ev.Time.Sub(c.st.Submitted()).Seconds())
	} else {
		s.metrics.itl.observe(ev.Time.Sub(c.last).Seconds())
	}
	c.last = ev.Time
	if ev.Logprob != nil && c.lps != nil {
		c.lps = append(c.lps, ev.Logprob)
	}
}

// abandon, when the handler leaves before the choice ended (the client went away, or another
// choice failed), cancels its request and counts its end when the scheduler reports it, at its
// next step boundary. Its events must not be read by anyone else any more.
func (c *choice) abandon(s *Server) {
	if c.ended {
		return
	}
	c.st.Cancel()
	go func() {
		for ev := range c.st.C {
			if ev.Done {
				s.metrics.finished(ev.FinishReason, ev.Usage.CompletionTokens)
			}
		}
	}()
}

// stream submits the requests — one, or the choices of n or of a batch of prompts — and
// streams their chunks as server-sent events, each tagged with its choice's index, then the
// summed usage (stream_options.include_usage) and [DONE].
func (s *Server) stream(w http.ResponseWriter, r *http.Request, b *backend, reqs []engine.Request, p *params, fs []format) {
	cs := make([]*choice, 0, len(reqs))
	merged := make(chan tagged)
	var forwarders sync.WaitGroup
	defer func() {
		// Whatever has not ended is cancelled; its remaining events are counted and dropped.
		open := 0
		for _, c := range cs {
			if !c.ended {
				c.st.Cancel()
				open++
			}
		}
		if open > 0 {
			go func() {
				for t := range merged {
					if t.ev.Done && !cs[t.i].ended {
						s.metrics.finished(t.ev.FinishReason, t.ev.Usage.CompletionTokens)
					}
				}
			}()
		}
	}()
	for i, req := range reqs {
		st, err := b.sched.Submit(r.Context(), req)
		if err != nil {
			for _, c := range cs { // nothing has been read: cancel and count them here
				c.abandon(s)
				c.ended = true
			}
			writeSubmitError(w, b, req, err)
			return
		}
		s.metrics.promptTokens.Add(int64(st.PromptTokens()))
		cs = append(cs, newChoice(st, fs[i], req))
	}
	for i, c := range cs { // one forwarder per choice keeps each choice's events in order
		forwarders.Add(1)
		go func() {
			defer forwarders.Done()
			for ev := range c.st.C {
				merged <- tagged{i, ev}
			}
		}()
	}
	go func() { forwarders.Wait(); close(merged) }()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush() // the client sees 200 at once, even while its request waits in the queue
	var buf bytes.Buffer
	send := func(v any) error {
		buf.Reset()
		buf.WriteString("data: ")
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if v == nil {
			buf.WriteString("[DONE]\n")
		} else if err := enc.Encode(v); err != nil {
			return err
		}
		buf.WriteByte('\n') // Encode ended the line; an empty line ends the event
		if _, err := w.Write(buf.Bytes()); err != nil {
			return err
		}
		return rc.Flush()
	}
	id, created := responseID(fs[0]), time.Now().Unix()
	for _, c := range cs {
		if v := c.f.start(id, created); v != nil {
			if send(v) != nil {
				return // the client has gone; the deferred cancel frees the sequences
			}
		}
	}
	var total engine.Usage
	left := len(cs)
	for t := range merged {
		c, ev := cs[t.i], t.ev
		c.observe(s, ev)
		if text := c.cut(ev.Text); text != "" {
			if send(c.f.chunk(id, created, text, c.take())) != nil {
				return
			}
		}
		if !ev.Done {
			continue
		}
		if ev.Err != nil {
			if r.Context().Err() == nil { // the client is still there: tell it
				_, typ, code := errorFor(ev.Err)
				_ = send(newAPIError(typ, code, ev.Err.Error()))
			}
			return
		}
		if send(c.f.end(id, created, ev.FinishReason, c.take())) != nil {
			return
		}
		total.PromptTokens += ev.Usage.PromptTokens
		total.CompletionTokens += ev.Usage.CompletionTokens
		total.CachedTokens += ev.Usage.CachedTokens
		if left--; left > 0 {
			continue
		}
		if p.StreamOptions != nil && p.StreamOptions.IncludeUsage {
			u := usageOf(total)
			if send(fs[0].usage(id, created, &u)) != nil {
				return
			}
		}
		_ = send(nil)
	}
}

// tagged is an event of choice i.
type tagged struct {
	i  int
	ev engine.Event
}

// writeSubmitError answers a request the scheduler did not take.
func writeSubmitError(w http.ResponseWriter, b *backend, req engine.Request, err error) {
	status, typ, code := errorFor(err)
	msg := strings.TrimPrefix(err.Error(), "engine: ")
	if errors.Is(err, engine.ErrPromptTooLong) {
		msg = contextMessage(len(req.PromptIDs), req.MaxTokens, b.e.Context, msg)
	}
	if status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	writeError(w, status, typ, code, msg)
}

// generateBatch answers, not streamed, a request of several choices — a batch of prompts, or n
// completions of one — each its own sequence in the running batch (fs[i] its format): build
// makes choice i from its text, finish reason and logprobs (nil unless asked for), and body the
// response from the choices and their summed usage.
func generateBatch[C any](s *Server, w http.ResponseWriter, r *http.Request, b *backend, reqs []engine.Request, fs []format,
	build func(i int, text, reason string, lps []*engine.Logprob) C, body func([]C, *usageJSON) any) {
	cs := make([]*choice, 0, len(reqs))
	defer func() {
		for _, c := range cs {
			c.abandon(s) // those that have not ended: the client went away, or one failed
		}
	}()
	for i, req := range reqs {
		st, err := b.sched.Submit(r.Context(), req)
		if err != nil {
			writeSubmitError(w, b, req, err)
			return
		}
		s.metrics.promptTokens.Add(int64(st.PromptTokens()))
		cs = append(cs, newChoice(st, fs[i], req))
	}
	choices := make([]C, 0, len(reqs))
	var total engine.Usage
	for i, c := range cs {
		var text strings.Builder
		for ev := range c.st.C {
			c.observe(s, ev)
			text.WriteString(c.cut(ev.Text))
			if !ev.Done {
				continue
			}
			if ev.Err != nil {
				s.writeGenerationError(w, r, ev.Err)
				return
			}
			choices = append(choices, build(i, text.String(), ev.FinishReason, c.take()))
			total.PromptTokens += ev.Usage.PromptTokens
			total.CompletionTokens += ev.Usage.CompletionTokens
			total.CachedTokens += ev.Usage.CachedTokens
		}
	}
	u := usageOf(total)
	writeJSON(w, http.StatusOK, body(choices, &u))
}

// contextMessage explains a prompt that does not fit, in the words of OpenAI's error.
func contextMessage(prompt, maxTokens, ctx int, fallback string) string {
	switch {
	case prompt >= ctx:
		return fmt.Sprintf("This model's maximum context length is %d tokens. However, your prompt is %d tokens long, "+
			"which leaves no room for the completion. Please reduce the length of the prompt or messages.", ctx, prompt)
	case maxTokens > ctx-prompt: // not prompt+maxTokens > ctx, which overflows for a huge max_tokens
		return fmt.Sprintf("This model's maximum context length is %d tokens. However, you requested %d tokens "+
			"(%d in the prompt, %d for the completion). Please reduce the length of the prompt or messages, or max_tokens.",
			ctx, uint64(prompt)+uint64(maxTokens), prompt, maxTokens)
	}
	return fallback // the KV cache is smaller than the context
}

// writeGenerationError answers a non-streamed request whose generation ended in an error.
func (s *Server) writeGenerationError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil || errors.Is(err, context.Canceled) {
		if sw, ok := w.(*statusWriter); ok && sw.code == 0 {
			sw.code = statusClientClosed
		}
		return
	}
	status, typ, code := errorFor(err)
	writeError(w, status, typ, code, err.Error())
}

func usageOf(u engine.Usage) usageJSON {
	out := usageJSON{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, TotalTokens: u.PromptTokens + u.CompletionTokens}
	if u.CachedTokens > 0 {
		out.PromptTokensDetails = &promptTokenDetails{CachedTokens: u.CachedTokens}
	}
	return out
}

// completionFormat writes /v1/completions bodies ("text_completion") of choice index. With
// echo, the first body also carries the prompt (its text, and its tokens' logprobs: the first
// token has none). offset counts the bytes of the tokens already reported (text_offset).
type completionFormat struct {
	model    string
	r        tokenRenderer
	index    int
	logprobs bool

	echo      bool
	echoText  string
	promptIDs []int32
	promptLPs []*engine.Logprob // set by prompt() from the stream's first event
	echoed    bool

	offset int
}

func (*completionFormat) trimLeading() bool       { return false }
func (*completionFormat) start(string, int64) any { return nil }

func (f *completionFormat) prompt(lps []*engine.Logprob) { f.promptLPs = lps }

func (f *completionFormat) choice(text string, reason *string, lps []*engine.Logprob) completionChoice {
	c := completionChoice{Index: f.index, Text: text, FinishReason: reason}
	var out *completionLogprobs
	if f.echo && !f.echoed {
		f.echoed = true
		c.Text = f.echoText + text
		if f.logprobs {
			out = newCompletionLogprobs()
			for k, id := range f.promptIDs {
				var lp *engine.Logprob
				if k > 0 && k-1 < len(f.promptLPs) {
					lp = f.promptLPs[k-1]
				}
				f.offset = f.r.appendCompletion(out, id, lp, f.offset)
			}
		}
	}
	if f.logprobs && (lps != nil || out != nil) {
		if out == nil {
			out = newCompletionLogprobs()
		}
		for _, lp := range lps {
			f.offset = f.r.appendCompletion(out, lp.Token, lp, f.offset)
		}
		c.Logprobs = out
	}
	return c
}

func (f *completionFormat) body(id string, created int64, c completionChoice, u *usageJSON) completionBody {
	return completionBody{ID: id, Object: "text_completion", Created: created, Model: f.model, Usage: u, Choices: []completionChoice{c}}
}

func (f *completionFormat) chunk(id string, created int64, text string, lps []*engine.Logprob) any {
	return f.body(id, created, f.choice(text, nil, lps), nil)
}

func (f *completionFormat) end(id string, created int64, reason string, lps []*engine.Logprob) any {
	if len(lps) == 0 {
		lps = nil // nothing left to report
	}
	return f.body(id, created, f.choice("", &reason, lps), nil)
}

func (f *completionFormat) usage(id string, created int64, u *usageJSON) any {
	b := f.body(id, created, completionChoice{}, u)
	b.Choices = []completionChoice{}
	return b
}

func (f *completionFormat) whole(id string, created int64, text, reason string, u *usageJSON, lps []*engine.Logprob) any {
	return f.body(id, created, f.choice(text, &reason, lps), u)
}

// chatFormat writes /v1/chat/completions bodies ("chat.completion" and ".chunk").
type chatFormat struct {
	model string
	r     tokenRenderer
	index int // the choice's
}

func (chatFormat) trimLeading() bool { return true }

func (chatFormat) prompt([]*engine.Logprob) {} // chat has no echo

func (f chatFormat) body(id string, created int64, c chatChoice, u *usageJSON) chatBody {
	c.Index = f.index
	return chatBody{ID: id, Object: "chat.completion.chunk", Created: created, Model: f.model, Usage: u, Choices: []chatChoice{c}}
}

func (f chatFormat) logprobs(lps []*engine.Logprob) any {
	if lps == nil {
		return nil
	}
	return f.r.chat(lps)
}

func (f chatFormat) start(id string, created int64) any {
	empty := ""
	return f.body(id, created, chatChoice{Delta: &chatDelta{Role: "assistant", Content: &empty}}, nil)
}

func (f chatFormat) chunk(id string, created int64, text string, lps []*engine.Logprob) any {
	return f.body(id, created, chatChoice{Delta: &chatDelta{Content: &text}, Logprobs: f.logprobs(lps)}, nil)
}

func (f chatFormat) end(id string, created int64, reason string, lps []*engine.Logprob) any {
	if len(lps) == 0 {
		lps = nil
	}
	return f.body(id, created, chatChoice{Delta: &chatDelta{}, FinishReason: &reason, Logprobs: f.logprobs(lps)}, nil)
}

func (f chatFormat) usage(id string, created int64, u *usageJSON) any {
	b := f.body(id, created, chatChoice{}, u)
	b.Choices = []chatChoice{}
	return b
}

func (f chatFormat) whole(id string, created int64, text, reason string, u *usageJSON, lps []*engine.Logprob) any {
	b := f.body(id, created, chatChoice{Message: &chatDelta{Role: "assistant", Content: &text}, FinishReason: &reason, Logprobs: f.logprobs(lps)}, u)
	b.Object = "chat.completion"
	return b
}
