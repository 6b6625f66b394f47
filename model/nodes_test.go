package model_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/loader"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tp"
)

// cluster is a multi-node group inside one test process: goroutines stand in for the nodes,
// talking TCP over 127.0.0.1.
type cluster struct {
	leader *model.Model
	models []*model.Model // by node
	nodes  []*tp.TCPNode
	follow []chan error // by node (1..): what Follow returned
}

// newCluster loads an n-way tensor-parallel model over nodes nodes. wrap, when not nil, may
// replace a follower's link (to make it misbehave).
func newCluster(tb testing.TB, cfg model.Config, src model.TensorSource, n, nodes int, timeout time.Duration, wrap func(node int, l model.StepLink) model.StepLink) *cluster {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	c := &cluster{nodes: make([]*tp.TCPNode, nodes), follow: make([]chan error, nodes)}
	models := make([]*model.Model, nodes)
	c.models = models
	errs := make([]error, nodes)
	var wg, loaded sync.WaitGroup
	for k := range nodes {
		wg.Add(1)
		loaded.Add(1)
		c.follow[k] = make(chan error, 1)
		go func() {
			defer wg.Done()
			tc := tp.TCPConfig{RendezvousConfig: tp.RendezvousConfig{Addr: ln.Addr().String(), Nodes: nodes, NodeRank: k, Fingerprint: "stories", Timeout: 10 * time.Second},
				Size: n, Timeout: timeout, StartTimeout: 10 * time.Second}
			if k == 0 {
				tc.Listener = ln
			}
			node, err := tp.JoinTCP(context.Background(), tc)
			if err != nil {
				errs[k] = err
				loaded.Done()
				return
			}
			c.nodes[k] = node
			var link model.StepLink = node
			if wrap != nil && k > 0 {
				link = wrap(k, node)
			}
			bes := make([]model.Backend, n/nodes)
			for i := range bes {
				bes[i] = cpu.New(cpu.Options{Threads: 1})
			}
			tb.Cleanup(func() {
				for _, b := range bes {
					b.Close()
				}
			})
			models[k], errs[k] = model.NewParallelNode(bes, cfg, src, node.Comms(), link, nil)
			loaded.Done()
			if k > 0 && errs[k] == nil {
				c.follow[k] <- models[k].Follow(context.Background())
				models[k].Close()
			}
		}()
	}
	loaded.Wait()
	if err := errors.Join(errs...); err != nil {
		tb.Fatal(err)
	}
	c.leader = models[0]
	tb.Cleanup(func() {
		c.leader.Close()
		wg.Wait()
	})
	return c
}

// wait returns what node k's Follow returned, failing after a while.
func (c *cluster) wait(tb testing.TB, k int) error {
	tb.Helper()
	select {
	case err := <-c.follow[k]:
		return err
	case <-time.After(20 * time.Second):
		tb.Fatalf("node %d still following", k)
		return nil
	}
}

func openStories(tb testing.TB) *loader.Model {
	tb.Helper()
	path := filepath.Join("..", "..", "shared", "testdata", "stories260K", "stories260K.bin")
	if _, err := os.Stat(path); err != nil {
		tb.Skipf("test data not found: %s", path)
	}
	f, err := loader.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	return f
}

// stories260K with its ranks split over two nodes (TCP between them): greedy decoding gives TP
// 1's tokens, logits within 1e-5 of TP 1's and bit for bit those of the same TP degree in one
// process (the TCP all-reduce adds the ranks in the in-process order). When node 0 closes, the
// other node's Follow returns nil.
func TestMultiNodeStories260K(t *testing.T) {
	f := openStories(t)
	const steps = 120
	refIDs, refLogits := greedy(t, newTP(t, f.Config, f.Tensor, 1), steps)
	for _, n := range []int{2, 4} {
		t.Run(fmt.Sprintf("tp%d", n), func(t *testing.T) {
			_, oneProc := greedy(t, newTP(t, f.Config, f.Tensor, n), steps)
			c := newCluster(t, f.Config, f.Tensor, n, 2, 10*time.Second, nil)
			if got := c.leader.TP(); got != n {
				t.Errorf("TP() = %d, want %d", got, n)
			}
			ids, logits := greedy(t, c.leader, steps)
			if fmt.Sprint(ids) != fmt.Sprint(refIDs) {
				t.Fatalf("greedy ids differ from TP 1 (-want +got):\n%v\n%v", refIDs, ids)
			}
			for i := range logits {
				for j, v := range logits[i] {
					want := float64(refLogits[i][j])
					if d := math.Abs(float64(v) - want); d > 1e-5+1e-5*math.Abs(want) {
						t.Fatalf("step %d logit %d: %g vs TP 1's %g (|Δ| %g)", i, j, v, want, d)
					}
					if math.Float32bits(v) != math.Float32bits(oneProc[i][j]) {
						t.Fatalf("step %d logit %d: %g vs %g in one process", i, j, v, oneProc[i][j])
					}
				}
			}
			c.leader.Close()
			if err := c.wait(t, 1); err != nil {
				t.Errorf("node 1: Follow: %v, want nil after node 0 closed", err)
			}
		})
	}
}

