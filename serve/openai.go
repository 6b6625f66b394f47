package serve

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/llamacu/llamacu/chat"
	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/sample"
)

// penaltyLastN is how many recent tokens the penalties look at (llama.cpp's penalty_last_n).
const penaltyLastN = 64

// maxLogitBias is the most tokens a request may bias.
const maxLogitBias = 1024

// maxStops is the most stop strings a request may give (OpenAI allows 4; vLLM more).
const maxStops = 16

// params are the generation parameters shared by both endpoints. Pointers tell "absent" from
// zero. Extensions beyond OpenAI's API (as vLLM names them): top_k, min_p, repetition_penalty.
// frequency_penalty and presence_penalty (OpenAI's range, −2 to 2) apply, like
// repetition_penalty, to the last 64 tokens of prompt and completion (llama.cpp's server).
// logprobs (completions: an integer 0–20, the alternatives per token; chat: true, with
// top_logprobs 0–20) are the model's log-softmax, as vLLM returns them by default. logit_bias
// ({"token id": −100…100}) is added to those tokens' logits. min_tokens and stop_token_ids are
// vLLM's. user is accepted and ignored.
// Structured output (response_format, grammar, json_schema, guided_*): see structured.
type params struct {
	Model             string             `json:"model"`
	MaxTokens         *int               `json:"max_tokens"`
	Temperature       *float64           `json:"temperature"`
	TopP              *float64           `json:"top_p"`
	TopK              *int               `json:"top_k"`
	MinP              *float64           `json:"min_p"`
	RepetitionPenalty *float64           `json:"repetition_penalty"`
	FrequencyPenalty  *float64           `json:"frequency_penalty"`
	PresencePenalty   *float64           `json:"presence_penalty"`
	Seed              *int64             `json:"seed"`
	N                 *int               `json:"n"`
	Stream            bool               `json:"stream"`
	StreamOptions     *streamOptions     `json:"stream_options"`
	Stop              stopList           `json:"stop"`
	Logprobs          any                `json:"logprobs"`
	TopLogprobs       *int               `json:"top_logprobs"`
	IgnoreEOS         bool               `json:"ignore_eos"` // vLLM's: generate max_tokens whatever comes
	LogitBias         map[string]float64 `json:"logit_bias"`
	MinTokens         *int               `json:"min_tokens"`     // vLLM's: EOS and stops held back until then
	StopTokenIDs      []int32            `json:"stop_token_ids"` // vLLM's: these tokens end the answer
	structured
}

// request validates the parameters both endpoints share and returns them as an engine request
// (without prompt and token budget), and max_tokens (0 when absent).
func (p *params) request(maxTokens *int, chat bool) (engine.Request, int, *badRequest) {
	var r engine.Request
	sp, stops, n, bad := p.sampling(maxTokens)
	if bad == nil {
		r.Logprobs, r.TopLogprobs, bad = p.logprobOptions(chat)
	}
	if bad == nil {
		r.Grammar, bad = p.grammar()
	}
	if bad == nil {
		r.MinTokens, r.StopTokenIDs, bad = p.ends()
	}
	r.Sampling, r.Stop, r.IgnoreEOS = sp, stops, p.IgnoreEOS
	return r, n, bad
}

// maxStopTokenIDs bounds stop_token_ids.
const maxStopTokenIDs = 64

