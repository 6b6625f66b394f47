package grammar

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// schemaCases are schemas with texts they accept (complete JSON texts) and texts they refuse.
var schemaCases = []struct {
	name, schema string
	yes, no      []string
}{
	{name: "any value", schema: `{}`,
		yes: []string{`{}`, `[1, "a", null]`, `"x"`, `-1.5e3`, `true`, `null`, `{"a": {"b": []}}`},
		no:  []string{``, `nul`, `{"a" 1}`, `01`}},
	{name: "true schema", schema: `true`,
		yes: []string{`1`, `{"x": [true]}`}},
	{name: "annotations only", schema: `{"title": "T", "description": "d", "$schema": "https://json-schema.org/draft/2020-12/schema", "x-foo": 1}`,
		yes: []string{`"s"`, `[]`}},
	{name: "null", schema: `{"type": "null"}`,
		yes: []string{`null`, `null `}, no: []string{`nil`, `"null"`, `0`}},
	{name: "boolean", schema: `{"type": "boolean"}`,
		yes: []string{`true`, `false`}, no: []string{`1`, `"true"`, `True`}},
	{name: "integer", schema: `{"type": "integer"}`,
		yes: []string{`0`, `-7`, `1234567890123456`}, no: []string{`1.5`, `1e3`, `01`, `-`, `"1"`, `12345678901234567`}},
	{name: "number", schema: `{"type": "number"}`,
		yes: []string{`0`, `-7`, `1.5`, `-0.25e-3`, `6E10`}, no: []string{`.5`, `1.`, `+1`, `NaN`}},
	{name: "type array", schema: `{"type": ["string", "null"]}`,
		yes: []string{`"a"`, `null`}, no: []string{`1`, `{}`}},
	{name: "integer or number", schema: `{"type": ["integer", "number"]}`,
		yes: []string{`1`, `1.5`}, no: []string{`"1"`}},
	{name: "string lengths", schema: `{"type": "string", "minLength": 2, "maxLength": 3}`,
		yes: []string{`"ab"`, `"abc"`, `"한국"`, `"한국어"`, `"\n\u00e9"`, `"a\"b"`, `"\\\\\\"`},
		no:  []string{`"a"`, `"abcd"`, `"한"`, `"한국어요"`, `"\n"`, `"\u00e9\n\t\r"`}},
	{name: "exact length", schema: `{"type": "string", "minLength": 3, "maxLength": 3}`,
		yes: []string{`"abc"`, `"가나다"`}, no: []string{`"ab"`, `"abcd"`}},
	{name: "minLength only", schema: `{"type": "string", "minLength": 1}`,
		yes: []string{`"a"`, `"` + strings.Repeat("x", 300) + `"`}, no: []string{`""`}},
	{name: "long maxLength", schema: `{"type": "string", "maxLength": 2500}`,
		yes: []string{`""`, `"` + strings.Repeat("x", 999) + `"`, `"` + strings.Repeat("x", 1000) + `"`, `"` + strings.Repeat("y", 2000) + `"`, `"` + strings.Repeat("가", 2500) + `"`},
		no:  []string{`"` + strings.Repeat("x", 2501) + `"`}},
	{name: "long minLength", schema: `{"type": "string", "minLength": 1500}`,
		yes: []string{`"` + strings.Repeat("x", 1500) + `"`, `"` + strings.Repeat("x", 3001) + `"`},
		no:  []string{`"` + strings.Repeat("x", 1499) + `"`}},
	{name: "date", schema: `{"type": "string", "format": "date"}`,
		yes: []string{`"2024-02-29"`, `"2000-02-29"`, `"1999-12-31"`, `"2023-04-30"`},
		no:  []string{`"2023-02-29"`, `"1900-02-29"`, `"2024-13-01"`, `"2024-04-31"`, `"2024-1-01"`, `"2024-00-10"`, `"24-01-01"`}},
	{name: "time", schema: `{"type": "string", "format": "time"}`,
		yes: []string{`"23:59:59Z"`, `"08:30:00.125+09:00"`, `"00:00:00-05:30"`},
		no:  []string{`"24:00:00Z"`, `"12:60:00Z"`, `"12:00:00"`, `"12:00Z"`}},
	{name: "date-time", schema: `{"type": "string", "format": "date-time"}`,
		yes: []string{`"2024-06-01T12:00:00Z"`, `"2024-06-01T12:00:00.5+02:00"`},
		no:  []string{`"2024-06-01 12:00:00Z"`, `"2024-06-01"`}},
	{name: "uuid", schema: `{"type": "string", "format": "uuid"}`,
		yes: []string{`"123e4567-e89b-12d3-a456-426614174000"`},
		no:  []string{`"123e4567e89b12d3a456426614174000"`, `"123e4567-e89b-12d3-a456-42661417400"`, `"g23e4567-e89b-12d3-a456-426614174000"`}},
	{name: "unknown format is an annotation", schema: `{"type": "string", "format": "email"}`,
		yes: []string{`"not an email"`}, no: []string{`1`}},
	{name: "format alone", schema: `{"format": "int64"}`,
		yes: []string{`1`, `"a"`}},
	{name: "inferred string", schema: `{"format": "date"}`,
		yes: []string{`"2024-01-31"`}, no: []string{`1`}},
	{name: "required and optional in order", schema: `{"type": "object", "properties": {
			"a": {"type": "integer"}, "b": {"type": "string"}, "c": {"type": "boolean"}, "d": {"type": "null"}},
			"required": ["a", "c"]}`,
		yes: []string{`{"a": 1, "c": true}`, `{"a": 1, "b": "x", "c": true}`, `{"a": 1, "c": true, "d": null}`,
			`{"a": 1, "b": "x", "c": false, "d": null}`, `{"a":1,"c":true}`, "{\n  \"a\": 1,\n  \"c\": true\n}"},
		no: []string{`{"c": true}`, `{"a": 1}`, `{"a": 1, "b": "x"}`, `{"c": true, "a": 1}`, `{"a": 1, "c": true, "b": "x"}`,
			`{"a": 1, "c": true, "e": 1}`, `{"a": 1,, "c": true}`, `{"a": 1, "c": true,}`, `{, "a": 1, "c": true}`,
			`{"a": 1, "a": 1, "c": true}`, `{"a": "1", "c": true}`, `{}`}},
	{name: "all optional", schema: `{"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}, "z": {"type": "integer"}}}`,
		yes: []string{`{}`, `{"x": 1}`, `{"y": 2}`, `{"z": 3}`, `{"x": 1, "y": 2}`, `{"x": 1, "z": 3}`, `{"y": 2, "z": 3}`, `{"x": 1, "y": 2, "z": 3}`},
		no:  []string{`{"y": 2, "x": 1}`, `{"x": 1,}`, `{,"x": 1}`, `{"x": 1 "y": 2}`, `{"w": 0}`, `{"x": 1, "x": 1}`}},
	{name: "optional first then required", schema: `{"properties": {"p": {"type": "string"}, "q": {"type": "integer"}, "r": {"type": "string"}}, "required": ["r"]}`,
		yes: []string{`{"r": ""}`, `{"p": "", "r": ""}`, `{"q": 1, "r": ""}`, `{"p": "", "q": 1, "r": ""}`},
		no:  []string{`{}`, `{"p": ""}`, `{"p": "", "q": 1}`, `{"r": "", "p": ""}`}},
	{name: "all required", schema: `{"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"], "additionalProperties": false}`,
		yes: []string{`{"name": "Ann", "age": 31}`},
		no:  []string{`{"age": 31, "name": "Ann"}`, `{"name": "Ann"}`, `{"name": "Ann", "age": 31, "x": 1}`}},
	{name: "false property", schema: `{"properties": {"a": {"type": "integer"}, "b": false}}`,
		yes: []string{`{}`, `{"a": 1}`}, no: []string{`{"b": 1}`, `{"a": 1, "b": 1}`}},
	{name: "key escapes", schema: `{"properties": {"say \"hi\"": {"const": 1}, "back\\slash": {"const": 2}, "한국어": {"const": 3}, "<&>": {"const": 4}, "tab\t": {"const": 5}}, "required": ["say \"hi\"", "back\\slash", "한국어", "<&>", "tab\t"]}`,
		yes: []string{`{"say \"hi\"": 1, "back\\slash": 2, "한국어": 3, "<&>": 4, "tab\t": 5}`}},
	{name: "empty properties", schema: `{"type": "object", "properties": {}}`,
		yes: []string{`{}`, `{ }`}, no: []string{`{"a": 1}`}},
	{name: "map of integers", schema: `{"type": "object", "additionalProperties": {"type": "integer"}}`,
		yes: []string{`{}`, `{"a": 1}`, `{"a": 1, "b": -2}`}, no: []string{`{"a": "1"}`, `[]`}},
	{name: "no additional properties", schema: `{"type": "object", "additionalProperties": false}`,
		yes: []string{`{}`}, no: []string{`{"a": 1}`}},
	{name: "any object", schema: `{"type": "object"}`,
		yes: []string{`{}`, `{"a": [1, {"b": null}]}`}, no: []string{`[]`}},
	{name: "nested", schema: `{"type": "object", "properties": {
			"user": {"type": "object", "properties": {"id": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["id"]},
			"matrix": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}},
			"required": ["user"]}`,
		yes: []string{`{"user": {"id": 1}}`, `{"user": {"id": 1, "tags": ["a", "b"]}, "matrix": [[1, 2.5], [], [3]]}`},
		no:  []string{`{"user": {}}`, `{"user": {"id": 1, "tags": [1]}}`, `{"user": {"id": 1}, "matrix": [1]}`}},
	{name: "array of any", schema: `{"type": "array"}`,
		yes: []string{`[]`, `[1, "a", [null]]`}, no: []string{`[1,]`, `[,1]`, `{}`}},
	{name: "min and max items", schema: `{"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 4}`,
		yes: []string{`[1, 2]`, `[1, 2, 3]`, `[1, 2, 3, 4]`, `[1,2]`},
		no:  []string{`[]`, `[1]`, `[1, 2, 3, 4, 5]`, `[1, "2"]`, `[1, 2,]`}},
	{name: "min items only", schema: `{"type": "array", "items": {"type": "boolean"}, "minItems": 1}`,
		yes: []string{`[true]`, `[true, false, true, false]`}, no: []string{`[]`}},
	{name: "max items only", schema: `{"type": "array", "items": {"type": "null"}, "maxItems": 1}`,
		yes: []string{`[]`, `[null]`}, no: []string{`[null, null]`}},
	{name: "no items", schema: `{"type": "array", "maxItems": 0}`,
		yes: []string{`[]`}, no: []string{`[1]`}},
	{name: "prefixItems", schema: `{"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": false, "minItems": 1}`,
		yes: []string{`["a"]`, `["a", 1]`}, no: []string{`[]`, `[1]`, `["a", 1, 2]`, `["a", "b"]`}},
	{name: "prefixItems then items", schema: `{"type": "array", "prefixItems": [{"type": "string"}], "items": {"type": "integer"}}`,
		yes: []string{`[]`, `["a"]`, `["a", 1, 2, 3]`}, no: []string{`[1]`, `["a", "b"]`}},
	{name: "draft 7 tuple", schema: `{"type": "array", "items": [{"type": "boolean"}, {"type": "null"}], "additionalItems": false}`,
		yes: []string{`[]`, `[true]`, `[true, null]`}, no: []string{`[null]`, `[true, null, 1]`}},
	{name: "string enum", schema: `{"type": "string", "enum": ["red", "green", "grey", "gr"]}`,
		yes: []string{`"red"`, `"green"`, `"grey"`, `"gr"`}, no: []string{`"blue"`, `"gre"`, `red`, `"greenish"`}},
	{name: "mixed enum", schema: `{"enum": ["a", 1, 12, 1.5, true, null, {"k": [1, "v"]}, [], "say \"hi\"\n", "한국어", "<b>"]}`,
		yes: []string{`"a"`, `1`, `12`, `1.5`, `true`, `null`, `{"k":[1,"v"]}`, `[]`, `"say \"hi\"\n"`, `"한국어"`, `"<b>"`},
		no:  []string{`"b"`, `2`, `false`, `{"k": [1, "v"]}`, `{}`, `"한국"`, `123`}},
	{name: "enum filtered by type", schema: `{"type": "integer", "enum": [1, 2.5, "3", 4.0]}`,
		yes: []string{`1`, `4.0`}, no: []string{`2.5`, `"3"`}},
	{name: "const", schema: `{"const": {"a": [true, null]}}`,
		yes: []string{`{"a":[true,null]}`}, no: []string{`{"a": [true, null]}`, `{}`}},
	{name: "const string", schema: `{"type": "string", "const": "fixed"}`,
		yes: []string{`"fixed"`}, no: []string{`"fixe"`, `"fixed2"`}},
	{name: "anyOf", schema: `{"anyOf": [{"type": "integer"}, {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]}, {"type": "null"}]}`,
		yes: []string{`5`, `{"x": "a"}`, `null`}, no: []string{`"a"`, `{}`, `true`}},
	{name: "oneOf", schema: `{"oneOf": [{"type": "string", "maxLength": 1}, {"type": "boolean"}]}`,
		yes: []string{`"a"`, `true`}, no: []string{`"ab"`, `1`}},
	{name: "allOf of one", schema: `{"allOf": [{"$ref": "#/$defs/n"}], "description": "wrapped", "$defs": {"n": {"type": "number"}}}`,
		yes: []string{`1.5`}, no: []string{`"1"`}},
	{name: "inferred object", schema: `{"properties": {"a": {"type": "integer"}}, "required": ["a"]}`,
		yes: []string{`{"a": 1}`}, no: []string{`1`, `"a"`}},
	{name: "recursive tree", schema: `{"$ref": "#/$defs/node", "$defs": {"node": {"type": "object", "properties": {
			"value": {"type": "integer"}, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}, "required": ["value"]}}}`,
		yes: []string{`{"value": 1}`, `{"value": 1, "children": []}`, `{"value": 1, "children": [{"value": 2}, {"value": 3, "children": [{"value": 4}]}]}`},
		no:  []string{`{"value": 1, "children": [{}]}`, `{"children": []}`, `{"value": 1, "children": [1]}`}},
	{name: "root reference", schema: `{"type": "array", "items": {"anyOf": [{"type": "integer"}, {"$ref": "#"}]}}`,
		yes: []string{`[]`, `[1, [2, []], [[3]]]`}, no: []string{`[1, ["a"]]`}},
	{name: "definitions and escaped pointer", schema: `{"$ref": "#/definitions/a~1b%20c", "definitions": {"a/b c": {"type": "boolean"}}}`,
		yes: []string{`true`}, no: []string{`1`}},
	{name: "ref into properties", schema: `{"type": "object", "properties": {"a": {"type": "string"}, "b": {"$ref": "#/properties/a"}}, "required": ["a", "b"]}`,
		yes: []string{`{"a": "x", "b": "y"}`}, no: []string{`{"a": "x", "b": 1}`}},
	{name: "integer bounds", schema: `{"type": "integer", "minimum": -20, "exclusiveMaximum": 300}`,
		yes: []string{`-20`, `0`, `7`, `299`}, no: []string{`-21`, `300`, `1.5`, `-0`, `1e2`}},
	{name: "number bounds", schema: `{"type": "number", "exclusiveMinimum": 0, "maximum": 1}`,
		yes: []string{`0.5`, `1`, `1.000`, `0.001`}, no: []string{`0`, `0.0`, `1.5`, `-0.5`, `1e-3`}},
	{name: "patterns", schema: `{"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]{2}-\\d{3}$"}, "note": {"type": "string", "pattern": "^o[\"k]"}}, "required": ["code", "note"]}`,
		yes: []string{`{"code": "AB-123", "note": "ok, it is"}`, `{"code": "ZZ-000", "note": "o\""}`}, no: []string{`{"code": "AB-12", "note": "ok"}`, `{"code": "AB-123", "note": "it is ok"}`, `{"code": "ab-123", "note": "ok"}`}},
	{name: "root string", schema: `{"type": "string"}`,
		yes: []string{`""`, `"a b"`, `"\u00e9\ud83d\ude00"`}, no: []string{`"a`, "\"a\nb\"", `'a'`}},
}

