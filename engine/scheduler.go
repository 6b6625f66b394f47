package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/sample"
	"github.com/llamacu/llamacu/tokenizer"
)

// Scheduler errors. Submit's errors wrap one of these (or ErrPromptTooLong, or sample.ErrParams
// for bad sampling parameters, which also wrap ErrInvalidRequest).
var (
	// ErrQueueFull: the waiting queue holds SchedulerOptions.MaxQueue requests already.
	ErrQueueFull = errors.New("engine: the request queue is full")
	// ErrClosed: the scheduler is closing or closed and takes no new requests; also the error of
	// requests it cancelled when Close's context ran out.
	ErrClosed = errors.New("engine: the scheduler is closed")
	// ErrInvalidRequest: a request the scheduler cannot run as asked (bad token ids, negative
	// MaxTokens, empty stop string, bad sampling parameters).
	ErrInvalidRequest = errors.New("engine: invalid request")
)

// Finish reasons of a Stream's final Event (Event.FinishReason). "stop" and "length" are
// OpenAI's; the last two come with a non-nil Event.Err.
const (
	FinishStop      = "stop"      // EOS (or BOS) was sampled, or a stop string matched
	FinishLength    = "length"    // MaxTokens generated, or the context is full
	FinishCancelled = "cancelled" // the request's context was cancelled (or Close gave up)
	FinishError     = "error"     // the forward pass failed, or a grammar reached a dead end (ErrGrammarDeadEnd)
)

// SchedulerOptions size a Scheduler. The zero value is valid: every field has a default.
type SchedulerOptions struct {
	// MaxSeqs is the most sequences decoding together in the running batch (default 8).
	MaxSeqs int
	// MaxBatchTokens is the most tokens one forward step takes: one decode token of each running
	// sequence plus prefill chunks of new ones (default max(Engine.PrefillChunk, MaxSeqs); at least
	// MaxSeqs, so that every running sequence can decode in every step).
	MaxBatchTokens int
	// BlockSize is the tokens per KV-cache block (default 16).
	BlockSize int
	// KVBlocks is the size of the paged KV cache. 0 means enough for MaxSeqs full contexts, capped
	// at KVMemory bytes (2·layers·kv_heads·head_dim·4 bytes per token for fp32 K and V, ·2 for
	// fp16: model.KVSizer) — or, on a
	// backend with memory of its own (model.MemoryReporter: the GPU) and no KVMemory, at what
	// its free memory holds less a reserve — and never below one full context.
	//
	// Blocks are taken as sequences grow (vLLM's PagedAttention): a request is admitted when its
	// prompt's blocks are free (keeping 1% spare), and when a decoding sequence finds none for
	// its next token the most recently admitted other sequence is preempted — its blocks freed
	// (its full ones stay in the prefix cache) and it goes back to the front of the queue, to be
	// prefilled again from its prompt and the tokens it has generated, and go on where it
	// stopped.
	KVBlocks int
	// KVMemory caps the default KV cache size in bytes (default 4 GiB). Ignored when KVBlocks is set.
	KVMemory int64
	// MaxQueue is the most requests waiting for admission beyond the free sequence slots (those
	// the loop admits at its next step boundary); Submit returns ErrQueueFull beyond it (default
	// 256; negative: no waiting line, a request is refused unless a sequence slot is free for it).
	MaxQueue int
	// Observer, if not nil, sees every token's latency (called on the scheduler's goroutine:
	// it must be quick and not block).
	Observer Observer
	// NoPrefixCache turns off prefix caching: by default full KV blocks stay cached after their
	// sequence ends, and a request whose prompt starts with the same tokens (a conversation's
	// next turn, a shared system prompt) reads them instead of prefilling them again. Idle
	// cached blocks are evicted, least recently used first, when a new sequence needs room.
	NoPrefixCache bool
	// DraftTokens turns on speculative decoding by prompt lookup (draft.go): each decoding
	// sequence may feed up to this many proposed tokens after its last one in a step, and keeps
	// those the model would have generated anyway. The tokens are the same as without it
	// (greedy or sampled; on a GPU up to the rounding of the kernels a several-row step runs);
	// a step yields several tokens when the text repeats what came before
	// (code, quotes, structured answers). 0 (the default) is off; at most MaxDraftTokens.
	DraftTokens int
}

// MaxDraftTokens bounds SchedulerOptions.DraftTokens.
const MaxDraftTokens = 16

// Observer receives per-token latency observations (for metrics).
type Observer interface {
	// TimeToFirstToken is the time from Submit to the first generated token.
	TimeToFirstToken(d time.Duration)
	// InterTokenLatency is the time between two consecutive tokens of one sequence.
	InterTokenLatency(d time.Duration)
}

// promptLogitRows is how many logit rows a step has beyond one per sequence, for the prompt
// tokens of requests that want PromptLogprobs (each such prompt token needs its row of logits;
// a longer prompt takes several steps).
const promptLogitRows = 64

// deviceKVBlocks is how many KV blocks the free memory of m's ranks holds, when every rank's
// backend reports its memory (a GPU): the least free of them, less a reserve for what comes
// after the KV cache (activations, CUDA graphs, cuBLAS's and NCCL's buffers: a tenth of the
// device, at least 1 GiB).
func deviceKVBlocks(m *model.Model, blockSize int) (int64, bool) {
	bes := m.Backends()
	free, elem := int64(math.MaxInt64), 0
	var total int64
	for _, be := range bes {
		r, ok := be.(model.MemoryReporter)
		if !ok {
			return 0, false
		}
		f, t, err := r.FreeMemory()
		if err != nil {
			return 0, false
		}
		free, total, elem = min(free, f), max(total, t), max(elem, r.KVElementBytes())
	}
	if len(bes) == 0 {
		return 0, false
	}
	c := m.Config
	perBlock := int64(2*c.Layers*c.KVDim()/m.TP()*elem) * int64(blockSize)
	return max(0, free-max(1<<30, total/10)) / perBlock, true
}

