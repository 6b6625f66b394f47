package model

import (
	"errors"
	"fmt"
	"slices"

	"github.com/llamacu/llamacu/sample"
	"github.com/llamacu/llamacu/tensor"
	"github.com/llamacu/llamacu/tp"
)

// Model is a LLaMA 2 network resident on a Backend — or, under tensor parallelism, on several,
// one rank each (NewParallel). Its weights are immutable after construction; per-step activations
// live in a State, and one State serves one Forward at a time.
type Model struct {
	Config  Config  // the whole model's shape
	Backend Backend // rank 0's backend

	local    Config // the slice this rank computes: Heads, KVHeads, FFN divided by the TP degree
	outRows  int    // rows of this rank's LM head: Vocab, or Vocab/TP when split
	tokEmbed Weight // (vocab, dim)
	norm     Weight // (dim) final RMSNorm
	output   Weight // (outRows, dim) LM head (tokEmbed when tied and unsplit)
	layers   []layer

	comm  tp.Comm  // nil without tensor parallelism
	group *tpGroup // on rank 0 of a TP group: the other ranks' workers

	lowRankDims map[int]bool // AddLowRank's ranks (as −r) and output widths: a State's scratch
}

// layer holds one transformer block's weights.
type layer struct {
	attnNorm Weight // (dim)
	wq       Weight // (heads·head_dim, dim)
	wk, wv   Weight // (kv_heads·head_dim, dim)
	wo       Weight // (dim, heads·head_dim)
	ffnNorm  Weight // (dim)
	w1, w3   Weight // (ffn, dim) gate, up
	w2       Weight // (dim, ffn) down

	lowRank map[string][]lowRank // by projection (NameWq …): pairs added at run time (lowrank.go)
}

// TensorSource yields canonical weights by name (loader.Model.Tensor, or a synthetic generator).
type TensorSource func(name string) (*tensor.Tensor, error)

// New uploads every weight the config needs from src to be. progress, if not nil, is called after
// each tensor with the bytes uploaded so far and in total.
func New(be Backend, cfg Config, src TensorSource, progress func(done, total int64)) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return newRank(be, cfg, 1, src, nil, progress)
}

// newRank builds one rank of an n-way tensor-parallel model; src yields that rank's shards.
func newRank(be Backend, cfg Config, n int, src TensorSource, comm tp.Comm, progress func(done, total int64)) (*Model, error) {
	local, outRows := cfg.localConfig(n)
	m := &Model{Config: cfg, Backend: be, local: local, outRows: outRows, comm: comm, layers: make([]layer, cfg.Layers)}
	shapes := cfg.localShapes(n)
	var total, done int64
	tensors := make([]*tensor.Tensor, len(shapes))
	for i, ws := range shapes {
		t, err := src(ws.Name)
		if err != nil {
			return nil, err
		}
		if !slices.Equal(t.Shape, ws.Shape) {
			return nil, fmt.Errorf("model: tensor %q has shape %v, the config needs %v", ws.Name, t.Shape, ws.Shape)
		}
		tensors[i] = t
		total += int64(len(t.Data))
	}
	weights := make(map[string]Weight, len(shapes))
	for _, t := range tensors {
		w, err := be.Upload(t)
		if err != nil {
			return nil, fmt.Errorf("model: upload %q: %w", t.Name, err)
		}
		weights[t.Name] = w
		done += int64(len(t.Data))
		if progress != nil {
			progress(done, total)
		}
	}
	m.tokEmbed, m.norm = weights[NameTokEmbed], weights[NameNorm]
	m.output = weights[NameOutput]
	if m.output == nil { // tied and not split
		m.output = m.tokEmbed
	}
	for l := range m.layers {
		w := func(n string) Weight { return weights[LayerName(l, n)] }
		m.layers[l] = layer{
			attnNorm: w(NameAttnNorm), wq: w(NameWq), wk: w(NameWk), wv: w(NameWv), wo: w(NameWo),
			ffnNorm: w(NameFFNNorm), w1: w(NameW1), w2: w(NameW2), w3: w(NameW3),
		}
	}
	return m, nil
}