// accepts reports whether g takes s as a complete sentence.
func accepts(t *testing.T, g *Grammar, s string) bool {
	t.Helper()
	prefix, complete := matches(t, g, s)
	return prefix && complete
}

func TestSchemaMatch(t *testing.T) {
	for _, tc := range schemaCases {
		t.Run(tc.name, func(t *testing.T) {
			g, err := FromJSONSchema([]byte(tc.schema))
			require.NoError(t, err)
			for _, s := range tc.yes {
				assert.True(t, accepts(t, g, s), "%q should match\n%s", s, g)
				var v any
				assert.NoError(t, json.Unmarshal([]byte(s), &v), "the table's %q is not JSON", s)
				assert.True(t, validates(t, tc.schema, s), "the table's %q does not fit the schema", s)
			}
			for _, s := range tc.no {
				_, complete := matches(t, g, s)
				assert.False(t, complete, "%q should not match\n%s", s, g)
			}
		})
	}
}

func TestSchemaErrors(t *testing.T) {
	for _, tc := range []struct{ schema, want string }{
		{``, `the schema is not JSON`},
		{`{"type": "object"`, `the schema is not JSON`},
		{`{} {}`, `the schema is not JSON`},
		{`{"type": "string", "type": "integer"}`, `#/type: the key appears twice`},
		{`5`, `#: a schema must be an object or a boolean, not 5`},
		{`false`, `#: the schema is false: nothing matches`},
		{`{"type": 5}`, `#: type must be a type name or an array of them, not 5`},
		{`{"type": "int"}`, `#: unknown type "int"`},
		{`{"type": []}`, `nothing matches`},
		{`{"type": "object", "properties": {"age": {"type": "integer", "multipleOf": 5}}}`, `#/properties/age: multipleOf is not supported`},
		{`{"type": "integer", "minimum": 5, "maximum": 4}`, `#: no integer lies within the bounds`},
		{`{"type": "integer", "exclusiveMinimum": 1, "exclusiveMaximum": 2}`, `no integer lies within the bounds`},
		{`{"type": "number", "minimum": -1}`, `#: bounds on a number are supported when they are integers and the lower one is at least 0`},
		{`{"type": "number", "minimum": 0.5}`, `bounds on a number are supported when`},
		{`{"type": "number", "maximum": 3}`, `bounds on a number are supported when`},
		{`{"type": "number", "exclusiveMinimum": 2, "maximum": 2}`, `no number lies within the bounds`},
		{`{"type": "integer", "minimum": "1"}`, `#: minimum must be a number, not "1"`},
		{`{"type": "integer", "maximum": 1e20}`, `maximum 1e20 is beyond 16 digits`},
		{`{"type": "integer", "exclusiveMaximum": true}`, `exclusiveMaximum true needs maximum`},
		{`{"type": "string", "pattern": "(?i)a"}`, `#: pattern: regex at offset 1: inline flags`},
		{`{"properties": {"id": {"pattern": "^a\\1$"}}}`, `#/properties/id: pattern: regex at offset 4: backreferences are not supported`},
		{`{"type": "string", "pattern": "^a+$", "maxLength": 3}`, `#: pattern next to minLength, maxLength or format is not supported`},
		{`{"type": "string", "pattern": 5}`, `#: pattern must be a string, not 5`},
		{`{"type": "string", "pattern": "^\\x01$"}`, `#: pattern: the pattern needs a control character other than`},
		{`{"patternProperties": {}}`, `patternProperties is not supported`},
		{`{"if": {}, "then": {}}`, `if is not supported`},
		{`{"not": {}}`, `not is not supported`},
		{`{"type": "array", "uniqueItems": true}`, `uniqueItems is not supported`},
		{`{"type": "array", "items": {"contains": {}}}`, `#/items: contains is not supported`},
		{`{"type": "number", "multipleOf": 2}`, `multipleOf is not supported`},
		{`{"dependentRequired": {}}`, `dependentRequired is not supported`},
		{`{"required": "x", "properties": {"x": {}}}`, `#/required: required must be an array of property names, not "x"`},
		{`{"required": [1], "properties": {}}`, `required must list property names, not 1`},
		{`{"properties": {"a": {}}, "required": ["b"]}`, `#/required: required property "b" is not in properties`},
		{`{"type": "object", "required": ["b"]}`, `required property "b" is not in properties`},
		{`{"properties": []}`, `properties must be an object`},
		{`{"properties": {"a": false}, "required": ["a"]}`, `#/properties/a: the schema is false but the property is required`},
		{`{"$ref": "#/$defs/missing", "$defs": {}}`, `#: $ref "#/$defs/missing" points to nothing`},
		{`{"$ref": "other.json#/a"}`, `only references within the schema`},
		{`{"$ref": "#anchor"}`, `not a JSON pointer`},
		{`{"$ref": 5}`, `$ref must be a string`},
		{`{"$ref": "#"}`, `$ref cycle # → #`},
		{`{"$ref": "#/$defs/a", "$defs": {"a": {"anyOf": [{"$ref": "#/$defs/b"}, {"type": "null"}]}, "b": {"allOf": [{"$ref": "#/$defs/a"}]}}}`,
			`#/$defs/a: $ref cycle #/$defs/a → #/$defs/b → #/$defs/a`},
		{`{"$ref": "#/$defs/a", "type": "object"}`, `type next to $ref is not supported`},
		{`{"anyOf": [{}], "minLength": 1}`, `minLength next to anyOf is not supported`},
		{`{"allOf": [{}, {}]}`, `allOf of 2 schemas is not supported`},
		{`{"allOf": []}`, `allOf must be a non-empty array of schemas`},
		{`{"anyOf": {}}`, `anyOf must be a non-empty array of schemas, not an object`},
		{`{"anyOf": [false]}`, `nothing matches`},
		{`{"enum": []}`, `nothing matches`},
		{`{"enum": "a"}`, `enum must be an array`},
		{`{"type": "string", "enum": [1, 2]}`, `no value of enum or const fits`},
		{`{"enum": [1, 2], "const": 3}`, `nothing matches`},
		{`{"enum": ["a"], "maxLength": 2}`, `maxLength next to enum is not supported`},
		{`{"type": "array", "minItems": -1}`, `minItems must be a non-negative integer, not -1`},
		{`{"type": "array", "minItems": 1.5}`, `minItems must be a non-negative integer, not 1.5`},
		{`{"type": "array", "minItems": "2"}`, `minItems must be a non-negative integer, not "2"`},
		{`{"type": "array", "maxItems": 1e400}`, `maxItems 1e400: at most 1000000`},
		{`{"type": "array", "minItems": 3, "maxItems": 2}`, `maxItems 2 is below minItems 3`},
		{`{"type": "array", "prefixItems": [{}], "items": false, "minItems": 2}`, `minItems 2 but no more than 1 items`},
		{`{"type": "string", "minLength": 5, "maxLength": 4}`, `maxLength 4 is below minLength 5`},
		{`{"type": "string", "format": 5}`, `format must be a string`},
		{`{"type": "string", "format": "date", "maxLength": 10}`, `minLength or maxLength next to format "date" is not supported`},
		{`{"additionalProperties": 5}`, `additionalProperties must be a schema`},
		{`{"type": "object", "properties": {"a": {"properties": {"b": {"type": "nope"}}}}}`, `#/properties/a/properties/b: unknown type "nope"`},
		{`{"properties": {"a/b~c": {"minimum": -1}}}`, `#/properties/a~1b~0c: bounds on a number`},
		{strings.Repeat(`[`, 300) + strings.Repeat(`]`, 300), `nests deeper than 256`},
		{strings.Repeat(`{"items":`, 130) + `{}` + strings.Repeat(`}`, 130), `subschemas nest deeper than 128`},
	} {
		s, err := SchemaGBNF([]byte(tc.schema))
		if !assert.Error(t, err, "%s", tc.schema) {
			t.Log(s)
			continue
		}
		assert.True(t, errors.Is(err, ErrGrammar), "%v", err)
		assert.Contains(t, err.Error(), tc.want, "%.80s", tc.schema)
	}
}

