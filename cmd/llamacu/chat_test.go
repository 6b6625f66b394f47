package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/chat"
	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/sample"
)

// withStdin runs the chat command with the given stdin text.
func withStdin(tb testing.TB, in io.Reader, args ...string) (string, string, int) {
	tb.Helper()
	old := stdin
	stdin = in
	defer func() { stdin = old }()
	return cli(tb, append([]string{"chat"}, args...)...)
}

// chatRef computes the answers the chat command must print, independently of its session code:
// chat.Encode of the conversation so far, greedy engine.Generate, the answer's leading word-start
// space dropped.
type chatRef struct {
	tb        testing.TB
	e         *engine.Engine
	maxTokens int
}

func newChatRef(tb testing.TB, modelPath string, ctx, maxTokens int) *chatRef {
	e, err := engine.Load(engine.Options{ModelPath: modelPath, Context: ctx, Threads: 1})
	require.NoError(tb, err)
	tb.Cleanup(func() { e.Close() })
	return &chatRef{tb, e, maxTokens}
}

func (r *chatRef) answer(msgs []chat.Message) string {
	ids, err := chat.Encode(r.e.Tokenizer, msgs)
	require.NoError(r.tb, err)
	var b strings.Builder
	_, err = r.e.Generate(context.Background(), engine.Request{PromptIDs: ids, MaxTokens: r.maxTokens, Sampling: sample.Params{}},
		func(_ int32, text string) error { b.WriteString(text); return nil })
	require.NoError(r.tb, err)
	return strings.TrimPrefix(b.String(), " ")
}

func user(s string) chat.Message      { return chat.Message{Role: chat.User, Content: s} }
func assistant(s string) chat.Message { return chat.Message{Role: chat.Assistant, Content: s} }

// stories260K is not a chat model: these tests check the mechanics (turns, history, /reset,
// /exit, EOF), with greedy answers that must equal engine.Generate on the chat prompt ids.
func TestChatStories260K(t *testing.T) {
	m := shared(t, "stories260K/stories260K.gguf")
	const maxTokens = 24
	ref := newChatRef(t, m, 512, maxTokens)
	args := []string{"--model", m, "--temperature", "0", "--max-tokens", "24", "--ctx", "512"}
	const u1, u2 = "Hello there", "Tell me a story about a cat"
	a1 := ref.answer([]chat.Message{user(u1)})
	a2 := ref.answer([]chat.Message{user(u1), assistant(a1), user(u2)})
	fresh2 := ref.answer([]chat.Message{user(u2)})
	require.NotEmpty(t, a1)
	require.NotEqual(t, a2, fresh2, "test needs an answer that depends on the history")
	sys := "You are a storyteller."
	s1 := ref.answer([]chat.Message{{Role: chat.System, Content: sys}, user(u1)})
	s2 := ref.answer([]chat.Message{{Role: chat.System, Content: sys}, user(u1), assistant(s1), user(u2)})

	cases := []struct {
		name, in string
		extra    []string
		want     string
		stderr   string
	}{
		{"two turns keep history", u1 + "\n" + u2 + "\n", nil, a1 + "\n\n" + a2 + "\n\n", ""},
		{"blank lines are skipped", "\n" + u1 + "\n  \n" + u2 + "\n", nil, a1 + "\n\n" + a2 + "\n\n", ""},
		{"reset", u1 + "\n/reset\n" + u2 + "\n", nil, a1 + "\n\n" + fresh2 + "\n\n", "(history cleared)"},
		{"exit", u1 + "\n/exit\n" + u2 + "\n", nil, a1 + "\n\n", ""},
		{"EOF without newline", u1, nil, a1 + "\n\n", ""},
		{"empty input", "", nil, "", ""},
		{"system prompt", u1 + "\n" + u2 + "\n", []string{"--system", sys}, s1 + "\n\n" + s2 + "\n\n", ""},
		{"reset keeps system prompt", u1 + "\n/reset\n" + u1 + "\n", []string{"--system", sys}, s1 + "\n\n" + s1 + "\n\n", ""},
		{"special tags refused", "[INST] hi\n" + u1 + "\n", nil, a1 + "\n\n", "special tags"},
		{"speculative decoding changes nothing", u1 + "\n" + u2 + "\n", []string{"--draft", "4"}, a1 + "\n\n" + a2 + "\n\n", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := withStdin(t, strings.NewReader(tc.in), append(args, tc.extra...)...)
			require.Equal(t, 0, code, "stderr: %s", errOut)
			require.Equal(t, tc.want, out)
			require.Contains(t, errOut, "> ")
			require.Contains(t, errOut, tc.stderr)
		})
	}
}

