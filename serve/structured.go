package serve

import (
	"bytes"
	"encoding/json"

	"github.com/llamacu/llamacu/grammar"
)

// structured are the ways a request may constrain its output, under the names clients send:
// OpenAI's response_format ("json_object", or "json_schema" with a schema), llama.cpp's
// grammar (GBNF) and json_schema, and vLLM's guided_json, guided_grammar (GBNF) and
// guided_choice and guided_regex (the texts the expression matches in full; grammar.FromRegex
// lists the syntax). At most one may be given.
type structured struct {
	ResponseFormat *responseFormat `json:"response_format"`
	Grammar        *string         `json:"grammar"`
	JSONSchema     json.RawMessage `json:"json_schema"`
	GuidedJSON     json.RawMessage `json:"guided_json"`
	GuidedGrammar  *string         `json:"guided_grammar"`
	GuidedChoice   []string        `json:"guided_choice"`
	GuidedRegex    *string         `json:"guided_regex"`
}

// responseFormat is OpenAI's response_format. llama.cpp also takes a schema beside
// "json_object" ({"type": "json_object", "schema": {...}}).
type responseFormat struct {
	Type       string `json:"type"`
	JSONSchema *struct {
		Name   string          `json:"name"`
		Schema json.RawMessage `json:"schema"`
		Strict *bool           `json:"strict"`
	} `json:"json_schema"`
	Schema json.RawMessage `json:"schema"`
}

// maxChoices bounds guided_choice.
const maxChoices = 256

// present reports whether a raw JSON field was given a value other than null.
func present(raw json.RawMessage) bool { return len(raw) > 0 && !bytes.Equal(raw, []byte("null")) }

// grammar compiles the request's constraint; nil when it has none.
func (p *structured) grammar() (*grammar.Grammar, *badRequest) {
	given := []string{}
	if p.ResponseFormat != nil && p.ResponseFormat.Type != "" && p.ResponseFormat.Type != "text" {
		given = append(given, "response_format")
	}
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"grammar", p.Grammar != nil}, {"json_schema", present(p.JSONSchema)}, {"guided_json", present(p.GuidedJSON)},
		{"guided_grammar", p.GuidedGrammar != nil}, {"guided_choice", p.GuidedChoice != nil}, {"guided_regex", p.GuidedRegex != nil},
	} {
		if f.set {
			given = append(given, f.name)
		}
	}
	if len(given) > 1 {
		return nil, invalid(given[1], "%s and %s both constrain the output: give one", given[0], given[1])
	}
	compile := func(param string, g *grammar.Grammar, err error) (*grammar.Grammar, *badRequest) {
		if err != nil {
			return nil, invalid(param, "%v", err)
		}
		return g, nil
	}
	switch {
	case p.ResponseFormat != nil:
		rf := p.ResponseFormat
		switch rf.Type {
		case "", "text":
			return nil, nil
		case "json_object":
			if present(rf.Schema) {
				g, err := grammar.FromJSONSchema(rf.Schema)
				return compile("response_format", g, err)
			}
			return grammar.JSON(), nil
		case "json_schema":
			if rf.JSONSchema == nil || !present(rf.JSONSchema.Schema) {
				return nil, invalid("response_format", `response_format of type "json_schema" needs json_schema.schema`)
			}
			g, err := grammar.FromJSONSchema(rf.JSONSchema.Schema)
			return compile("response_format", g, err)
		}
		return nil, invalid("response_format", `response_format type must be "text", "json_object" or "json_schema", got %q`, rf.Type)
	case p.Grammar != nil:
		g, err := grammar.Parse(*p.Grammar)
		return compile("grammar", g, err)
	case p.GuidedGrammar != nil:
		g, err := grammar.Parse(*p.GuidedGrammar)
		return compile("guided_grammar", g, err)
	case present(p.JSONSchema):
		g, err := grammar.FromJSONSchema(p.JSONSchema)
		return compile("json_schema", g, err)
	case present(p.GuidedJSON):
		schema := []byte(p.GuidedJSON)
		var s string // vLLM takes the schema as an object or as a string holding one
		if json.Unmarshal(p.GuidedJSON, &s) == nil {
			schema = []byte(s)
		}
		g, err := grammar.FromJSONSchema(schema)
		return compile("guided_json", g, err)
	case p.GuidedChoice != nil:
		if len(p.GuidedChoice) == 0 || len(p.GuidedChoice) > maxChoices {
			return nil, invalid("guided_choice", "guided_choice must list 1 to %d strings, got %d", maxChoices, len(p.GuidedChoice))
		}
		g, err := grammar.Choice(p.GuidedChoice...)
		return compile("guided_choice", g, err)
	case p.GuidedRegex != nil:
		g, err := grammar.FromRegex(*p.GuidedRegex)
		return compile("guided_regex", g, err)
	}
	return nil, nil
}