// defaultKVMemory caps the default KV cache (see SchedulerOptions.KVMemory).
const defaultKVMemory = 4 << 30

// SchedulerStats is a snapshot of a Scheduler's state and counters.
type SchedulerStats struct {
	Running       int   // sequences in the running batch
	Queued        int   // requests waiting for admission
	KVBlocksInUse int   // blocks held by running sequences
	KVBlocksIdle  int   // cached blocks no sequence holds (evicted when memory is needed)
	KVBlocksTotal int   // blocks in the pool
	BlockSize     int   // tokens per block
	MaxSeqs       int   // the running batch's capacity
	Submitted     int64 // requests accepted by Submit
	Completed     int64 // requests finished (any finish reason)
	PromptTokens  int64 // prompt tokens prefilled (computed)
	CachedTokens  int64 // prompt tokens read from the prefix cache instead (a preempted sequence's too)
	Generated     int64 // tokens generated (streamed), over all requests
	Steps         int64 // forward steps run
	Preemptions   int64 // sequences preempted for KV blocks (each prefilled again later)
	DraftTokens   int64 // tokens proposed by prompt lookup (SchedulerOptions.DraftTokens)
	DraftAccepted int64 // of those, the ones the model generated
}

// Usage counts the tokens of one request.
type Usage struct {
	PromptTokens     int
	CompletionTokens int // generated tokens, EOS excluded, those of a matched stop string included
	CachedTokens     int // of PromptTokens, those read from the prefix cache
}

// Event is one message of a Stream: a generated token with the text it completes, or the final
// event (Done) with the finish reason, the usage counts and the error, if any.
type Event struct {
	// Token is the generated token id (−1 in the final event).
	Token int32
	// Text is the new output text: complete UTF-8 characters only, never the text of a matched
	// stop string, and possibly "" while a character or a possible stop string is held back.
	// The final event may carry text too (what was held back when generation ended). The Text
	// of all events concatenated is the completion.
	Text string
	// Time is when the scheduler produced the event.
	Time time.Time
	// Logprob is the token's log probability and the step's most likely tokens, when the
	// request asked for them (Request.Logprobs); nil otherwise and in the final event.
	Logprob *Logprob
	// PromptLogprobs, in the stream's first event (a token's, or the final one's when nothing
	// was generated), are the log probabilities of prompt tokens 1 … n−1 given those before
	// them, when the request asked for them (Request.PromptLogprobs).
	PromptLogprobs []*Logprob
	// Embedding is an embedding request's result (SubmitEmbed), in its final event.
	Embedding []float32

	Done         bool
	FinishReason string // FinishStop, FinishLength, FinishCancelled or FinishError (final event)
	Usage        Usage  // final event
	Err          error  // final event: the context's error, ErrClosed, a forward-pass error, or the grammar's (ErrGrammarDeadEnd, grammar.ErrAmbiguous)
}

// Stream delivers the events of one submitted request. Its channel is buffered for every event
// the request can produce, so a consumer that stops reading never blocks the scheduler; such a
// consumer should call Cancel (or cancel the context it submitted with) to free the sequence's
// KV blocks early.
type Stream struct {
	// C yields the token events, then one final event (Done), then is closed.
	C <-chan Event

	promptTokens int
	submitted    time.Time
	cancel       context.CancelFunc
}

// PromptTokens is the number of prompt tokens (BOS included).
func (s *Stream) PromptTokens() int { return s.promptTokens }

// Submitted is when Submit accepted the request.
func (s *Stream) Submitted() time.Time { return s.submitted }

// Cancel abandons the request: the scheduler frees its sequence at the next step boundary and
// sends a final event with FinishCancelled. Safe to call more than once, and after the end.
func (s *Stream) Cancel() { s.cancel() }

// Collect reads the stream to its end and returns the concatenated text and the final event.
func (s *Stream) Collect() (string, Event) {
	var text []byte
	var last Event
	for ev := range s.C {
		text = append(text, ev.Text...)
		last = ev
	}
	return string(text), last
}

// Scheduler runs many requests at once over one Engine with continuous batching: each forward
// step mixes prefill chunks of newly admitted sequences with one decode token of every running
// sequence; requests join and leave the batch at token boundaries, and their KV blocks return to
// the pool the moment they finish or are cancelled.
//
// One goroutine (started by NewScheduler, stopped by Close) owns the model state and the
// backend: while a Scheduler runs, do not call Engine.Generate on the same Engine (backends are
// driven from one goroutine at a time). Submit, Stats and Close are safe for concurrent use.
type Scheduler struct {
	e     *Engine
	opts  SchedulerOptions
	state *model.State
	pool  *blockPool
	tok   *tokenizer.Tokenizer

	mu      sync.Mutex
	waiting []*request // FIFO
	closing bool
	running atomic.Int64 // len(running), for Stats

	wake chan struct{} // buffered 1: new work, a cancellation, or Close
	done chan struct{} // closed when the loop has returned
	// abort is closed when Close's context ends: cancel everything still in flight.
	abort     chan struct{}
	abortOnce sync.Once
	aborted   atomic.Int64 // requests cancelled by abortAll

	submitted, completed, promptToks, cachedToks, generated, steps, preemptions atomic.Int64
	drafted, accepted                                                           atomic.Int64

	// loop-owned
	seqs      []*sequence  // running, in admission order
	requeued  []*sequence  // preempted, readmitted before any waiting request (oldest first)
	nRequeued atomic.Int64 // len(requeued), for Stats
	slots     []int32      // free sequence slots (indexes into batch.BlockTables)
	batch     model.Batch
	rows      []int32     // logit rows of the step
	owners    []*sequence // owners[i] wants the logits of rows[i]
	// rowPos[i] is the prompt position whose next token rows[i] scores (PromptLogprobs), or
	// −1 for a row the owner samples from.
	rowPos  []int
	hrows   []int32     // hidden-state rows of the step (embedding requests)
	hOwners []*sequence // hOwners[i] pools the hidden state of hrows[i]
}

