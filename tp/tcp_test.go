package tp

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// joinAll starts a TCP group of size ranks over nodes nodes in this process (node 0 on a port of
// its own choosing) and returns every node, node 0 first. The nodes close at the end of the test.
func joinAll(tb testing.TB, size, nodes int, timeout time.Duration) []*TCPNode {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	out := make([]*TCPNode, nodes)
	errs := make([]error, nodes)
	var wg sync.WaitGroup
	for k := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := TCPConfig{RendezvousConfig: RendezvousConfig{Addr: addr, Nodes: nodes, NodeRank: k, Fingerprint: "m", Timeout: 10 * time.Second},
				Size: size, Timeout: timeout, StartTimeout: timeout}
			if k == 0 {
				c.Listener, c.Payload = ln, []byte("payload")
			}
			out[k], errs[k] = JoinTCP(context.Background(), c)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		var wg sync.WaitGroup
		for _, n := range out {
			wg.Add(1)
			go func() { defer wg.Done(); n.Close() }()
		}
		wg.Wait()
	})
	return out
}

// commsOf lists the nodes' communicators in rank order.
func commsOf(nodes []*TCPNode) []Comm {
	var cs []Comm
	for _, n := range nodes {
		cs = append(cs, n.Comms()...)
	}
	return cs
}

// inputs are rank r's contributions: values of mixed sign and magnitude, so that adding them in
// another order would round differently.
func inputs(seed uint64, r, n int) []float32 {
	rng := rand.New(rand.NewPCG(seed, uint64(r)))
	b := make([]float32, n)
	for i := range b {
		b[i] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(7)-3)))
	}
	return b
}

// rounds runs a fixed sequence of collectives on every rank of cs and returns, by rank, every
// result concatenated.
func rounds(tb testing.TB, cs []Comm, lengths []int) [][]float32 {
	tb.Helper()
	out := make([][]float32, len(cs))
	errs := runRanks(cs, func(c Comm) error {
		for i, n := range lengths {
			buf := inputs(uint64(i), c.Rank(), n)
			if err := c.AllReduceSum(buf); err != nil {
				return err
			}
			out[c.Rank()] = append(out[c.Rank()], buf...)
			src := inputs(uint64(i+1000), c.Rank(), n%97)
			dst := make([]float32, len(cs)*len(src))
			if err := c.AllGather(dst, src); err != nil {
				return err
			}
			out[c.Rank()] = append(out[c.Rank()], dst...)
			if err := c.Barrier(); err != nil {
				return err
			}
		}
		return nil
	})
	if err := errors.Join(errs...); err != nil {
		tb.Fatal(err)
	}
	return out
}