// ends reads min_tokens and stop_token_ids (the engine checks them against max_tokens and the
// vocabulary).
func (p *params) ends() (int, []int32, *badRequest) {
	n := 0
	if p.MinTokens != nil {
		if n = *p.MinTokens; n < 0 {
			return 0, nil, invalid("min_tokens", "min_tokens must be ≥ 0, got %d", n)
		}
	}
	if len(p.StopTokenIDs) > maxStopTokenIDs {
		return 0, nil, invalid("stop_token_ids", "at most %d stop_token_ids, got %d", maxStopTokenIDs, len(p.StopTokenIDs))
	}
	return n, p.StopTokenIDs, nil
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type completionRequest struct {
	params
	Prompt promptField `json:"prompt"`
	Echo   bool        `json:"echo"`
}

type chatRequest struct {
	params
	Messages            []chatMessage `json:"messages"`
	MaxCompletionTokens *int          `json:"max_completion_tokens"`
}

type chatMessage struct {
	Role    string      `json:"role"`
	Content chatContent `json:"content"`
}

// stopList is OpenAI's stop: a string or an array of strings (or null).
type stopList []string

func (s *stopList) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		*s = nil
		return nil
	}
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = stopList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fieldError{"stop", "a string or an array of strings"}
	}
	*s = many
	return nil
}

// promptField is the completions prompt: a string, an array of token ids (used verbatim, no
// BOS added), or a batch of either — an array of strings or of arrays of ids (each its own
// choice).
type promptField struct {
	items []promptItem
}

// promptItem is one prompt of a batch: text, or token ids when isIDs.
type promptItem struct {
	text  string
	ids   []int32
	isIDs bool
}

// choices is how many completions each prompt gets (n).
func (p *params) choices() int {
	if p.N == nil {
		return 1
	}
	return *p.N
}

// maxBatchPrompts is the most prompts one completions request may carry, and the most choices
// (prompts × n) it may ask for.
const maxBatchPrompts = 64

func (p *promptField) UnmarshalJSON(b []byte) (err error) {
	p.items, err = parsePrompts(b, "prompt", maxBatchPrompts)
	return err
}

// parsePrompts reads a JSON field holding a string, an array of token ids, or an array of
// either (a batch of at most limit): the completions prompt, the embeddings input.
func parsePrompts(b []byte, field string, limit int) ([]promptItem, error) {
	if bytes.Equal(b, []byte("null")) {
		return nil, nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		return []promptItem{{text: s}}, nil
	}
	var ids []int32
	if err := json.Unmarshal(b, &ids); err == nil && len(ids) > 0 {
		return []promptItem{{ids: ids, isIDs: true}}, nil
	}
	var items []promptItem
	var ss []string
	if err := json.Unmarshal(b, &ss); err == nil && len(ss) > 0 {
		if len(ss) > limit {
			return nil, fieldError{field, fmt.Sprintf("at most %d prompts (got %d)", limit, len(ss))}
		}
		for _, s := range ss {
			items = append(items, promptItem{text: s})
		}
		return items, nil
	}
	var batch [][]int32
	if err := json.Unmarshal(b, &batch); err == nil && len(batch) > 0 {
		if len(batch) > limit {
			return nil, fieldError{field, fmt.Sprintf("at most %d prompts (got %d)", limit, len(batch))}
		}
		for _, ids := range batch {
			items = append(items, promptItem{ids: ids, isIDs: true})
		}
		return items, nil
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err == nil && len(raw) == 0 {
		return []promptItem{{isIDs: true}}, nil // reported as an empty array of token ids
	}
	return nil, fieldError{field, "a string, an array of token ids, or an array of either (a batch)"}
}

// chatContent is a message's content: a string, or an array of parts of which only
// {"type": "text", "text": ...} is supported (the parts are concatenated).
type chatContent string

func (c *chatContent) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		*c = ""
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*c = chatContent(s)
		return nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(b, &parts); err != nil {
		return fieldError{"content", "a string or an array of text parts"}
	}
	var all string
	for _, p := range parts {
		if p.Type != "text" {
			return fieldError{"content", fmt.Sprintf("text parts only (got a %q part)", p.Type)}
		}
		all += p.Text
	}
	*c = chatContent(all)
	return nil
}

// fieldError is a JSON value of the wrong shape.
type fieldError struct{ field, want string }

func (e fieldError) Error() string { return fmt.Sprintf("%s must be %s", e.field, e.want) }

// badRequest is a client error with its OpenAI code and the parameter at fault.
type badRequest struct {
	status int
	code   string
	param  string
	msg    string
}

