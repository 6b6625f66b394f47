package grammar

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// node is a JSON value of the schema text. Objects keep their keys in the order written, which
// encoding/json's maps would lose: properties are generated in that order.
type node struct {
	kind byte     // '{' object, '[' array, '"' string, '0' number, 't' true or false, 'n' null
	keys []string // an object's keys
	vals []*node  // an object's values (by key) or an array's elements
	text string   // a string's value, a number's literal
	yes  bool     // kind 't': true
}

// decodeSchema reads a schema's JSON text into nodes.
func decodeSchema(data []byte) (*node, error) {
	if err := json.Unmarshal(data, new(json.RawMessage)); err != nil { // checks all of it
		return nil, fmt.Errorf("%w: the schema is not JSON: %v", ErrGrammar, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return decodeValue(dec, "", 0)
}

// decodeValue reads the value at ptr; the text is known to be JSON.
func decodeValue(dec *json.Decoder, ptr string, depth int) (*node, error) {
	tok, _ := dec.Token()
	switch t := tok.(type) {
	case json.Delim: // '{' or '[': Token gives the closing one once More is false
		if depth >= maxSchemaNest {
			return nil, fmt.Errorf("%w: #%s: the schema nests deeper than %d", ErrGrammar, ptr, maxSchemaNest)
		}
		n, seen := &node{kind: byte(t)}, map[string]bool{}
		for dec.More() {
			p := ptr + "/" + strconv.Itoa(len(n.vals))
			if t == '{' {
				k, _ := dec.Token()
				key, _ := k.(string)
				if p = ptr + "/" + pointerToken(key); seen[key] {
					return nil, fmt.Errorf("%w: #%s: the key appears twice", ErrGrammar, p)
				}
				seen[key], n.keys = true, append(n.keys, key)
			}
			v, err := decodeValue(dec, p, depth+1)
			if err != nil {
				return nil, err
			}
			n.vals = append(n.vals, v)
		}
		_, err := dec.Token()
		return n, err
	case string:
		return &node{kind: '"', text: t}, nil
	case json.Number:
		return &node{kind: '0', text: t.String()}, nil
	case bool:
		return &node{kind: 't', yes: t}, nil
	}
	return &node{kind: 'n'}, nil
}

// get returns an object's value for key, or nil.
func (n *node) get(key string) *node {
	if i := slices.Index(n.keys, key); i >= 0 {
		return n.vals[i]
	}
	return nil
}

// String describes the value for messages.
func (n *node) String() string {
	switch {
	case n.kind == '{':
		return "an object"
	case n.kind == '[':
		return "an array"
	case n.kind == '"' && len(n.text) > 40:
		return "a string"
	}
	return n.compact()
}

// compact returns the value as compact JSON, strings as encoding/json writes them.
func (n *node) compact() string {
	switch n.kind {
	case '{', '[':
		var b strings.Builder
		b.WriteByte(n.kind)
		for i, v := range n.vals {
			if i > 0 {
				b.WriteByte(',')
			}
			if n.kind == '{' {
				b.WriteString(jsonString(n.keys[i]) + ":")
			}
			b.WriteString(v.compact())
		}
		b.WriteByte(n.kind + 2) // '}' and ']' follow '{' and '[' by two
		return b.String()
	case '"':
		return jsonString(n.text)
	case '0':
		return n.text
	case 't':
		return strconv.FormatBool(n.yes)
	}
	return "null"
}

// is reports whether the value is of the JSON Schema type t.
func (n *node) is(t string) bool {
	if t == "integer" {
		f, _ := strconv.ParseFloat(n.text, 64) // ±Inf beyond float64: integers too
		return n.kind == '0' && f == math.Trunc(f)
	}
	return n.kind == map[string]byte{"object": '{', "array": '[', "string": '"', "number": '0', "boolean": 't', "null": 'n'}[t]
}

// jsonString returns s as a JSON string, as encoding/json writes it but with <, > and & as is.
func jsonString(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return strings.TrimSuffix(b.String(), "\n")
}

// pointerToken escapes a key for a JSON pointer.
func pointerToken(key string) string {
	return strings.ReplaceAll(strings.ReplaceAll(key, "~", "~0"), "/", "~1")
}

// group writes alternatives as one element.
func group(alts []string) string {
	if len(alts) == 1 {
		return alts[0]
	}
	return "( " + strings.Join(alts, " | ") + " )"
}

// spaced joins the non-empty parts with spaces.
func spaced(parts ...string) string {
	return strings.Join(slices.DeleteFunc(parts, func(s string) bool { return s == "" }), " ")
}
