package chat_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/chat"
)

// tinyTurns is a system prompt, pairs tiny (user, assistant) turns and a last user message.
func tinyTurns(system string, pairs int) []chat.Message {
	msgs := []chat.Message{{Role: chat.System, Content: system}}
	for i := 0; i < pairs; i++ {
		msgs = append(msgs, chat.Message{Role: chat.User, Content: "hi"}, chat.Message{Role: chat.Assistant, Content: "ok"})
	}
	return append(msgs, chat.Message{Role: chat.User, Content: "and now?"})
}

// A request near a server's 1 MiB body limit (a long system prompt and thousands of tiny turns)
// must not encode the system prompt once per turn: that took minutes.
func TestFitLongConversationIsFast(t *testing.T) {
	tok := llama2(t)
	const budget = 4096
	cases := []struct {
		name   string
		system string
		pairs  int
	}{
		{"system over budget", strings.Repeat("Be kind. ", 100<<10/9), 3000},
		{"system fits", strings.Repeat("Be kind. ", 300), 3000},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msgs := tinyTurns(tc.system, tc.pairs)
			start := time.Now()
			kept, ids, err := chat.Fit(tok, msgs, budget)
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Fit took %v", d)
			}
			enc, encErr := chat.Encode(tok, tinyTurns(tc.system, 0))
			require.NoError(t, encErr)
			if len(enc) > budget {
				require.True(t, errors.Is(err, chat.ErrTooLong), "err = %v", err)
				return
			}
			require.NoError(t, err)
			// The result is the conversation with the fewest oldest turns dropped that fits:
			// exactly Encode of the kept messages, within the budget, and one more turn would not fit.
			want, err := chat.Encode(tok, kept)
			require.NoError(t, err)
			require.Equal(t, want, ids)
			require.LessOrEqual(t, len(ids), budget)
			pairsKept := (len(kept) - 2) / 2
			require.Less(t, pairsKept, tc.pairs)
			more, err := chat.Encode(tok, tinyTurns(tc.system, pairsKept+1))
			require.NoError(t, err)
			require.Greater(t, len(more), budget)
		})
	}
}