// State is the working memory of forward steps of up to MaxBatch tokens and MaxLogits logit rows:
// the activation buffers and the paged KV cache. One State serves one step at a time.
type State struct {
	MaxBatch  int
	MaxLogits int
	KV        KVCache

	x      Buffer    // (B, dim) residual stream
	x2     Buffer    // (B, dim) where it moves when a NormFolder folds the add into a GEMV; nil without one
	xb     Buffer    // (B, dim) normalised input / attention output projected
	q      Buffer    // (B, heads·head_dim)
	k, v   Buffer    // (B, kv_heads·head_dim)
	att    Buffer    // (B, heads·head_dim) attention output
	hb     Buffer    // (B, ffn) gate, then silu(gate)·up
	hb2    Buffer    // (B, ffn) up
	xl     Buffer    // (R, dim) rows gathered for the LM head
	logits Buffer    // (R, vocab)
	host   []float32 // (R, vocab) logits on the host
	hidden []float32 // (R, dim) final hidden states on the host, allocated at the first use

	// Tensor parallelism: this rank's logits slice, the gathered slices, the other ranks' States.
	localHost []float32 // (R, outRows)
	gathered  []float32 // (TP, R, outRows)
	top       topBufs   // ForwardTopK's host buffers, allocated at its first call
	ranks     []*State
	lowRank   map[int]Buffer // AddLowRank's scratch: (B, r) at −r, (B, out) at out

	id uint64 // multi-node, on node 0: names this State in the steps sent to the other nodes
}

// ErrBatch is returned for a batch that does not fit the State or the model.
var ErrBatch = errors.New("bad batch")

// NewState allocates activations for steps of up to maxBatch tokens (maxLogits of which need
// logits) and a KV cache of numBlocks blocks of blockSize tokens.
func (m *Model) NewState(maxBatch, maxLogits, blockSize, numBlocks int) (*State, error) {
	if maxBatch <= 0 || maxLogits <= 0 || maxLogits > maxBatch || blockSize <= 0 || numBlocks <= 0 {
		return nil, fmt.Errorf("%w: NewState(%d, %d, %d, %d)", ErrBatch, maxBatch, maxLogits, blockSize, numBlocks)
	}
	s, err := m.newRankState(maxBatch, maxLogits, blockSize, numBlocks)
	if err != nil {
		return nil, err
	}
	if m.group != nil {
		for _, w := range m.group.workers {
			rs, err := w.newRankState(maxBatch, maxLogits, blockSize, numBlocks)
			if err != nil {
				return nil, err
			}
			s.ranks = append(s.ranks, rs)
		}
		if m.group.leader {
			m.group.track(s)
		}
	}
	return s, nil
}

func (m *Model) newRankState(maxBatch, maxLogits, blockSize, numBlocks int) (*State, error) {
	c, be := m.local, m.Backend
	s := &State{MaxBatch: maxBatch, MaxLogits: maxLogits}
	var err error
	buf := func(rows, cols int) Buffer {
		if err != nil {
			return nil
		}
		var b Buffer
		b, err = be.NewBuffer(rows, cols)
		return b
	}
	qd := c.Heads * c.HeadDim()
	s.x, s.xb = buf(maxBatch, c.Dim), buf(maxBatch, c.Dim)
	if _, ok := be.(NormFolder); ok {
		s.x2 = buf(maxBatch, c.Dim)
	}
	s.q, s.k, s.v, s.att = buf(maxBatch, qd), buf(maxBatch, c.KVDim()), buf(maxBatch, c.KVDim()), buf(maxBatch, qd)
	s.hb, s.hb2 = buf(maxBatch, c.FFN), buf(maxBatch, c.FFN)
	s.xl, s.logits = buf(maxLogits, c.Dim), buf(maxLogits, m.outRows)
	if err != nil {
		return nil, fmt.Errorf("model: allocate activations: %w", err)
	}
	if err := m.lowRankBuffers(s, be); err != nil {
		return nil, err
	}
	s.KV, err = be.NewKVCache(KVLayout{Layers: c.Layers, KVHeads: c.KVHeads, HeadDim: c.HeadDim(), BlockSize: blockSize, NumBlocks: numBlocks})
	if err != nil {
		return nil, fmt.Errorf("model: allocate KV cache: %w", err)
	}
	s.host = make([]float32, maxLogits*c.Vocab)
	if m.outRows != c.Vocab {
		s.localHost = make([]float32, maxLogits*m.outRows)
		s.gathered = make([]float32, m.comm.Size()*maxLogits*m.outRows)
	}
	return s, nil
}

