package serve

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/llamacu/llamacu/engine"
)

// Embeddings, in the three shapes clients send:
//
//	POST /v1/embeddings   OpenAI's: {"input": text | [texts] | [ids] | [[ids]],
//	                      "encoding_format": "float" | "base64", "dimensions"} →
//	                      {"object": "list", "data": [{"object": "embedding", "index", "embedding"}],
//	                      "usage"}; unit length; an input beyond the context is an error
//	POST /api/embed       ollama's: {"input": text | [texts], "truncate": true} →
//	                      {"embeddings": [[...]], "prompt_eval_count", durations}; unit length;
//	                      an input beyond the context is cut to it unless "truncate": false
//	POST /api/embeddings  ollama's older one: {"prompt": text} → {"embedding": [...]}, as the
//	                      model gives it (not normalized, as ollama)
//
// A text is encoded with BOS, as a prompt; token ids are used as they are. Its embedding is
// the final hidden state of its last token — what llama.cpp and ollama return for a LLaMA
// model — or the mean over its tokens (Options.Pooling). The inputs of one request go through
// the scheduler's running batch beside generations, up to its sequence slots at a time.
// ollama's "options" are accepted and ignored (they shape sampling; nothing is sampled).

// maxEmbedInputs is the most inputs one embeddings request may carry (OpenAI's limit).
const maxEmbedInputs = 2048

type embeddingsRequest struct {
	Model          string     `json:"model"`
	Input          inputField `json:"input"`
	EncodingFormat string     `json:"encoding_format"`
	Dimensions     *int       `json:"dimensions"`
	User           string     `json:"user"`
}

// inputField is the embeddings input: a completions prompt's shapes, up to maxEmbedInputs.
type inputField struct{ items []promptItem }

func (f *inputField) UnmarshalJSON(b []byte) (err error) {
	f.items, err = parsePrompts(b, "input", maxEmbedInputs)
	return err
}

type embeddingJSON struct {
	Object    string `json:"object"`
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"` // []float32, or a base64 string of little-endian float32s
}

