// Package tokenizer implements SentencePiece BPE with byte fallback, the tokenizer of LLaMA 1 and 2,
// exactly as SentencePiece's bpe_model.cc and sentencepiece_processor.cc do (and llama.cpp's SPM
// tokenizer, which agrees with them on valid UTF-8).
//
// A Tokenizer comes from a SentencePiece tokenizer.model (FromModelProto), from llama2.c's
// tokenizer.bin export (FromLlama2cBin) or from a vocabulary stored in a model file such as GGUF's
// tokenizer.ggml.* keys (FromVocab). It is immutable and safe for concurrent use.
//
// Encoding: the text is normalised as the model says (for LLaMA: no Unicode normalisation, a dummy
// prefix "▁" is added, every space becomes "▁", whitespace runs are kept), split into Unicode
// characters, and the adjacent pair whose concatenation is a vocabulary piece with the highest
// score is merged until no pair merges (leftmost pair on ties). Characters left without a piece
// become their UTF-8 bytes as <0xNN> pieces (byte fallback) or the unknown token.
//
// Decoding: "▁" becomes a space, the leading space of the first piece is dropped (it is the dummy
// prefix), runs of byte pieces are joined into raw bytes (each byte that is not part of a valid
// UTF-8 character gives U+FFFD), control tokens such as BOS and EOS give nothing. StreamDecoder
// does the same one token at a time and never splits a UTF-8 character.
package tokenizer

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors; constructors return errors wrapping one of these.
var (
	// ErrFormat: the data is not a well-formed tokenizer file.
	ErrFormat = errors.New("malformed tokenizer data")
	// ErrUnsupported: a well-formed model that this package does not implement (unigram, a
	// precompiled normaliser, whitespace as suffix, ...).
	ErrUnsupported = errors.New("unsupported tokenizer model")
	// ErrVocab: an inconsistent vocabulary (duplicate or missing special pieces, bad ids, ...).
	ErrVocab = errors.New("invalid vocabulary")
)

// PieceType is SentencePiece's ModelProto.SentencePiece.Type, which GGUF's
// tokenizer.ggml.token_type stores too.
type PieceType int32

// The piece types.
const (
	TypeNormal      PieceType = 1 // an ordinary piece, merged by BPE
	TypeUnknown     PieceType = 2 // <unk>
	TypeControl     PieceType = 3 // <s>, </s>: never produced from text, decode to nothing
	TypeUserDefined PieceType = 4 // always one token when it appears in text
	TypeUnused      PieceType = 5 // may be merged through, then split back into its parts
	TypeByte        PieceType = 6 // <0xNN>, byte fallback
)

// spaceSymbol is SentencePiece's whitespace meta symbol U+2581.
const spaceSymbol = "▁"

// defaultUnkSurface is what the unknown token decodes to (trainer_spec.unk_surface's default).
const defaultUnkSurface = " \u2047 "

// Vocab is a plain-data vocabulary, for instance the tokenizer.ggml.* keys of a GGUF file
// (tokenizer.ggml.model "llama"). FromVocab builds a Tokenizer from it.
type Vocab struct {
	Tokens []string  // pieces in SentencePiece spelling: "▁" for space, "<0xNN>" for bytes
	Scores []float32 // merge scores, len(Tokens); nil means all zero
	// Types are PieceType values, len(Tokens). nil infers them: UNK is unknown, BOS and EOS are
	// control, "<0xNN>" pieces are bytes, the rest normal. Type 0 (GGUF "undefined") counts as normal.
	Types []int32
	// Special token ids, -1 when absent. UNK -1 takes the piece of type unknown, if any.
	BOS, EOS, UNK, PAD int32
	// AddDummyPrefix prepends "▁" to non-empty text before encoding (SentencePiece's
	// normalizer_spec.add_dummy_prefix; GGUF's tokenizer.ggml.add_space_prefix, default true for
	// LLaMA). Set it to true for LLaMA vocabularies.
	AddDummyPrefix bool
	// RemoveExtraWhitespaces strips leading and trailing spaces and collapses runs of spaces
	// (false for LLaMA).
	RemoveExtraWhitespaces bool
}