// request is a validated submission waiting for admission.
type request struct {
	ctx       context.Context
	cancel    context.CancelFunc
	stopWake  func() bool // unregisters the context.AfterFunc that wakes the loop
	ids       []int32
	maxTokens int // resolved: ≥ 1
	stops     []string
	logprobs  bool
	topLP     int
	promptLP  bool // compute PromptLogprobs (the prompt is prefilled, never cached)
	ignoreEOS bool
	minTokens int     // EOS and stopIDs are masked, and stop strings not looked for, until then
	stopIDs   []int32 // tokens that end generation after being emitted
	endIDs    []int32 // EOS, BOS and stopIDs: masked until minTokens
	stopSaved []float32
	promptLPs []*Logprob // gathered during prefill, sent with the first event
	embedding []float32  // an embedding request's result, sent with the final event
	sentFirst bool       // an event has gone out
	sampler   *sample.Sampler
	grammar   *constraint // nil when unconstrained
	embed     *pooler     // an embedding request (SubmitEmbed): prefilled, pooled, nothing generated
	ch        chan Event
	submitted time.Time
}

// sequence is an admitted request in the running batch.
type sequence struct {
	*request
	slot       int32
	table      []int32 // KV block table: the prompt's blocks, then one more as each fills
	prefilled  int     // positions of history whose tokens have been fed (prefill progress)
	target     int     // prefill feeds history[:target] (the prompt; after a preemption, all of history)
	promptDone bool    // the prompt has been prefilled once (prompt logprobs are complete)
	cached     int     // prompt positions read from the prefix cache at admission (Usage)
	written    int     // positions whose K and V are in the cache
	chain      chain   // the sequence's blocks registered in the prefix cache
	history    []int32 // prompt then generated tokens
	generated  int
	dec        *tokenizer.StreamDecoder
	held       string    // decoded text not yet sent (a possible stop-string prefix)
	last       time.Time // when the previous token was produced
	draft      []int32   // tokens proposed this step, fed after the last one (draft.go)
	drafted    int       // of draft, those matched so far this step
	refused    bool      // a proposal was not what the model generated: its later rows are dropped
}

// NewScheduler allocates the batch state and KV cache and starts the scheduling goroutine.
func NewScheduler(e *Engine, opts SchedulerOptions) (*Scheduler, error) {
	if e == nil || e.Model == nil || e.Tokenizer == nil {
		return nil, fmt.Errorf("engine: NewScheduler needs a loaded Engine")
	}
	if opts.MaxSeqs <= 0 {
		opts.MaxSeqs = 8
	}
	if opts.MaxBatchTokens <= 0 {
		opts.MaxBatchTokens = max(e.prefillChunk(), opts.MaxSeqs)
	}
	if opts.DraftTokens < 0 || opts.DraftTokens > MaxDraftTokens {
		return nil, fmt.Errorf("engine: DraftTokens %d: want 0 (off) to %d", opts.DraftTokens, MaxDraftTokens)
	}
	if opts.MaxBatchTokens < opts.MaxSeqs {
		return nil, fmt.Errorf("engine: MaxBatchTokens %d is below MaxSeqs %d: every running sequence needs a token per step", opts.MaxBatchTokens, opts.MaxSeqs)
	}
	if opts.BlockSize <= 0 {
		opts.BlockSize = 16
	}
	if opts.MaxQueue == 0 {
		opts.MaxQueue = 256
	}
	ctxBlocks := (e.Context + opts.BlockSize - 1) / opts.BlockSize
	if opts.KVBlocks <= 0 {
		budget := opts.KVMemory
		if budget <= 0 {
			budget = defaultKVMemory
		}
		c := e.Model.Config
		elem := 4
		if ks, ok := e.Model.Backend.(model.KVSizer); ok {
			elem = ks.KVElementBytes()
		}
		perBlock := int64(2*c.Layers*c.KVDim()*elem) * int64(opts.BlockSize)
		budgetBlocks := budget / perBlock
		if dev, ok := deviceKVBlocks(e.Model, opts.BlockSize); ok && opts.KVMemory <= 0 {
			budgetBlocks = dev
		}
		opts.KVBlocks = max(ctxBlocks, int(min(int64(opts.MaxSeqs*ctxBlocks), budgetBlocks)))
	}
	st, err := e.Model.NewState(opts.MaxBatchTokens, min(opts.MaxBatchTokens, opts.MaxSeqs+promptLogitRows), opts.BlockSize, opts.KVBlocks)
	if err != nil {
		return nil, err
	}
	s := &Scheduler{
		e: e, opts: opts, state: st, tok: e.Tokenizer,
		pool:  newBlockPool(opts.KVBlocks, opts.BlockSize, !opts.NoPrefixCache),
		wake:  make(chan struct{}, 1),
		done:  make(chan struct{}),
		abort: make(chan struct{}),
	}
	s.slots = make([]int32, opts.MaxSeqs)
	for i := range s.slots {
		s.slots[i] = int32(opts.MaxSeqs - 1 - i)
	}
	s.batch.BlockTables = make([][]int32, opts.MaxSeqs)
	s.batch.Tokens = make([]int32, 0, opts.MaxBatchTokens)
	s.batch.Pos = make([]int32, 0, opts.MaxBatchTokens)
	s.batch.Seq = make([]int32, 0, opts.MaxBatchTokens)
	s.rows = make([]int32, 0, st.MaxLogits)
	s.owners = make([]*sequence, 0, st.MaxLogits)
	s.rowPos = make([]int, 0, st.MaxLogits)
	go s.loop()
	return s, nil
}

// Options returns the options in force, defaults filled in.
func (s *Scheduler) Options() SchedulerOptions { return s.opts }