type embeddingsResponse struct {
	Object string          `json:"object"`
	Data   []embeddingJSON `json:"data"`
	Model  string          `json:"model"`
	Usage  struct {
		PromptTokens int `json:"prompt_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
}

func (s *Server) handleEmbeddings(w http.ResponseWriter, r *http.Request) {
	b := s.backendOrError(w)
	if b == nil {
		return
	}
	var req embeddingsRequest
	if bad := decodeBody(w, r, s.opts.MaxBodyBytes, s.opts.BodyTimeout, &req); bad != nil {
		bad.write(w)
		return
	}
	items := req.Input.items
	switch {
	case len(items) == 0:
		invalid("input", "input is required").write(w)
		return
	case len(items) > maxEmbedInputs:
		invalid("input", "at most %d inputs (got %d)", maxEmbedInputs, len(items)).write(w)
		return
	case req.EncodingFormat != "" && req.EncodingFormat != "float" && req.EncodingFormat != "base64":
		invalid("encoding_format", "encoding_format must be \"float\" or \"base64\" (got %q)", req.EncodingFormat).write(w)
		return
	case req.Dimensions != nil && *req.Dimensions != b.e.Model.Config.Dim:
		invalid("dimensions", "this model's embeddings have %d dimensions, and it cannot shorten them (got %d)", b.e.Model.Config.Dim, *req.Dimensions).write(w)
		return
	}
	reqs := make([]engine.EmbedRequest, len(items))
	for i, it := range items {
		switch {
		case it.isIDs && len(it.ids) == 0:
			invalid("input", "input %d is an empty array of token ids", i).write(w)
			return
		case !it.isIDs && it.text == "":
			invalid("input", "input %d is an empty string", i).write(w)
			return
		}
		reqs[i] = engine.EmbedRequest{PromptIDs: it.ids, Normalize: true, Pooling: s.opts.Pooling}
		if !it.isIDs {
			reqs[i].PromptIDs = b.e.Tokenizer.Encode(it.text, true)
		}
	}
	vecs, tokens, err := s.embed(r.Context(), b, reqs)
	if err != nil {
		if r.Context().Err() != nil {
			return // the client is gone
		}
		status, typ, code := errorFor(err)
		writeError(w, status, typ, code, strings.Replace(err.Error(), "engine: ", "", 1))
		return
	}
	resp := embeddingsResponse{Object: "list", Model: s.opts.ModelName, Data: make([]embeddingJSON, len(vecs))}
	for i, v := range vecs {
		var e any = v
		if req.EncodingFormat == "base64" {
			e = base64Floats(v)
		}
		resp.Data[i] = embeddingJSON{Object: "embedding", Index: i, Embedding: e}
	}
	resp.Usage.PromptTokens, resp.Usage.TotalTokens = tokens, tokens
	writeJSON(w, http.StatusOK, resp)
}

// base64Floats is OpenAI's base64 encoding of an embedding: its float32s, little-endian.
func base64Floats(v []float32) string {
	b := make([]byte, 0, 4*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return base64.StdEncoding.EncodeToString(b)
}

// embed runs the requests through the scheduler, at most its sequence slots at a time (so that
// a large batch neither fills the waiting line nor holds it from other clients for long), and
// returns their vectors in order and their prompt tokens in all. The first error stops it.
func (s *Server) embed(ctx context.Context, b *backend, reqs []engine.EmbedRequest) ([][]float32, int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // on an error, the requests still in flight
	window := max(1, b.sched.Options().MaxSeqs)
	out := make([][]float32, len(reqs))
	streams := make([]*engine.Stream, 0, window)
	tokens := 0
	for start := 0; start < len(reqs); start += window {
		streams = streams[:0]
		for i, req := range reqs[start:min(start+window, len(reqs))] {
			st, err := b.sched.SubmitEmbed(ctx, req)
			if err != nil {
				return nil, 0, fmt.Errorf("input %d: %w", start+i, err)
			}
			s.metrics.promptTokens.Add(int64(st.PromptTokens()))
			streams = append(streams, st)
		}
		for i, st := range streams {
			_, ev := st.Collect()
			if ev.Err != nil {
				return nil, 0, fmt.Errorf("input %d: %w", start+i, ev.Err)
			}
			out[start+i] = ev.Embedding
			tokens += ev.Usage.PromptTokens
		}
	}
	return out, tokens, nil
}

// ollamaEmbedRequest is /api/embed's body, and /api/embeddings' (prompt).
type ollamaEmbedRequest struct {
	Model      string          `json:"model"`
	Input      json.RawMessage `json:"input"`
	Prompt     *string         `json:"prompt"`
	Truncate   *bool           `json:"truncate"`
	Dimensions int             `json:"dimensions"`
	Options    map[string]any  `json:"options"`
	KeepAlive  any             `json:"keep_alive"`
}

// ollamaInputs reads /api/embed's input: a string or an array of strings; empty strings are
// left out, as ollama does.
func ollamaInputs(raw json.RawMessage) ([]string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		if one == "" {
			return nil, nil
		}
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, errors.New("input must be a string or an array of strings")
	}
	if len(many) > maxEmbedInputs {
		return nil, fmt.Errorf("at most %d inputs (got %d)", maxEmbedInputs, len(many))
	}
	var out []string
	for _, s := range many {
		if s != "" {
			out = append(out, s)
		}
	}
	return out, nil
}

func (s *Server) handleOllamaEmbed(w http.ResponseWriter, r *http.Request) {
	legacy := r.URL.Path == "/api/embeddings"
	start := time.Now()
	b := s.backendOrError(w)
	if b == nil {
		return
	}
	var req ollamaEmbedRequest
	if bad := decodeBody(w, r, s.opts.MaxBodyBytes, s.opts.BodyTimeout, &req); bad != nil {
		ollamaError(w, bad.status, "%s", bad.msg)
		return
	}
	bad := func(format string, args ...any) { ollamaError(w, http.StatusBadRequest, format, args...) }
	var texts []string
	if legacy {
		if req.Prompt != nil && *req.Prompt != "" {
			texts = []string{*req.Prompt}
		}
	} else {
		var err error
		if texts, err = ollamaInputs(req.Input); err != nil {
			bad("%v", err)
			return
		}
		if req.Dimensions != 0 && req.Dimensions != b.e.Model.Config.Dim {
			bad("dimensions: this model's embeddings have %d dimensions, and it cannot shorten them", b.e.Model.Config.Dim)
			return
		}
	}
	truncate := req.Truncate == nil || *req.Truncate
	reqs := make([]engine.EmbedRequest, len(texts))
	for i, t := range texts {
		ids := b.e.Tokenizer.Encode(t, true)
		if len(ids) > b.e.Context {
			if !truncate {
				bad("input %d has %d tokens: the input length exceeds the context length (%d)", i, len(ids), b.e.Context)
				return
			}
			ids = ids[:b.e.Context]
		}
		reqs[i] = engine.EmbedRequest{PromptIDs: ids, Normalize: !legacy, Pooling: s.opts.Pooling}
	}
	vecs, tokens, err := s.embed(r.Context(), b, reqs)
	if err != nil {
		if r.Context().Err() != nil {
			return
		}
		status, _, _ := errorFor(err)
		ollamaError(w, status, "%s", strings.Replace(err.Error(), "engine: ", "", 1))
		return
	}
	if legacy {
		v := []float32{}
		if len(vecs) == 1 {
			v = vecs[0]
		}
		writeJSON(w, http.StatusOK, map[string]any{"embedding": v})
		return
	}
	if vecs == nil {
		vecs = [][]float32{}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"model": s.opts.ModelName, "embeddings": vecs,
		"total_duration": time.Since(start).Nanoseconds(), "load_duration": 0, "prompt_eval_count": tokens,
	})
}
