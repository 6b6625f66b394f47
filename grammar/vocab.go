package grammar

import "slices"

// Vocab is what a Matcher knows of the tokenizer: the bytes each token adds to the text, and
// which tokens end generation. It keeps the tokens in a byte trie so that Mask walks shared
// prefixes once. Build it once per tokenizer; it is immutable and safe to share.
type Vocab struct {
	bytes [][]byte
	eos   []int32
	raw   []bool     // tokens that keep a leading space after BOS
	nodes []trieNode // nodes[0] is the root (the empty prefix)
}

type trieNode struct {
	kids []trieKid // sorted by byte
	ids  []int32   // tokens whose bytes end here
}

type trieKid struct {
	b    byte
	node int32
}

// NewVocab returns the vocabulary of tokens whose text is tokens[id] (for SentencePiece:
// tokenizer.TokenBytes; a byte-fallback token is its one byte). The ids in eos end generation:
// a grammar allows them once the text is a complete sentence. Tokens with no bytes that are not
// in eos (BOS, padding, other control tokens) are never allowed: they would add nothing.
//
// raw, which may be nil, names the tokens whose leading space survives decoding right after
// BOS (SentencePiece: byte and unknown tokens); see Matcher.DropLeadingSpace.
func NewVocab(tokens [][]byte, raw func(id int32) bool, eos ...int32) *Vocab {
	v := &Vocab{bytes: tokens, nodes: []trieNode{{}}, raw: make([]bool, len(tokens))}
	if raw != nil {
		for id := range tokens {
			v.raw[id] = raw(int32(id))
		}
	}
	for _, id := range eos {
		if id >= 0 && int(id) < len(tokens) {
			v.eos = append(v.eos, id)
		}
	}
	for id, bs := range tokens {
		if len(bs) == 0 {
			continue
		}
		n := int32(0)
		for _, b := range bs {
			kids := v.nodes[n].kids
			i, found := slices.BinarySearchFunc(kids, b, func(k trieKid, b byte) int { return int(k.b) - int(b) })
			if !found {
				v.nodes = append(v.nodes, trieNode{})
				child := int32(len(v.nodes) - 1)
				v.nodes[n].kids = slices.Insert(kids, i, trieKid{b, child})
				n = child
				continue
			}
			n = kids[i].node
		}
		v.nodes[n].ids = append(v.nodes[n].ids, int32(id))
	}
	return v
}

// Size returns the number of tokens.
func (v *Vocab) Size() int { return len(v.bytes) }

func (v *Vocab) isRaw(id int32) bool { return v.raw[id] }

func (v *Vocab) isEOS(id int32) bool { return slices.Contains(v.eos, id) }
