package engine_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/engine"
)

// A request that arrives while the loop is busy in a step, with a sequence slot free, is not
// "queued" beyond the running batch: MaxQueue counts only the requests beyond the free slots.
// (MaxQueue < 0 refuses a request only when no slot is free for it.)
func TestSchedulerQueueCountsFreeSlots(t *testing.T) {
	e, g := loadStories(t, 0)
	for _, tc := range []struct {
		maxSeqs, maxQueue int
		accepted          int // requests accepted while one runs, held in its step
	}{
		{3, -1, 2},
		{3, 1, 3},
		{2, 2, 3},
		{1, 2, 2},
		{1, -1, 0},
	} {
		t.Run(fmt.Sprintf("seqs%d-queue%d", tc.maxSeqs, tc.maxQueue), func(t *testing.T) {
			s, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: tc.maxSeqs, MaxQueue: tc.maxQueue})
			require.NoError(t, err)
			defer s.Close(context.Background())
			g.Lock()
			first, err := s.Submit(context.Background(), engine.Request{Prompt: "A", MaxTokens: 3})
			require.NoError(t, err)
			require.Eventually(t, func() bool { return s.Stats().Running == 1 }, 5*time.Second, time.Millisecond)
			streams := []*engine.Stream{first}
			for i := 0; i < tc.accepted; i++ {
				st, err := s.Submit(context.Background(), engine.Request{Prompt: "B", MaxTokens: 3})
				if !assertNoError(t, err) {
					break
				}
				streams = append(streams, st)
			}
			_, err = s.Submit(context.Background(), engine.Request{Prompt: "C", MaxTokens: 3})
			g.Unlock()
			require.ErrorIs(t, err, engine.ErrQueueFull)
			for _, st := range streams {
				_, _, final := collect(t, st)
				require.NoError(t, final.Err)
			}
			waitIdle(t, s)
		})
	}
}
