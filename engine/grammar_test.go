package engine_test

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/grammar"
	"github.com/llamacu/llamacu/sample"
)

// A grammar constrains what stories260K writes, through Generate and through the scheduler
// alike: the text is a sentence of the grammar, ends with EOS once complete, and a grammar that
// allows what the model writes anyway changes nothing.
func TestGrammarConstrainsGeneration(t *testing.T) {
	e, _ := loadStories(t, 512)
	sched, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 4})
	require.NoError(t, err)
	defer sched.Close(context.Background())

	person := grammar.MustParse(`root ::= "{\"name\": \"" [A-Z] [a-z]{1,8} "\", \"age\": " [1-9] [0-9]? "}"`)
	for _, tc := range []struct {
		name     string
		g        *grammar.Grammar
		prompt   string
		sampling sample.Params
		trim     bool // TrimLeadingSpace: the check sees the text without its first space
		check    func(t *testing.T, text string)
	}{
		{name: "choice", g: grammar.MustParse(`root ::= ("yes" | "no") "."`), prompt: "Once upon a time",
			check: func(t *testing.T, text string) { assert.Contains(t, []string{"yes.", "no."}, text) }},
		{name: "sampled choice", g: grammar.MustParse(`root ::= ("yes" | "no" | "maybe") "."`), prompt: "Tim had a toy car.",
			sampling: sample.Params{Temperature: 1, Seed: 7},
			check:    func(t *testing.T, text string) { assert.Contains(t, []string{"yes.", "no.", "maybe."}, text) }},
		{name: "json object", g: person, prompt: "Lily",
			check: func(t *testing.T, text string) {
				var p struct {
					Name string
					Age  int
				}
				require.NoError(t, json.Unmarshal([]byte(text), &p), "%q", text)
				assert.Regexp(t, regexp.MustCompile(`^[A-Z][a-z]{1,8}$`), p.Name)
				assert.True(t, p.Age >= 1 && p.Age <= 99)
			}},
		{name: "sampled json from BOS", g: person, prompt: "", sampling: sample.Params{Temperature: 0.9, TopP: 0.9, Seed: 3},
			check: func(t *testing.T, text string) {
				var p map[string]any
				require.NoError(t, json.Unmarshal([]byte(text), &p), "%q", text)
			}},
		{name: "words after BOS keep no leading space", g: grammar.MustParse(`root ::= [A-Z] [a-z]+ ("." | " " [a-z]+ ".")`), prompt: "",
			check: func(t *testing.T, text string) {
				assert.Regexp(t, regexp.MustCompile(`^[A-Z][a-z]+(\.| [a-z]+\.)$`), text)
			}},
		{name: "answer shown without its first space", g: grammar.MustParse(`root ::= [A-Z] [a-z]+ "."`), prompt: "Once upon a time", trim: true,
			check: func(t *testing.T, text string) { assert.Regexp(t, regexp.MustCompile(`^[A-Z][a-z]+\.$`), text) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := engine.Request{Prompt: tc.prompt, MaxTokens: 60, Sampling: tc.sampling, Grammar: tc.g, TrimLeadingSpace: tc.trim}
			ref := generateSolo(t, e, req)
			t.Logf("%q", ref.text)
			assert.Equal(t, "eos", ref.reason, "the grammar ended the text: %q", ref.text)
			if tc.trim {
				tc.check(t, strings.TrimPrefix(ref.text, " "))
			} else {
				tc.check(t, ref.text)
			}

			st, err := sched.Submit(context.Background(), req)
			require.NoError(t, err)
			ids, text, final := collect(t, st)
			assert.Equal(t, engine.FinishStop, final.FinishReason)
			assert.Equal(t, ref.ids, ids, "the scheduler draws what Generate draws")
			assert.Equal(t, ref.text, text)
		})
	}

	// A grammar that allows any text: the same tokens as no grammar.
	for _, prompt := range []string{"", "Once upon a time"} {
		free := generateSolo(t, e, engine.Request{Prompt: prompt, MaxTokens: 80})
		anyText := generateSolo(t, e, engine.Request{Prompt: prompt, MaxTokens: 80, Grammar: grammar.MustParse(`root ::= .*`)})
		assert.Equal(t, free.ids, anyText.ids)
	}
}

// Without the constraint the model writes something else: the grammar did the work.
func TestGrammarChangesTheOutput(t *testing.T) {
	e, _ := loadStories(t, 512)
	free := generateSolo(t, e, engine.Request{Prompt: "Once upon a time", MaxTokens: 20})
	forced := generateSolo(t, e, engine.Request{Prompt: "Once upon a time", MaxTokens: 20, Grammar: grammar.JSON()})
	assert.NotEqual(t, free.text, forced.text)
	assert.Regexp(t, regexp.MustCompile(`^\{`), forced.text)
	m := grammar.JSON().NewMatcher(e.GrammarVocab())
	for _, id := range forced.ids {
		require.NoError(t, m.Accept(id), "every generated token continues the JSON")
	}
}

// A grammar too ambiguous to follow is refused at submission when its start already is, and
// ends the generation with an error when it becomes so later.
func TestGrammarTooAmbiguous(t *testing.T) {
	e, _ := loadStories(t, 256)
	sched, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 2})
	require.NoError(t, err)
	defer sched.Close(context.Background())

	_, err = sched.Submit(context.Background(), engine.Request{Prompt: "Hi", Grammar: grammar.MustParse(`root ::= ("a"?){300} "b"`)})
	require.ErrorIs(t, err, engine.ErrInvalidRequest)
	require.ErrorIs(t, err, grammar.ErrAmbiguous)

	st, err := sched.Submit(context.Background(), engine.Request{Prompt: "Hi", MaxTokens: 10, Grammar: grammar.MustParse(`root ::= "x" ("a"?){300} "b"`)})
	require.NoError(t, err)
	ids, _, final := collect(t, st)
	assert.Empty(t, ids)
	assert.Equal(t, engine.FinishError, final.FinishReason)
	assert.ErrorIs(t, final.Err, grammar.ErrAmbiguous)
	waitIdle(t, sched)
	assert.Zero(t, sched.Stats().KVBlocksInUse, "the sequence's blocks came back")
}
