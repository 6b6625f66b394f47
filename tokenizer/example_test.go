package tokenizer_test

import (
	"fmt"
	"log"

	"github.com/llamacu/llamacu/tokenizer"
)

// A tiny vocabulary in GGUF style; real ones come from tokenizer.model, tokenizer.bin or a GGUF
// file's tokenizer.ggml.* keys.
func Example() {
	tok, err := tokenizer.FromVocab(tokenizer.Vocab{
		Tokens: []string{"<unk>", "<s>", "</s>", "▁", "l", "o", "w", "e", "r", "▁l", "▁lo", "▁low", "er", "▁lower"},
		Scores: []float32{0, 0, 0, -1, -2, -2, -2, -2, -2, -3, -4, -5, -6, -7},
		BOS:    1, EOS: 2, UNK: 0, PAD: -1,
		AddDummyPrefix: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	ids := tok.Encode("lower low", true)
	fmt.Println(ids)
	var pieces []string
	for _, id := range ids {
		pieces = append(pieces, tok.Piece(id))
	}
	fmt.Printf("%q\n", pieces)
	fmt.Printf("%q\n", tok.Decode(ids))

	// Streaming after the prompt's BOS: the first piece loses its dummy-prefix space.
	d := tok.NewStreamDecoder(tok.BOS())
	var chunks []string
	for _, id := range ids[1:] {
		chunks = append(chunks, d.Add(id))
	}
	fmt.Printf("%q\n", append(chunks, d.Flush()))
	// Output:
	// [1 13 11]
	// ["<s>" "▁lower" "▁low"]
	// "lower low"
	// ["lower" " low" ""]
}