func sameBits(a, b []float32) int {
	if len(a) != len(b) {
		return 0
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}

// The TCP group gives every rank the in-process group's results, bit for bit: same summation
// order (rank 0, 1, 2, …), whatever the ranks' placement over nodes.
func TestTCPMatchesInProcess(t *testing.T) {
	lengths := []int{1, 37, 0, 64, 4096, 300_000} // 300k floats: frames past readChunk
	for _, tc := range []struct{ size, nodes int }{{1, 1}, {2, 1}, {2, 2}, {3, 3}, {4, 1}, {4, 2}, {4, 4}} {
		t.Run(fmt.Sprintf("tp%d/nodes%d", tc.size, tc.nodes), func(t *testing.T) {
			ref, err := NewInProcess(tc.size)
			if err != nil {
				t.Fatal(err)
			}
			want := rounds(t, ref, lengths)
			nodes := joinAll(t, tc.size, tc.nodes, 10*time.Second)
			if string(nodes[tc.nodes-1].Payload()) != "payload" {
				t.Errorf("payload %q", nodes[tc.nodes-1].Payload())
			}
			got := rounds(t, commsOf(nodes), lengths)
			for r := range got {
				if i := sameBits(got[r], want[r]); i >= 0 {
					t.Fatalf("rank %d differs from the in-process group at element %d of %d (-want +got): %v %v",
						r, i, len(want[r]), want[r][max(i, 0)], got[r][min(max(i, 0), len(got[r])-1)])
				}
			}
		})
	}
}

// A rank that never calls the collective: rank 0 gives up after the time-out naming it, and the
// other ranks, here and on the other node, fail with the reason.
func TestTCPTimeoutNamesMissingRank(t *testing.T) {
	nodes := joinAll(t, 4, 2, 300*time.Millisecond)
	cs := commsOf(nodes)
	start := time.Now()
	errs := runRanks(cs[:3], func(c Comm) error { return c.AllReduceSum(make([]float32, 8)) }) // rank 3 never comes
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
	var re *RankError
	if !errors.As(errs[0], &re) || !slices.Equal(re.Missing, []int{3}) || !errors.Is(errs[0], ErrTimeout) {
		t.Errorf("rank 0: %v, want a time-out naming rank 3", errs[0])
	}
	for r := 1; r < 3; r++ {
		if errs[r] == nil || !strings.Contains(errs[r].Error(), "[3]") {
			t.Errorf("rank %d: %v, want the error naming rank 3", r, errs[r])
		}
	}
	// The group stays broken.
	if err := cs[0].Barrier(); err == nil {
		t.Error("barrier after a time-out succeeded")
	}
	select {
	case <-nodes[1].Done():
		if nodes[1].Err() == nil {
			t.Error("node 1 Done without Err")
		}
	case <-time.After(5 * time.Second):
		t.Error("node 1 never learnt that the group broke")
	}
}

// Sync names the ranks of a node that never finished loading.
func TestTCPSyncTimeout(t *testing.T) {
	nodes := joinAll(t, 2, 2, 200*time.Millisecond)
	err := nodes[0].Sync() // node 1 never syncs
	var re *RankError
	if !errors.As(err, &re) || !slices.Equal(re.Missing, []int{1}) || !errors.Is(err, ErrTimeout) {
		t.Errorf("Sync: %v, want a time-out naming rank 1", err)
	}
}

// A node that leaves: collectives waiting for it fail with ErrClosed naming its ranks, at once
// (not after the time-out); node 0 leaving does the same to the others.
func TestTCPPeerCloses(t *testing.T) {
	for _, tc := range []struct {
		name    string
		closing int // node that leaves
		missing []int
		want    string
	}{
		{"node 1 leaves", 1, []int{2, 3}, "node 1"},
		{"node 0 leaves", 0, nil, "node 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := joinAll(t, 4, 2, time.Minute)
			stay := nodes[1-tc.closing]
			go func() {
				time.Sleep(50 * time.Millisecond)
				nodes[tc.closing].Close()
			}()
			start := time.Now()
			errs := runRanks(stay.Comms(), func(c Comm) error { return c.AllReduceSum(make([]float32, 4)) })
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %v", d)
			}
			for i, err := range errs {
				if !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("rank %d: %v, want ErrClosed naming %s", stay.First()+i, err, tc.want)
				}
				var re *RankError
				if tc.missing != nil && i == 0 && (!errors.As(err, &re) || !slices.Equal(re.Missing, tc.missing)) {
					t.Errorf("rank 0: %v, want ranks %v missing", err, tc.missing)
				}
			}
		})
	}
}

// Send/Recv: every message, in order, on every node; then, after node 0 closes, ErrClosed — but
// only once the messages sent before are all taken.
func TestTCPSendRecv(t *testing.T) {
	nodes := joinAll(t, 3, 3, 10*time.Second)
	msgs := [][]byte{[]byte("step 1"), {}, make([]byte, 3<<20), []byte("stop")}
	for _, m := range msgs {
		if err := nodes[0].Send(m); err != nil {
			t.Fatal(err)
		}
	}
	nodes[0].Close()
	for _, n := range nodes[1:] {
		for i, want := range msgs {
			got, err := n.Recv()
			if err != nil || string(got) != string(want) {
				t.Fatalf("node %d message %d: %d bytes, %v; want %d bytes", n.Node(), i, len(got), err, len(want))
			}
		}
		if _, err := n.Recv(); !errors.Is(err, ErrClosed) {
			t.Errorf("node %d after close: %v, want ErrClosed", n.Node(), err)
		}
	}
	if err := nodes[1].Send(nil); err == nil {
		t.Error("node 1 Send succeeded")
	}
	if _, err := nodes[0].Recv(); err == nil {
		t.Error("node 0 Recv succeeded")
	}
}

func TestJoinTCPBadShape(t *testing.T) {
	for _, tc := range []struct{ size, nodes int }{{3, 2}, {1, 2}, {0, 1}, {2, 0}} {
		_, err := JoinTCP(context.Background(), TCPConfig{RendezvousConfig: RendezvousConfig{Addr: "127.0.0.1:1", Nodes: tc.nodes}, Size: tc.size})
		if !errors.Is(err, ErrDegree) {
			t.Errorf("%d ranks over %d nodes: %v, want ErrDegree", tc.size, tc.nodes, err)
		}
	}
}

