package serve

import (
	"net/http"

	"github.com/llamacu/llamacu/chat"
)

// POST /tokenize and /detokenize, in the shapes vLLM and llama.cpp's server both accept:
//
//	/tokenize    {"prompt" | "content": "text", "add_special_tokens" | "add_special": true}
//	             or {"messages": [...]} (the Llama 2 chat format, as /v1/chat/completions)
//	             → {"tokens": [ids], "count": n, "max_model_len": context}
//	/detokenize  {"tokens": [ids]} → {"prompt": "text", "content": "text"}
//
// Clients use them to count tokens against the context before sending a request.

type tokenizeRequest struct {
	Prompt           *string       `json:"prompt"`
	Content          *string       `json:"content"`
	Messages         []chatMessage `json:"messages"`
	AddSpecialTokens *bool         `json:"add_special_tokens"`
	AddSpecial       *bool         `json:"add_special"`
}

func (s *Server) handleTokenize(w http.ResponseWriter, r *http.Request) {
	b := s.backendOrError(w)
	if b == nil {
		return
	}
	var req tokenizeRequest
	if bad := decodeBody(w, r, s.opts.MaxBodyBytes, s.opts.BodyTimeout, &req); bad != nil {
		bad.write(w)
		return
	}
	bos := true
	for _, v := range []*bool{req.AddSpecialTokens, req.AddSpecial} {
		if v != nil {
			bos = *v
		}
	}
	var ids []int32
	switch text := req.Prompt; {
	case req.Messages != nil:
		msgs, bad := chatMessages(req.Messages)
		if bad != nil {
			bad.write(w)
			return
		}
		var err error
		if ids, err = chat.Encode(b.e.Tokenizer, msgs); err != nil {
			invalid("messages", "%v", err).write(w)
			return
		}
	case text != nil || req.Content != nil:
		if text == nil {
			text = req.Content
		}
		ids = b.e.Tokenizer.Encode(*text, bos)
	default:
		invalid("prompt", "prompt (or content, or messages) is required").write(w)
		return
	}
	if ids == nil {
		ids = []int32{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokens": ids, "count": len(ids), "max_model_len": b.e.Context})
}

func (s *Server) handleDetokenize(w http.ResponseWriter, r *http.Request) {
	b := s.backendOrError(w)
	if b == nil {
		return
	}
	var req struct {
		Tokens *[]int32 `json:"tokens"`
	}
	if bad := decodeBody(w, r, s.opts.MaxBodyBytes, s.opts.BodyTimeout, &req); bad != nil {
		bad.write(w)
		return
	}
	if req.Tokens == nil {
		invalid("tokens", "tokens is required").write(w)
		return
	}
	vocab := b.e.Tokenizer.VocabSize()
	for _, id := range *req.Tokens {
		if id < 0 || int(id) >= vocab {
			invalid("tokens", "token id %d is outside the vocabulary (0..%d)", id, vocab-1).write(w)
			return
		}
	}
	text := b.e.Tokenizer.Decode(*req.Tokens)
	writeJSON(w, http.StatusOK, map[string]string{"prompt": text, "content": text})
}
