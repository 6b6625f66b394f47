package grammar_test

import (
	"fmt"

	"github.com/llamacu/llamacu/grammar"
)

// A Matcher masks a row of logits to the tokens a grammar allows next, and follows the tokens
// chosen. Here the vocabulary has five tokens; a real one comes from the tokenizer
// (engine.Engine.GrammarVocab).
func ExampleMatcher() {
	g := grammar.MustParse(`root ::= ("yes" | "no") "."`)
	tokens := [][]byte{nil, []byte("y"), []byte("es"), []byte("no"), []byte(".")} // 0 is EOS
	m := g.NewMatcher(grammar.NewVocab(tokens, nil, 0))

	logits := []float32{2, 1, 3, 0.5, 4} // the model would end at once, or say "."
	n, _ := m.Mask(logits)
	fmt.Println(n, "allowed:", logits)

	for _, id := range []int32{3, 4} { // "no" then "."
		if err := m.Accept(id); err != nil {
			fmt.Println(err)
		}
	}
	fmt.Println("complete:", m.Accepting(), "then only EOS:", m.Done(), m.Allows(0))
	// Output:
	// 2 allowed: [-Inf 1 -Inf 0.5 -Inf]
	// complete: true then only EOS: true true
}