// Forward runs one step over batch b and returns the logits of the tokens listed in logitRows
// (indices into the batch), as a (len(logitRows), vocab) row-major slice that is valid until the
// next call. It is the LLaMA 2 forward pass (Touvron et al. 2023, as in Meta's model.py):
//
//	x = embed(tokens)
//	for each layer:
//	    h = rmsnorm(x)·attn_norm
//	    q, k, v = h·Wqᵀ, h·Wkᵀ, h·Wvᵀ; rope(q, k)
//	    x += attention(q, cache(k, v))·Woᵀ
//	    h = rmsnorm(x)·ffn_norm
//	    x += (silu(h·W1ᵀ) ⊙ h·W3ᵀ)·W2ᵀ
//	logits = (rmsnorm(x)·norm)·Outputᵀ
//
// Under tensor parallelism every rank runs this pass on its heads and FFN slice at once; the
// partial outputs of Wo and W2 are all-reduced, and the vocabulary-split logits all-gathered.
func (m *Model) Forward(s *State, b *Batch, logitRows []int32) ([]float32, error) {
	out, err := m.forward(s, b, stepReq{rows: logitRows})
	return out.logits, err
}

// ForwardHidden is Forward that also returns, for the batch rows listed in hiddenRows, the final
// hidden state rmsnorm(x)·norm — the vector the LM head reads, which llama.cpp returns as a
// decoder's embedding — as a (len(hiddenRows), dim) row-major slice valid until the next call.
// At most MaxLogits rows of each kind; logitRows may be empty (then logits is too, and no LM
// head runs). Under tensor parallelism every rank holds the whole residual stream, and rank 0's
// is read.
func (m *Model) ForwardHidden(s *State, b *Batch, logitRows, hiddenRows []int32) (logits, hidden []float32, err error) {
	if len(hiddenRows) > s.MaxLogits {
		return nil, nil, fmt.Errorf("%w: %d hidden rows, the state holds %d", ErrBatch, len(hiddenRows), s.MaxLogits)
	}
	for _, r := range hiddenRows {
		if r < 0 || int(r) >= b.Len() {
			return nil, nil, fmt.Errorf("%w: hidden row %d outside the batch of %d", ErrBatch, r, b.Len())
		}
	}
	out, err := m.forward(s, b, stepReq{rows: logitRows, hidden: hiddenRows})
	return out.logits, out.hidden, err
}

// ForwardTopK is Forward that returns, instead of whole rows of logits, the k best of each row
// (1 ≤ k ≤ min(vocab, sample.MaxTopK)): vals and ids, each (len(logitRows), k) row-major, best
// first in sample.TopK's order, valid until the next call. On a backend that implements TopKer
// (DeviceTopK) only those 8·k bytes per row leave the device; otherwise the whole rows are read
// and selected on the host. It is what a sampler whose TopKNeeded is at most k needs
// (sample.Sampler.SampleTop).
func (m *Model) ForwardTopK(s *State, b *Batch, logitRows []int32, k int) (vals []float32, ids []int32, err error) {
	if k < 1 || k > min(m.Config.Vocab, sample.MaxTopK) {
		return nil, nil, fmt.Errorf("%w: top-k %d: must be in [1, %d]", ErrBatch, k, min(m.Config.Vocab, sample.MaxTopK))
	}
	out, err := m.forward(s, b, stepReq{rows: logitRows, k: k})
	return out.vals, out.ids, err
}

// DeviceTopK reports whether ForwardTopK selects on the device (the backend is a TopKer).
func (m *Model) DeviceTopK() bool {
	_, ok := m.Backend.(TopKer)
	return ok
}

// stepReq is what a step is asked for besides filling the cache: the logits of rows (k = 0) or
// their k best candidates, and the final hidden states of the rows in hidden (read on rank 0
// only: the other ranks are sent a stepReq without them).
type stepReq struct {
	rows   []int32
	hidden []int32
	k      int
}

// stepOut is what one step returns: the logits (R, vocab) when it was asked for k = 0, else
// the k best candidates of each row, vals and ids (R, k); and the hidden states (H, dim).
type stepOut struct {
	logits []float32
	vals   []float32
	ids    []int32
	hidden []float32
}

func (m *Model) forward(s *State, b *Batch, req stepReq) (stepOut, error) {
	if err := m.checkBatch(s, b, req.rows); err != nil {
		return stepOut{}, err
	}
	if m.group == nil {
		return m.runRank(s, b, req)
	}
	if m.group.link != nil && !m.group.leader {
		return stepOut{}, errFollower
	}
	return m.group.forward(m, s, b, req)
}

// runRank is forwardRank, inside the backend's RunStep when it has one.
func (m *Model) runRank(s *State, b *Batch, req stepReq) (stepOut, error) {
	sr, ok := m.Backend.(StepRunner)
	if !ok {
		return m.forwardRank(s, b, req)
	}
	var out stepOut
	err := sr.RunStep(func() error {
		var err error
		out, err = m.forwardRank(s, b, req)
		return err
	})
	return out, err
}