// Submit validates req and queues it. The request runs until it finishes or ctx is cancelled;
// its tokens arrive on the returned Stream. Errors (nothing is queued then): ErrPromptTooLong
// when the prompt plus MaxTokens exceed the context (or the whole KV cache), ErrInvalidRequest,
// ErrQueueFull, ErrClosed.
//
// Request.MaxTokens 0 means "until the context is full". Stop strings end generation when the
// decoded output contains one; the stop string and what follows are not emitted.
func (s *Scheduler) Submit(ctx context.Context, req Request) (*Stream, error) {
	ids := req.PromptIDs
	if ids == nil {
		ids = s.tok.Encode(req.Prompt, true)
	} else {
		ids = append([]int32(nil), ids...)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("%w: empty prompt ids", ErrInvalidRequest)
	}
	vocab := s.e.Model.Config.Vocab
	for _, id := range ids {
		if id < 0 || int(id) >= vocab {
			return nil, fmt.Errorf("%w: prompt token id %d is outside the vocabulary (0..%d)", ErrInvalidRequest, id, vocab-1)
		}
	}
	if req.MaxTokens < 0 {
		return nil, fmt.Errorf("%w: max tokens %d is negative", ErrInvalidRequest, req.MaxTokens)
	}
	n, ctxLen := len(ids), s.e.Context
	if n >= ctxLen {
		return nil, fmt.Errorf("%w: the prompt has %d tokens, the context holds %d (and at least one must be generated)", ErrPromptTooLong, n, ctxLen)
	}
	maxTokens := ctxLen - n
	if req.MaxTokens > 0 {
		if req.MaxTokens > ctxLen-n { // not n+MaxTokens > ctxLen: that overflows for huge MaxTokens
			if n > math.MaxInt-req.MaxTokens {
				return nil, fmt.Errorf("%w: the prompt has %d tokens and max tokens is %d, the context holds %d",
					ErrPromptTooLong, n, req.MaxTokens, ctxLen)
			}
			return nil, fmt.Errorf("%w: the prompt has %d tokens and max tokens is %d: %d in all, the context holds %d",
				ErrPromptTooLong, n, req.MaxTokens, n+req.MaxTokens, ctxLen)
		}
		maxTokens = req.MaxTokens
	}
	if total := s.pool.alloc.Total(); s.blocksFor(n+maxTokens) > total {
		return nil, fmt.Errorf("%w: %d prompt + %d new tokens need %d KV blocks, the cache holds %d (%d tokens)",
			ErrPromptTooLong, n, maxTokens, s.blocksFor(n+maxTokens), total, total*s.opts.BlockSize)
	}
	for _, stop := range req.Stop {
		if stop == "" {
			return nil, fmt.Errorf("%w: empty stop string", ErrInvalidRequest)
		}
		if !utf8.ValidString(stop) { // heldSuffix and stopIndex cut the output at a stop's bytes
			return nil, fmt.Errorf("%w: stop string %q is not valid UTF-8", ErrInvalidRequest, stop)
		}
	}
	if req.MinTokens < 0 || req.MinTokens > maxTokens {
		return nil, fmt.Errorf("%w: min tokens %d: want 0 to max tokens (%d)", ErrInvalidRequest, req.MinTokens, maxTokens)
	}
	for _, id := range req.StopTokenIDs {
		if id < 0 || int(id) >= vocab {
			return nil, fmt.Errorf("%w: stop token id %d is outside the vocabulary (0..%d)", ErrInvalidRequest, id, vocab-1)
		}
	}
	if req.TopLogprobs < 0 || req.TopLogprobs > MaxTopLogprobs {
		return nil, fmt.Errorf("%w: top logprobs %d: want 0 to %d", ErrInvalidRequest, req.TopLogprobs, MaxTopLogprobs)
	}
	sampler, err := sample.New(req.Sampling, vocab)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	constrained, err := s.e.newConstraint(req, ids[len(ids)-1])
	if err != nil {
		return nil, err
	}

	rctx, cancel := context.WithCancel(ctx)
	r := &request{
		ctx: rctx, cancel: cancel, ids: ids, maxTokens: maxTokens, sampler: sampler,
		logprobs: req.Logprobs || req.TopLogprobs > 0 || req.PromptLogprobs, topLP: req.TopLogprobs, promptLP: req.PromptLogprobs,
		ignoreEOS: req.IgnoreEOS, minTokens: req.MinTokens, stopIDs: slices.Clone(req.StopTokenIDs),
		endIDs:  append([]int32{s.tok.EOS(), s.tok.BOS()}, req.StopTokenIDs...),
		grammar: constrained,
		stops:   append([]string(nil), req.Stop...),
		ch:      make(chan Event, maxTokens+2), // every token event plus the final one: sends never block
	}
	return s.enqueue(r)
}

// enqueue puts a validated request in the waiting line, unless the line is full or the
// scheduler closing (then it cancels the request's context).
func (s *Scheduler) enqueue(r *request) (*Stream, error) {
	s.mu.Lock()
	// Waiting requests that a free slot will take at the loop's next admission (it may be busy
	// in a step) are not queued beyond the running batch: only the rest count against MaxQueue.
	room := max(0, s.opts.MaxSeqs-int(s.running.Load())) + max(0, s.opts.MaxQueue)
	switch {
	case s.closing:
		s.mu.Unlock()
		r.cancel()
		return nil, ErrClosed
	case len(s.waiting) >= room:
		waiting := len(s.waiting)
		s.mu.Unlock()
		r.cancel()
		return nil, fmt.Errorf("%w: %d requests waiting, %d running", ErrQueueFull, waiting, s.running.Load())
	}
	r.submitted = time.Now()
	r.stopWake = context.AfterFunc(r.ctx, s.poke) // a cancelled request wakes an idle loop
	s.waiting = append(s.waiting, r)
	s.mu.Unlock()
	s.submitted.Add(1)
	s.poke()
	return &Stream{C: r.ch, promptTokens: len(r.ids), submitted: r.submitted, cancel: r.cancel}, nil
}

// blocksFor is the number of KV blocks n positions take.
func (s *Scheduler) blocksFor(n int) int { return (n + s.opts.BlockSize - 1) / s.opts.BlockSize }