func (e *badRequest) Error() string { return e.msg }

func invalid(param, format string, args ...any) *badRequest {
	return &badRequest{status: http.StatusBadRequest, code: "invalid_value", param: param, msg: fmt.Sprintf(format, args...)}
}

func (e *badRequest) write(w http.ResponseWriter) {
	body := newAPIError("invalid_request_error", e.code, e.msg)
	if e.param != "" {
		body.Error.Param = &e.param
	}
	writeJSON(w, e.status, body)
}

// decodeBody reads a JSON body of at most limit bytes, arriving within timeout, into v.
func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, timeout time.Duration, v any) *badRequest {
	// A read deadline for the body only; cleared before the (possibly long) response streams.
	// ResponseRecorder-style writers do not support it: then there is simply no deadline.
	rc := http.NewResponseController(w)
	timedOut := false
	if rc.SetReadDeadline(time.Now().Add(timeout)) == nil {
		defer func() {
			if !timedOut { // a timed-out connection stays expired and is closed after the reply
				rc.SetReadDeadline(time.Time{})
			}
		}()
	}
	body := http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(body)
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("unexpected data after the JSON object")
		}
	}
	if err == nil {
		return nil
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		timedOut = true
		w.Header().Set("Connection", "close") // the rest of the body will never be read
		return &badRequest{status: http.StatusRequestTimeout, code: "request_timeout",
			msg: fmt.Sprintf("the request body did not arrive within %v", timeout)}
	}
	var (
		maxErr  *http.MaxBytesError
		synErr  *json.SyntaxError
		typeErr *json.UnmarshalTypeError
		fErr    fieldError
	)
	switch {
	case errors.As(err, &maxErr):
		return &badRequest{status: http.StatusRequestEntityTooLarge, code: "request_too_large",
			msg: fmt.Sprintf("the request body exceeds %d bytes", maxErr.Limit)}
	case errors.Is(err, io.EOF):
		return &badRequest{status: http.StatusBadRequest, code: "invalid_json", msg: "the request body is empty: a JSON object is required"}
	case errors.As(err, &synErr), errors.Is(err, io.ErrUnexpectedEOF):
		return &badRequest{status: http.StatusBadRequest, code: "invalid_json", msg: "malformed JSON in the request body: " + err.Error()}
	case errors.As(err, &typeErr):
		field := strings.TrimPrefix(typeErr.Field, "params.") // the embedded struct's name
		if field == "" {
			return &badRequest{status: http.StatusBadRequest, code: "invalid_json", msg: fmt.Sprintf("the request body must be a JSON object, not %s", typeErr.Value)}
		}
		return &badRequest{status: http.StatusBadRequest, code: "invalid_type", param: field,
			msg: fmt.Sprintf("%s must be of type %s, got %s", field, typeName(typeErr.Type.String()), typeErr.Value)}
	case errors.As(err, &fErr):
		return &badRequest{status: http.StatusBadRequest, code: "invalid_type", param: fErr.field, msg: fErr.Error()}
	}
	return &badRequest{status: http.StatusBadRequest, code: "invalid_json", msg: "invalid request body: " + err.Error()}
}

// typeName turns a Go type into a JSON one for error messages.
func typeName(goType string) string {
	switch goType {
	case "int", "int32", "int64", "*int", "*int64":
		return "integer"
	case "float64", "*float64":
		return "number"
	case "bool":
		return "boolean"
	case "string":
		return "string"
	}
	return goType
}