// forwardRank is one rank's share of a step (the whole of it without tensor parallelism): the
// hidden states asked for, and the logits, or with k > 0 each row's k best.
func (m *Model) forwardRank(s *State, b *Batch, req stepReq) (stepOut, error) {
	logitRows, k := req.rows, req.k
	c, be := m.local, m.Backend
	n := b.Len()
	be.Embed(s.x, m.tokEmbed, b.Tokens) // x (B, dim)
	// xb (B, dim): the first layer's attention norm. Every later norm comes with the residual add
	// before it, which a backend may fuse (addNorm) or fold into the GEMVs after it (NormFolder):
	// then the residual moves between s.x and s.x2 (x is where it is now), because the folding
	// kernel reads x while it writes x + y. Each step starts from s.x (the embedding), so a
	// replayed step sees the same buffers.
	be.RMSNorm(s.xb, s.x, m.layers[0].attnNorm, n, c.NormEps)
	x, xAlt := s.x, s.x2
	nf, _ := be.(NormFolder)
	for l := range m.layers {
		w := &m.layers[l]
		// Attention block: q (B, heads·hd), k, v (B, kv_heads·hd); q and k rotated; k, v into
		// the cache. After the first layer: x += xb (residual); xb = rmsnorm(x)·attn_norm first.
		if l > 0 && nf != nil && !w.hasLowRank(NameWq, NameWk, NameWv) {
			nf.AddRMSNormQKVRoPEStoreKV(xAlt, s.xb, x, s.xb, w.attnNorm, c.NormEps, s.q, s.k, s.v, w.wq, w.wk, w.wv, s.KV, l, b, c.HeadDim(), c.RopeTheta)
			x, xAlt = xAlt, x
		} else {
			if l > 0 {
				m.addNorm(s.xb, x, s.xb, w.attnNorm, n)
			}
			if err := m.attnPrologue(s, w, l, b); err != nil {
				return stepOut{}, err
			}
		}
		be.Attention(s.att, s.q, s.KV, l, b) // att (B, heads·hd)
		be.MatMul(s.xb, s.att, w.wo, n)      // xb (B, dim), a partial sum under TP
		if err := m.addLowRank(s, w, NameWo, s.xb, s.att, n); err != nil {
			return stepOut{}, err
		}
		if err := m.allReduce(s.xb, n); err != nil {
			return stepOut{}, err
		}
		// Feed-forward block (SwiGLU), after x += xb (residual); xb = rmsnorm(x)·ffn_norm:
		// xb (B, dim) = (silu(xb·W1ᵀ)·(xb·W3ᵀ))·W2ᵀ, a partial sum under TP.
		if nf != nil && !w.hasLowRank(NameW1, NameW3, NameW2) {
			nf.AddRMSNormFFN(xAlt, s.xb, x, s.xb, w.ffnNorm, c.NormEps, s.xb, s.hb, s.hb2, w.w1, w.w3, w.w2, n)
			x, xAlt = xAlt, x
		} else {
			m.addNorm(s.xb, x, s.xb, w.ffnNorm, n)
			if err := m.feedForward(s, w, n); err != nil {
				return stepOut{}, err
			}
		}
		if err := m.allReduce(s.xb, n); err != nil {
			return stepOut{}, err
		}
	}
	be.Add(x, s.xb, n) // the last layer's residual
	var hidden []float32
	if h := len(req.hidden); h > 0 { // final hidden states: gathered, normed and read
		if s.hidden == nil {
			s.hidden = make([]float32, s.MaxLogits*c.Dim)
		}
		hidden = s.hidden[:h*c.Dim]
		be.GatherRows(s.xl, x, req.hidden)           // xl (H, dim)
		be.RMSNorm(s.xl, s.xl, m.norm, h, c.NormEps) // final norm
		if err := be.Read(hidden, s.xl, h); err != nil {
			return stepOut{}, fmt.Errorf("model: forward: %w", err)
		}
	}
	// LM head, only on the rows whose next token is wanted.
	r := len(logitRows)
	if r == 0 {
		return stepOut{logits: s.host[:0], hidden: hidden}, be.Read(nil, s.logits, 0)
	}
	be.GatherRows(s.xl, x, logitRows)            // xl (R, dim)
	be.RMSNorm(s.xl, s.xl, m.norm, r, c.NormEps) // final norm
	be.MatMul(s.logits, s.xl, m.output, r)       // logits (R, outRows)
	if k > 0 {
		out, err := m.topK(s, r, k)
		out.hidden = hidden
		return out, err
	}
	out := s.host[:r*c.Vocab]
	if m.outRows == c.Vocab {
		if err := be.Read(out, s.logits, r); err != nil {
			return stepOut{}, fmt.Errorf("model: forward: %w", err)
		}
		return stepOut{logits: out, hidden: hidden}, nil
	}
	// Vocabulary-split LM head: gather every rank's (R, outRows) block, then interleave them
	// into (R, vocab) rows.
	part := s.localHost[:r*m.outRows]
	if err := be.Read(part, s.logits, r); err != nil {
		return stepOut{}, fmt.Errorf("model: forward: %w", err)
	}
	all := s.gathered[:m.comm.Size()*len(part)]
	if err := m.comm.AllGather(all, part); err != nil {
		return stepOut{}, fmt.Errorf("model: forward: %w", err)
	}
	for q := 0; q < m.comm.Size(); q++ {
		for i := 0; i < r; i++ {
			copy(out[i*c.Vocab+q*m.outRows:i*c.Vocab+(q+1)*m.outRows], all[(q*r+i)*m.outRows:(q*r+i+1)*m.outRows])
		}
	}
	return stepOut{logits: out, hidden: hidden}, nil
}