// poke wakes the loop without blocking.
func (s *Scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Stats returns a snapshot of the scheduler's state and counters.
func (s *Scheduler) Stats() SchedulerStats {
	s.mu.Lock()
	queued := len(s.waiting)
	s.mu.Unlock()
	inUse, idle := s.pool.inUse()
	return SchedulerStats{
		Running:       int(s.running.Load()),
		Queued:        queued + int(s.nRequeued.Load()),
		KVBlocksInUse: inUse,
		KVBlocksIdle:  idle,
		KVBlocksTotal: s.pool.alloc.Total(),
		BlockSize:     s.opts.BlockSize,
		MaxSeqs:       s.opts.MaxSeqs,
		Submitted:     s.submitted.Load(),
		Completed:     s.completed.Load(),
		PromptTokens:  s.promptToks.Load(),
		CachedTokens:  s.cachedToks.Load(),
		Generated:     s.generated.Load(),
		Steps:         s.steps.Load(),
		Preemptions:   s.preemptions.Load(),
		DraftTokens:   s.drafted.Load(),
		DraftAccepted: s.accepted.Load(),
	}
}

// Close stops admitting requests (Submit returns ErrClosed), lets the queued and running ones
// finish until ctx is done, then cancels whatever is left (their streams end with ErrClosed)
// and stops the scheduling goroutine. It returns ctx's error if it had to cancel work, else nil.
// The Engine stays open (close it after the Scheduler). Safe to call more than once.
func (s *Scheduler) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.poke()
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
	}
	s.abortOnce.Do(func() { close(s.abort) })
	<-s.done
	if s.aborted.Load() == 0 {
		return nil // the work ended just as ctx did
	}
	return ctx.Err()
}

// loop is the scheduling goroutine: admit, step, repeat; sleep when there is nothing to do.
func (s *Scheduler) loop() {
	defer close(s.done)
	for {
		select {
		case <-s.abort:
			s.abortAll()
			return
		default:
		}
		s.reapWaiting()
		s.admit()
		if len(s.seqs) == 0 {
			s.mu.Lock()
			idle, closing := len(s.waiting) == 0, s.closing
			s.mu.Unlock()
			if idle && closing {
				return
			}
			// Sleep until Submit, a cancellation or Close pokes. (Waiting requests that were
			// not admitted with nothing running cannot stay stuck: Submit refuses requests
			// larger than the pool, so they were submitted after admit and poked.)
			select {
			case <-s.wake:
			case <-s.abort:
			}
			continue
		}
		s.step()
	}
}

// reapWaiting drops cancelled requests from the queue.
func (s *Scheduler) reapWaiting() {
	s.mu.Lock()
	var gone []*request
	kept := s.waiting[:0]
	for _, r := range s.waiting {
		if r.ctx.Err() != nil {
			gone = append(gone, r)
		} else {
			kept = append(kept, r)
		}
	}
	clear(s.waiting[len(kept):])
	s.waiting = kept
	s.mu.Unlock()
	for _, r := range gone {
		s.finishRequest(r, "", Usage{PromptTokens: len(r.ids)}, FinishCancelled, r.ctx.Err())
	}
	kept2 := s.requeued[:0]
	for _, q := range s.requeued {
		if err := s.cancelled(q); err != nil {
			s.nRequeued.Add(-1)
			s.finish(q, FinishCancelled, err)
			continue
		}
		kept2 = append(kept2, q)
	}
	clear(s.requeued[len(kept2):])
	s.requeued = kept2
}

// admit moves preempted sequences back into the running batch, then waiting requests, in
// order, while a slot and the KV blocks of the next one's prompt are free (with a spare 1% of
// the pool, so that admissions do not preempt at once what is running).
func (s *Scheduler) admit() {
	spare := max(1, s.pool.alloc.Total()/100)
	for len(s.slots) > 0 && len(s.requeued) > 0 {
		q := s.requeued[0]
		// Everything it has, prompt and generated tokens, is prefilled again: the last token
		// with logits, whose sampling goes on where it stopped.
		// Readmitted only with a block to spare for each running sequence's next growth
		// (unless nothing runs): else it would be the newest again, and preempted at once.
		table, cached, ch, err := s.pool.acquire(q.history, len(q.history), true, len(s.seqs))
		if err != nil {
			return // wait for running sequences to finish
		}
		s.requeued[0] = nil
		s.requeued = s.requeued[1:]
		s.nRequeued.Add(-1)
		q.table, q.prefilled, q.written, q.chain, q.target = table, cached, cached, ch, len(q.history)
		s.cachedToks.Add(int64(cached))
		s.running.Add(1)
		s.place(q)
	}
	for len(s.slots) > 0 && len(s.requeued) == 0 {
		s.mu.Lock()
		if len(s.waiting) == 0 {
			s.mu.Unlock()
			return
		}
		r := s.waiting[0]
		read := !r.promptLP && (r.embed == nil || r.embed.how != PoolMean) // every token computed
		table, cached, ch, err := s.pool.acquire(r.ids, len(r.ids), read, spare)
		if err != nil && len(s.seqs) == 0 {
			table, cached, ch, err = s.pool.acquire(r.ids, len(r.ids), read, 0) // alone, it always fits
		}
		if err != nil { // not enough free blocks: wait for a running sequence to finish
			s.mu.Unlock()
			return
		}
		s.waiting[0] = nil
		s.waiting = s.waiting[1:]
		s.running.Add(1) // under mu: Submit counts waiting and running together
		s.mu.Unlock()

		q := &sequence{
			request: r, table: table, prefilled: cached, cached: cached, written: cached, chain: ch, target: len(r.ids),
			history: append(make([]int32, 0, len(r.ids)+r.maxTokens), r.ids...),
		}
		if r.embed == nil {
			q.dec = s.tok.NewStreamDecoder(r.ids[len(r.ids)-1])
		}
		s.place(q)
		s.cachedToks.Add(int64(cached))
	}
}

// place puts an admitted sequence, its table set, into a free slot of the running batch.
func (s *Scheduler) place(q *sequence) {
	q.slot = s.slots[len(s.slots)-1]
	s.slots = s.slots[:len(s.slots)-1]
	s.batch.BlockTables[q.slot] = q.table
	s.seqs = append(s.seqs, q)
}