// Tokenizer is a SentencePiece BPE tokenizer. It is immutable and safe for concurrent use.
type Tokenizer struct {
	pieces []string    // (vocab) SentencePiece spelling
	scores []float32   // (vocab)
	types  []PieceType // (vocab)
	// ids maps every piece to its id (SentencePiece's PieceToId: all types).
	ids map[string]int32
	// merge holds the pieces BPE may produce: normal, user-defined and unused (SentencePiece's
	// pieces_ map; control, unknown and byte pieces never take part in merges).
	merge map[string]int32
	// userDefined are the user-defined pieces, matched longest first as single symbols: a byte
	// trie, so that matching at each position of the text costs at most the length of the
	// longest piece (not its square, as hashing every prefix would).
	userDefined userTrie
	maxUserLen  int
	hasUnused   bool

	bytes        [256]int32 // byte value -> id of <0xNN>, -1 when absent
	byteFallback bool

	bos, eos, unk, pad int32

	addDummyPrefix   bool
	removeExtraSpace bool
	escapeSpace      bool
	unkSurface       string

	// text is the decoded surface of each non-byte piece ("▁" replaced by a space; "" for
	// control pieces; unkSurface for the unknown piece).
	text []string
}

// VocabSize returns the number of pieces.
func (t *Tokenizer) VocabSize() int { return len(t.pieces) }

// BOS returns the beginning-of-sequence id, or -1.
func (t *Tokenizer) BOS() int32 { return t.bos }

// EOS returns the end-of-sequence id, or -1.
func (t *Tokenizer) EOS() int32 { return t.eos }

// UNK returns the unknown-token id.
func (t *Tokenizer) UNK() int32 { return t.unk }

// PAD returns the padding id, or -1.
func (t *Tokenizer) PAD() int32 { return t.pad }

// ByteFallback reports whether characters without a piece become <0xNN> byte pieces (true for
// LLaMA) rather than the unknown token.
func (t *Tokenizer) ByteFallback() bool { return t.byteFallback }

// Piece returns the SentencePiece spelling of id ("▁Hello", "<0x0A>", "<s>"), or "" when id is
// out of range.
func (t *Tokenizer) Piece(id int32) string {
	if id < 0 || int(id) >= len(t.pieces) {
		return ""
	}
	return t.pieces[id]
}

// TokenBytes returns the bytes id contributes to text in the middle of a sequence: its piece
// with "▁" as a space (" Hello"), the one byte of a byte piece ("<0xE5>": 0xE5, not valid
// UTF-8 alone), nothing for a control piece, the unknown piece's surface (" ⁇ "). It is what
// OpenAI-style logprobs show per token; nil when id is out of range.
func (t *Tokenizer) TokenBytes(id int32) []byte {
	if id < 0 || int(id) >= len(t.pieces) {
		return nil
	}
	if t.types[id] == TypeByte {
		b, _ := parseBytePiece(t.pieces[id])
		return []byte{b}
	}
	return []byte(t.text[id])
}

// Score returns the merge score of id, or 0 when id is out of range.
func (t *Tokenizer) Score(id int32) float32 {
	if id < 0 || int(id) >= len(t.scores) {
		return 0
	}
	return t.scores[id]
}

// Type returns the piece type of id, or 0 when id is out of range.
func (t *Tokenizer) Type(id int32) PieceType {
	if id < 0 || int(id) >= len(t.types) {
		return 0
	}
	return t.types[id]
}

// ID returns the id of a piece given in SentencePiece spelling.
func (t *Tokenizer) ID(piece string) (int32, bool) {
	id, ok := t.ids[piece]
	return id, ok
}

// IsControl reports whether id is a control token (BOS, EOS, ...), which decodes to nothing.
func (t *Tokenizer) IsControl(id int32) bool { return t.Type(id) == TypeControl }

// IsByte reports whether id is a byte-fallback piece <0xNN>.
func (t *Tokenizer) IsByte(id int32) bool { return t.Type(id) == TypeByte }

// config is what the constructors hand to build besides the pieces.
type config struct {
	src              string // for error messages: file name or "vocab"
	bos, eos, pad    int32
	unk              int32 // -1: the piece of type unknown
	byteFallback     bool
	inferByteFallbck bool // byte fallback iff all 256 byte pieces exist (vocabularies without a flag)
	strictDuplicates bool // duplicate pieces are an error (SentencePiece); else the first wins
	addDummyPrefix   bool
	removeExtraSpace bool
	escapeSpace      bool
	unkSurface       string
}

