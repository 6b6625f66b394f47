package engine

import (
	"context"
	"fmt"
	"math"
	"strings"

	"github.com/llamacu/llamacu/model"
)

// Pooling is how an embedding is made of a text's per-token hidden states — each the final
// hidden state rmsnorm(x)·norm, the vector the LM head reads (model.ForwardHidden).
type Pooling int

const (
	// PoolLast is the last token's hidden state: what llama.cpp (and so ollama) returns for a
	// LLaMA model, whose GGUF names no pooling, and vLLM's default for a decoder. The only
	// token that has seen the whole text.
	PoolLast Pooling = iota + 1
	// PoolMean is the mean of every token's hidden state, BOS included (llama.cpp's
	// --pooling mean). Its prompt is computed in full: cached KV blocks hold no hidden states.
	PoolMean
)

// ParsePooling reads "last" or "mean"; "" is PoolLast.
func ParsePooling(s string) (Pooling, error) {
	switch strings.ToLower(s) {
	case "", "last":
		return PoolLast, nil
	case "mean":
		return PoolMean, nil
	}
	return 0, fmt.Errorf("%w: pooling %q: want last or mean", ErrInvalidRequest, s)
}

func (p Pooling) String() string {
	switch p {
	case PoolLast:
		return "last"
	case PoolMean:
		return "mean"
	}
	return fmt.Sprintf("Pooling(%d)", int(p))
}

// EmbedRequest is one text to embed.
type EmbedRequest struct {
	// Prompt is encoded with a leading BOS, as for generation; PromptIDs, when set, is used
	// instead, verbatim. At most the context's length of tokens.
	Prompt    string
	PromptIDs []int32
	// Pooling is PoolLast when zero.
	Pooling Pooling
	// Normalize scales the vector to unit Euclidean length (what OpenAI's and ollama's
	// /api/embed return, and what cosine similarity wants); else it is the raw pooled state.
	Normalize bool
}

// embedIDs validates an EmbedRequest and returns its tokens and pooling.
func (e *Engine) embedIDs(req EmbedRequest) ([]int32, Pooling, error) {
	p := req.Pooling
	if p == 0 {
		p = PoolLast
	}
	if p != PoolLast && p != PoolMean {
		return nil, 0, fmt.Errorf("%w: pooling %d", ErrInvalidRequest, int(p))
	}
	ids := req.PromptIDs
	if ids == nil {
		ids = e.Tokenizer.Encode(req.Prompt, true)
	} else {
		ids = append([]int32(nil), ids...)
	}
	if len(ids) == 0 {
		return nil, 0, fmt.Errorf("%w: empty prompt ids", ErrInvalidRequest)
	}
	if len(ids) > e.Context {
		return nil, 0, fmt.Errorf("%w: %d tokens to embed, the context holds %d", ErrPromptTooLong, len(ids), e.Context)
	}
	vocab := e.Model.Config.Vocab
	for _, id := range ids {
		if id < 0 || int(id) >= vocab {
			return nil, 0, fmt.Errorf("%w: prompt token id %d is outside the vocabulary (0..%d)", ErrInvalidRequest, id, vocab-1)
		}
	}
	return ids, p, nil
}

// pooler gathers one text's hidden states into its embedding.
type pooler struct {
	how       Pooling
	normalize bool
	sum       []float64 // (dim) PoolMean: the sum so far; PoolLast: the last row
	rows      int
}

func newPooler(how Pooling, normalize bool, dim int) *pooler {
	return &pooler{how: how, normalize: normalize, sum: make([]float64, dim)}
}

// add takes the hidden state of the next token of the text (PoolMean), or of the last one.
func (p *pooler) add(row []float32) {
	p.rows++
	for j, v := range row {
		if p.how == PoolMean {
			p.sum[j] += float64(v)
		} else {
			p.sum[j] = float64(v)
		}
	}
}