// Several sequences in one step, prefill and decode mixed, over two States: the followers make
// their own States the first time they see one and keep every sequence's KV blocks apart.
func TestMultiNodeBatches(t *testing.T) {
	f := openStories(t)
	ref := newTP(t, f.Config, f.Tensor, 1)
	c := newCluster(t, f.Config, f.Tensor, 4, 2, 10*time.Second, nil)
	for _, m := range []*model.Model{ref, c.leader} {
		if _, err := m.NewState(1, 1, 4, 4); err != nil { // a State that is never used
			t.Fatal(err)
		}
	}
	run := func(m *model.Model) [][]float32 {
		s, err := m.NewState(8, 3, 4, 16)
		if err != nil {
			t.Fatal(err)
		}
		tables := [][]int32{{0, 1, 2}, {5, 6}, {9, 10, 11, 12}}
		var out [][]float32
		for _, b := range []*model.Batch{
			{Tokens: []int32{1, 400, 30}, Pos: []int32{0, 1, 2}, Seq: []int32{0, 0, 0}, BlockTables: tables},
			{Tokens: []int32{1, 7, 8, 9, 2}, Pos: []int32{0, 1, 2, 3, 3}, Seq: []int32{2, 2, 2, 2, 0}, BlockTables: tables},
			{Tokens: []int32{1, 5, 6, 100}, Pos: []int32{0, 4, 4, 5}, Seq: []int32{1, 0, 2, 2}, BlockTables: tables},
		} {
			l, err := m.Forward(s, b, []int32{0, int32(b.Len() - 1)})
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, append([]float32(nil), l...))
		}
		return out
	}
	want, got := run(ref), run(c.leader)
	for i := range want {
		if d := maxDiff(got[i], want[i]); d > 1e-4 {
			t.Errorf("step %d: max |Δlogit| %g", i, d)
		}
	}
}

// closeAfter is a follower's link that closes its node after n steps, as a node that dies
// mid-generation.
type closeAfter struct {
	model.StepLink
	n int
}

func (l *closeAfter) Recv() ([]byte, error) {
	if l.n == 0 {
		l.StepLink.Close()
	}
	l.n--
	return l.StepLink.Recv()
}

// A node that dies mid-generation: node 0's Forward fails at once (not after the time-out) with
// an error naming that node's ranks; node 0 dying ends the others' Follow with an error naming
// node 0.
func TestMultiNodeNodeDies(t *testing.T) {
	f := openStories(t)
	t.Run("follower", func(t *testing.T) {
		c := newCluster(t, f.Config, f.Tensor, 4, 2, time.Minute, func(_ int, l model.StepLink) model.StepLink { return &closeAfter{l, 5} })
		s, err := c.leader.NewState(1, 1, 16, 4)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		var stepErr error
		for pos := 0; pos < 20 && stepErr == nil; pos++ {
			_, stepErr = c.leader.Forward(s, &model.Batch{Tokens: []int32{1}, Pos: []int32{int32(pos)}, Seq: []int32{0}, BlockTables: [][]int32{{0, 1}}}, []int32{0})
		}
		if stepErr == nil || !errors.Is(stepErr, tp.ErrClosed) || !strings.Contains(stepErr.Error(), "[2 3]") || !strings.Contains(stepErr.Error(), "node 1") {
			t.Errorf("node 0: %v, want ErrClosed naming ranks [2 3] on node 1", stepErr)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("node 0 noticed after %v", d)
		}
		if err := c.wait(t, 1); err == nil {
			t.Error("node 1: Follow returned nil")
		}
	})
	t.Run("leader", func(t *testing.T) {
		c := newCluster(t, f.Config, f.Tensor, 2, 2, time.Minute, nil)
		greedy(t, c.leader, 3)
		c.nodes[0].Close() // node 0 vanishes without stopping the group
		err := c.wait(t, 1)
		if err == nil || !errors.Is(err, tp.ErrClosed) || !strings.Contains(err.Error(), "node 0") {
			t.Errorf("node 1: Follow: %v, want ErrClosed naming node 0", err)
		}
	})
}

// Follow is for followers, Forward for node 0.
func TestMultiNodeRoles(t *testing.T) {
	f := openStories(t)
	if err := newTP(t, f.Config, f.Tensor, 2).Follow(context.Background()); !errors.Is(err, model.ErrBadConfig) {
		t.Errorf("Follow on a one-process model: %v", err)
	}
	c := newCluster(t, f.Config, f.Tensor, 2, 2, 10*time.Second, nil)
	if err := c.leader.Follow(context.Background()); !errors.Is(err, model.ErrBadConfig) {
		t.Errorf("Follow on node 0: %v", err)
	}
	s, err := c.models[1].NewState(1, 1, 16, 1)
	if err != nil {
		t.Fatal(err)
	}
	b := &model.Batch{Tokens: []int32{1}, Pos: []int32{0}, Seq: []int32{0}, BlockTables: [][]int32{{0}}}
	if _, err := c.models[1].Forward(s, b, []int32{0}); !errors.Is(err, model.ErrBadConfig) {
		t.Errorf("Forward on node 1: %v", err)
	}
}