// build checks a vocabulary the way SentencePiece's ModelInterface::InitializePieces does and
// returns the Tokenizer.
func build(pieces []string, scores []float32, types []PieceType, c config) (*Tokenizer, error) {
	n := len(pieces)
	if n == 0 {
		return nil, fmt.Errorf("tokenizer: %s: %w: no pieces", c.src, ErrVocab)
	}
	if n > 1<<31-1 {
		return nil, fmt.Errorf("tokenizer: %s: %w: %d pieces", c.src, ErrVocab, n)
	}
	t := &Tokenizer{
		pieces:           pieces,
		scores:           scores,
		types:            types,
		ids:              make(map[string]int32, n),
		merge:            make(map[string]int32, n),
		bos:              c.bos,
		eos:              c.eos,
		pad:              c.pad,
		unk:              -1,
		addDummyPrefix:   c.addDummyPrefix,
		removeExtraSpace: c.removeExtraSpace,
		escapeSpace:      c.escapeSpace,
		unkSurface:       c.unkSurface,
		text:             make([]string, n),
	}
	for i := range t.bytes {
		t.bytes[i] = -1
	}
	nbytes := 0
	for i, p := range pieces {
		id := int32(i)
		typ := types[i]
		if p == "" {
			return nil, fmt.Errorf("tokenizer: %s: %w: piece %d is empty", c.src, ErrVocab, i)
		}
		if typ < TypeNormal || typ > TypeByte {
			return nil, fmt.Errorf("tokenizer: %s: %w: piece %d %q has type %d", c.src, ErrVocab, i, p, typ)
		}
		if _, dup := t.ids[p]; dup {
			if c.strictDuplicates {
				return nil, fmt.Errorf("tokenizer: %s: %w: piece %d %q is already defined", c.src, ErrVocab, i, p)
			}
		} else {
			t.ids[p] = id
			if typ == TypeNormal || typ == TypeUserDefined || typ == TypeUnused {
				t.merge[p] = id
			}
		}
		switch typ {
		case TypeUserDefined:
			t.userDefined.add(p)
			t.maxUserLen = max(t.maxUserLen, len(p))
		case TypeUnused:
			t.hasUnused = true
		case TypeUnknown:
			if c.unk < 0 && t.unk >= 0 {
				return nil, fmt.Errorf("tokenizer: %s: %w: pieces %d and %d are both unknown", c.src, ErrVocab, t.unk, i)
			}
			if t.unk < 0 {
				t.unk = id
			}
		case TypeByte:
			b, ok := parseBytePiece(p)
			if !ok {
				return nil, fmt.Errorf("tokenizer: %s: %w: byte piece %d %q is not <0xNN>", c.src, ErrVocab, i, p)
			}
			if t.bytes[b] < 0 {
				t.bytes[b] = id
				nbytes++
			}
		}
		switch typ {
		case TypeControl:
			t.text[i] = ""
		case TypeUnknown:
			t.text[i] = t.unkSurface
		case TypeByte:
			t.text[i] = ""
		default:
			t.text[i] = strings.ReplaceAll(p, spaceSymbol, " ")
		}
	}
	if c.unk >= 0 {
		if int(c.unk) >= n {
			return nil, fmt.Errorf("tokenizer: %s: %w: unk id %d out of range [0,%d)", c.src, ErrVocab, c.unk, n)
		}
		t.unk = c.unk
	}
	if t.unk < 0 {
		return nil, fmt.Errorf("tokenizer: %s: %w: unk is not defined", c.src, ErrVocab)
	}
	if t.types[t.unk] != TypeUnknown {
		// Decoding and byte fallback key off the type, as in SentencePiece.
		return nil, fmt.Errorf("tokenizer: %s: %w: unk id %d %q has type %d, not unknown", c.src, ErrVocab, t.unk, pieces[t.unk], t.types[t.unk])
	}
	for _, s := range []struct {
		name string
		id   int32
	}{{"bos", c.bos}, {"eos", c.eos}, {"pad", c.pad}} {
		if s.id < -1 || int(s.id) >= n {
			return nil, fmt.Errorf("tokenizer: %s: %w: %s id %d out of range [-1,%d)", c.src, ErrVocab, s.name, s.id, n)
		}
	}
	switch {
	case c.inferByteFallbck:
		t.byteFallback = nbytes == 256
	case c.byteFallback:
		if nbytes != 256 {
			return nil, fmt.Errorf("tokenizer: %s: %w: byte_fallback is set but there are %d byte pieces, not 256", c.src, ErrVocab, nbytes)
		}
		t.byteFallback = true
	default:
		if nbytes != 0 {
			return nil, fmt.Errorf("tokenizer: %s: %w: byte pieces found although byte_fallback is false", c.src, ErrVocab)
		}
	}
	return t, nil
}