// The output must stay small whatever the schema asks for.
func TestSchemaSizeLimits(t *testing.T) {
	many := func(n int, item string) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = fmt.Sprintf(item, i)
		}
		return strings.Join(parts, ",")
	}
	_, err := SchemaGBNF([]byte(`{"enum": [` + many(60000, `"value number %d is a long string"`) + `]}`))
	assert.ErrorContains(t, err, "the grammar grows past")
	_, err = SchemaGBNF([]byte(`{"properties": {` + many(200, `"p%d": {"type": "string", "maxLength": 1000}`) + `}, "required": [` + many(200, `"p%d"`) + `]}`))
	assert.ErrorContains(t, err, "the grammar grows past")
	_, err = SchemaGBNF([]byte(`{"properties": {` + many(101, `"p%d": {}`) + `}}`))
	assert.ErrorContains(t, err, "more than 100 optional properties in a row")

	// Within the limits: 3000 required properties, 100 optional ones, 300 enum strings.
	g, err := FromJSONSchema([]byte(`{"properties": {` + many(3000, `"p%d": {"type": "integer"}`) + `}, "required": [` + many(3000, `"p%d"`) + `]}`))
	require.NoError(t, err)
	assert.True(t, accepts(t, g, `{`+many(3000, `"p%d": 1`)+`}`))
	g, err = FromJSONSchema([]byte(`{"properties": {` + many(100, `"p%d": {"type": "integer"}`) + `}}`))
	require.NoError(t, err)
	for _, s := range []string{`{}`, `{"p0": 1}`, `{"p99": 1}`, `{"p5": 1, "p50": 2, "p98": 3}`} {
		assert.True(t, accepts(t, g, s), s)
	}
	g, err = FromJSONSchema([]byte(`{"enum": [` + many(300, `"value %d"`) + `]}`))
	require.NoError(t, err)
	for _, s := range []string{`"value 0"`, `"value 7"`, `"value 77"`, `"value 299"`} {
		assert.True(t, accepts(t, g, s), s)
	}
	assert.False(t, accepts(t, g, `"value 300"`))
}