// reserve gives every decoding sequence the block its next token's K and V go to. When the
// pool has none, the most recently admitted other sequence is preempted (never one whose
// prompt logprobs are still being gathered); when there is none to preempt, the sequence sits
// out this step (skip). It returns the sequences to skip.
func (s *Scheduler) reserve() (skip map[*sequence]bool) {
	for i := 0; i < len(s.seqs); i++ {
		q := s.seqs[i]
		if q.prefilled < q.target || len(q.table)*s.opts.BlockSize >= len(q.history) {
			continue // prefill (its blocks were taken at admission), or room in its last block
		}
		for {
			t, err := s.pool.grow(q.table, len(q.history))
			if err == nil {
				q.table = t
				s.batch.BlockTables[q.slot] = t
				break
			}
			v := s.victim(q)
			if v == nil {
				if skip == nil {
					skip = map[*sequence]bool{}
				}
				skip[q] = true
				break
			}
			idx := s.preempt(v)
			if idx < i {
				i-- // q moved down one
			}
		}
	}
	return skip
}

// victim is the most recently admitted running sequence other than q that may be preempted,
// or nil. Embedding requests are not: their pooled states would be lost (and they leave as
// soon as their prompt is in).
func (s *Scheduler) victim(q *sequence) *sequence {
	for i := len(s.seqs) - 1; i >= 0; i-- {
		if v := s.seqs[i]; v != q && (!v.promptLP || v.promptDone) && v.embed == nil {
			return v
		}
	}
	return nil
}

// preempt takes v out of the running batch: its blocks go back to the pool (the full ones it
// registered stay cached), its slot is freed, and it waits at the front of the queue with
// everything else it has (history, sampler, decoder, held text). It returns v's index in
// s.seqs before removal.
func (s *Scheduler) preempt(v *sequence) int {
	idx := slices.Index(s.seqs, v)
	s.seqs = slices.Delete(s.seqs, idx, idx+1)
	s.detach(v)
	v.prefilled, v.written, v.chain = 0, 0, chain{}
	s.requeued = append(s.requeued, v)
	s.nRequeued.Add(1)
	s.preemptions.Add(1)
	return idx
}

