package grammar

import (
	"fmt"
	"maps"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// SchemaGBNF compiles a JSON Schema (the JSON text of one) into a GBNF grammar whose sentences
// are JSON texts that the schema accepts: what OpenAI's response_format {"type": "json_schema"},
// llama.cpp's json_schema and vLLM's guided_json promise. Whitespace, strings and numbers are
// JSONGBNF's, whose rules it reuses; the root may be of any type.
//
// Supported: type (a name or several; no type and no other constraint is any value);
// properties, generated in the order the schema text lists them, and required (the others may
// be left out) — with properties present only they are generated, whatever
// additionalProperties says (OpenAI's strict mode demands additionalProperties false anyway);
// without properties, additionalProperties is the schema of every value; items, prefixItems
// (or draft 7's items array and additionalItems), minItems, maxItems; minLength and maxLength
// (in characters of the JSON text, where an escape is one); format date, time, date-time and
// uuid (other formats are annotations: ignored); pattern, a regular expression in the syntax
// FromRegex reads, matched anywhere in the string unless anchored by ^ and $ (JSON Schema's
// rule), the string written with no escapes but \", \\, \n, \r and \t; minimum, maximum,
// exclusiveMinimum and exclusiveMaximum (draft 4's boolean form too): any bounds on an integer,
// and on a number integer bounds with the lower at least 0 (pydantic's ge=0, le=1), such a
// number then written without an exponent; enum and const of any JSON values, in
// encoding/json's compact form; anyOf, oneOf (taken as anyOf), allOf of one schema; $ref to a
// JSON pointer within the schema ("#", "#/$defs/Node"), each target one rule, so recursive
// schemas work. A schema without type but with keywords of some types (properties, items,
// minLength, ...) is generated as those types.
//
// Anything else that constrains (multipleOf, not, if, uniqueItems, ...), other bounds on a
// number, and a schema nothing matches, is an error that wraps ErrGrammar and names the JSON
// pointer of the place: "#/properties/age: multipleOf is not supported". Annotations (title, description,
// default, examples, $schema, $id, $comment, readOnly, deprecated, x-...) are ignored.
//
// Left to the model: that oneOf's alternatives exclude each other, that the keys of an object
// without properties differ, and that \u escapes pair their surrogates (a pair counts as two
// characters for minLength). The grammar is refused when it would keep too many parses open
// (MaxStacks): more than 100 optional properties in a row, or 100 enum values that differ at
// the same character; wide anyOf of similar schemas may still end in ErrAmbiguous.
func SchemaGBNF(schema []byte) (string, error) {
	src, _, err := compileSchema(schema)
	return src, err
}

// FromJSONSchema compiles a JSON Schema into a Grammar: Parse(SchemaGBNF(schema)).
func FromJSONSchema(schema []byte) (*Grammar, error) {
	_, g, err := compileSchema(schema)
	return g, err
}

// Limits on what a schema, often a request's, may cost.
const (
	maxSchemaNest  = 256       // JSON nesting of the schema text
	maxSchemaDepth = 128       // subschemas within subschemas, $refs followed
	maxBound       = 1_000_000 // minItems, maxItems, minLength, maxLength
	maxGrammarSize = 1 << 20   // bytes of GBNF, a repetition counting 8 for each copy Parse makes
	maxChoices     = 100       // parses one choice opens (see MaxStacks): enum values that differ at one character, optional properties in a row
)

func compileSchema(schema []byte) (string, *Grammar, error) {
	doc, err := decodeSchema(schema)
	if err != nil {
		return "", nil, err
	}
	c := &compiler{doc: doc, rules: []string{""}, taken: map[string]bool{"root": true}, next: map[string]int{}, used: map[string]bool{},
		refs: map[string]string{"": "root"}, order: []string{""}, open: []string{""}, edges: map[string][]string{}}
	for _, b := range builtinRules {
		c.taken[b.name] = true
	}
	expr, err := c.schema(doc, "", "root")
	if err != nil {
		return "", nil, err
	}
	c.rules[0] = "root ::= " + expr
	if err := c.cycles(); err != nil {
		return "", nil, err
	}
	src := c.source()
	if len(src) > maxGrammarSize {
		return "", nil, c.errorf("", "the grammar grows past %d bytes", maxGrammarSize)
	}
	g, err := Parse(src)
	if err != nil { // a bug here, not in the schema
		return "", nil, fmt.Errorf("%w: the grammar compiled from the schema does not parse (a bug): %v", ErrGrammar, err)
	}
	return src, g, nil
}

// builtinRules are the rules schemas share, written out when used. The JSON ones are JSONGBNF's.
var builtinRules = []struct{ name, body, deps string }{
	{"value", `object | array | string | number | ("true" | "false" | "null") ws`, "object array string number"},
	{"object", `"{" ws ( string ":" ws value ( "," ws string ":" ws value )* )? "}" ws`, "string value"},
	{"array", `"[" ws ( value ( "," ws value )* )? "]" ws`, "value"},
	{"string", `"\"" char* "\"" ws`, "char"},
	{"char", `[^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )`, ""},
	{"number", `integer ( "." [0-9]+ )? ( [eE] [-+]? [0-9]{1,3} )? ws`, "integer"},
	{"integer", `"-"? ( "0" | [1-9] [0-9]{0,15} )`, ""},
	{"boolean", `( "true" | "false" ) ws`, ""},
	{"null", `"null" ws`, ""},
	// RFC 3339, as JSON Schema's formats take it; days per month and leap years are checked.
	{"date-time", `date "T" time`, "date time"},
	{"date", `[0-9]{4} "-" ( ( "0" [13578] | "1" [02] ) "-" ( "0" [1-9] | [12] [0-9] | "3" [01] ) | ( "0" [469] | "11" ) "-" ( "0" [1-9] | [12] [0-9] | "30" ) | "02-" ( "0" [1-9] | "1" [0-9] | "2" [0-8] ) ) | leap-year "-02-29"`, "leap-year"},
	{"leap-year", `[0-9]{2} ( "0" [48] | [2468] [048] | [13579] [26] ) | ( "0" [48] | [2468] [048] | [13579] [26] | "00" ) "00"`, ""},
	{"time", `( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,9} )? ( "Z" | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )`, ""},
	{"uuid", `[0-9a-f]{8} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{12}`, ""},
	{"ws", `( " " | "\n" [ \t]{0,20} )?`, ""},
}

var (
	annotations = setOf("title", "description", "default", "examples", "example", "$schema", "$id", "$comment",
		"$anchor", "$dynamicAnchor", "$recursiveAnchor", "$vocabulary", "$defs", "definitions", "readOnly",
		"writeOnly", "deprecated", "contentEncoding", "contentMediaType", "contentSchema", "discriminator")
	supported = setOf("type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "properties", "required",
		"additionalProperties", "items", "prefixItems", "additionalItems", "minItems", "maxItems", "minLength",
		"maxLength", "format", "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
	typeNames = []string{"object", "array", "string", "number", "integer", "boolean", "null"}
	// typeKeywords say which types a schema without "type" is generated as.
	typeKeywords = [][]string{{"object", "properties", "required", "additionalProperties"},
		{"array", "items", "prefixItems", "additionalItems", "minItems", "maxItems"}, {"string", "minLength", "maxLength", "format", "pattern"},
		{"number", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}}
	formats = setOf("date", "time", "date-time", "uuid")
)

func setOf(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

type compiler struct {
	doc   *node
	rules []string          // "name ::= body", root first
	taken map[string]bool   // rule names in use, the builtins' included
	next  map[string]int    // per base name (see unique), the numbers used
	used  map[string]bool   // builtins referred to
	refs  map[string]string // $ref target (a JSON pointer) → its rule
	order []string          // the targets in the order met
	// A target referred to before any character of its own (through $ref, anyOf, allOf) could
	// recurse forever: edges records such references and cycles refuses a loop of them.
	open  []string // targets being compiled, innermost last
	guard int      // open[guard:] were entered since the innermost object or array began
	edges map[string][]string
	depth int
	size  int
}

func (c *compiler) errorf(ptr, format string, args ...any) error {
	return fmt.Errorf("%w: #%s: %s", ErrGrammar, ptr, fmt.Sprintf(format, args...))
}

// schema compiles the subschema n at ptr into an expression matching its JSON values and the
// whitespace after them. hint names the rules made for it.
func (c *compiler) schema(n *node, ptr, hint string) (string, error) {
	if c.depth >= maxSchemaDepth {
		return "", c.errorf(ptr, "subschemas nest deeper than %d", maxSchemaDepth)
	}
	c.depth++
	expr, err := c.subschema(n, ptr, hint)
	c.depth--
	if err == nil && c.size > maxGrammarSize {
		err = c.errorf(ptr, "the grammar grows past %d bytes here", maxGrammarSize)
	}
	return expr, err
}

func (c *compiler) subschema(n *node, ptr, hint string) (string, error) {
	switch {
	case n.kind == 't' && n.yes:
		return c.use("value"), nil
	case n.kind == 't':
		return "", c.errorf(ptr, "the schema is false: nothing matches")
	case n.kind != '{':
		return "", c.errorf(ptr, "a schema must be an object or a boolean, not %s", n)
	}
	var kws []string // the keywords that constrain
	for i, k := range n.keys {
		switch v := n.vals[i]; {
		case k == "format" && v.kind != '"':
			return "", c.errorf(ptr, "format must be a string, not %s", v)
		case annotations[k] || strings.HasPrefix(k, "x-") || k == "format" && !formats[v.text]:
		case !supported[k]:
			return "", c.errorf(ptr, "%s is not supported", k)
		default:
			kws = append(kws, k)
		}
	}
	// $ref, the combinators and enum would have to be intersected with other keywords beside
	// them: only annotations (and type, beside enum and const) may stand there.
	for _, k := range []string{"$ref", "allOf", "anyOf", "oneOf", "enum", "const"} {
		if !slices.Contains(kws, k) {
			continue
		}
		allowed := []string{k}
		if k == "enum" || k == "const" {
			allowed = []string{"enum", "const", "type"}
		}
		for _, other := range kws {
			if !slices.Contains(allowed, other) {
				return "", c.errorf(ptr, "%s next to %s is not supported", other, k)
			}
		}
		switch k {
		case "$ref":
			return c.ref(n.get(k), ptr)
		case "allOf":
			list, err := c.schemas(n, ptr, k)
			if err == nil && len(list) != 1 {
				err = c.errorf(ptr, "allOf of %d schemas is not supported, only of one", len(list))
			}
			if err != nil {
				return "", err
			}
			return c.schema(list[0], ptr+"/allOf/0", hint)
		case "anyOf", "oneOf": // oneOf's "exactly one" is not enforced
			return c.anyOf(n, ptr, k, hint)
		}
		return c.enum(n, ptr)
	}
	return c.typed(n, ptr, hint)
}

// typed compiles a schema by its types: those "type" names, or those its keywords are of.
func (c *compiler) typed(n *node, ptr, hint string) (string, error) {
	types, err := c.types(n, ptr)
	if err != nil {
		return "", err
	}
	has := func(k string) bool { v := n.get(k); return v != nil && (k != "format" || formats[v.text]) }
	for _, tk := range typeKeywords {
		if n.get("type") == nil && slices.ContainsFunc(tk[1:], has) {
			types = append(types, tk[0]) // no type: the types the keywords are of
		}
	}
	if types == nil {
		return c.use("value"), nil
	}
	alts := make([]string, len(types))
	for i, t := range types {
		switch t {
		case "object":
			alts[i], err = c.object(n, ptr, hint)
		case "array":
			alts[i], err = c.array(n, ptr, hint)
		case "string":
			alts[i], err = c.str(n, ptr)
		case "integer", "number":
			alts[i], err = c.numeric(n, ptr, t)
		default: // boolean, null
			alts[i] = c.use(t)
		}
		if err != nil {
			return "", err
		}
	}
	return group(alts), nil
}

// numeric compiles an integer or number schema, within its bounds when it has some.
func (c *compiler) numeric(n *node, ptr, t string) (string, error) {
	b, err := c.bounds(n, ptr)
	switch {
	case err != nil:
		return "", err
	case b.lo == nil && b.hi == nil && t == "integer":
		return c.use("integer") + " ws", nil
	case b.lo == nil && b.hi == nil:
		return c.use("number"), nil
	case t == "integer":
		expr, err := c.integerRange(b, ptr)
		return expr + " ws", err
	}
	expr, err := c.numberRange(b, ptr)
	return expr + " ws", err
}

// types reads "type": nil when absent.
func (c *compiler) types(n *node, ptr string) ([]string, error) {
	t := n.get("type")
	if t == nil {
		return nil, nil
	}
	list := []*node{t}
	if t.kind == '[' {
		list = t.vals
	}
	var types []string
	for _, v := range list {
		switch {
		case v.kind != '"':
			return nil, c.errorf(ptr, "type must be a type name or an array of them, not %s", v)
		case !slices.Contains(typeNames, v.text):
			return nil, c.errorf(ptr, "unknown type %q", v.text)
		case !slices.Contains(types, v.text):
			types = append(types, v.text)
		}
	}
	if len(types) == 0 {
		return nil, c.errorf(ptr, "type is an empty array: nothing matches")
	}
	if slices.Contains(types, "number") { // every integer is a number already
		types = slices.DeleteFunc(types, func(t string) bool { return t == "integer" })
	}
	return types, nil
}

// object compiles an object schema. Properties come in schema order, the optional ones may be
// left out: pick(i), "a member from property i on", is property i then rest(i+1) or, when i is
// optional, pick(i+1); rest(i), what may follow a member, is a comma and pick(i), optional when
// properties i.. all are. The comma comes before the choice of property so that a Matcher keeps
// one parse until a key starts and then one per key that may come.
func (c *compiler) object(n *node, ptr, hint string) (string, error) {
	defer c.consume()()
	req := map[string]bool{}
	if r := n.get("required"); r != nil {
		if r.kind != '[' {
			return "", c.errorf(ptr+"/required", "required must be an array of property names, not %s", r)
		}
		for _, v := range r.vals {
			if v.kind != '"' {
				return "", c.errorf(ptr+"/required", "required must list property names, not %s", v)
			}
			req[v.text] = true
		}
	}
	if ap := n.get("additionalProperties"); ap != nil && ap.kind != '{' && ap.kind != 't' {
		return "", c.errorf(ptr, "additionalProperties must be a schema, not %s", ap)
	}
	props := n.get("properties")
	if props != nil && props.kind != '{' {
		return "", c.errorf(ptr+"/properties", "properties must be an object, not %s", props)
	}
	listed := map[string]bool{}
	if props != nil {
		listed = setOf(props.keys...)
	}
	for _, name := range slices.Sorted(maps.Keys(req)) {
		if !listed[name] {
			return "", c.errorf(ptr+"/required", "required property %q is not in properties", name)
		}
	}
	if props == nil {
		return c.mapObject(n, ptr, hint)
	}
	var kvs, keys []string
	var must []bool
	run := 0 // optional properties in a row
	for i, key := range props.keys {
		p := ptr + "/properties/" + pointerToken(key)
		if v := props.vals[i]; v.kind == 't' && !v.yes { // the property may not appear
			if req[key] {
				return "", c.errorf(p, "the schema is false but the property is required: nothing matches")
			}
			continue
		}
		if run++; req[key] {
			run = 0
		} else if run > maxChoices {
			return "", c.errorf(ptr+"/properties", "more than %d optional properties in a row are not supported (the grammar would be too ambiguous)", maxChoices)
		}
		expr, err := c.schema(props.vals[i], p, hint+"-"+key)
		if err != nil {
			return "", err
		}
		kvs = append(kvs, spaced(Quote(jsonString(key)), `ws ":" ws`, c.named(hint+"-"+key, expr)))
		keys, must = append(keys, key), append(must, req[key])
	}
	last := len(kvs) - 1
	rest, pick := make([]string, last+2), make([]string, last+2)
	required := false // some property from i on is
	for i := last; i >= 0; i-- {
		required = required || must[i]
		pick[i] = spaced(kvs[i], rest[i+1])
		if !must[i] && i < last { // a choice: a rule, which rest(i) and pick(i-1) share
			pick[i] = c.define(hint+"-from-"+keys[i], pick[i]+" | "+pick[i+1])
		}
		switch rest[i] = `"," ws ` + pick[i]; {
		case i == 0:
		case !required:
			rest[i] = c.define(hint+"-after-"+keys[i-1], "( "+rest[i]+" )?")
		case len(rest[i]) > 200: // a long run of required properties stays linear
			rest[i] = c.define(hint+"-after-"+keys[i-1], rest[i])
		}
	}
	switch {
	case len(kvs) == 0:
		return `"{" ws "}" ws`, nil
	case !required:
		return `"{" ws ( ` + pick[0] + ` )? "}" ws`, nil
	}
	return `"{" ws ` + pick[0] + ` "}" ws`, nil
}

// mapObject compiles an object without properties: any keys, values by additionalProperties.
func (c *compiler) mapObject(n *node, ptr, hint string) (string, error) {
	ap := n.get("additionalProperties")
	switch {
	case ap == nil || ap.kind == 't' && ap.yes:
		return c.use("object"), nil
	case ap.kind == 't':
		return `"{" ws "}" ws`, nil
	}
	expr, err := c.schema(ap, ptr+"/additionalProperties", hint+"-value")
	if err != nil {
		return "", err
	}
	member := spaced(c.use("string"), `":" ws`, c.named(hint+"-value", expr))
	return `"{" ws ( ` + member + ` ( "," ws ` + member + ` )* )? "}" ws`, nil
}

// array compiles an array schema: the prefix items by their own schemas, the others by items.
func (c *compiler) array(n *node, ptr, hint string) (string, error) {
	defer c.consume()()
	lo, err := c.count(n, ptr, "minItems", 0)
	if err != nil {
		return "", err
	}
	hi, err := c.count(n, ptr, "maxItems", -1)
	if err != nil {
		return "", err
	}
	tupleKey, restKey := "prefixItems", "items"
	if items := n.get("items"); items != nil && items.kind == '[' { // draft 7's tuples
		if n.get("prefixItems") != nil {
			return "", c.errorf(ptr, "items as an array next to prefixItems is not supported")
		}
		tupleKey, restKey = "items", "additionalItems"
	}
	var prefix []string
	if n.get(tupleKey) != nil {
		list, err := c.schemas(n, ptr, tupleKey)
		if err != nil {
			return "", err
		}
		if len(list) > maxRepeat {
			return "", c.errorf(ptr+"/"+tupleKey, "more than %d schemas are not supported", maxRepeat)
		}
		for i, s := range list {
			if s.kind == 't' && !s.yes { // no item i, so no more items
				if hi < 0 || hi > i {
					hi = i
				}
				break
			}
			p := ptr + "/" + tupleKey + "/" + strconv.Itoa(i)
			expr, err := c.schema(s, p, hint+"-"+strconv.Itoa(i))
			if err != nil {
				return "", err
			}
			prefix = append(prefix, c.named(hint+"-"+strconv.Itoa(i), expr))
		}
	}
	rest := "" // the rule of the items past the prefix; "" when there may be none
	switch r := n.get(restKey); {
	case r == nil:
		rest = c.use("value")
	case r.kind != 't' || r.yes:
		expr, err := c.schema(r, ptr+"/"+restKey, hint+"-item")
		if err != nil {
			return "", err
		}
		rest = c.named(hint+"-item", expr)
	}
	switch {
	case hi >= 0 && hi < lo:
		return "", c.errorf(ptr, "maxItems %d is below minItems %d: nothing matches", hi, lo)
	case rest == "" && lo > len(prefix):
		return "", c.errorf(ptr, "minItems %d but no more than %d items: nothing matches", lo, len(prefix))
	case hi == 0 || rest == "" && len(prefix) == 0:
		return `"[" ws "]" ws`, nil
	}
	// tail(j): the items from j on, each after a comma; those past minItems optional.
	var tail func(j int) string
	tail = func(j int) string {
		switch {
		case hi >= 0 && j >= hi || j >= len(prefix) && rest == "":
			return ""
		case j >= len(prefix):
			return c.repeat(`( "," ws `+rest+` )`, max(0, lo-j), max(-1, hi-j))
		case j >= lo:
			return `( "," ws ` + spaced(prefix[j], tail(j+1)) + ` )?`
		}
		return spaced(`"," ws `+prefix[j], tail(j+1))
	}
	body := spaced(append(prefix, rest)[0], tail(1))
	if lo == 0 {
		body = "( " + body + " )?"
	}
	return `"[" ws ` + body + ` "]" ws`, nil
}

// str compiles a string schema.
func (c *compiler) str(n *node, ptr string) (string, error) {
	lo, err := c.count(n, ptr, "minLength", 0)
	if err != nil {
		return "", err
	}
	hi, err := c.count(n, ptr, "maxLength", -1)
	switch f, pat := n.get("format"), n.get("pattern"); {
	case err != nil:
		return "", err
	case pat != nil && pat.kind != '"':
		return "", c.errorf(ptr, "pattern must be a string, not %s", pat)
	case pat != nil && (n.get("minLength") != nil || n.get("maxLength") != nil || f != nil && formats[f.text]):
		return "", c.errorf(ptr, "pattern next to minLength, maxLength or format is not supported")
	case pat != nil:
		re, err := parseRegex(pat.text)
		if err != nil {
			return "", c.errorf(ptr, "pattern: %v", strings.TrimPrefix(err.Error(), ErrGrammar.Error()+": "))
		}
		w := newRegexWriter(re, true, c.use("char"), func(body string) string { return c.define("pattern", body) })
		expr := w.write()
		if w.err != nil {
			return "", c.errorf(ptr, "pattern: %v", strings.TrimPrefix(w.err.Error(), ErrGrammar.Error()+": "))
		}
		c.size += len(expr)
		return spaced(`"\""`, expr, `"\"" ws`), nil
	case f != nil && formats[f.text] && (n.get("minLength") != nil || n.get("maxLength") != nil):
		return "", c.errorf(ptr, "minLength or maxLength next to format %q is not supported", f.text)
	case f != nil && formats[f.text]:
		return `"\"" ` + c.use(f.text) + ` "\"" ws`, nil
	case hi >= 0 && hi < lo:
		return "", c.errorf(ptr, "maxLength %d is below minLength %d: nothing matches", hi, lo)
	case lo == 0 && hi < 0:
		return c.use("string"), nil
	}
	return spaced(`"\""`, c.repeat(c.use("char"), lo, hi), `"\"" ws`), nil
}

// count reads a keyword that holds a count (def when absent).
func (c *compiler) count(n *node, ptr, key string, def int) (int, error) {
	v := n.get(key)
	if v == nil {
		return def, nil
	}
	f, err := strconv.ParseFloat(v.text, 64) // beyond float64 (1e400) is +Inf
	if v.kind != '0' || err != nil && !math.IsInf(f, 1) || f < 0 || f != math.Trunc(f) {
		return 0, c.errorf(ptr, "%s must be a non-negative integer, not %s", key, v)
	}
	if f > maxBound {
		return 0, c.errorf(ptr, "%s %s: at most %d is supported", key, v.text, maxBound)
	}
	return int(f), nil
}

// enum compiles enum and const: their values (of the types "type" names) in compact JSON.
func (c *compiler) enum(n *node, ptr string) (string, error) {
	e, k := n.get("enum"), n.get("const")
	var values []*node
	switch {
	case e != nil && e.kind != '[':
		return "", c.errorf(ptr, "enum must be an array, not %s", e)
	case e != nil:
		values = e.vals
	default:
		values = []*node{k}
	}
	types, err := c.types(n, ptr)
	if err != nil {
		return "", err
	}
	var texts []string
	for _, v := range values {
		if (k == nil || v.compact() == k.compact()) && (types == nil || slices.ContainsFunc(types, v.is)) {
			texts = append(texts, v.compact())
		}
	}
	if len(texts) == 0 {
		return "", c.errorf(ptr, "no value of enum or const fits: nothing matches")
	}
	slices.Sort(texts)
	expr, err := c.choice(ptr, slices.Compact(texts), 0)
	return spaced(expr, "ws"), err
}

// choice writes texts (sorted, distinct, alike in their first at bytes) from byte at on as a
// trie: texts that share a prefix share its parse, so that a Matcher keeps one parse per
// character that may come next, not one per value (the strings of an enum all start with '"').
func (c *compiler) choice(ptr string, texts []string, at int) (string, error) {
	ends := len(texts[0]) == at // sorted, the text that ends here comes first
	if ends {
		texts = texts[1:]
	}
	var alts []string
	for len(texts) > 0 {
		_, size := utf8.DecodeRuneInString(texts[0][at:])
		n := 1
		for n < len(texts) && strings.HasPrefix(texts[n][at:], texts[0][at:at+size]) {
			n++
		}
		// What the group has in common is what its first and last texts have, in characters.
		first, last := texts[0], texts[n-1]
		common := at + size
		for common < len(first) && common < len(last) && first[common] == last[common] {
			common++
		}
		for common < len(first) && !utf8.RuneStart(first[common]) {
			common--
		}
		sub := ""
		if n > 1 {
			var err error
			if sub, err = c.choice(ptr, texts[:n], common); err != nil {
				return "", err
			}
		}
		if alts = append(alts, spaced(Quote(first[at:common]), sub)); len(alts) > maxChoices {
			return "", c.errorf(ptr, "more than %d values differ at one character (the grammar would be too ambiguous)", maxChoices)
		}
		texts = texts[n:]
	}
	if ends {
		return "( " + strings.Join(alts, " | ") + " )?", nil
	}
	return group(alts), nil
}

// anyOf compiles anyOf and oneOf: a choice among the subschemas.
func (c *compiler) anyOf(n *node, ptr, key, hint string) (string, error) {
	list, err := c.schemas(n, ptr, key)
	if err != nil {
		return "", err
	}
	var alts []string
	for i, s := range list {
		if s.kind == 't' && !s.yes {
			continue // matches nothing
		}
		name := hint + "-" + strconv.Itoa(i)
		expr, err := c.schema(s, ptr+"/"+key+"/"+strconv.Itoa(i), name)
		if err != nil {
			return "", err
		}
		alts = append(alts, c.named(name, expr))
	}
	if len(alts) == 0 {
		return "", c.errorf(ptr, "every schema of %s is false: nothing matches", key)
	}
	return group(alts), nil
}

// schemas reads a keyword that holds a non-empty array of schemas.
func (c *compiler) schemas(n *node, ptr, key string) ([]*node, error) {
	v := n.get(key)
	if v.kind != '[' || len(v.vals) == 0 {
		return nil, c.errorf(ptr, "%s must be a non-empty array of schemas, not %s", key, v)
	}
	return v.vals, nil
}

// ref compiles a $ref: the rule of its target, compiled on first use.
func (c *compiler) ref(v *node, ptr string) (string, error) {
	if v.kind != '"' {
		return "", c.errorf(ptr, "$ref must be a string, not %s", v)
	}
	target, n, err := c.resolve(v.text, ptr)
	if err != nil {
		return "", err
	}
	if top := len(c.open) - 1; top >= c.guard {
		c.edges[c.open[top]] = append(c.edges[c.open[top]], target)
	}
	if name, ok := c.refs[target]; ok {
		return name, nil
	}
	name := c.unique(target[strings.LastIndexByte(target, '/')+1:])
	c.refs[target], c.order = name, append(c.order, target)
	slot := len(c.rules)
	c.rules = append(c.rules, "")
	c.open = append(c.open, target)
	expr, err := c.schema(n, target, name)
	c.open = c.open[:len(c.open)-1]
	c.rules[slot] = name + " ::= " + expr
	c.size += len(c.rules[slot])
	return name, err
}

// resolve finds the node a $ref points to, and its JSON pointer written canonically.
func (c *compiler) resolve(ref, ptr string) (string, *node, error) {
	frag, ok := strings.CutPrefix(ref, "#")
	if !ok {
		return "", nil, c.errorf(ptr, "$ref %q: only references within the schema (#/...) are supported", ref)
	}
	frag, err := url.PathUnescape(frag)
	if err != nil || frag != "" && frag[0] != '/' {
		return "", nil, c.errorf(ptr, "$ref %q: not a JSON pointer (#/$defs/Name)", ref)
	}
	n, target := c.doc, ""
	for _, tok := range strings.Split(frag, "/")[1:] {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		if i, err := strconv.Atoi(tok); n.kind == '[' && err == nil && i >= 0 && i < len(n.vals) && tok == strconv.Itoa(i) {
			n = n.vals[i]
		} else if n = n.get(tok); n == nil {
			return "", nil, c.errorf(ptr, "$ref %q points to nothing", ref)
		}
		target += "/" + pointerToken(tok)
	}
	return target, n, nil
}

// cycles refuses a loop of references made before any character: an endless recursion.
func (c *compiler) cycles() error {
	state := map[string]int{} // 1 on the path, 2 done
	var path []string
	var visit func(t string) error
	visit = func(t string) error {
		state[t], path = 1, append(path, t)
		for _, u := range c.edges[t] {
			if state[u] == 1 {
				loop := append(slices.Clone(path[slices.Index(path, u):]), u)
				return c.errorf(u, "$ref cycle #%s: the schema refers to itself before any value starts", strings.Join(loop, " → #"))
			}
			if state[u] == 0 {
				if err := visit(u); err != nil {
					return err
				}
			}
		}
		state[t], path = 2, path[:len(path)-1]
		return nil
	}
	for _, t := range c.order {
		if state[t] == 0 {
			if err := visit(t); err != nil {
				return err
			}
		}
	}
	return nil
}

// consume notes that an object or array begins: what it refers to comes after a character.
// It returns what restores the guard at its end.
func (c *compiler) consume() func() {
	saved := c.guard
	c.guard = len(c.open)
	return func() { c.guard = saved }
}

// repeat writes x{lo,hi} (hi < 0: no bound) for an element x. Parse takes bounds up to
// maxRepeat; larger ones are made of blocks B = ( x{1000} ): x{2500} is B{2} x{500}, and
// x{0,2500} is ( B{0,1} x{0,999} | B{2} x{0,500} ).
func (c *compiler) repeat(x string, lo, hi int) string {
	block := func() string { return "( " + c.rep(x, maxRepeat, maxRepeat) + " )" }
	out := c.rep(x, lo%maxRepeat, lo%maxRepeat)
	if lo >= maxRepeat {
		out = spaced(c.rep(block(), lo/maxRepeat, lo/maxRepeat), out)
	}
	switch n := hi - lo; {
	case hi < 0:
		return spaced(out, x+"*")
	case n > maxRepeat:
		q, r := n/maxRepeat, n%maxRepeat
		short := spaced(c.rep(block(), 0, q-1), c.rep(x, 0, maxRepeat-1))
		long := spaced(c.rep(block(), q, q), c.rep(x, 0, r))
		return spaced(out, "( "+short+" | "+long+" )")
	default:
		return spaced(out, c.rep(x, 0, n))
	}
}

// rep writes x{lo,hi} for bounds Parse takes, counting the copies Parse will make.
func (c *compiler) rep(x string, lo, hi int) string {
	c.size += 8 * hi
	switch {
	case hi == 0:
		return ""
	case lo == 1 && hi == 1:
		return x
	case lo == hi:
		return fmt.Sprintf("%s{%d}", x, lo)
	}
	return fmt.Sprintf("%s{%d,%d}", x, lo, hi)
}

// named returns a rule for expr: expr itself when it is a rule's name, else a new rule.
func (c *compiler) named(hint, expr string) string {
	if strings.IndexFunc(expr, func(r rune) bool { return r >= utf8.RuneSelf || !isNameByte(byte(r)) }) < 0 {
		return expr
	}
	return c.define(hint, expr)
}

func (c *compiler) define(hint, body string) string {
	name := c.unique(hint)
	c.rules = append(c.rules, name+" ::= "+body)
	c.size += len(name) + len(body)
	return name
}

// unique makes a rule name of hint: its letters and digits, '-' between words, the last 40
// bytes, numbered when taken. It never holds '_', which Parse's own rules do.
func (c *compiler) unique(hint string) string {
	words := strings.FieldsFunc(hint, func(r rune) bool {
		return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9')
	})
	base := strings.Join(words, "-")
	if len(base) > 40 {
		base = strings.TrimLeft(base[len(base)-40:], "-")
	}
	if base == "" {
		base = "x"
	}
	name := base
	for c.taken[name] { // numbered from where the last name made of base left off
		c.next[base]++
		name = base + "-" + strconv.Itoa(c.next[base]+1)
	}
	c.taken[name] = true
	return name
}

// use notes that a builtin rule, and those it refers to, must be written out.
func (c *compiler) use(name string) string {
	if !c.used[name] {
		c.used[name] = true
		for _, b := range builtinRules {
			if b.name == name {
				for _, d := range strings.Fields(b.deps) {
					c.use(d)
				}
			}
		}
	}
	return name
}

// source writes the rules out: root, the schema's rules, the builtins used.
func (c *compiler) source() string {
	c.use("ws")
	var b strings.Builder
	for _, r := range c.rules {
		b.WriteString(r + "\n")
	}
	for _, r := range builtinRules {
		if c.used[r.name] {
			b.WriteString(r.name + " ::= " + r.body + "\n")
		}
	}
	return b.String()
}
