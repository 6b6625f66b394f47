// Package chat builds Llama 2 chat prompts exactly as Meta's reference code does
// (llama/generation.py, Llama.chat_completion) and fits long conversations into a context.
//
// A conversation is an optional system message, then user and assistant messages alternating,
// ending with a user message. The system message is folded into the first user message as
// BSys + system + ESys + user. Each completed (user, assistant) turn is encoded on its own as
//
//	BOS  encode("[INST] " + strip(user) + " [/INST] " + strip(answer) + " ")  EOS
//
// and the final user message as
//
//	BOS  encode("[INST] " + strip(user) + " [/INST]")
//
// where strip is Python's str.strip() and encode is SentencePiece encoding without special
// tokens, so every segment gets its own dummy-prefix space. BOS and EOS are ids, never text.
//
// Messages that contain the tags "[INST]", "[/INST]", "<<SYS>>" or "<</SYS>>" are refused with
// ErrUnsafe (Meta's reference replaces the answer to such a dialog with an error; refusing is the
// same policy, earlier). The literal strings "<s>" and "</s>" are allowed: the tokenizer encodes
// them as ordinary text, not as BOS/EOS, so they cannot forge a turn boundary, and refusing them
// would reject harmless text such as HTML strikethrough. A Tokenizer used here must therefore
// never parse special tokens out of text (the project's tokenizer does not).
package chat

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// Role is who wrote a message.
type Role string

// The roles of Meta's Llama 2 chat format.
const (
	System    Role = "system"
	User      Role = "user"
	Assistant Role = "assistant"
)

// Message is one message of a conversation.
type Message struct {
	Role    Role   `json:"role"`
	Content string `json:"content"`
}

// Tokenizer is what chat needs of a SentencePiece tokenizer; *tokenizer.Tokenizer satisfies it.
// Encode must treat its text literally ("<s>" is three characters, not BOS) and add
// SentencePiece's dummy prefix to non-empty text.
type Tokenizer interface {
	Encode(text string, addBOS bool) []int32
	BOS() int32
	EOS() int32
}

// The tags of the Llama 2 chat format, as Meta's generation.py spells them.
const (
	BInst = "[INST]"
	EInst = "[/INST]"
	BSys  = "<<SYS>>\n"
	ESys  = "\n<</SYS>>\n\n"
)

// specialTags are the substrings Meta's reference calls unsafe in a message.
var specialTags = []string{BInst, EInst, "<<SYS>>", "<</SYS>>"}

// Sentinel errors; the functions return errors wrapping one of these.
var (
	// ErrUnsafe: a message contains one of the chat format's tags.
	ErrUnsafe = errors.New("chat: special tags are not allowed in a message")
	// ErrOrder: the conversation is empty, a system message is not first, a role is unknown,
	// user and assistant do not alternate, or the last message is not from the user.
	ErrOrder = errors.New("chat: invalid conversation")
	// ErrTooLong: even the system prompt and the last user message exceed the token budget.
	ErrTooLong = errors.New("chat: conversation does not fit")
	// ErrTokenizer: the tokenizer has no BOS or EOS id.
	ErrTokenizer = errors.New("chat: tokenizer lacks BOS or EOS")
)

// Validate checks a conversation: non-empty, an optional system message first, then user and
// assistant alternating from user, the last message from the user, and no special tags.
func Validate(msgs []Message) error {
	if len(msgs) == 0 {
		return fmt.Errorf("%w: no messages", ErrOrder)
	}
	for i, m := range msgs {
		for _, tag := range specialTags {
			if strings.Contains(m.Content, tag) {
				return fmt.Errorf("%w: message %d (%s) contains %q", ErrUnsafe, i, m.Role, tag)
			}
		}
	}
	start := 0
	if msgs[0].Role == System {
		start = 1
		if len(msgs) == 1 {
			return fmt.Errorf("%w: a system message needs a user message after it", ErrOrder)
		}
	}
	for i := start; i < len(msgs); i++ {
		want := User
		if (i-start)%2 == 1 {
			want = Assistant
		}
		switch r := msgs[i].Role; {
		case r == want:
		case r == System:
			return fmt.Errorf("%w: message %d: a system message may only come first", ErrOrder, i)
		case r != User && r != Assistant:
			return fmt.Errorf("%w: message %d: unknown role %q (want system, user or assistant)", ErrOrder, i, r)
		default:
			return fmt.Errorf("%w: message %d is from %s, want %s (user and assistant alternate, starting with user)", ErrOrder, i, r, want)
		}
	}
	if last := msgs[len(msgs)-1].Role; last != User {
		return fmt.Errorf("%w: the last message must be from the user, got %s", ErrOrder, last)
	}
	return nil
}

// Encode returns the prompt ids of a conversation in the Llama 2 chat format: the model's
// answer to the last user message follows them.
func Encode(tok Tokenizer, msgs []Message) ([]int32, error) {
	if err := Validate(msgs); err != nil {
		return nil, err
	}
	if tok.BOS() < 0 || tok.EOS() < 0 {
		return nil, ErrTokenizer
	}
	sys, rest := split(msgs)
	var ids []int32
	for i := 0; i+1 < len(rest); i += 2 {
		ids = appendTurn(tok, ids, sys, i == 0, rest[i].Content, rest[i+1].Content)
	}
	return appendLast(tok, ids, sys, len(rest) == 1, rest[len(rest)-1].Content), nil
}