// step runs one forward pass over the running batch and hands out the sampled tokens.
func (s *Scheduler) step() {
	// Cancelled sequences leave before the step: their blocks are free for the next admission.
	live := s.seqs[:0]
	for _, q := range s.seqs {
		if err := s.cancelled(q); err != nil {
			s.retire(q, FinishCancelled, err)
			continue
		}
		live = append(live, q)
	}
	clear(s.seqs[len(live):])
	s.seqs = live
	if len(s.seqs) == 0 {
		return
	}

	skip := s.reserve()
	b := &s.batch
	b.Tokens, b.Pos, b.Seq = b.Tokens[:0], b.Pos[:0], b.Seq[:0]
	s.rows, s.owners, s.rowPos = s.rows[:0], s.owners[:0], s.rowPos[:0]
	s.hrows, s.hOwners = s.hrows[:0], s.hOwners[:0]
	add := func(q *sequence, tok int32, pos int, logits bool) {
		if logits || (q.promptLP && !q.promptDone && pos < len(q.ids)-1) {
			s.rows = append(s.rows, int32(len(b.Tokens)))
			s.owners = append(s.owners, q)
			if logits {
				s.rowPos = append(s.rowPos, -1)
			} else {
				s.rowPos = append(s.rowPos, pos)
			}
		}
		b.Tokens = append(b.Tokens, tok)
		b.Pos = append(b.Pos, int32(pos))
		b.Seq = append(b.Seq, q.slot)
		q.written = pos + 1
	}
	// Decodes first: one token each (MaxBatchTokens ≥ MaxSeqs, so they always fit), each
	// followed by its proposed tokens when drafting is on, in the token budget and the logit
	// rows beyond one per sequence.
	decoding := 0
	for _, q := range s.seqs {
		if q.prefilled == q.target && !skip[q] {
			decoding++
		}
	}
	draftBudget := min(s.opts.MaxBatchTokens-decoding, s.state.MaxLogits-s.opts.MaxSeqs)
	for _, q := range s.seqs {
		q.draft, q.drafted, q.refused = q.draft[:0], 0, false
		if q.prefilled == q.target && !skip[q] {
			pos := len(q.history) - 1
			add(q, q.history[pos], pos, true)
			if s.opts.DraftTokens > 0 && draftBudget > 0 {
				s.propose(q, min(s.opts.DraftTokens, draftBudget, q.maxTokens-q.generated-1))
				for j, t := range q.draft {
					add(q, t, pos+1+j, true)
				}
				draftBudget -= len(q.draft)
			}
		}
	}
	// Then prefill chunks, oldest sequence first, in what is left of the token budget.
	budget := s.opts.MaxBatchTokens - len(b.Tokens)
	// Logit rows beyond one per sequence (and the drafts'), for prompts that want
	// PromptLogprobs: each such sequence takes at least one (its own) and the others share
	// what is left.
	promptRows := s.state.MaxLogits - s.opts.MaxSeqs - (len(s.rows) - decoding)
	hiddenRows := s.state.MaxLogits // hidden-state rows for embedding requests
	var prefilled int64
	for _, q := range s.seqs {
		if budget == 0 {
			break
		}
		if q.prefilled == q.target {
			continue
		}
		n := min(budget, q.target-q.prefilled)
		if q.promptLP {
			n = min(n, max(1, promptRows))
			promptRows -= n
		}
		if q.embed != nil { // every token's hidden state (PoolMean), or the last one's
			if q.embed.how == PoolMean {
				n = min(n, hiddenRows)
				hiddenRows -= n
			} else if q.prefilled+n == q.target {
				if hiddenRows == 0 {
					n-- // the last token waits for a step with a row for it
				} else {
					hiddenRows--
				}
			}
			if n == 0 {
				continue
			}
		}
		for i := 0; i < n; i++ {
			p := q.prefilled + i
			if q.embed != nil && (q.embed.how == PoolMean || p == q.target-1) {
				s.hrows = append(s.hrows, int32(len(b.Tokens)))
				s.hOwners = append(s.hOwners, q)
			}
			add(q, q.history[p], p, p == q.target-1 && q.embed == nil)
		}
		q.prefilled += n
		if q.prefilled == q.target {
			q.promptDone = true
		}
		budget -= n
		prefilled += int64(n)
	}
	s.promptToks.Add(prefilled)
	if len(b.Tokens) == 0 {
		return // every sequence sits out (waiting for blocks a prompt-logprobs prefill holds)
	}

	var logits, vals []float32
	var ids []int32
	var err error
	k := s.e.stepTopK(len(s.owners), func(i int) int {
		if s.rowPos[i] >= 0 {
			return 0
		}
		if s.owners[i].logprobs {
			return 0 // the log-softmax needs the whole row
		}
		if s.owners[i].grammar != nil {
			return 0 // a refused choice is drawn again from the whole masked row
		}
		if s.owners[i].holdsStop() {
			return 0 // EOS is masked in the whole row
		}
		return s.owners[i].sampler.TopKNeeded()
	})
	var hidden []float32
	switch {
	case len(s.hrows) > 0:
		k = 0
		logits, hidden, err = s.e.Model.ForwardHidden(s.state, b, s.rows, s.hrows)
	case k > 0:
		vals, ids, err = s.e.Model.ForwardTopK(s.state, b, s.rows, k)
	default:
		logits, err = s.e.Model.Forward(s.state, b, s.rows)
	}
	s.steps.Add(1)
	if err != nil {
		err = fmt.Errorf("engine: forward step: %w", err)
		for _, q := range s.seqs {
			s.retire(q, FinishError, err)
		}
		s.seqs = s.seqs[:0]
		return
	}
	for _, q := range s.seqs { // full blocks this step wrote join the prefix cache (drafts not yet)
		s.pool.register(&q.chain, q.table, q.history, min(q.written, len(q.history)))
	}
	dim := s.e.Model.Config.Dim
	for i, q := range s.hOwners {
		q.embed.add(hidden[i*dim : (i+1)*dim])
	}
	now := time.Now()
	vocab := s.e.Model.Config.Vocab
	for i, q := range s.owners {
		if p := s.rowPos[i]; p >= 0 { // a prompt token's row: how likely was the next one?
			q.promptLPs = append(q.promptLPs, logprobs(logits[i*vocab:(i+1)*vocab], q.ids[p+1], q.topLP))
			continue
		}
		if q.table == nil || q.refused {
			continue // ended by an earlier row of this step, or a draft row after a refused proposal
		}
		var next int32
		var lp *Logprob
		if k > 0 {
			next = q.sampler.SampleTop(vals[i*k:(i+1)*k], ids[i*k:(i+1)*k])
		} else {
			row := logits[i*vocab : (i+1)*vocab]
			held := q.holdsStop()
			if held {
				q.maskStops(row)
			}
			next = q.sampler.Sample(row, q.history)
			var err error
			if q.grammar != nil {
				next, err = q.grammar.choose(q.sampler, row, q.history, next)
			}
			if held {
				q.unmaskStops(row)
			}
			if err != nil {
				s.retire(q, FinishError, err)
				continue
			}
			if q.logprobs {
				lp = logprobs(row, next, q.topLP)
			}
		}
		if reason, done := s.advance(q, next, lp, now); done {
			s.retire(q, reason, nil)
			continue
		}
		if q.drafted < len(q.draft) { // the next row is that of proposal q.drafted
			if next == q.draft[q.drafted] {
				q.drafted++
				s.accepted.Add(1)
			} else {
				q.refused = true
			}
		}
	}
	for _, q := range s.seqs {
		if len(q.draft) > 0 && q.table != nil {
			q.written = len(q.history) - 1 // the K and V of refused proposals do not count
		}
		if q.embed != nil && q.prefilled == q.target { // the text is in: its embedding is done
			q.embedding = q.embed.result()
			s.retire(q, FinishStop, nil)
		}
	}
	live = s.seqs[:0]
	for _, q := range s.seqs {
		if q.table != nil {
			live = append(live, q)
		}
	}
	clear(s.seqs[len(live):])
	s.seqs = live
}

// cancelled reports the error that ends q early: its context's, or ErrClosed on abort.
func (s *Scheduler) cancelled(q *sequence) error {
	if err := q.ctx.Err(); err != nil {
		return err
	}
	select {
	case <-s.abort:
		return ErrClosed
	default:
		return nil
	}
}

// advance takes q's next token: it decides whether the sequence ends here and otherwise emits
// the token and its text (minus anything that may start a stop string).
func (s *Scheduler) advance(q *sequence, next int32, lp *Logprob, now time.Time) (reason string, done bool) {
	if (next == s.tok.EOS() || next == s.tok.BOS()) && !q.ignoreEOS {
		return FinishStop, true
	}
	stopID := slices.Contains(q.stopIDs, next)
	if o := s.opts.Observer; o != nil {
		if q.generated == 0 {
			o.TimeToFirstToken(now.Sub(q.submitted))
		} else {
			o.InterTokenLatency(now.Sub(q.last))
		}
	}
	q.last = now
	q.generated++
	s.generated.Add(1)
	q.history = append(q.history, next)
	text := q.held + q.dec.Add(next)
	q.held = ""
	if len(q.stops) > 0 && q.generated >= q.minTokens {
		if i := stopIndex(text, q.stops); i >= 0 {
			q.send(Event{Token: next, Text: text[:i], Time: now, Logprob: lp, PromptLogprobs: q.takePrompt()})
			q.dec = nil // the rest of the text is discarded
			return FinishStop, true
		}
		keep := heldSuffix(text, q.stops)
		text, q.held = text[:len(text)-keep], text[len(text)-keep:]
	}
	q.send(Event{Token: next, Text: text, Time: now, Logprob: lp, PromptLogprobs: q.takePrompt()})
	if stopID { // finish delivers what is held for stop strings or a character's bytes
		return FinishStop, true
	}
	if q.generated == q.maxTokens {
		return FinishLength, true
	}
	return "", false
}

