package engine

import (
	"errors"
	"fmt"

	"github.com/llamacu/llamacu/grammar"
	"github.com/llamacu/llamacu/sample"
	"github.com/llamacu/llamacu/tokenizer"
)

// ErrGrammarDeadEnd ends a constrained generation in which no token of the vocabulary can
// continue the text (a grammar that needs a character the vocabulary cannot spell).
var ErrGrammarDeadEnd = errors.New("engine: no token can continue the text under the grammar")

// GrammarVocab returns the tokenizer's vocabulary as a grammar sees it: each token's bytes in
// the decoded text (tokenizer.TokenBytes), EOS as the end. Built on first use.
func (e *Engine) GrammarVocab() *grammar.Vocab {
	e.vocabOnce.Do(func() {
		tok := e.Tokenizer
		tokens := make([][]byte, tok.VocabSize())
		for id := range tokens {
			tokens[id] = tok.TokenBytes(int32(id))
		}
		// The decoder drops a leading space after BOS except from byte and unknown tokens
		// (tokenizer.StreamDecoder).
		raw := func(id int32) bool {
			t := tok.Type(id)
			return t == tokenizer.TypeByte || t == tokenizer.TypeUnknown
		}
		e.vocab = grammar.NewVocab(tokens, raw, tok.EOS())
	})
	return e.vocab
}

// constraint keeps one generation inside a grammar. The sampler draws as usual; only when the
// grammar refuses its choice is the row masked and the draw made again (llama.cpp's order), so
// an unconstrained-looking step costs one token check instead of a pass over the vocabulary.
type constraint struct {
	m      *grammar.Matcher
	masked []float32 // (vocab) the row with the tokens the grammar forbids at −Inf
}

// newConstraint returns nil when req has no grammar. prev is the prompt's last token: after
// BOS the decoder drops the first token's leading space, and so must the grammar.
func (e *Engine) newConstraint(req Request, prev int32) (*constraint, error) {
	g := req.Grammar
	if g == nil {
		return nil, nil
	}
	c := &constraint{m: g.NewMatcher(e.GrammarVocab()), masked: make([]float32, e.Model.Config.Vocab)}
	if err := c.m.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	if prev == e.Tokenizer.BOS() || req.TrimLeadingSpace {
		c.m.DropLeadingSpace()
	}
	return c, nil
}

// choose returns the token to emit given the sampler's unconstrained choice next for row, and
// advances the grammar past it: one walk of the token's bytes when the grammar allows it.
func (c *constraint) choose(s *sample.Sampler, row []float32, history []int32, next int32) (int32, error) {
	err := c.m.Accept(next)
	if err == nil {
		return next, nil
	}
	if errors.Is(err, grammar.ErrAmbiguous) {
		return -1, fmt.Errorf("engine: %w", err)
	}
	copy(c.masked, row)
	n, err := c.m.Mask(c.masked)
	if err != nil {
		return -1, fmt.Errorf("engine: %w", err)
	}
	if n == 0 {
		return -1, ErrGrammarDeadEnd
	}
	next = s.Sample(c.masked, history)
	if err := c.m.Accept(next); err != nil {
		return -1, fmt.Errorf("engine: %w", err) // Mask and Accept disagree: a bug
	}
	return next, nil
}