// Enums share their prefixes, so that a Matcher keeps few parses open however many values.
func TestSchemaEnumTrie(t *testing.T) {
	src, err := SchemaGBNF([]byte(`{"enum": ["apple", "apricot", "banana", "1", "2", "3"]}`))
	require.NoError(t, err)
	assert.Contains(t, src, `root ::= "\"" ( "1\"" | "2\"" | "3\"" | "ap" ( "ple\"" | "ricot\"" ) | "banana\"" ) ws`)
	var syllables []string
	for r := '가'; len(syllables) < 120; r += 28 * 21 / 3 { // 120 values with different first characters
		syllables = append(syllables, fmt.Sprintf(`"%c%c"`, r, r+1))
	}
	_, err = SchemaGBNF([]byte(`{"enum": [` + strings.Join(syllables, ",") + `]}`))
	assert.ErrorContains(t, err, "more than 100 values differ at one character")
	g, err := FromJSONSchema([]byte(`{"enum": [` + strings.Join(syllables[:90], ",") + `]}`))
	require.NoError(t, err)
	assert.True(t, accepts(t, g, syllables[89]))
}

func TestSchemaGBNFText(t *testing.T) {
	src, err := SchemaGBNF([]byte(`{"type": "object", "properties": {"first_name": {"type": "string"}, "age": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["first_name"]}`))
	require.NoError(t, err)
	assert.Equal(t, `root ::= "{" ws "\"first_name\"" ws ":" ws string root-after-first-name "}" ws
root-age ::= integer ws
root-tags ::= "[" ws ( string ( "," ws string )* )? "]" ws
root-after-age ::= ( "," ws "\"tags\"" ws ":" ws root-tags )?
root-from-age ::= "\"age\"" ws ":" ws root-age root-after-age | "\"tags\"" ws ":" ws root-tags
root-after-first-name ::= ( "," ws root-from-age )?
string ::= "\"" char* "\"" ws
char ::= [^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )
integer ::= "-"? ( "0" | [1-9] [0-9]{0,15} )
ws ::= ( " " | "\n" [ \t]{0,20} )?
`, src)

	// Rule names are GBNF names, distinct, whatever the property names.
	src, err = SchemaGBNF([]byte(`{"properties": {"a b": {"type": "array"}, "a-b": {"type": "array"}, "a_b": {"type": "array"}, "": {"type": "array"}, "한국어": {"type": "array"}, "string": {"type": "array"}}}`))
	require.NoError(t, err)
	names := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(src), "\n") {
		name, _, ok := strings.Cut(line, " ::= ")
		require.True(t, ok, line)
		assert.Regexp(t, regexp.MustCompile(`^[A-Za-z0-9-]+$`), name)
		assert.False(t, names[name], "%s defined twice", name)
		names[name] = true
	}
	_, err = Parse(src)
	require.NoError(t, err)

	// The JSON rules are JSONGBNF's.
	src, err = SchemaGBNF([]byte(`{}`))
	require.NoError(t, err)
	squeeze := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	for _, line := range strings.Split(strings.TrimSpace(JSONGBNF), "\n")[1:] {
		assert.Contains(t, squeeze(src), squeeze(line))
	}
}