// retire ends a running sequence: its KV blocks and slot return to the pool at once, then the
// final event goes out.
func (s *Scheduler) retire(q *sequence, reason string, err error) {
	s.detach(q)
	s.finish(q, reason, err)
}

// detach takes a running sequence's blocks and slot back.
func (s *Scheduler) detach(q *sequence) {
	s.pool.release(q.table)
	q.table = nil
	s.batch.BlockTables[q.slot] = nil
	s.slots = append(s.slots, q.slot)
	s.running.Add(-1)
}

// finish sends a sequence's final event (held text flushed) and closes its stream.
func (s *Scheduler) finish(q *sequence, reason string, err error) {
	text := q.held
	if q.dec != nil && err == nil {
		text += q.dec.Flush()
		// Flushed bytes (U+FFFD) cannot complete a stop string any more, but they may contain one.
		if i := stopIndex(text, q.stops); i >= 0 {
			text = text[:i]
		}
	}
	if err != nil {
		text = "" // held text is not delivered after a failure: the output ends where it stopped
	}
	s.finishRequest(q.request, text, Usage{PromptTokens: len(q.ids), CompletionTokens: q.generated, CachedTokens: q.cached}, reason, err)
}

// finishRequest sends the final event, closes the stream and releases the request's context.
func (s *Scheduler) finishRequest(r *request, text string, u Usage, reason string, err error) {
	r.stopWake()
	s.completed.Add(1) // before the event: a consumer that saw it sees the count
	r.send(Event{Token: -1, Text: text, Time: time.Now(), Done: true, FinishReason: reason, Usage: u, Err: err,
		PromptLogprobs: r.takePrompt(), Embedding: r.embedding})
	close(r.ch)
	r.cancel()
}

// send delivers ev; the channel has room for every event of the request (see Submit).
func (r *request) send(ev Event) { r.ch <- ev }

// takePrompt is the prompt logprobs for the stream's first event (nil for the others, and
// when the request did not ask for them).
func (r *request) takePrompt() []*Logprob {
	if r.sentFirst || !r.promptLP {
		return nil
	}
	r.sentFirst = true
	out := r.promptLPs
	if out == nil {
		out = []*Logprob{}
	}
	r.promptLPs = nil
	return out
}

// abortAll cancels everything queued or running (Close ran out of time).
func (s *Scheduler) abortAll() {
	for _, q := range s.seqs {
		s.retire(q, FinishCancelled, ErrClosed)
		s.aborted.Add(1)
	}
	s.seqs = nil
	for _, q := range s.requeued {
		s.finish(q, FinishCancelled, ErrClosed)
		s.aborted.Add(1)
	}
	s.requeued = nil
	s.nRequeued.Store(0)
	s.mu.Lock()
	waiting := s.waiting
	s.waiting = nil
	s.mu.Unlock()
	for _, r := range waiting {
		s.finishRequest(r, "", Usage{PromptTokens: len(r.ids)}, FinishCancelled, ErrClosed)
		s.aborted.Add(1)
	}
}

// stopIndex returns the byte offset of the earliest occurrence of any stop string in text, or −1.
func stopIndex(text string, stops []string) int {
	best := -1
	for _, st := range stops {
		if i := strings.Index(text, st); i >= 0 && (best < 0 || i < best) {
			best = i
		}
	}
	return best
}

// heldSuffix returns the length of the longest suffix of text that is a proper prefix of some
// stop string: text that may yet become a stop string and must not be emitted. Stop strings are
// valid UTF-8, so the cut always falls on a character boundary.
func heldSuffix(text string, stops []string) int {
	keep := 0
	for _, st := range stops {
		for n := min(len(st)-1, len(text)); n > keep; n-- {
			if text[len(text)-n:] == st[:n] {
				keep = n
				break
			}
		}
	}
	return keep
}

// holdsStop reports whether EOS and the stop tokens are masked at q's next step: fewer than
// MinTokens generated, unless the grammar has nothing left to allow but the end.
func (q *sequence) holdsStop() bool {
	return q.generated < q.minTokens && !(q.grammar != nil && q.grammar.m.Done())
}

// maskStops sets the logits of the tokens that would end q (EOS, BOS, its stop tokens) in row
// to −Inf, keeping them for unmaskStops (the row's logprobs are the model's).
func (q *sequence) maskStops(row []float32) {
	q.stopSaved = q.stopSaved[:0]
	for _, id := range q.endIDs {
		q.stopSaved = append(q.stopSaved, row[id])
		row[id] = float32(math.Inf(-1))
	}
}

// unmaskStops puts back what maskStops took, in reverse (an id may come twice).
func (q *sequence) unmaskStops(row []float32) {
	for i := len(q.endIDs) - 1; i >= 0; i-- {
		row[q.endIDs[i]] = q.stopSaved[i]
	}
}

// propose sets q.draft to at most k tokens found by prompt lookup, as many as q's KV blocks
// hold (growing them by what the pool has free, never preempting for a proposal).
func (s *Scheduler) propose(q *sequence, k int) {
	if k <= 0 {
		return
	}
	q.draft = lookupDraft(q.draft[:0], q.history, k)
	if len(q.draft) == 0 {
		return
	}
	need := len(q.history) + len(q.draft) // positions up to that of the last proposal
	if len(q.table)*s.opts.BlockSize < need {
		if t, err := s.pool.grow(q.table, need); err == nil {
			q.table = t
			s.batch.BlockTables[q.slot] = t
		}
	}
	q.draft = q.draft[:min(len(q.draft), len(q.table)*s.opts.BlockSize-len(q.history))]
	s.drafted.Add(int64(len(q.draft)))
}