// The second turn reads the first from the prefix cache (--stats says how much): at least the
// first turn's prompt in whole 16-token blocks, and the answer is still Generate's.
func TestChatReusesKV(t *testing.T) {
	m := shared(t, "stories260K/stories260K.gguf")
	ref := newChatRef(t, m, 512, 24)
	sys := "You are a storyteller who tells stories about cats and dogs."
	const u1, u2 = "Hello there", "Tell me a story about a cat"
	s1 := ref.answer([]chat.Message{{Role: chat.System, Content: sys}, user(u1)})
	s2 := ref.answer([]chat.Message{{Role: chat.System, Content: sys}, user(u1), assistant(s1), user(u2)})
	out, errOut, code := withStdin(t, strings.NewReader(u1+"\n"+u2+"\n"),
		"--model", m, "--temperature", "0", "--max-tokens", "24", "--ctx", "512", "--system", sys, "--stats")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, s1+"\n\n"+s2+"\n\n", out)
	var cached []int
	for _, line := range strings.Split(errOut, "\n") {
		if i := strings.Index(line, " of them cached"); i >= 0 {
			f := strings.Fields(line[:i])
			n, err := strconv.Atoi(f[len(f)-1])
			require.NoError(t, err)
			cached = append(cached, n)
		}
	}
	require.Len(t, cached, 2, errOut)
	first, err := chat.Encode(ref.e.Tokenizer, []chat.Message{{Role: chat.System, Content: sys}, user(u1)})
	require.NoError(t, err)
	require.Zero(t, cached[0])
	require.GreaterOrEqual(t, cached[1], (len(first)-1)/16*16)
	require.Positive(t, cached[1])
}

// A long conversation in a small context drops its oldest turns, keeps the system prompt and
// goes on answering; each answer equals Generate on what chat.Fit keeps.
func TestChatDropsOldTurns(t *testing.T) {
	m := shared(t, "stories260K/stories260K.gguf")
	const ctx, maxTokens = 160, 16
	ref := newChatRef(t, m, ctx, maxTokens)
	sys := chat.Message{Role: chat.System, Content: "Be brief."}
	lines := []string{"Hi", "Where is the cat?", "Is it big?", "What does it eat?", "Who is Tom?", "Bye"}
	history := []chat.Message{sys}
	var want strings.Builder
	for _, l := range lines {
		kept, _, err := chat.Fit(ref.e.Tokenizer, append(history, user(l)), ctx-maxTokens)
		require.NoError(t, err)
		a := ref.answer(kept)
		want.WriteString(a + "\n\n")
		history = append(kept, assistant(a))
	}
	require.Less(t, len(history), 2*len(lines)+1, "the test must overflow the context")
	out, errOut, code := withStdin(t, strings.NewReader(strings.Join(lines, "\n")),
		"--model", m, "--temperature", "0", "--max-tokens", "16", "--ctx", "160", "--system", sys.Content)
	require.Equal(t, 0, code, "stderr: %s", errOut)
	require.Equal(t, want.String(), out)
	require.Contains(t, errOut, "dropped the")
}

// interruptWriter sends Ctrl-C on the first write of an answer and gives the session time to see it.
type interruptWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	intr chan<- os.Signal
	sent bool
}

func (w *interruptWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.sent && len(p) > 0 {
		w.sent = true
		w.intr <- os.Interrupt
		time.Sleep(50 * time.Millisecond)
	}
	return w.buf.Write(p)
}

// Ctrl-C during an answer stops that answer only; Ctrl-C at the prompt quits.
func TestChatInterrupt(t *testing.T) {
	m := shared(t, "stories260K/stories260K.gguf")
	old := notifyInterrupt
	defer func() { notifyInterrupt = old }()

	ref := newChatRef(t, m, 512, 200)
	full := ref.answer([]chat.Message{user("Hello there")})
	require.Greater(t, len(full), 40)

	t.Run("during an answer", func(t *testing.T) {
		oldIn := stdin
		stdin = strings.NewReader("Hello there\nAgain\n")
		defer func() { stdin = oldIn }()
		w := &interruptWriter{}
		var errb bytes.Buffer
		// The session creates the interrupt channel; the writer gets it when it does.
		notifyInterrupt = func(c chan<- os.Signal) func() { w.intr = c; return func() {} }
		code := Main([]string{"chat", "--model", m, "--temperature", "0", "--max-tokens", "200", "--ctx", "512"}, w, &errb)
		require.Equal(t, 0, code, errb.String())
		require.Equal(t, 1, strings.Count(errb.String(), "(answer interrupted)"), errb.String())
		parts := strings.Split(w.buf.String(), "\n\n")
		require.GreaterOrEqual(t, len(parts), 3, "two answers expected: %q", w.buf.String())
		require.Less(t, len(parts[0]), len(full), "the first answer was not cut short")
		require.True(t, strings.HasPrefix(full, parts[0]))
	})

	t.Run("at the prompt", func(t *testing.T) {
		pr, pw := io.Pipe() // a stdin that never delivers a line
		defer pw.Close()
		oldIn := stdin
		stdin = pr
		defer func() { stdin = oldIn }()
		ready := make(chan chan<- os.Signal, 1)
		notifyInterrupt = func(c chan<- os.Signal) func() { ready <- c; return func() {} }
		go func() { c := <-ready; c <- os.Interrupt }()
		_, errOut, code := cli(t, "chat", "--model", m, "--temperature", "0")
		require.Equal(t, 0, code, errOut)
	})
}

func TestChatUsageErrors(t *testing.T) {
	m := shared(t, "stories260K/stories260K.gguf")
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"positional", []string{"--model", m, "hello"}, "no arguments"},
		{"max-tokens 0", []string{"--model", m, "--max-tokens", "0"}, "--max-tokens"},
		{"no room for the prompt", []string{"--model", m, "--ctx", "64", "--max-tokens", "64"}, "no room"},
		{"bad system", []string{"--model", m, "--system", "<<SYS>>"}, "special tags"},
		{"bad temperature", []string{"--model", m, "--temperature", "-1"}, "emperature"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := withStdin(t, strings.NewReader("hi\n"), tc.args...)
			require.Equal(t, 2, code, errOut)
			require.Contains(t, errOut, tc.want)
		})
	}
}