// A model as pydantic (v2) writes its schema: titles and descriptions everywhere, $defs for the
// nested models, an enum class, a list of models, optional fields as anyOf with null.
const pydanticSchema = `{
  "$defs": {
    "Address": {
      "properties": {
        "street": {"description": "Street and number", "title": "Street", "type": "string"},
        "city": {"title": "City", "type": "string"},
        "zip": {"anyOf": [{"type": "string", "maxLength": 10}, {"type": "null"}], "default": null, "title": "Zip"}
      },
      "required": ["street", "city"],
      "title": "Address",
      "type": "object"
    },
    "Role": {"enum": ["admin", "editor", "viewer"], "title": "Role", "type": "string"},
    "Pet": {
      "properties": {
        "name": {"title": "Name", "type": "string"},
        "kind": {"const": "dog", "title": "Kind", "type": "string"},
        "born": {"format": "date", "title": "Born", "type": "string"}
      },
      "required": ["name", "kind"],
      "title": "Pet",
      "type": "object"
    }
  },
  "description": "A user of the system.",
  "properties": {
    "id": {"format": "uuid", "title": "Id", "type": "string"},
    "name": {"description": "Full name", "maxLength": 50, "minLength": 1, "title": "Name", "type": "string"},
    "age": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 150}, {"type": "null"}], "default": null, "title": "Age"},
    "role": {"$ref": "#/$defs/Role", "default": "viewer"},
    "address": {"$ref": "#/$defs/Address"},
    "pets": {"items": {"$ref": "#/$defs/Pet"}, "title": "Pets", "type": "array", "maxItems": 3},
    "scores": {"additionalProperties": {"type": "number", "minimum": 0, "maximum": 10}, "title": "Scores", "type": "object"},
    "active": {"default": true, "title": "Active", "type": "boolean"},
    "created": {"format": "date-time", "title": "Created", "type": "string", "readOnly": true}
  },
  "required": ["id", "name", "address", "pets"],
  "title": "User",
  "type": "object"
}`

