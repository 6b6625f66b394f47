package grammar

import "sync"

// JSONGBNF is RFC 8259 JSON in GBNF with an object at the root: what OpenAI's
// response_format {"type": "json_object"} promises. Whitespace between tokens is bounded (one
// space, or a newline and up to 20 indentation characters) so that a model cannot pad forever;
// numbers keep to 16 integer digits. Rules other than root may be reused by other grammars
// (the JSON Schema compiler does).
const JSONGBNF = `root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ( "," ws string ":" ws value )* )? "}" ws
array  ::= "[" ws ( value ( "," ws value )* )? "]" ws
string ::= "\"" char* "\"" ws
char   ::= [^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )
number ::= integer ( "." [0-9]+ )? ( [eE] [-+]? [0-9]{1,3} )? ws
integer ::= "-"? ( "0" | [1-9] [0-9]{0,15} )
ws     ::= ( " " | "\n" [ \t]{0,20} )?
`

var (
	jsonOnce sync.Once
	jsonG    *Grammar
)

// JSON returns the compiled JSONGBNF grammar (a JSON object).
func JSON() *Grammar {
	jsonOnce.Do(func() { jsonG = MustParse(JSONGBNF) })
	return jsonG
}