// result is the embedding: the mean (or last row), unit length when asked.
func (p *pooler) result() []float32 {
	scale := 1.0
	if p.how == PoolMean && p.rows > 0 {
		scale = 1 / float64(p.rows)
	}
	if p.normalize {
		norm := 0.0
		for _, v := range p.sum {
			norm += v * v
		}
		if norm > 0 {
			scale = 1 / math.Sqrt(norm) // the mean's 1/rows cancels out
		}
	}
	out := make([]float32, len(p.sum))
	for j, v := range p.sum {
		out[j] = float32(v * scale)
	}
	return out
}

// Embed computes one text's embedding on a sequence of its own (a Scheduler's Embed batches
// many). Like Generate, do not call it while a Scheduler runs on the same Engine.
func (e *Engine) Embed(ctx context.Context, req EmbedRequest) ([]float32, error) {
	ids, how, err := e.embedIDs(req)
	if err != nil {
		return nil, err
	}
	n, bs := len(ids), 16
	maxBatch := min(e.prefillChunk(), n)
	maxRows := 1
	if how == PoolMean {
		maxRows = maxBatch
	}
	s, err := e.Model.NewState(maxBatch, maxRows, bs, (n+bs-1)/bs)
	if err != nil {
		return nil, err
	}
	table, err := model.NewBlockAllocator(s.KV.Layout().NumBlocks, bs).Grow(nil, n)
	if err != nil {
		return nil, err
	}
	b := &model.Batch{BlockTables: [][]int32{table}}
	p := newPooler(how, req.Normalize, e.Model.Config.Dim)
	var rows []int32
	for pos := 0; pos < n; pos += maxBatch {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		end := min(pos+maxBatch, n)
		b.Tokens, b.Pos, b.Seq, rows = ids[pos:end], b.Pos[:0], b.Seq[:0], rows[:0]
		for i := pos; i < end; i++ {
			b.Pos = append(b.Pos, int32(i))
			b.Seq = append(b.Seq, 0)
			if how == PoolMean || i == n-1 {
				rows = append(rows, int32(i-pos))
			}
		}
		_, hidden, err := e.Model.ForwardHidden(s, b, nil, rows)
		if err != nil {
			return nil, fmt.Errorf("engine: embed: %w", err)
		}
		dim := e.Model.Config.Dim
		for i := range rows {
			p.add(hidden[i*dim : (i+1)*dim])
		}
	}
	return p.result(), nil
}

// SubmitEmbed queues one text to embed; it is prefilled in the running batch beside the
// generations, and its Stream's only event is the final one, with Event.Embedding. Errors
// (nothing is queued then): ErrPromptTooLong when the text exceeds the context or the KV cache,
// ErrInvalidRequest, ErrQueueFull, ErrClosed.
func (s *Scheduler) SubmitEmbed(ctx context.Context, req EmbedRequest) (*Stream, error) {
	ids, how, err := s.e.embedIDs(req)
	if err != nil {
		return nil, err
	}
	if total := s.pool.alloc.Total(); s.blocksFor(len(ids)) > total {
		return nil, fmt.Errorf("%w: %d tokens to embed need %d KV blocks, the cache holds %d",
			ErrPromptTooLong, len(ids), s.blocksFor(len(ids)), total)
	}
	rctx, cancel := context.WithCancel(ctx)
	r := &request{
		ctx: rctx, cancel: cancel, ids: ids,
		embed: newPooler(how, req.Normalize, s.e.Model.Config.Dim),
		ch:    make(chan Event, 1),
	}
	return s.enqueue(r)
}

// Embed is SubmitEmbed, waiting for the result: the embedding and the request's usage (its
// prompt tokens, and those of them read from the prefix cache).
func (s *Scheduler) Embed(ctx context.Context, req EmbedRequest) ([]float32, Usage, error) {
	st, err := s.SubmitEmbed(ctx, req)
	if err != nil {
		return nil, Usage{}, err
	}
	_, ev := st.Collect()
	if ev.Err != nil {
		return nil, ev.Usage, ev.Err
	}
	return ev.Embedding, ev.Usage, nil
}
