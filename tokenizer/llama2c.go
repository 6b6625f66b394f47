package tokenizer

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"strings"
)

// LoadLlama2cBin reads a llama2.c tokenizer.bin file (see FromLlama2cBin).
func LoadLlama2cBin(path string, vocabSize int) (*Tokenizer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	return fromLlama2cBin(data, vocabSize, path)
}

// FromLlama2cBin parses llama2.c's tokenizer.bin export: int32 max_token_length, then per token a
// float32 score, an int32 byte length and the bytes (little-endian). The export spells "▁" as a
// space and BOS/EOS as "\n<s>\n" / "\n</s>\n"; they are mapped back to SentencePiece spelling. The
// file stores no types: id 0 is taken as unknown, 1 and 2 as BOS and EOS (control), "<0xNN>" as
// byte pieces; byte fallback is on when all 256 are present. Dummy prefix on, whitespace kept, as
// llama2.c's run.c encodes.
//
// vocabSize is the model header's vocab_size: exactly that many tokens are read and trailing data
// is ignored; fewer tokens in the file is an error. vocabSize <= 0 reads tokens up to the end.
func FromLlama2cBin(data []byte, vocabSize int) (*Tokenizer, error) {
	return fromLlama2cBin(data, vocabSize, "tokenizer.bin")
}

func fromLlama2cBin(data []byte, vocabSize int, src string) (*Tokenizer, error) {
	if len(data) < 4 {
		return nil, fmt.Errorf("tokenizer: %s: %w: %d bytes, too short for the header", src, ErrFormat, len(data))
	}
	maxLen := int32(binary.LittleEndian.Uint32(data))
	if maxLen < 0 {
		return nil, fmt.Errorf("tokenizer: %s: %w: max_token_length %d", src, ErrFormat, maxLen)
	}
	off := 4
	var (
		pieces []string
		scores []float32
	)
	if vocabSize > 0 {
		// Each token takes at least 8 bytes: do not trust a huge vocabSize for allocation.
		c := min(vocabSize, (len(data)-off)/8)
		pieces = make([]string, 0, c)
		scores = make([]float32, 0, c)
	}
	for i := 0; vocabSize <= 0 || i < vocabSize; i++ {
		if vocabSize <= 0 && off == len(data) {
			break
		}
		if len(data)-off < 8 {
			return nil, fmt.Errorf("tokenizer: %s: %w: token %d: file ends at byte %d (want %d tokens)", src, ErrFormat, i, off, vocabSize)
		}
		score := math.Float32frombits(binary.LittleEndian.Uint32(data[off:]))
		n := int32(binary.LittleEndian.Uint32(data[off+4:]))
		off += 8
		if n < 0 || int64(n) > int64(len(data)-off) {
			return nil, fmt.Errorf("tokenizer: %s: %w: token %d: length %d at byte %d exceeds the file", src, ErrFormat, i, n, off-4)
		}
		p := string(data[off : off+int(n)])
		off += int(n)
		switch {
		case i == 1 && p == "\n<s>\n":
			p = "<s>"
		case i == 2 && p == "\n</s>\n":
			p = "</s>"
		default:
			p = strings.ReplaceAll(p, " ", spaceSymbol)
		}
		pieces = append(pieces, p)
		scores = append(scores, score)
	}
	bos, eos := int32(1), int32(2)
	if len(pieces) < 3 {
		return nil, fmt.Errorf("tokenizer: %s: %w: %d tokens; want at least <unk>, <s>, </s>", src, ErrVocab, len(pieces))
	}
	types := inferTypes(pieces, 0, bos, eos)
	return build(pieces, scores, types, config{
		src: src, bos: bos, eos: eos, pad: -1, unk: 0,
		inferByteFallbck: true,
		addDummyPrefix:   true,
		escapeSpace:      true,
		unkSurface:       defaultUnkSurface,
	})
}
