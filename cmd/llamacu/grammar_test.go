package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/chat"
	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/grammar"
	"github.com/llamacu/llamacu/sample"
)

// run's constraint flags reach the engine: the text is the engine's under the same grammar.
func TestRunGrammarFlags(t *testing.T) {
	m := shared(t, "stories260K/stories260K.gguf")
	e, err := engine.Load(engine.Options{ModelPath: m, Threads: 1})
	require.NoError(t, err)
	defer e.Close()
	dir := t.TempDir()
	const gbnf = `root ::= "The " [a-z]+ " was " ("big" | "small") "."`
	schema := `{"type":"object","properties":{"name":{"type":"string","maxLength":10},"happy":{"type":"boolean"}},"required":["name","happy"]}`
	gbnfFile, schemaFile := filepath.Join(dir, "g.gbnf"), filepath.Join(dir, "s.json")
	require.NoError(t, os.WriteFile(gbnfFile, []byte(gbnf+"\n"), 0o644))
	require.NoError(t, os.WriteFile(schemaFile, []byte(schema), 0o644))
	want := func(g *grammar.Grammar) string {
		var b strings.Builder
		_, err := e.Generate(context.Background(), engine.Request{Prompt: "Once upon a time", MaxTokens: 60, Sampling: sample.GreedyParams(), Grammar: g},
			func(_ int32, s string) error { b.WriteString(s); return nil })
		require.NoError(t, err)
		return b.String()
	}
	fromSchema, err := grammar.FromJSONSchema([]byte(schema))
	require.NoError(t, err)
	base := []string{"run", "--model", m, "--temperature", "0", "--max-tokens", "60"}
	for _, tc := range []struct {
		flags []string
		g     *grammar.Grammar
	}{
		{[]string{"--grammar", gbnf}, grammar.MustParse(gbnf)},
		{[]string{"--grammar-file", gbnfFile}, grammar.MustParse(gbnf)},
		{[]string{"--json"}, grammar.JSON()},
		{[]string{"--json-schema", schema}, fromSchema},
		{[]string{"--json-schema-file", schemaFile}, fromSchema},
		{[]string{"--regex", `The [a-z]+ (is|was) \d+\.`}, must(grammar.FromRegex(`The [a-z]+ (is|was) \d+\.`))},
	} {
		out, errOut, code := cli(t, append(append(base, tc.flags...), "Once upon a time")...)
		require.Equal(t, 0, code, errOut)
		assert.Equal(t, want(tc.g), out, "%v", tc.flags)
	}
	out, _, _ := cli(t, append(base, "--json-schema", schema, "Once upon a time")...)
	var v struct {
		Name  string
		Happy bool
	}
	require.NoError(t, json.Unmarshal([]byte(out), &v), "%q", out)
	assert.LessOrEqual(t, len([]rune(v.Name)), 10)

	for _, bad := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--json", "--grammar", gbnf}, "--grammar and --json both constrain"},
		{[]string{"--grammar", "root ::= nothing"}, `--grammar: grammar: line 1: undefined rule "nothing"`},
		{[]string{"--grammar-file", filepath.Join(dir, "missing.gbnf")}, "missing.gbnf"},
		{[]string{"--json-schema", `{"type":"string","pattern":"a+","minLength":2}`}, "pattern next to minLength"},
		{[]string{"--regex", `(a`}, "--regex: grammar: regex at offset 2: missing )"},
		{[]string{"--regex", "a", "--json"}, "--json and --regex both constrain"},
	} {
		_, errOut, code := cli(t, append(append(base, bad.flags...), "x")...)
		require.Equal(t, 2, code, errOut)
		assert.Contains(t, errOut, bad.want)
	}
}

// Every chat answer follows --json-schema, matched without the answer's first space (which the
// chat command does not print).
func TestChatJSONSchema(t *testing.T) {
	m := shared(t, "stories260K/stories260K.gguf")
	schema := `{"type":"object","properties":{"answer":{"enum":["yes","no"]}},"required":["answer"]}`
	g, err := grammar.FromJSONSchema([]byte(schema))
	require.NoError(t, err)
	ref := newChatRef(t, m, 512, 40)
	ids, err := chat.Encode(ref.e.Tokenizer, []chat.Message{user("Is the sky blue?")})
	require.NoError(t, err)
	var b strings.Builder
	_, err = ref.e.Generate(context.Background(), engine.Request{PromptIDs: ids, MaxTokens: 40, Grammar: g, TrimLeadingSpace: true},
		func(_ int32, text string) error { b.WriteString(text); return nil })
	require.NoError(t, err)
	want := strings.TrimPrefix(b.String(), " ")

	out, errOut, code := withStdin(t, strings.NewReader("Is the sky blue?\n"), "--model", m, "--temperature", "0", "--max-tokens", "40", "--ctx", "512", "--json-schema", schema)
	require.Equal(t, 0, code, errOut)
	require.Equal(t, want+"\n\n", out)
	var v struct{ Answer string }
	require.NoError(t, json.Unmarshal([]byte(strings.TrimSpace(out)), &v), "%q", out)
	assert.Contains(t, []string{"yes", "no"}, v.Answer)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