// Fit encodes the conversation and, when it is longer than budget tokens (the context less the
// room kept for the answer), drops the oldest (user, assistant) turns until it fits. The system
// message is always kept, folded into the first remaining user message, and so is the last user
// message: a system prompt holds however long the conversation grows. Fit returns the messages
// kept (the original messages, system first, in order) and their ids. When the system prompt and
// the last user message alone exceed budget, the error wraps ErrTooLong.
func Fit(tok Tokenizer, msgs []Message, budget int) ([]Message, []int32, error) {
	if err := Validate(msgs); err != nil {
		return nil, nil, err
	}
	if tok.BOS() < 0 || tok.EOS() < 0 {
		return nil, nil, ErrTokenizer
	}
	sys, rest := split(msgs)
	pairs := len(rest) / 2
	last := rest[len(rest)-1].Content

	// Turns after the first remaining one do not depend on the system prompt, so each is encoded
	// once; only the first remaining turn is re-encoded with the system prompt folded in.
	turns := make([][]int32, pairs) // (pairs) ids of turn i without the system prompt
	for i := range turns {
		turns[i] = appendTurn(tok, nil, nil, false, rest[2*i].Content, rest[2*i+1].Content)
	}
	suffix := make([]int, pairs+1) // suffix[k]: tokens of turns k.. without the system prompt
	for i := pairs - 1; i >= 0; i-- {
		suffix[i] = suffix[i+1] + len(turns[i])
	}
	lastPlain := len(appendLast(tok, nil, nil, false, last))
	// size is the prompt length with the k oldest turns dropped, and its first segment.
	size := func(k int) (first []int32, n int) {
		if k < pairs {
			first = appendTurn(tok, nil, sys, true, rest[2*k].Content, rest[2*k+1].Content)
			return first, len(first) + suffix[k+1] + lastPlain
		}
		first = appendLast(tok, nil, sys, true, last)
		return first, len(first)
	}
	// The turns after the first remaining one, and the last message, must fit beside a first
	// segment of at least BOS and EOS: the k that fail this cannot fit, whatever the system prompt.
	lo := 0
	for lo < pairs && 2+suffix[lo+1]+lastPlain > budget {
		lo++
	}
	// Each k costs an encoding of the system prompt. Up to linearScan candidates are tried in
	// order; beyond that (a long conversation whose turns are all tiny, say, in a 1 MiB request)
	// the smallest k that fits is found by bisection, which assumes that dropping one more turn
	// never lengthens the prompt: true but for a token or two at the system prompt's join, far
	// less than the ≥ 10 tokens (BOS, EOS, the [INST] tags) a turn takes.
	const linearScan = 16
	fits := func(k int) bool { _, n := size(k); return n <= budget }
	k := -1
	if pairs-lo+1 <= linearScan {
		for kk := lo; kk <= pairs; kk++ {
			if fits(kk) {
				k = kk
				break
			}
		}
	} else if fits(pairs) {
		l, h := lo, pairs // fits(h)
		for l < h {
			if mid := l + (h-l)/2; fits(mid) {
				h = mid
			} else {
				l = mid + 1
			}
		}
		k = h
	}
	if k >= 0 {
		first, n := size(k)
		ids := make([]int32, 0, n)
		ids = append(ids, first...)
		for i := k + 1; i < pairs; i++ {
			ids = append(ids, turns[i]...)
		}
		if k < pairs {
			ids = appendLast(tok, ids, nil, false, last)
		}
		kept := make([]Message, 0, len(msgs)-2*k)
		if sys != nil {
			kept = append(kept, msgs[0])
		}
		kept = append(kept, rest[2*k:]...)
		return kept, ids, nil
	}
	what := "the last message"
	if sys != nil {
		what = "the system prompt and the last message"
	}
	n := len(appendLast(tok, nil, sys, true, last))
	return nil, nil, fmt.Errorf("%w: %s need %d tokens, the budget is %d", ErrTooLong, what, n, budget)
}

// split returns the system prompt (nil when there is none) and the other messages.
func split(msgs []Message) (*string, []Message) {
	if msgs[0].Role == System {
		return &msgs[0].Content, msgs[1:]
	}
	return nil, msgs
}

// userText is the user's content, with the system prompt folded in when first is set.
func userText(sys *string, first bool, user string) string {
	if sys != nil && first {
		return BSys + *sys + ESys + user
	}
	return user
}

// appendTurn appends BOS, the encoded completed turn and EOS.
func appendTurn(tok Tokenizer, ids []int32, sys *string, first bool, user, answer string) []int32 {
	text := BInst + " " + pyStrip(userText(sys, first, user)) + " " + EInst + " " + pyStrip(answer) + " "
	ids = append(ids, tok.BOS())
	ids = append(ids, tok.Encode(text, false)...)
	return append(ids, tok.EOS())
}

// appendLast appends BOS and the encoded final user message.
func appendLast(tok Tokenizer, ids []int32, sys *string, first bool, user string) []int32 {
	text := BInst + " " + pyStrip(userText(sys, first, user)) + " " + EInst
	ids = append(ids, tok.BOS())
	return append(ids, tok.Encode(text, false)...)
}

// pyStrip is Python's str.strip(): it removes leading and trailing characters for which
// str.isspace() is true, which are unicode.IsSpace's and the separators U+001C..U+001F.
func pyStrip(s string) string {
	return strings.TrimFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f)
	})
}