// A node announcing another group size is refused at the rendezvous.
func TestJoinTCPSizeMismatch(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for k, size := range []int{2, 4} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := TCPConfig{RendezvousConfig: RendezvousConfig{Addr: ln.Addr().String(), Nodes: 2, NodeRank: k, Timeout: 5 * time.Second}, Size: size}
			if k == 0 {
				c.Listener = ln
			}
			var n *TCPNode
			if n, errs[k] = JoinTCP(context.Background(), c); n != nil {
				n.Close()
			}
		}()
	}
	wg.Wait()
	if !errors.Is(errs[0], ErrMismatch) || !strings.Contains(errs[0].Error(), "node 1 has a group of 4 ranks") {
		t.Errorf("node 0: %v", errs[0])
	}
	if errs[1] == nil || !strings.Contains(errs[1].Error(), "refused") {
		t.Errorf("node 1: %v", errs[1])
	}
}

// pipeNode makes node k of a two-node group of size ranks whose other end is a raw connection the
// test writes frames to (no rendezvous): node 0 is a hub and the raw end plays node 1, or node 1
// is a spoke and the raw end plays node 0.
func pipeNode(k, size int, timeout time.Duration) (*TCPNode, net.Conn) {
	mine, theirs := net.Pipe()
	n := &TCPNode{node: k, nodes: 2, size: size, local: size / 2, first: k * size / 2, timeout: timeout, startTimeout: timeout, done: make(chan struct{})}
	pe := &peer{node: 1 - k, conn: mine, r: bufio.NewReader(mine)}
	if k == 0 {
		n.hub = newHub(n, []*peer{pe})
	} else {
		n.spoke = newSpoke(n, pe)
	}
	for i := range n.local {
		n.comms = append(n.comms, &tcpComm{n: n, rank: n.first + i})
	}
	return n, theirs
}

func rawFrame(op byte, rank uint32, seq uint64, n uint32, payload []byte) []byte {
	b := appendFrame(nil, op, rank, seq, 0)
	binary.LittleEndian.PutUint32(b[16:], n)
	return append(b, payload...)
}

// Malformed frames from the network break the group with an error naming the problem — never a
// panic, a hang or a huge allocation.
func TestTCPMalformedFrames(t *testing.T) {
	bad := make([]byte, frameHeader)
	bad[2] = 7
	for _, tc := range []struct {
		name string
		node int // the node under test: 0 (the raw end sends contributions) or 1 (it sends results)
		data []byte
		want error
	}{
		{"reserved bytes", 0, bad, ErrProtocol},
		{"unknown op", 0, rawFrame(99, 1, 1, 0, nil), ErrProtocol},
		{"result sent to node 0", 0, rawFrame(opResult, 1, 1, 0, nil), ErrProtocol},
		{"someone else's rank", 0, rawFrame(opAllReduce, 0, 1, 16, make([]byte, 16)), ErrProtocol},
		{"rank out of range", 0, rawFrame(opAllReduce, 1<<31, 1, 16, make([]byte, 16)), ErrProtocol},
		{"sequence skips ahead", 0, rawFrame(opAllReduce, 1, 5, 16, make([]byte, 16)), ErrProtocol},
		{"odd length", 0, rawFrame(opAllReduce, 1, 1, 3, make([]byte, 3)), ErrProtocol},
		{"huge length", 0, rawFrame(opAllReduce, 1, 1, 1<<31, nil), ErrProtocol},
		{"barrier with a payload", 0, rawFrame(opBarrier, 1, 1, 4, make([]byte, 4)), ErrProtocol},
		{"truncated payload", 0, rawFrame(opAllReduce, 1, 1, 1<<29, make([]byte, 100)), ErrClosed},
		{"short header", 0, []byte{opAllReduce, 0}, ErrClosed},
		{"wrong length", 0, rawFrame(opAllReduce, 1, 1, 8, make([]byte, 8)), nil}, // rank 0 has 4 floats
		{"other collective", 0, rawFrame(opAllGather, 1, 1, 16, make([]byte, 16)), nil},
		{"spoke: unknown op", 1, rawFrame(42, 0, 0, 0, nil), ErrProtocol},
		{"spoke: contribution", 1, rawFrame(opAllReduce, 0, 1, 0, nil), ErrProtocol},
		{"spoke: result too early", 1, rawFrame(opResult, 0, 2, 16, make([]byte, 16)), ErrProtocol},
		{"spoke: result of the wrong length", 1, rawFrame(opResult, 0, 1, 8, make([]byte, 8)), ErrProtocol},
		{"spoke: result with a rank", 1, rawFrame(opResult, 3, 1, 16, make([]byte, 16)), ErrProtocol},
		{"spoke: huge message", 1, rawFrame(opMessage, 0, 0, MaxFrameBytes+1, nil), ErrProtocol},
		{"spoke: huge abort", 1, rawFrame(opAbort, 0, 0, maxAbortBytes+1, nil), ErrProtocol},
		{"spoke: abort", 1, rawFrame(opAbort, 0, 0, 6, []byte("reason")), ErrClosed},
		{"spoke: truncated result", 1, rawFrame(opResult, 0, 1, 16, make([]byte, 5)), ErrClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, raw := pipeNode(tc.node, 2, 5*time.Second)
			defer raw.Close()
			defer n.Close()
			go func() {
				if tc.node == 1 { // let the rank post first, so that a result is not merely early
					time.Sleep(20 * time.Millisecond)
				}
				raw.Write(tc.data)
				raw.Close()
			}()
			if tc.node == 1 {
				go func() { // drain what the spoke sends
					var b [64]byte
					for {
						if _, err := raw.Read(b[:]); err != nil {
							return
						}
					}
				}()
			}
			done := make(chan error, 1)
			go func() { done <- n.Comms()[0].AllReduceSum(make([]float32, 4)) }()
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("no error")
				}
				if tc.want != nil && !errors.Is(err, tc.want) {
					t.Errorf("%v, want %v", err, tc.want)
				}
				t.Log(err)
			case <-time.After(10 * time.Second):
				t.Fatal("hung")
			}
		})
	}
}