func TestSchemaPydantic(t *testing.T) {
	g, err := FromJSONSchema([]byte(pydanticSchema))
	require.NoError(t, err)
	yes := []string{
		`{"id": "0f8fad5b-d9cb-469f-a165-70867728950e", "name": "Kim", "address": {"street": "1 Main", "city": "Seoul"}, "pets": []}`,
		`{"id": "0f8fad5b-d9cb-469f-a165-70867728950e", "name": "김철수", "age": 41, "role": "admin",
  "address": {"street": "1 Main", "city": "Seoul", "zip": null},
  "pets": [{"name": "Rex", "kind": "dog", "born": "2020-02-29"}, {"name": "Bo", "kind": "dog"}],
  "scores": {"math": 9.5}, "active": false, "created": "2024-01-02T03:04:05Z"}`,
		`{"id": "0f8fad5b-d9cb-469f-a165-70867728950e", "name": "K", "age": null, "address": {"street": "", "city": "", "zip": "04524"}, "pets": [], "active": true}`,
	}
	for _, s := range yes {
		assert.True(t, accepts(t, g, s), s)
		var v map[string]any
		require.NoError(t, json.Unmarshal([]byte(s), &v))
	}
	for _, s := range []string{
		`{"id": "x", "name": "Kim", "address": {"street": "1", "city": "S"}, "pets": []}`,                                                   // id not a uuid
		`{"id": "0f8fad5b-d9cb-469f-a165-70867728950e", "name": "", "address": {"street": "1", "city": "S"}, "pets": []}`,                   // name too short
		`{"id": "0f8fad5b-d9cb-469f-a165-70867728950e", "name": "K", "role": "owner", "address": {"street": "1", "city": "S"}, "pets": []}`, // not a Role
		`{"id": "0f8fad5b-d9cb-469f-a165-70867728950e", "name": "K", "address": {"street": "1", "city": "S"}, "pets": [{"name": "Tom", "kind": "cat"}]}`,
		`{"id": "0f8fad5b-d9cb-469f-a165-70867728950e", "name": "K", "address": {"street": "1"}, "pets": []}`, // no city
		`{"id": "0f8fad5b-d9cb-469f-a165-70867728950e", "name": "K", "age": 151, "address": {"street": "1", "city": "S"}, "pets": []}`,
		`{"id": "0f8fad5b-d9cb-469f-a165-70867728950e", "name": "K", "address": {"street": "1", "city": "S"}, "pets": [], "scores": {"a": 10.5}}`,
		`{"id": "0f8fad5b-d9cb-469f-a165-70867728950e", "name": "K", "address": {"street": "1", "city": "S"}, "pets": [{"name": "a", "kind": "dog"}, {"name": "b", "kind": "dog"}, {"name": "c", "kind": "dog"}, {"name": "d", "kind": "dog"}]}`,
	} {
		_, complete := matches(t, g, s)
		assert.False(t, complete, s)
		assert.False(t, validates(t, pydanticSchema, s), "the validator the walks use agrees: %s", s)
	}
}

