package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/llamacu/llamacu/grammar"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/sample"
)

// Request is one generation.
type Request struct {
	// Prompt is encoded with a leading BOS (and SentencePiece's dummy prefix). An empty prompt
	// starts from BOS alone. PromptIDs, when set, is used instead, verbatim.
	Prompt    string
	PromptIDs []int32
	// MaxTokens caps the generated tokens (0: until the context is full).
	MaxTokens int
	Sampling  sample.Params
	// Stop lists strings that end generation when the output text contains one; the stop string
	// is not emitted. Honoured by Scheduler; Generate ignores it.
	Stop []string
	// Logprobs asks for each generated token's log probability, and TopLogprobs (0 to
	// MaxTopLogprobs) for that many of the most likely tokens at each step too (Event.Logprob).
	// They are the model's: log-softmax of the logits, before temperature, penalties and
	// filters (vLLM's default). The step then reads the whole logits row (no device top-k).
	// Honoured by Scheduler; Generate ignores them.
	Logprobs    bool
	TopLogprobs int
	// PromptLogprobs asks for the log probability of every prompt token after the first given
	// those before it (with TopLogprobs alternatives), in the stream's first event: what a
	// perplexity or multiple-choice evaluation reads (OpenAI's echo). Such a prompt is
	// prefilled in full (never read from the prefix cache). Honoured by Scheduler.
	PromptLogprobs bool
	// IgnoreEOS goes on generating after EOS (and BOS) until MaxTokens or a stop string, the EOS
	// fed back like any token: fixed-length outputs for benchmarks (vLLM's ignore_eos).
	// Honoured by Scheduler.
	IgnoreEOS bool
	// Grammar, when set, constrains the generated text to its sentences (JSON mode, a JSON
	// Schema, a GBNF grammar); EOS comes only once the text is complete. The step then reads
	// the whole logits row (no device top-k).
	Grammar *grammar.Grammar
	// MinTokens is the fewest tokens to generate before EOS or a StopTokenIDs token may come
	// (they are masked out until then) and before stop strings are looked for (vLLM's
	// min_tokens). At most MaxTokens. Honoured by Scheduler.
	MinTokens int
	// StopTokenIDs end generation when sampled, like EOS; the token is emitted first, with
	// its text (vLLM's stop_token_ids: nothing for control tokens). Honoured by Scheduler.
	StopTokenIDs []int32
	// TrimLeadingSpace says the caller drops the output's first leading space, as Llama 2 chat
	// answers are shown (the chat command and serve's chat endpoint do), so that Grammar
	// matches the text without it.
	TrimLeadingSpace bool
}

// MaxTopLogprobs is the most alternatives a Request may ask for (OpenAI's limit).
const MaxTopLogprobs = 20

// Stats are the counts and times of one generation.
type Stats struct {
	PromptTokens int
	Generated    int
	PromptTime   time.Duration // prefill, including the first token's logits
	DecodeTime   time.Duration // the remaining steps
	StopReason   string        // "eos", "max_tokens", "context"
}

// PromptTokensPerSec is the prefill throughput.
func (s Stats) PromptTokensPerSec() float64 { return perSec(s.PromptTokens, s.PromptTime) }

// DecodeTokensPerSec is the decode throughput (tokens after the first over DecodeTime).
func (s Stats) DecodeTokensPerSec() float64 { return perSec(s.Generated-1, s.DecodeTime) }