// attnPrologue is the attention block up to attention itself, from s.xb (B, dim):
// q, k, v = xb·Wqᵀ, xb·Wkᵀ, xb·Wvᵀ (plus their low-rank pairs); RoPE on q and k; k and v into the
// cache at layer l. One fused op where the backend has it (QKVRoPEStorer) and the layer has no
// low-rank pair on q, k or v (those join before RoPE).
func (m *Model) attnPrologue(s *State, w *layer, l int, b *Batch) error {
	c, be, n := m.local, m.Backend, b.Len()
	lr := len(w.lowRank[NameWq])+len(w.lowRank[NameWk])+len(w.lowRank[NameWv]) > 0
	if f, ok := be.(QKVRoPEStorer); ok && !lr {
		f.MatMulQKVRoPEStoreKV(s.q, s.k, s.v, s.xb, w.wq, w.wk, w.wv, s.KV, l, b, c.HeadDim(), c.RopeTheta)
		return nil
	}
	m.qkv(s.q, s.k, s.v, s.xb, w, n)
	if lr {
		for _, p := range []struct {
			name string
			out  Buffer
		}{{NameWq, s.q}, {NameWk, s.k}, {NameWv, s.v}} {
			if err := m.addLowRank(s, w, p.name, p.out, s.xb, n); err != nil {
				return err
			}
		}
	}
	if rs, ok := be.(RoPEStorer); ok {
		rs.RoPEStoreKV(s.q, s.k, s.v, s.KV, l, b, c.HeadDim(), c.RopeTheta)
		return nil
	}
	be.RoPE(s.q, c.HeadDim(), b.Pos, c.RopeTheta)
	be.RoPE(s.k, c.HeadDim(), b.Pos, c.RopeTheta)
	be.StoreKV(s.KV, l, s.k, s.v, b) // cache[l][seq][pos] = k, v
	return nil
}

// qkv is q, k, v = x·Wqᵀ, x·Wkᵀ, x·Wvᵀ: one fused op where the backend has it (QKVMatMuler).
func (m *Model) qkv(q, k, v, x Buffer, w *layer, n int) {
	if f, ok := m.Backend.(QKVMatMuler); ok {
		f.MatMulQKV(q, k, v, x, w.wq, w.wk, w.wv, n)
		return
	}
	m.Backend.MatMul(q, x, w.wq, n)
	m.Backend.MatMul(k, x, w.wk, n)
	m.Backend.MatMul(v, x, w.wv, n)
}

// feedForward is the feed-forward block from s.xb into s.xb: hb (B, ffn) = silu(xb·W1ᵀ)·(xb·W3ᵀ),
// then xb = hb·W2ᵀ (plus the low-rank pairs). One fused op where the backend has it
// (FFNMatMuler) and the layer has no low-rank pair on W1, W3 or W2 (those read or write the
// intermediates).
func (m *Model) feedForward(s *State, w *layer, n int) error {
	lr := len(w.lowRank) > 0 && len(w.lowRank[NameW1])+len(w.lowRank[NameW3])+len(w.lowRank[NameW2]) > 0
	if f, ok := m.Backend.(FFNMatMuler); ok && !lr {
		f.MatMulFFN(s.xb, s.hb, s.hb2, s.xb, w.w1, w.w3, w.w2, n)
		return nil
	}
	if err := m.gateUp(s, s.hb, s.hb2, s.xb, w, n); err != nil { // hb (B, ffn)
		return err
	}
	m.Backend.MatMul(s.xb, s.hb, w.w2, n) // down (B, dim)
	return m.addLowRank(s, w, NameW2, s.xb, s.hb, n)
}

