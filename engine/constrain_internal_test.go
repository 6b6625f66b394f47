package engine

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/grammar"
	"github.com/llamacu/llamacu/sample"
)

func TestConstraintChoose(t *testing.T) {
	// Tokens: 0 EOS, 1 "a", 2 "b", 3 "ab". The grammar wants "ab" then "c", which no token spells.
	v := grammar.NewVocab([][]byte{nil, []byte("a"), []byte("b"), []byte("ab")}, nil, 0)
	c := &constraint{m: grammar.MustParse(`root ::= "ab" "c"`).NewMatcher(v), masked: make([]float32, 4)}
	s, err := sample.New(sample.GreedyParams(), 4)
	require.NoError(t, err)

	row := []float32{5, 1, 4, 2} // the model wants EOS, then "b": both refused
	next, err := c.choose(s, row, nil, s.Sample(row, nil))
	require.NoError(t, err)
	assert.Equal(t, int32(3), next, "the best token the grammar allows")
	assert.Equal(t, []float32{5, 1, 4, 2}, row, "the row itself is not masked")

	_, err = c.choose(s, row, nil, s.Sample(row, nil))
	assert.ErrorIs(t, err, ErrGrammarDeadEnd)
}