// logprobOptions reads logprobs and top_logprobs: for /v1/completions logprobs is the number
// of alternatives per token (0–20; OpenAI's legacy API, vLLM's limit), for chat logprobs is a
// boolean and top_logprobs the number of alternatives (0–20, only with logprobs true).
func (p *params) logprobOptions(chat bool) (on bool, top int, bad *badRequest) {
	switch v := p.Logprobs.(type) {
	case nil:
	case bool:
		on = v
	case float64:
		if chat {
			return false, 0, &badRequest{status: http.StatusBadRequest, code: "invalid_type", param: "logprobs", msg: "logprobs must be of type boolean"}
		}
		if v != math.Trunc(v) || v < 0 || v > engine.MaxTopLogprobs {
			return false, 0, invalid("logprobs", "logprobs must be an integer between 0 and %d, got %v", engine.MaxTopLogprobs, v)
		}
		on, top = true, int(v)
	default:
		want := "integer"
		if chat {
			want = "boolean"
		}
		return false, 0, &badRequest{status: http.StatusBadRequest, code: "invalid_type", param: "logprobs", msg: "logprobs must be of type " + want}
	}
	if t := p.TopLogprobs; t != nil {
		switch {
		case !chat:
			return false, 0, invalid("top_logprobs", "top_logprobs is a chat parameter: /v1/completions takes the count as logprobs")
		case *t < 0 || *t > engine.MaxTopLogprobs:
			return false, 0, invalid("top_logprobs", "top_logprobs must be between 0 and %d, got %d", engine.MaxTopLogprobs, *t)
		case *t > 0 && !on:
			return false, 0, invalid("top_logprobs", "top_logprobs requires logprobs to be true")
		}
		top = *t
	}
	return on, top, nil
}

// sampling validates the shared parameters and returns the sampler settings, the stop strings
// and max_tokens (0 when absent).
func (p *params) sampling(maxTokens *int) (sample.Params, []string, int, *badRequest) {
	sp := sample.Params{Temperature: 1, TopP: 1, RepeatPenalty: 1}
	if n := p.N; n != nil && (*n < 1 || *n > maxBatchPrompts) {
		return sp, nil, 0, invalid("n", "n must be between 1 and %d, got %d", maxBatchPrompts, *n)
	}
	if t := p.Temperature; t != nil {
		if math.IsNaN(*t) || *t < 0 || *t > 2 {
			return sp, nil, 0, invalid("temperature", "temperature must be between 0 and 2, got %v", *t)
		}
		sp.Temperature = float32(*t)
	}
	if tp := p.TopP; tp != nil {
		if math.IsNaN(*tp) || *tp < 0 || *tp > 1 {
			return sp, nil, 0, invalid("top_p", "top_p must be between 0 and 1, got %v", *tp)
		}
		sp.TopP = float32(*tp)
		if *tp == 0 { // the most likely token only
			sp.TopK, sp.TopP = 1, 1
		}
	}
	if k := p.TopK; k != nil {
		if *k < -1 {
			return sp, nil, 0, invalid("top_k", "top_k must be ≥ 0 (0 or -1: off), got %d", *k)
		}
		if *k > 0 {
			sp.TopK = *k
		}
	}
	if m := p.MinP; m != nil {
		if math.IsNaN(*m) || *m < 0 || *m > 1 {
			return sp, nil, 0, invalid("min_p", "min_p must be between 0 and 1, got %v", *m)
		}
		sp.MinP = float32(*m)
	}
	if rp := p.RepetitionPenalty; rp != nil {
		if math.IsNaN(*rp) || math.IsInf(*rp, 0) || *rp <= 0 {
			return sp, nil, 0, invalid("repetition_penalty", "repetition_penalty must be > 0, got %v", *rp)
		}
		sp.RepeatPenalty, sp.RepeatLastN = float32(*rp), penaltyLastN
	}
	for _, f := range []struct {
		name string
		v    *float64
		dst  *float32
	}{{"frequency_penalty", p.FrequencyPenalty, &sp.FrequencyPenalty}, {"presence_penalty", p.PresencePenalty, &sp.PresencePenalty}} {
		if f.v == nil {
			continue
		}
		if math.IsNaN(*f.v) || *f.v < -2 || *f.v > 2 {
			return sp, nil, 0, invalid(f.name, "%s must be between -2 and 2, got %v", f.name, *f.v)
		}
		if *f.dst = float32(*f.v); *f.v != 0 {
			sp.RepeatLastN = penaltyLastN
		}
	}
	if len(p.LogitBias) > maxLogitBias {
		return sp, nil, 0, invalid("logit_bias", "at most %d tokens in logit_bias, got %d", maxLogitBias, len(p.LogitBias))
	}
	for k, v := range p.LogitBias {
		id, err := strconv.ParseInt(k, 10, 32)
		if err != nil || id < 0 {
			return sp, nil, 0, invalid("logit_bias", "logit_bias keys must be token ids, got %q", k)
		}
		if math.IsNaN(v) || v < -100 || v > 100 {
			return sp, nil, 0, invalid("logit_bias", "logit_bias values must be between -100 and 100, got %v", v)
		}
		if sp.LogitBias == nil {
			sp.LogitBias = map[int32]float32{}
		}
		sp.LogitBias[int32(id)] = float32(v)
	}
	if p.Seed != nil {
		sp.Seed = uint64(*p.Seed)
	} else {
		sp.Seed = rand.Uint64()
	}
	if len(p.Stop) > maxStops {
		return sp, nil, 0, invalid("stop", "at most %d stop strings, got %d", maxStops, len(p.Stop))
	}
	for _, s := range p.Stop {
		if s == "" || !utf8.ValidString(s) {
			return sp, nil, 0, invalid("stop", "stop strings must be non-empty")
		}
	}
	n := 0
	if maxTokens != nil {
		if *maxTokens < 1 {
			return sp, nil, 0, invalid("max_tokens", "max_tokens must be at least 1, got %d", *maxTokens)
		}
		n = *maxTokens
	}
	return sp, p.Stop, n, nil
}