// gateUp is out = silu(x·W1ᵀ)·(x·W3ᵀ), using tmp for the up projection unless the backend fuses
// it (GateUpMatMuler) — and the layer has no low-rank pair on W1 or W3, which joins before SwiGLU.
func (m *Model) gateUp(s *State, out, tmp, x Buffer, w *layer, n int) error {
	lr := len(w.lowRank) > 0 && len(w.lowRank[NameW1])+len(w.lowRank[NameW3]) > 0
	if f, ok := m.Backend.(GateUpMatMuler); ok && !lr {
		f.MatMulSwiGLU(out, tmp, x, w.w1, w.w3, n)
		return nil
	}
	m.Backend.MatMul(out, x, w.w1, n) // gate (B, ffn)
	m.Backend.MatMul(tmp, x, w.w3, n) // up (B, ffn)
	if lr {
		if err := m.addLowRank(s, w, NameW1, out, x, n); err != nil {
			return err
		}
		if err := m.addLowRank(s, w, NameW3, tmp, x, n); err != nil {
			return err
		}
	}
	m.Backend.SwiGLU(out, out, tmp, n)
	return nil
}

// addNorm is x += y, then out = rmsnorm(x)·w: one fused op where the backend has it
// (AddRMSNormer).
func (m *Model) addNorm(out, x, y Buffer, w Weight, n int) {
	if f, ok := m.Backend.(AddRMSNormer); ok {
		f.AddRMSNorm(out, x, y, w, n, m.local.NormEps)
		return
	}
	m.Backend.Add(x, y, n)
	m.Backend.RMSNorm(out, x, w, n, m.local.NormEps)
}

// checkBatch validates a batch against the state and the model (user input reaches here through
// the engine, so this is an error, not a panic).
func (m *Model) checkBatch(s *State, b *Batch, logitRows []int32) error {
	n := b.Len()
	kv := s.KV.Layout()
	switch {
	case n == 0:
		return fmt.Errorf("%w: empty", ErrBatch)
	case n > s.MaxBatch:
		return fmt.Errorf("%w: %d tokens, the state holds %d", ErrBatch, n, s.MaxBatch)
	case len(b.Pos) != n || len(b.Seq) != n:
		return fmt.Errorf("%w: %d tokens but %d positions and %d sequence slots", ErrBatch, n, len(b.Pos), len(b.Seq))
	case len(logitRows) > s.MaxLogits:
		return fmt.Errorf("%w: %d logit rows, the state holds %d", ErrBatch, len(logitRows), s.MaxLogits)
	}
	for i := 0; i < n; i++ {
		tok, pos, seq := b.Tokens[i], b.Pos[i], b.Seq[i]
		if tok < 0 || int(tok) >= m.Config.Vocab {
			return fmt.Errorf("%w: token %d out of the vocabulary (%d)", ErrBatch, tok, m.Config.Vocab)
		}
		if pos < 0 || int(pos) >= m.Config.MaxSeq {
			return fmt.Errorf("%w: position %d outside the context (%d)", ErrBatch, pos, m.Config.MaxSeq)
		}
		if seq < 0 || int(seq) >= len(b.BlockTables) {
			return fmt.Errorf("%w: sequence slot %d has no block table", ErrBatch, seq)
		}
		bt := b.BlockTables[seq]
		blk := int(pos) / kv.BlockSize
		if blk >= len(bt) {
			return fmt.Errorf("%w: position %d of sequence %d needs block %d, its table has %d", ErrBatch, pos, seq, blk, len(bt))
		}
		if id := bt[blk]; id < 0 || int(id) >= kv.NumBlocks {
			return fmt.Errorf("%w: sequence %d names block %d of %d", ErrBatch, seq, id, kv.NumBlocks)
		}
	}
	for _, r := range logitRows {
		if r < 0 || int(r) >= n {
			return fmt.Errorf("%w: logit row %d outside the batch of %d", ErrBatch, r, n)
		}
	}
	return nil
}