func perSec(n int, d time.Duration) float64 {
	if n <= 0 || d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// ErrPromptTooLong is returned when the prompt does not fit the context.
var ErrPromptTooLong = errors.New("prompt is longer than the context")

// PrefillChunk is the most prompt tokens one forward step takes by default (Engine.PrefillChunk).
const PrefillChunk = 256

// GPUPrefillChunk is the CLI's Engine.PrefillChunk for the cuda backend: a whole 2048-token
// prompt in one step. The second GPU check (H100, synthetic 7B fp16) measured 2048 tokens in one
// step at 1.16× the rate of four steps of 512 (28136 vs 24344 tok/s,
// bench/results/gpu-h100-2026-11-28-run2): larger GEMMs, one attention launch instead of four.
const GPUPrefillChunk = 2048

// prefillChunk is e.PrefillChunk, or PrefillChunk if unset.
func (e *Engine) prefillChunk() int {
	if e.PrefillChunk > 0 {
		return e.PrefillChunk
	}
	return PrefillChunk
}

// Generate runs one request to completion on a sequence of its own, calling emit with each
// generated token id and the text it completes (after the last token, a final call with id −1
// flushes any incomplete bytes as U+FFFD) (which may be empty while a UTF-8 character is
// still being assembled from byte tokens; the text of all calls concatenated is the decoded
// output). It stops at EOS (or BOS, which llama2.c-style models emit between stories),
// MaxTokens, the end of the context, ctx's cancellation, or an error from emit.
func (e *Engine) Generate(ctx context.Context, req Request, emit func(id int32, text string) error) (Stats, error) {
	var st Stats
	tok := e.Tokenizer
	ids := req.PromptIDs
	if ids == nil {
		ids = tok.Encode(req.Prompt, true)
	}
	if len(ids) == 0 {
		return st, fmt.Errorf("engine: empty prompt ids")
	}
	if len(ids) >= e.Context {
		return st, fmt.Errorf("%w: %d tokens, the context holds %d", ErrPromptTooLong, len(ids), e.Context)
	}
	sampler, err := sample.New(req.Sampling, e.Model.Config.Vocab)
	if err != nil {
		return st, err
	}
	st.PromptTokens = len(ids)
	maxTokens := e.Context - len(ids)
	if req.MaxTokens > 0 && req.MaxTokens < maxTokens {
		maxTokens = req.MaxTokens
	}

	bs := 16
	s, err := e.Model.NewState(min(e.prefillChunk(), len(ids)), 1, bs, (len(ids)+maxTokens+bs-1)/bs)
	if err != nil {
		return st, err
	}
	alloc := model.NewBlockAllocator(s.KV.Layout().NumBlocks, bs)
	table, err := alloc.Grow(nil, len(ids)+maxTokens)
	if err != nil {
		return st, err
	}
	batch := &model.Batch{BlockTables: [][]int32{table}}
	last := make([]int32, 1) // the row whose logits each step needs
	// Each step leaves either the last row's logits, or its k best candidates when the model
	// selects them on the device (stepTopK); pick samples from whichever it is.
	constrained, err := e.newConstraint(req, ids[len(ids)-1])
	if err != nil {
		return st, err
	}
	k := e.stepTopK(1, func(int) int {
		if constrained != nil {
			return 0 // a refused choice is drawn again from the whole masked row
		}
		return sampler.TopKNeeded()
	})
	var logits, vals []float32
	var cands []int32
	step := func(toks []int32, pos0 int) (err error) {
		n := len(toks)
		batch.Tokens = toks
		batch.Pos = batch.Pos[:0]
		batch.Seq = batch.Seq[:0]
		for i := 0; i < n; i++ {
			batch.Pos = append(batch.Pos, int32(pos0+i))
			batch.Seq = append(batch.Seq, 0)
		}
		last[0] = int32(n - 1)
		if k > 0 {
			vals, cands, err = e.Model.ForwardTopK(s, batch, last, k)
		} else {
			logits, err = e.Model.Forward(s, batch, last)
		}
		return err
	}
	pick := func(history []int32) (int32, error) {
		if k > 0 {
			return sampler.SampleTop(vals, cands), nil
		}
		next := sampler.Sample(logits, history)
		if constrained != nil {
			return constrained.choose(sampler, logits, history, next)
		}
		return next, nil
	}

	start := time.Now()
	for pos := 0; pos < len(ids); pos += s.MaxBatch {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		end := min(pos+s.MaxBatch, len(ids))
		if err = step(ids[pos:end], pos); err != nil {
			return st, err
		}
	}
	history := append(make([]int32, 0, len(ids)+maxTokens), ids...)
	dec := tok.NewStreamDecoder(ids[len(ids)-1])
	one := make([]int32, 1)
	decodeStart := time.Time{}
	st.StopReason = "max_tokens"
	for st.Generated < maxTokens {
		next, err := pick(history)
		if err != nil {
			return st, err
		}
		if st.Generated == 0 {
			st.PromptTime = time.Since(start)
			decodeStart = time.Now()
		}
		if next == tok.EOS() || next == tok.BOS() {
			st.StopReason = "eos"
			break
		}
		st.Generated++
		history = append(history, next)
		if err := emit(next, dec.Add(next)); err != nil {
			return st, err
		}
		if st.Generated == maxTokens {
			if len(history) >= e.Context {
				st.StopReason = "context"
			}
			break
		}
		if err := ctx.Err(); err != nil {
			return st, err
		}
		one[0] = next
		if err = step(one, len(history)-1); err != nil {
			return st, err
		}
	}
	if !decodeStart.IsZero() {
		st.DecodeTime = time.Since(decodeStart)
	}
	if rest := dec.Flush(); rest != "" {
		if err := emit(-1, rest); err != nil {
			return st, err
		}
	}
	return st, nil
}