// chatMessages converts and checks the messages; the Llama 2 chat format has system, user and
// assistant roles ("developer", OpenAI's newer name for system, is accepted as system).
func chatMessages(in []chatMessage) ([]chat.Message, *badRequest) {
	if len(in) == 0 {
		return nil, invalid("messages", "messages must be a non-empty array")
	}
	out := make([]chat.Message, len(in))
	for i, m := range in {
		role := chat.Role(m.Role)
		if role == "developer" {
			role = chat.System
		}
		out[i] = chat.Message{Role: role, Content: string(m.Content)}
	}
	if err := chat.Validate(out); err != nil {
		return nil, invalid("messages", "%v", err)
	}
	return out, nil
}

// Response bodies.

type usageJSON struct {
	PromptTokens        int                 `json:"prompt_tokens"`
	CompletionTokens    int                 `json:"completion_tokens"`
	TotalTokens         int                 `json:"total_tokens"`
	PromptTokensDetails *promptTokenDetails `json:"prompt_tokens_details,omitempty"`
}

// promptTokenDetails is OpenAI's usage.prompt_tokens_details: cached_tokens are the prompt
// tokens read from the prefix cache (present when there were any).
type promptTokenDetails struct {
	CachedTokens int `json:"cached_tokens"`
}

type completionChoice struct {
	Text         string  `json:"text"`
	Index        int     `json:"index"`
	Logprobs     any     `json:"logprobs"`
	FinishReason *string `json:"finish_reason"`
}

type completionBody struct {
	ID      string             `json:"id"`
	Object  string             `json:"object"`
	Created int64              `json:"created"`
	Model   string             `json:"model"`
	Choices []completionChoice `json:"choices"`
	Usage   *usageJSON         `json:"usage"`
}

type chatDelta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

type chatChoice struct {
	Index        int        `json:"index"`
	Message      *chatDelta `json:"message,omitempty"`
	Delta        *chatDelta `json:"delta,omitempty"`
	Logprobs     any        `json:"logprobs"`
	FinishReason *string    `json:"finish_reason"`
}

type chatBody struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   *usageJSON   `json:"usage"`
}
