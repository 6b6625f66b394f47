package engine_test

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/sample"
	"github.com/llamacu/llamacu/tp"
)

// An engine whose TP 4 model spans two nodes (goroutines here, TCP between them): the scheduler
// on node 0 batches several requests — prefill chunks and decodes of different sequences in one
// step, States made and dropped — and every answer equals TP 1's. Node 1 loads no tokenizer,
// and its Follow returns nil when node 0's engine closes.
func TestSchedulerAcrossNodes(t *testing.T) {
	dir := shared(t, "stories260K")
	opts := engine.Options{ModelPath: filepath.Join(dir, "stories260K.bin"), TokenizerPath: filepath.Join(dir, "tok512.bin")}
	prompts := []string{"Once upon a time", "The cat", "Lily and Ben went to the park. They saw a big", ""}
	want := make([]string, len(prompts))
	for i, p := range prompts {
		want[i] = generate(t, opts, p, 30)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	engines := make([]*engine.Engine, 2)
	errs := make([]error, 2)
	followed := make(chan error, 1)
	var loaded sync.WaitGroup
	for k := range 2 {
		loaded.Add(1)
		go func() {
			c := tp.TCPConfig{RendezvousConfig: tp.RendezvousConfig{Addr: ln.Addr().String(), Nodes: 2, NodeRank: k, Timeout: 10 * time.Second}, Size: 4}
			if k == 0 {
				c.Listener = ln
			}
			node, err := tp.JoinTCP(context.Background(), c)
			if err != nil {
				errs[k] = err
				loaded.Done()
				return
			}
			o := opts
			o.Backends = []model.Backend{cpu.New(cpu.Options{Threads: 1}), cpu.New(cpu.Options{Threads: 1})}
			o.Comms, o.Link, o.CloseBackend = node.Comms(), node, true
			engines[k], errs[k] = engine.Load(o)
			loaded.Done()
			if k == 1 && errs[k] == nil {
				followed <- engines[k].Model.Follow(context.Background())
				engines[k].Close()
			}
		}()
	}
	loaded.Wait()
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	require.Nil(t, engines[1].Tokenizer, "node 1 never tokenises")
	require.Equal(t, 4, engines[0].Model.TP())

	// One Generate first (a State of its own, dropped after), then the scheduler.
	var sb []byte
	_, err = engines[0].Generate(context.Background(), engine.Request{Prompt: prompts[0], MaxTokens: 30},
		func(_ int32, s string) error { sb = append(sb, s...); return nil })
	require.NoError(t, err)
	require.Equal(t, want[0], string(sb))

	sched, err := engine.NewScheduler(engines[0], engine.SchedulerOptions{MaxSeqs: 3, MaxBatchTokens: 8})
	require.NoError(t, err)
	streams := make([]*engine.Stream, len(prompts))
	for i, p := range prompts {
		streams[i], err = sched.Submit(context.Background(), engine.Request{Prompt: p, MaxTokens: 30, Sampling: sample.Params{Temperature: 0}})
		require.NoError(t, err)
	}
	for i, s := range streams {
		text, ev := s.Collect()
		require.NoError(t, ev.Err)
		require.Equal(t, want[i], text, "request %d (%q)", i, prompts[i])
	}
	require.NoError(t, sched.Close(context.Background()))
	require.NoError(t, engines[0].Close())
	select {
	case err := <-followed:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("node 1 still following after node 0 closed")
	}
}