// parseBytePiece parses "<0xNN>" (two upper- or lower-case hex digits).
func parseBytePiece(p string) (byte, bool) {
	if len(p) != 6 || p[:3] != "<0x" || p[5] != '>' {
		return 0, false
	}
	hi, ok1 := hexDigit(p[3])
	lo, ok2 := hexDigit(p[4])
	return hi<<4 | lo, ok1 && ok2
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// FromVocab builds a Tokenizer from a plain vocabulary (for instance GGUF's tokenizer.ggml.*).
// Byte fallback is on when all 256 <0xNN> pieces exist. Duplicate pieces keep their first id.
func FromVocab(v Vocab) (*Tokenizer, error) {
	n := len(v.Tokens)
	if v.Scores != nil && len(v.Scores) != n {
		return nil, fmt.Errorf("tokenizer: vocab: %w: %d scores for %d tokens", ErrVocab, len(v.Scores), n)
	}
	if v.Types != nil && len(v.Types) != n {
		return nil, fmt.Errorf("tokenizer: vocab: %w: %d token types for %d tokens", ErrVocab, len(v.Types), n)
	}
	pieces := append([]string(nil), v.Tokens...)
	scores := make([]float32, n)
	copy(scores, v.Scores)
	var types []PieceType
	if v.Types != nil {
		types = make([]PieceType, n)
		for i, ty := range v.Types {
			if ty == 0 {
				ty = int32(TypeNormal)
			}
			types[i] = PieceType(ty)
		}
	} else {
		types = inferTypes(pieces, v.UNK, v.BOS, v.EOS)
	}
	return build(pieces, scores, types, config{
		src: "vocab", bos: v.BOS, eos: v.EOS, pad: v.PAD, unk: v.UNK,
		inferByteFallbck: true,
		addDummyPrefix:   v.AddDummyPrefix,
		removeExtraSpace: v.RemoveExtraWhitespaces,
		escapeSpace:      true,
		unkSurface:       defaultUnkSurface,
	})
}

// inferTypes gives piece types to a vocabulary that stores none (llama2.c's tokenizer.bin).
func inferTypes(pieces []string, unk, bos, eos int32) []PieceType {
	types := make([]PieceType, len(pieces))
	for i, p := range pieces {
		id := int32(i)
		switch {
		case id == unk:
			types[i] = TypeUnknown
		case id == bos || id == eos:
			types[i] = TypeControl
		default:
			if _, ok := parseBytePiece(p); ok {
				types[i] = TypeByte
			} else {
				types[i] = TypeNormal
			}
		}
	}
	return types
}

// userTrie is a byte trie of the user-defined pieces. Node 0 is the root; the zero value is an
// empty trie.
type userTrie struct {
	nodes []trieNode
}

type trieNode struct {
	next map[byte]int32 // child by next byte
	end  bool           // a piece ends here
}

func (tr *userTrie) add(p string) {
	if len(tr.nodes) == 0 {
		tr.nodes = append(tr.nodes, trieNode{})
	}
	cur := int32(0)
	for i := 0; i < len(p); i++ {
		nx, ok := tr.nodes[cur].next[p[i]]
		if !ok {
			nx = int32(len(tr.nodes))
			tr.nodes = append(tr.nodes, trieNode{})
			if tr.nodes[cur].next == nil {
				tr.nodes[cur].next = make(map[byte]int32)
			}
			tr.nodes[cur].next[p[i]] = nx
		}
		cur = nx
	}
	tr.nodes[cur].end = true
}

// longest returns the length of the longest piece that prefixes s, or 0.
func (tr *userTrie) longest(s string) int {
	if len(tr.nodes) == 0 {
		return 0
	}
	best, cur := 0, int32(0)
	for i := 0; i < len(s); i++ {
		nx, ok := tr.nodes[cur].next[s[i]]
		if !ok {
			break
		}
		cur = nx
		if tr.nodes[cur].end {
			best = i + 1
		}
	}
	return best
}