// Whatever bytes the schema is, SchemaGBNF returns a grammar that parses or an ErrGrammar.
func FuzzSchema(f *testing.F) {
	for _, tc := range schemaCases {
		f.Add(tc.schema)
	}
	f.Add(pydanticSchema)
	f.Add(`{"$ref": "#/$defs/a", "$defs": {"a": {"anyOf": [{"$ref": "#/$defs/b"}]}, "b": {"type": "array", "items": {"$ref": "#/$defs/a"}}}}`)
	f.Fuzz(func(t *testing.T, schema string) {
		src, err := SchemaGBNF([]byte(schema))
		if err != nil {
			require.ErrorIs(t, err, ErrGrammar)
			require.NotContains(t, err.Error(), "a bug")
			return
		}
		_, err = Parse(src)
		require.NoError(t, err, "%s\n%s", schema, src)
	})
}

func ExampleFromJSONSchema() {
	g, err := FromJSONSchema([]byte(`{
		"type": "object",
		"properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
		"required": ["name"]
	}`))
	if err != nil {
		panic(err)
	}
	// A vocabulary of one token per byte (and EOS), so that texts are fed byte by byte.
	tokens := make([][]byte, 257)
	for b := range 256 {
		tokens[b] = []byte{byte(b)}
	}
	vocab := NewVocab(tokens, nil, 256)
	for _, text := range []string{`{"name": "Ann", "age": 31}`, `{"name": "Ann"}`, `{"age": 31}`, `{"age": 31, "name": "Ann"}`} {
		m := g.NewMatcher(vocab)
		ok := true
		for i := 0; i < len(text) && ok; i++ {
			ok = m.Accept(int32(text[i])) == nil
		}
		fmt.Println(text, ok && m.Accepting())
	}
	// Output:
	// {"name": "Ann", "age": 31} true
	// {"name": "Ann"} true
	// {"age": 31} false
	// {"age": 31, "name": "Ann"} false
}

// Random walks through each schema's grammar end in JSON texts that the schema accepts (by the
// reckoning of validate, below), and a Matcher never opens too many parses on the way.
func TestSchemaWalksAreJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	v := byteVocab()
	logits := make([]float32, v.Size())
	schemas := []string{pydanticSchema}
	for _, tc := range schemaCases {
		schemas = append(schemas, tc.schema)
	}
	for _, schema := range schemas {
		g, err := FromJSONSchema([]byte(schema))
		require.NoError(t, err)
		finished := 0
		for range 20 {
			m := g.NewMatcher(v)
			var text []byte
			for range 3000 {
				clear(logits)
				_, err := m.Mask(logits)
				require.NoError(t, err, "%s after %q", schema, text)
				var allowed, closing []int32
				for id, l := range logits {
					if l == 0 {
						allowed = append(allowed, int32(id))
						if strings.ContainsRune(`"}]`, rune(id)) || id == byteEOS {
							closing = append(closing, int32(id))
						}
					}
				}
				require.NotEmpty(t, allowed, "%s: a dead end after %q", schema, text)
				pick := allowed
				if len(closing) > 0 && rng.IntN(4) > 0 { // lean towards ending
					pick = closing
				}
				id := pick[rng.IntN(len(pick))]
				if id == byteEOS {
					if testing.Verbose() && finished < 2 {
						t.Logf("%.60s: %s", schema, text)
					}
					require.True(t, json.Valid(text), "%s: %q", schema, text)
					assert.True(t, validates(t, schema, string(text)), "%s: %q", schema, text)
					finished++
					break
				}
				require.NoError(t, m.Accept(id))
				text = append(text, byte(id))
			}
		}
		assert.Positive(t, finished, "%s: no walk ended", schema)
	}
}