// FuzzTCPFrames feeds arbitrary bytes to node 0 (as node 1's contributions) and to node 1 (as
// node 0's results and messages): the group may break, but nothing panics or hangs.
func FuzzTCPFrames(f *testing.F) {
	f.Add(rawFrame(opAllReduce, 1, 1, 16, make([]byte, 16)), false)
	f.Add(rawFrame(opResult, 0, 1, 16, make([]byte, 16)), true)
	f.Add(append(rawFrame(opMessage, 0, 0, 3, []byte("abc")), rawFrame(opBye, 0, 0, 0, nil)...), true)
	f.Add(rawFrame(opAbort, 0, 0, 2, []byte("no")), true)
	f.Add(rawFrame(opBarrier, 1, 1, 0, nil), false)
	f.Fuzz(func(t *testing.T, data []byte, spoke bool) {
		k := 0
		if spoke {
			k = 1
		}
		n, raw := pipeNode(k, 2, 200*time.Millisecond)
		go func() {
			var b [256]byte
			for {
				if _, err := raw.Read(b[:]); err != nil {
					return
				}
			}
		}()
		go func() { raw.Write(data); raw.Close() }()
		buf := make([]float32, 4)
		n.Comms()[0].AllReduceSum(buf)
		if spoke {
			n.Recv()
		}
		n.Close()
	})
}

// Close ends every goroutine the group started, on every node.
func TestTCPNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		nodes := make([]*TCPNode, 0)
		t.Run("group", func(t *testing.T) {
			nodes = joinAll(t, 4, 2, 5*time.Second)
			rounds(t, commsOf(nodes), []int{5, 100})
			nodes[0].Send([]byte("x"))
		})
	}()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines before, %d after:\n%s", before, g, buf[:runtime.Stack(buf, true)])
	}
}

// BenchmarkTCPAllReduce is one all-reduce over loopback between two nodes of one rank each, for
// a decode step's activations of LLaMA 2 dims (B=1) and a prefill chunk (B=256, dim 4096).
func BenchmarkTCPAllReduce(b *testing.B) {
	for _, n := range []int{64, 4096, 8192, 256 * 4096} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			nodes := joinAll(b, 2, 2, time.Minute)
			cs := commsOf(nodes)
			b.SetBytes(int64(4 * n))
			b.ResetTimer()
			runRanks(cs, func(c Comm) error {
				buf := make([]float32, n)
				for range b.N {
					if err := c.AllReduceSum(buf); err != nil {
						return err
					}
				}
				return nil
			})
		})
	}
}
