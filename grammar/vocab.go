package grammar

import "slices"

// Vocab is what a Matcher knows of the tokenizer: the bytes each token adds to the text, and
// which tokens end generation. It keeps the tokens in a byte trie so that Mask walks shared
// prefixes once. Build it once per tokenizer; it is immutable and safe to share.
//
// The trie is flattened in preorder: node 0 is the root (the empty prefix), node i's subtree
// is the nodes [i, end[i]), and its parent comes before it, so that Mask is one loop over
// arrays that skips a refused subtree in one jump.
type Vocab struct {
	bytes [][]byte
	eos   []int32
	raw   []bool // tokens that keep a leading space after BOS

	edge   []byte  // (nodes) the byte from the parent to node i
	parent []int32 // (nodes) −1 for the root
	end    []int32 // (nodes) one past node i's subtree
	idsAt  []int32 // (nodes+1) tokens ending at node i are ids[idsAt[i]:idsAt[i+1]]
	ids    []int32
}

// NewVocab returns the vocabulary of tokens whose text is tokens[id] (for SentencePiece:
// tokenizer.TokenBytes; a byte-fallback token is its one byte). The ids in eos end generation:
// a grammar allows them once the text is a complete sentence. Tokens with no bytes that are not
// in eos (BOS, padding, other control tokens) are never allowed: they would add nothing.
//
// raw, which may be nil, names the tokens whose leading space survives decoding right after
// BOS (SentencePiece: byte and unknown tokens); see Matcher.DropLeadingSpace.
func NewVocab(tokens [][]byte, raw func(id int32) bool, eos ...int32) *Vocab {
	v := &Vocab{bytes: tokens, raw: make([]bool, len(tokens))}
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
	// Preorder of the trie = the tokens' byte strings sorted: a node's first visit is the first
	// (in sorted order) token through it.
	order := make([]int32, 0, len(tokens))
	for id, bs := range tokens {
		if len(bs) > 0 {
			order = append(order, int32(id))
		}
	}
	slices.SortStableFunc(order, func(a, b int32) int { return slices.Compare(tokens[a], tokens[b]) })
	v.edge, v.parent, v.idsAt = []byte{0}, []int32{-1}, []int32{0}
	path := []int32{0} // path[d]: the node at depth d on the current token's path
	var prev []byte
	for _, id := range order {
		bs := tokens[id]
		common := 0 // bytes shared with the previous token: nodes already made
		for common < len(prev) && common < len(bs) && prev[common] == bs[common] {
			common++
		}
		path = path[:common+1]
		for d := common; d < len(bs); d++ {
			v.edge = append(v.edge, bs[d])
			v.parent = append(v.parent, path[d])
			v.idsAt = append(v.idsAt, int32(len(v.ids)))
			path = append(path, int32(len(v.edge)-1))
		}
		v.ids = append(v.ids, id) // nodes are made in order, so the last one's ids run on
		prev = bs
	}
	v.idsAt = append(v.idsAt, int32(len(v.ids)))
	// A token ends at the last node made for it; its id was appended after that node's start.
	v.end = make([]int32, len(v.edge))
	for i := len(v.edge) - 1; i >= 0; i-- {
		if v.end[i] == 0 {
			v.end[i] = int32(i + 1)
		}
		if p := v.parent[i]; p >= 0 && v.end[i] > v.end[p] {
			v.end[p] = v.end[i]
		}
	}
	return v
}

// Size returns the number of tokens.
func (v *Vocab) Size() int { return len(v.bytes) }

// nodeIDs returns the tokens whose bytes end at node i.
func (v *Vocab) nodeIDs(i int32) []int32 { return v.ids[v.idsAt[i]:v.idsAt[i+1]] }

func (v *Vocab) isRaw(id int32) bool { return v.raw[id] }

func (v *Vocab) isEOS(id int32) bool { return slices.Contains(v.eos, id) }