// validates checks text against schema with a small validator of the keywords SchemaGBNF
// supports, written from the JSON Schema spec rather than from the compiler.
func validates(t *testing.T, schema, text string) bool {
	decode := func(s string) any {
		d := json.NewDecoder(strings.NewReader(s))
		d.UseNumber()
		var v any
		require.NoError(t, d.Decode(&v), "%q", s)
		return v
	}
	root := decode(schema)
	var valid func(s, v any) bool
	valid = func(s, v any) bool {
		if b, ok := s.(bool); ok {
			return b
		}
		m := s.(map[string]any)
		if ref, ok := m["$ref"].(string); ok {
			ref, _ = url.PathUnescape(strings.TrimPrefix(ref, "#"))
			target := root
			for _, tok := range strings.Split(ref, "/")[1:] {
				tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
				target = target.(map[string]any)[tok]
			}
			return valid(target, v)
		}
		all := func(key string, ok func(n int) bool) bool {
			list, present := m[key].([]any)
			if !present {
				return true
			}
			n := 0
			for _, sub := range list {
				if valid(sub, v) {
					n++
				}
			}
			return ok(n)
		}
		if !all("allOf", func(n int) bool { return n == len(m["allOf"].([]any)) }) || !all("anyOf", func(n int) bool { return n > 0 }) || !all("oneOf", func(n int) bool { return n == 1 }) {
			return false
		}
		same := func(a, b any) bool { x, _ := json.Marshal(a); y, _ := json.Marshal(b); return string(x) == string(y) }
		if c, ok := m["const"]; ok && !same(c, v) {
			return false
		}
		if e, ok := m["enum"].([]any); ok && !slices.ContainsFunc(e, func(x any) bool { return same(x, v) }) {
			return false
		}
		if types, ok := m["type"]; ok {
			if name, ok := types.(string); ok {
				types = []any{name}
			}
			if !slices.ContainsFunc(types.([]any), func(name any) bool { return jsonType(v, name.(string)) }) {
				return false
			}
		}
		num := func(key string, def int) int {
			n, ok := m[key].(json.Number)
			if !ok {
				return def
			}
			i, _ := n.Int64()
			return int(i)
		}
		switch v := v.(type) {
		case string:
			n := utf8.RuneCountInString(v)
			layouts := map[string]string{"date": "2006-01-02", "time": "15:04:05Z07:00", "date-time": time.RFC3339}
			if layout, ok := layouts[fmt.Sprint(m["format"])]; ok {
				if _, err := time.Parse(layout, v); err != nil {
					return false
				}
			}
			uuid := regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
			if p, ok := m["pattern"].(string); ok && !regexp.MustCompile(p).MatchString(v) {
				return false
			}
			return n >= num("minLength", 0) && n <= num("maxLength", n) && (m["format"] != "uuid" || uuid.MatchString(v))
		case json.Number:
			x, _ := new(big.Rat).SetString(v.String())
			for _, b := range []struct {
				key, flag string
				sign      int // the bound's side: x·sign must not exceed bound·sign
			}{{"minimum", "exclusiveMinimum", -1}, {"maximum", "exclusiveMaximum", 1}} {
				check := func(bound any, exclusive bool) bool {
					n, ok := bound.(json.Number)
					if !ok {
						return true
					}
					y, _ := new(big.Rat).SetString(n.String())
					c := x.Cmp(y) * b.sign
					return c < 0 || c == 0 && !exclusive
				}
				flag, _ := m[b.flag].(bool) // draft 4
				if !check(m[b.key], flag) || !check(m[b.flag], true) {
					return false
				}
			}
		case []any:
			prefix, _ := m["prefixItems"].([]any)
			rest, hasRest := m["items"]
			if tuple, ok := rest.([]any); ok { // draft 7
				prefix, rest, hasRest = tuple, m["additionalItems"], m["additionalItems"] != nil
			}
			for i, x := range v {
				if i < len(prefix) && !valid(prefix[i], x) || i >= len(prefix) && hasRest && !valid(rest, x) {
					return false
				}
			}
			return len(v) >= num("minItems", 0) && len(v) <= num("maxItems", len(v))
		case map[string]any:
			props, _ := m["properties"].(map[string]any)
			for _, r := range asSlice(m["required"]) {
				if _, ok := v[r.(string)]; !ok {
					return false
				}
			}
			for k, x := range v {
				if p, ok := props[k]; ok && !valid(p, x) {
					return false
				} else if ap, has := m["additionalProperties"]; !ok && has && !valid(ap, x) {
					return false
				}
			}
		}
		return true
	}
	return valid(root, decode(text))
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

// jsonType reports whether a value (decoded with UseNumber) is of the JSON Schema type name.
func jsonType(v any, name string) bool {
	switch v := v.(type) {
	case nil:
		return name == "null"
	case bool:
		return name == "boolean"
	case string:
		return name == "string"
	case []any:
		return name == "array"
	case map[string]any:
		return name == "object"
	case json.Number:
		f, _ := v.Float64()
		return name == "number" || name == "integer" && f == math.Trunc(f)
	}
	return false
}

// With the LLaMA 2 vocabulary, whose tokens span several characters and end inside them, walks
// through the pydantic schema's grammar end in texts the schema accepts.
func TestSchemaWalksLlama2(t *testing.T) {
	tok, v := llama2Vocab(t)
	g, err := FromJSONSchema([]byte(pydanticSchema))
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(7, 8))
	logits := make([]float32, v.Size())
	finished := 0
	for range 3 {
		m := g.NewMatcher(v)
		var ids []int32
		for range 300 {
			clear(logits)
			_, err := m.Mask(logits)
			require.NoError(t, err, "after %q", tok.Decode(ids))
			var short, all []int32
			for id, l := range logits {
				if l == 0 {
					all = append(all, int32(id))
					if len(v.bytes[id]) <= 2 || int32(id) == tok.EOS() {
						short = append(short, int32(id))
					}
				}
			}
			pick := all
			if len(short) > 0 && rng.IntN(4) > 0 {
				pick = short
			}
			id := pick[rng.IntN(len(pick))]
			if id == tok.EOS() {
				text := tok.Decode(ids)
				assert.True(t, validates(t, pydanticSchema, text), "%s", text)
				finished++
				break
			}
			require.NoError(t, m.Accept(id))
			ids = append(ids, id)
		}
	}
	assert.Positive(t, finished)
}
