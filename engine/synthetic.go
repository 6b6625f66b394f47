package engine

import (
	"fmt"
	"strings"

	"github.com/llamacu/llamacu/tokenizer"
)

// syntheticWords seed the built-in vocabulary beyond the bytes, so that English prompts encode to
// a realistic number of tokens (with all their prefixes, which BPE merges pass through).
const syntheticWords = "the and was to a he she they it in of with day one time upon once there little " +
	"girl boy named big happy play saw said friend mom dad ball tree park went sun cat dog ran"

// SyntheticTokenizer builds the vocabulary of the built-in model: <unk>, <s>, </s>, the 256 byte
// pieces (ids 3..258, as in LLaMA's vocabulary), "▁" and printable ASCII, then common English
// words and their prefixes, padded with unused pieces up to vocab.
func SyntheticTokenizer(vocab int) (*tokenizer.Tokenizer, error) {
	if vocab < 259+96 {
		return nil, fmt.Errorf("%w: the synthetic vocabulary needs at least %d pieces, the model has %d", ErrTokenizer, 259+96, vocab)
	}
	v := tokenizer.Vocab{BOS: 1, EOS: 2, UNK: 0, PAD: -1, AddDummyPrefix: true}
	add := func(piece string, typ int32) {
		v.Tokens = append(v.Tokens, piece)
		v.Scores = append(v.Scores, -float32(len(v.Tokens)))
		v.Types = append(v.Types, typ)
	}
	const (
		normal  = 1
		unknown = 2
		control = 3
		unused  = 5
		byteTyp = 6
	)
	add("<unk>", unknown)
	add("<s>", control)
	add("</s>", control)
	for b := 0; b < 256; b++ {
		add(fmt.Sprintf("<0x%02X>", b), byteTyp)
	}
	seen := map[string]bool{}
	addNormal := func(p string) {
		if !seen[p] && len(v.Tokens) < vocab {
			seen[p] = true
			add(p, normal)
		}
	}
	addNormal("▁")
	for c := byte(33); c < 127; c++ {
		addNormal(string(c))
	}
	for _, w := range strings.Fields(syntheticWords) {
		w = "▁" + w
		for i := len("▁") + 1; i <= len(w); i++ {
			addNormal(w[:i])
		}
	}
	for i := 0; len(v.Tokens) < vocab; i++ {
		add(fmt.Sprintf("<unused%d>", i), unused)
	}
	return tokenizer.FromVocab(v)
}
