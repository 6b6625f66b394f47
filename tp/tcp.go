package tp

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"sync"
	"time"
)

// A TCP group: the ranks of one tensor-parallel group spread over processes (nodes), node k
// running ranks k·L … k·L+L−1 (L = Size/Nodes), as vLLM and Megatron place them. It needs no
// GPU and no library: it is what multi-node tensor parallelism runs on with the CPU backend, and
// its Send/Recv carry node 0's forward steps to the other nodes on any backend.
//
// Topology: a star over the rendezvous connections. JoinTCP runs Rendezvous (fingerprint check,
// payload hand-off) and keeps each node's connection to node 0 open for the group's traffic, so
// the one --rendezvous port is all a cluster has to open.
//
// Collectives: every rank sends its contribution to node 0 (node 0's own ranks hand theirs over
// in memory). Rank 0 waits for all of them, computes the result — an all-reduce adds rank 0, 1,
// 2, … in that order, element by element, exactly as NewInProcess does, so every rank gets the
// same bits, and the same bits as an in-process group of the same size — and sends it back, one
// frame per node. Rank 0 waits at most Timeout for the others and then breaks the group with a
// *RankError naming the ranks that never came; every node learns why (opAbort).
//
// Frames, both directions, little-endian:
//
//	op u8 | 0 u8 ×3 | rank u32 | seq u64 | n u32 | n bytes of payload
//
//	node k → 0: opAllReduce, opAllGather, opBarrier: rank's contribution (float32s) to its
//	            seq-th collective (seq counts from 1, per rank)
//	node 0 → k: opResult: the result of collective seq, for every rank of node k
//	            opMessage: one Send message (node 0's forward step), bytes
//	            opAbort: the group broke; the payload says why (UTF-8)
//	            opBye: node 0 closes the group
//
// A reader checks every header before it reads a payload — the op, the rank (one of the
// sender's), the sequence number (the next one, and only once the previous result is out), the
// length (a multiple of 4, at most MaxFrameBytes) — and grows its buffer only as bytes arrive,
// so a malformed or hostile frame breaks the group with ErrProtocol, never a panic or a huge
// allocation.

// Frame ops.
const (
	opAllReduce byte = 1 + iota
	opAllGather
	opBarrier
	opResult
	opMessage
	opAbort
	opBye
)

const (
	frameHeader   = 20
	maxAbortBytes = 64 << 10
	readChunk     = 1 << 20
	// waitGrace is how much longer than node 0 the other nodes wait for a result: node 0 times
	// out first and says which ranks never came.
	waitGrace = 5 * time.Second
	// lingerTime bounds how long Close on node 0 waits for the other nodes to hang up after
	// opBye, so that nothing unread makes the close a reset that loses the last messages.
	lingerTime = time.Second
)

// MaxFrameBytes bounds one frame's payload (an all-reduce of 256 Mi floats, far beyond a
// forward step's largest: prefill rows × dim, or logit rows × vocabulary).
const MaxFrameBytes = 1 << 30

// DefaultCollectiveTimeout bounds how long a TCP collective waits for the other ranks. Ranks run
// the same work between collectives, so they arrive close together; the bound only matters when
// a node hangs (a node that exits is noticed at once: its connection closes).
const DefaultCollectiveTimeout = 60 * time.Second

func opName(op byte) string {
	switch op {
	case opAllReduce:
		return "all-reduce"
	case opAllGather:
		return "all-gather"
	case opBarrier:
		return "barrier"
	}
	return fmt.Sprintf("op %d", op)
}

// TCPConfig describes this process's part in a TCP group.
type TCPConfig struct {
	// RendezvousConfig is where and how the nodes meet (Addr, Nodes, NodeRank, Fingerprint,
	// Payload, Timeout, Listener); the connections it makes carry the group afterwards.
	RendezvousConfig
	// Size is the number of ranks in the whole group, a multiple of Nodes: node k runs ranks
	// k·Size/Nodes … (k+1)·Size/Nodes−1.
	Size int
	// Timeout bounds each collective's wait for the other ranks (0: DefaultCollectiveTimeout).
	Timeout time.Duration
	// StartTimeout bounds Sync, the wait for every node to finish loading (0:
	// DefaultStartTimeout).
	StartTimeout time.Duration
}

// TCPNode is this process's end of a TCP group: its ranks' Comms, and (Send/Recv) a message
// channel from node 0 to the others, which multi-node tensor parallelism uses to hand every
// node the forward step node 0 is about to run.
type TCPNode struct {
	node, nodes, size, first, local int
	timeout, startTimeout           time.Duration
	payload                         []byte
	comms                           []Comm
	hub                             *tcpHub   // node 0
	spoke                           *tcpSpoke // the other nodes

	doneOnce sync.Once
	done     chan struct{}
	errMu    sync.Mutex
	err      error
}

// JoinTCP meets the other nodes (Rendezvous, which also checks that they agree on the model and
// the group's size) and returns this node's end of the group. Node 0's Payload reaches every
// node (Payload()).
func JoinTCP(ctx context.Context, c TCPConfig) (*TCPNode, error) {
	if c.Nodes < 1 || c.Size < c.Nodes || c.Size%c.Nodes != 0 {
		if c.Listener != nil {
			c.Listener.Close()
		}
		return nil, fmt.Errorf("%w: %d ranks over %d nodes (each node runs the same number)", ErrDegree, c.Size, c.Nodes)
	}
	payload, peers, err := meet(ctx, c.RendezvousConfig, c.Size)
	if err != nil {
		return nil, err
	}
	n := &TCPNode{node: c.NodeRank, nodes: c.Nodes, size: c.Size, local: c.Size / c.Nodes,
		timeout: c.Timeout, startTimeout: c.StartTimeout, payload: payload, done: make(chan struct{})}
	n.first = n.node * n.local
	if n.timeout <= 0 {
		n.timeout = DefaultCollectiveTimeout
	}
	if n.startTimeout <= 0 {
		n.startTimeout = DefaultStartTimeout
	}
	if n.node == 0 {
		n.hub = newHub(n, peers)
	} else {
		n.spoke = newSpoke(n, peers[0])
	}
	for i := range n.local {
		n.comms = append(n.comms, &tcpComm{n: n, rank: n.first + i})
	}
	return n, nil
}

// Comms are this node's ranks' communicators, in rank order (Comms()[i].Rank() = First()+i).
// Each is used by one goroutine at a time, as every Comm; closing any of them closes the node.
func (n *TCPNode) Comms() []Comm { return n.comms }

// Payload is node 0's rendezvous payload (on node 0, its own).
func (n *TCPNode) Payload() []byte { return n.payload }

// Node is this node's rank among the nodes; First its first group rank.
func (n *TCPNode) Node() int  { return n.node }
func (n *TCPNode) First() int { return n.first }

// Sync returns when every rank of every node has called it (each node calls it once its
// weights are loaded), or after StartTimeout with a *RankError naming the ranks that did not.
func (n *TCPNode) Sync() error {
	errs := make([]error, n.local)
	var wg sync.WaitGroup
	for i := range n.local {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.collective(n.first+i, opBarrier, nil, nil, n.startTimeout)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err // the ranks fail together, with the same error: one says it
		}
	}
	return nil
}

// Send hands msg to every other node, which gets it from Recv, in order (node 0 only). msg may
// be reused when Send returns.
func (n *TCPNode) Send(msg []byte) error {
	if n.hub == nil {
		return fmt.Errorf("tp: node %d: only node 0 sends", n.node)
	}
	return n.hub.send(msg)
}

// Recv returns the next message node 0 sent (other nodes only), blocking without a time limit
// until one comes or the group ends: messages sent before node 0 closed the group are all
// delivered before the error.
func (n *TCPNode) Recv() ([]byte, error) {
	if n.spoke == nil {
		return nil, errors.New("tp: node 0 does not receive")
	}
	return n.spoke.recv()
}

// Done is closed when the group breaks (a node left or hung, a malformed frame) or closes; Err
// then says why.
func (n *TCPNode) Done() <-chan struct{} { return n.done }

// Err is why the group ended, nil while it runs.
func (n *TCPNode) Err() error {
	n.errMu.Lock()
	defer n.errMu.Unlock()
	return n.err
}

// ended records why the group ended and closes Done (first call only).
func (n *TCPNode) ended(err error) {
	n.doneOnce.Do(func() {
		n.errMu.Lock()
		n.err = err
		n.errMu.Unlock()
		close(n.done)
	})
}

// Close leaves the group: node 0 tells the others (their waiting collectives and Recv fail with
// ErrClosed, after the messages already sent) and waits briefly for them to hang up; another
// node hangs up. It waits for the node's goroutines to end. Later calls do nothing.
func (n *TCPNode) Close() error {
	if n.hub != nil {
		n.hub.close()
	} else {
		n.spoke.close()
	}
	return nil
}

func (n *TCPNode) collective(rank int, op byte, src, dst []float32, timeout time.Duration) error {
	if n.hub != nil {
		return n.hub.collective(rank, op, src, dst, timeout)
	}
	return n.spoke.collective(rank, op, src, dst, timeout)
}

// tcpComm is one rank of a TCPNode.
type tcpComm struct {
	n    *TCPNode
	rank int
}

func (c *tcpComm) Rank() int { return c.rank }
func (c *tcpComm) Size() int { return c.n.size }

func (c *tcpComm) AllReduceSum(buf []float32) error {
	if c.n.size == 1 {
		return nil
	}
	return c.n.collective(c.rank, opAllReduce, buf, buf, c.n.timeout)
}

func (c *tcpComm) AllGather(dst, src []float32) error {
	if len(dst) != c.n.size*len(src) {
		return fmt.Errorf("tp: all-gather: dst has %d elements, want %d×%d", len(dst), c.n.size, len(src))
	}
	return c.n.collective(c.rank, opAllGather, src, dst, c.n.timeout)
}

func (c *tcpComm) Barrier() error { return c.n.collective(c.rank, opBarrier, nil, nil, c.n.timeout) }

// BarrierTimeout is Barrier with its own deadline; the error names the ranks that never came.
func (c *tcpComm) BarrierTimeout(d time.Duration) error {
	return c.n.collective(c.rank, opBarrier, nil, nil, d)
}

func (c *tcpComm) Close() error { return c.n.Close() }

// resultLen is the length of op's result for contributions of n floats from size ranks.
func resultLen(op byte, n, size int) int {
	if op == opAllGather {
		return n * size
	}
	return n
}

// ---------------------------------------------------------------- node 0

// tcpHub is node 0: its local ranks (0..local−1) post contributions in memory, the other nodes'
// arrive through one reader goroutine per connection, and rank 0 computes every result.
type tcpHub struct {
	n     *TCPNode
	peers []*hubPeer
	owner []*hubPeer // by rank: the peer that runs it (nil: this node)

	mu   sync.Mutex
	cond *sync.Cond
	seq  []uint64    // by rank: the last collective it posted
	op   []byte      // by rank: that collective's op
	bufs [][]float32 // by rank: its contribution
	done uint64      // collectives whose result is ready in res
	res  []float32   // the latest result (one suffices: rank 0 computes collective s only once
	// every rank has posted s, so has finished copying s−1)
	err     error // the group broke or closed: every later call fails with it
	closing bool
	readers sync.WaitGroup
}

// hubPeer is node 0's connection to another node.
type hubPeer struct {
	node        int
	first, last int // its ranks
	conn        net.Conn
	r           *bufio.Reader
	wmu         sync.Mutex
	wbuf        []byte      // frame being written (under wmu)
	scratch     []byte      // payload as read (reader goroutine only)
	rbuf        [][]float32 // by rank−first: its latest contribution
}

func (p *hubPeer) ranks() []int {
	var r []int
	for q := p.first; q <= p.last; q++ {
		r = append(r, q)
	}
	return r
}

func newHub(n *TCPNode, peers []*peer) *tcpHub {
	h := &tcpHub{n: n, owner: make([]*hubPeer, n.size), seq: make([]uint64, n.size), op: make([]byte, n.size),
		bufs: make([][]float32, n.size)}
	h.cond = sync.NewCond(&h.mu)
	for _, pe := range peers {
		hp := &hubPeer{node: pe.node, first: pe.node * n.local, last: pe.node*n.local + n.local - 1, conn: pe.conn, r: pe.r,
			rbuf: make([][]float32, n.local)}
		for q := hp.first; q <= hp.last; q++ {
			h.owner[q] = hp
		}
		h.peers = append(h.peers, hp)
	}
	for _, hp := range h.peers {
		h.readers.Add(1)
		go h.read(hp)
	}
	return h
}

// missing lists the ranks that have not posted collective s. Call with mu held.
func (h *tcpHub) missing(s uint64) []int {
	var m []int
	for q, sq := range h.seq {
		if sq < s {
			m = append(m, q)
		}
	}
	return m
}

// failed is the error a call of collective s (op) returns once the group has ended. Call with
// mu held and h.err set.
func (h *tcpHub) failed(op byte, s uint64) error {
	if h.err == ErrClosed && s > 0 {
		return &RankError{Op: opName(op), Missing: h.missing(s), Err: ErrClosed}
	}
	return h.err
}

// waitUntil waits on cond until woken or deadline; the caller loops on its condition.
func waitUntil(cond *sync.Cond, deadline time.Time) {
	t := time.AfterFunc(time.Until(deadline), func() {
		cond.L.Lock()
		cond.Broadcast()
		cond.L.Unlock()
	})
	cond.Wait()
	t.Stop()
}

func (h *tcpHub) collective(rank int, op byte, src, dst []float32, timeout time.Duration) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return h.failed(op, 0)
	}
	s := h.seq[rank] + 1
	h.seq[rank], h.op[rank], h.bufs[rank] = s, op, src
	h.cond.Broadcast()
	if rank == 0 {
		if err := h.reduce(op, s, time.Now().Add(timeout)); err != nil {
			return err
		}
	} else {
		deadline := time.Now().Add(timeout + waitGrace) // rank 0 times out first, naming who is missing
		for h.done < s && h.err == nil {
			if !time.Now().Before(deadline) {
				err := &RankError{Op: opName(op), Missing: h.missing(s), Err: ErrTimeout}
				h.failLocked(err)
				return err
			}
			waitUntil(h.cond, deadline)
		}
		if h.done < s {
			return h.failed(op, s)
		}
	}
	if op != opBarrier {
		copy(dst, h.res)
	}
	return nil
}

// reduce is rank 0's part of collective s: wait for every contribution, compute the result,
// hand it to the local ranks and send it to the other nodes. Called and returns with mu held.
func (h *tcpHub) reduce(op byte, s uint64, deadline time.Time) error {
	for len(h.missing(s)) > 0 {
		if h.err != nil {
			return h.failed(op, s)
		}
		if !time.Now().Before(deadline) {
			err := &RankError{Op: opName(op), Missing: h.missing(s), Err: ErrTimeout}
			h.failLocked(err)
			return err
		}
		waitUntil(h.cond, deadline)
	}
	if h.err != nil {
		return h.failed(op, s)
	}
	n := len(h.bufs[0])
	for q := range h.n.size {
		var err error
		switch {
		case h.op[q] != op:
			err = fmt.Errorf("tp: %s: rank %d called %s instead (the ranks' collectives are out of step)", opName(op), q, opName(h.op[q]))
		case len(h.bufs[q]) != n:
			err = fmt.Errorf("tp: %s: rank %d has %d elements, rank 0 has %d", opName(op), q, len(h.bufs[q]), n)
		}
		if err != nil {
			h.failLocked(err)
			return err
		}
	}
	h.res = slices.Grow(h.res[:0], resultLen(op, n, h.n.size))[:resultLen(op, n, h.n.size)]
	res, bufs := h.res, h.bufs
	// Compute without the lock: the contributions stay put (no rank posts s+1 before it has
	// the result of s), and the readers must be free to take the next frames.
	h.mu.Unlock()
	switch op {
	case opAllReduce:
		// The in-process group's order, element by element: rank 0 + rank 1 + rank 2 + …
		for i := range res {
			v := bufs[0][i]
			for q := 1; q < len(bufs); q++ {
				v += bufs[q][i]
			}
			res[i] = v
		}
	case opAllGather:
		for q, b := range bufs {
			copy(res[q*n:], b)
		}
	}
	h.mu.Lock()
	// Done before sending: a node that gets the result may post s+1 at once, and its reader
	// accepts that only after s is done.
	h.done = s
	h.cond.Broadcast()
	h.mu.Unlock()
	var sendErr error
	for _, p := range h.peers {
		if err := p.writeFloats(opResult, 0, s, res, h.n.timeout); err != nil {
			sendErr = &RankError{Op: opName(op), Missing: p.ranks(), Err: fmt.Errorf("%w: sending the result to node %d (%s): %v", ErrClosed, p.node, p.conn.RemoteAddr(), err)}
			break
		}
	}
	h.mu.Lock()
	if sendErr != nil {
		h.failLocked(sendErr)
		return sendErr
	}
	return nil
}

// read takes p's frames: contributions to the collectives of p's ranks.
func (h *tcpHub) read(p *hubPeer) {
	defer h.readers.Done()
	var hb [frameHeader]byte
	for {
		f, err := readHeader(p.r, &hb)
		if errors.Is(err, ErrProtocol) {
			h.fail(fmt.Errorf("tp: node %d (%s): %w", p.node, p.conn.RemoteAddr(), err))
			p.conn.Close()
			return
		}
		if err != nil {
			h.mu.Lock()
			closing := h.closing
			h.mu.Unlock()
			if !closing {
				h.fail(&RankError{Op: h.currentOp(), Missing: p.ranks(),
					Err: fmt.Errorf("%w: node %d (%s) hung up: %v", ErrClosed, p.node, p.conn.RemoteAddr(), err)})
			}
			return
		}
		if err := h.accept(p, f); err != nil {
			h.fail(fmt.Errorf("tp: node %d (%s): %w: %v", p.node, p.conn.RemoteAddr(), ErrProtocol, err))
			p.conn.Close()
			return
		}
		if p.scratch, err = readPayload(p.r, p.scratch, int(f.n)); err != nil {
			h.fail(&RankError{Op: opName(f.op), Missing: []int{int(f.rank)},
				Err: fmt.Errorf("%w: node %d (%s) hung up mid-frame: %v", ErrClosed, p.node, p.conn.RemoteAddr(), err)})
			return
		}
		i := int(f.rank) - p.first
		p.rbuf[i] = decodeFloats(p.rbuf[i], p.scratch)
		h.mu.Lock()
		h.seq[f.rank], h.op[f.rank], h.bufs[f.rank] = f.seq, f.op, p.rbuf[i]
		h.cond.Broadcast()
		h.mu.Unlock()
	}
}

// accept checks a contribution's header before its payload is read.
func (h *tcpHub) accept(p *hubPeer, f frame) error {
	switch {
	case f.op != opAllReduce && f.op != opAllGather && f.op != opBarrier:
		return fmt.Errorf("unexpected op %d", f.op)
	case f.rank < uint32(p.first) || f.rank > uint32(p.last):
		return fmt.Errorf("rank %d is not one of its ranks %d..%d", f.rank, p.first, p.last)
	case f.n%4 != 0 || f.n > MaxFrameBytes || (f.op == opBarrier && f.n != 0):
		return fmt.Errorf("%s of %d bytes", opName(f.op), f.n)
	}
	h.mu.Lock()
	want, done := h.seq[f.rank]+1, h.done
	h.mu.Unlock()
	if f.seq != want || done+1 < want {
		return fmt.Errorf("rank %d sent collective %d; expected %d, and only after collective %d's result (%d done)", f.rank, f.seq, want, want-1, done)
	}
	return nil
}

// currentOp names the collective rank 0 is in, for errors.
func (h *tcpHub) currentOp() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.seq[0] > h.done {
		return opName(h.op[0])
	}
	return "between collectives"
}

func (h *tcpHub) fail(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failLocked(err)
}

// failLocked breaks the group (first error wins) and tells the other nodes why. Call with mu
// held; the aborts go out on goroutines of their own (a write may block up to its deadline).
func (h *tcpHub) failLocked(err error) {
	if h.err != nil {
		return
	}
	h.err = err
	h.cond.Broadcast()
	h.n.ended(err)
	if h.closing {
		return
	}
	msg := []byte(err.Error())
	if len(msg) > maxAbortBytes {
		msg = msg[:maxAbortBytes]
	}
	for _, p := range h.peers {
		h.readers.Add(1)
		go func() {
			defer h.readers.Done()
			p.writeBytes(opAbort, msg, time.Second)
		}()
	}
}

func (h *tcpHub) send(msg []byte) error {
	if len(msg) > MaxFrameBytes {
		return fmt.Errorf("tp: send: %d bytes, at most %d", len(msg), MaxFrameBytes)
	}
	h.mu.Lock()
	err := h.err
	h.mu.Unlock()
	if err != nil {
		return err
	}
	for _, p := range h.peers {
		if err := p.writeBytes(opMessage, msg, h.n.timeout); err != nil {
			e := &RankError{Op: "send", Missing: p.ranks(), Err: fmt.Errorf("%w: node %d (%s): %v", ErrClosed, p.node, p.conn.RemoteAddr(), err)}
			h.fail(e)
			return e
		}
	}
	return nil
}

func (h *tcpHub) close() {
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		return
	}
	h.closing = true
	if h.err == nil {
		h.err = ErrClosed
		h.n.ended(ErrClosed)
	}
	h.cond.Broadcast()
	h.mu.Unlock()
	for _, p := range h.peers {
		p.writeBytes(opBye, nil, lingerTime)
		if tc, ok := p.conn.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}
	// The other nodes hang up on opBye; past lingerTime, hang up on them.
	done := make(chan struct{})
	go func() { h.readers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(lingerTime):
	}
	for _, p := range h.peers {
		p.conn.Close()
	}
	<-done
}

// ---------------------------------------------------------------- the other nodes

// tcpSpoke is a node other than 0: its ranks send their contributions to node 0 and wait for the
// result, which one reader goroutine takes off the connection along with node 0's messages.
type tcpSpoke struct {
	n    *TCPNode
	conn net.Conn
	r    *bufio.Reader
	wmu  sync.Mutex
	wbuf []byte // frame being written (under wmu)

	mu      sync.Mutex
	cond    *sync.Cond
	seq     []uint64 // by local rank: the last collective it posted
	got     uint64   // the collective whose result is in res
	res     []byte   // its payload, little-endian float32s
	msgs    [][]byte // messages not yet received
	err     error
	closing bool
	reader  chan struct{} // closed when the reader ends
}

func newSpoke(n *TCPNode, pe *peer) *tcpSpoke {
	s := &tcpSpoke{n: n, conn: pe.conn, r: pe.r, seq: make([]uint64, n.local), reader: make(chan struct{})}
	s.cond = sync.NewCond(&s.mu)
	go s.read()
	return s
}

func (s *tcpSpoke) hubName() string { return fmt.Sprintf("node 0 (%s)", s.conn.RemoteAddr()) }

func (s *tcpSpoke) collective(rank int, op byte, src, dst []float32, timeout time.Duration) error {
	i := rank - s.n.first
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return s.err
	}
	seq := s.seq[i] + 1
	s.seq[i] = seq
	s.mu.Unlock()
	if err := s.writeFloats(op, uint32(rank), seq, src, timeout); err != nil {
		err = fmt.Errorf("tp: %s: %w: sending to %s: %v", opName(op), ErrClosed, s.hubName(), err)
		s.fail(err)
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	deadline := time.Now().Add(timeout + waitGrace)
	for s.got < seq && s.err == nil {
		if !time.Now().Before(deadline) {
			err := &RankError{Op: opName(op), Missing: []int{0}, Err: fmt.Errorf("%w: no answer from %s", ErrTimeout, s.hubName())}
			s.failLocked(err)
			return err
		}
		waitUntil(s.cond, deadline)
	}
	if s.got < seq {
		return s.err
	}
	want := 4 * len(dst)
	if op == opBarrier {
		want = 0
	}
	if len(s.res) != want {
		err := fmt.Errorf("tp: %s: %w: %s sent a result of %d bytes, want %d", opName(op), ErrProtocol, s.hubName(), len(s.res), want)
		s.failLocked(err)
		return err
	}
	decodeFloats(dst[:0], s.res)
	return nil
}

func (s *tcpSpoke) writeFloats(op byte, rank uint32, seq uint64, f []float32, timeout time.Duration) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.wbuf = appendFrame(s.wbuf[:0], op, rank, seq, 4*len(f))
	s.wbuf = appendFloats(s.wbuf, f)
	s.conn.SetWriteDeadline(time.Now().Add(timeout))
	_, err := s.conn.Write(s.wbuf)
	return err
}

func (s *tcpSpoke) read() {
	defer close(s.reader)
	var hb [frameHeader]byte
	for {
		f, err := readHeader(s.r, &hb)
		if errors.Is(err, ErrProtocol) {
			s.fail(fmt.Errorf("tp: %s: %w", s.hubName(), err))
			s.conn.Close()
			return
		}
		if err != nil {
			s.fail(fmt.Errorf("%w: connection to %s lost: %v", ErrClosed, s.hubName(), err))
			return
		}
		switch f.op {
		case opResult:
			if err := s.acceptResult(f); err != nil {
				s.fail(fmt.Errorf("tp: %s: %w: %v", s.hubName(), ErrProtocol, err))
				s.conn.Close()
				return
			}
			// Safe without the lock: every local rank has posted f.seq, so none still reads res.
			if s.res, err = readPayload(s.r, s.res, int(f.n)); err != nil {
				s.fail(fmt.Errorf("%w: connection to %s lost mid-frame: %v", ErrClosed, s.hubName(), err))
				return
			}
			s.mu.Lock()
			s.got = f.seq
			s.cond.Broadcast()
			s.mu.Unlock()
		case opMessage, opAbort:
			limit := uint32(MaxFrameBytes)
			if f.op == opAbort {
				limit = maxAbortBytes
			}
			if f.n > limit || f.rank != 0 || f.seq != 0 {
				s.fail(fmt.Errorf("tp: %s: %w: op %d, rank %d, seq %d, %d bytes", s.hubName(), ErrProtocol, f.op, f.rank, f.seq, f.n))
				s.conn.Close()
				return
			}
			b, err := readPayload(s.r, nil, int(f.n))
			if err != nil {
				s.fail(fmt.Errorf("%w: connection to %s lost mid-frame: %v", ErrClosed, s.hubName(), err))
				return
			}
			if f.op == opAbort {
				s.fail(fmt.Errorf("%w: node 0 ended the group: %s", ErrClosed, b))
				s.conn.Close() // node 0 waits for us to hang up
				return
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, b)
			s.cond.Broadcast()
			s.mu.Unlock()
		case opBye:
			s.fail(fmt.Errorf("%w: node 0 closed the group", ErrClosed))
			s.conn.Close() // node 0 waits for us to hang up; the messages already read stay for Recv
			return
		default:
			s.fail(fmt.Errorf("tp: %s: %w: unexpected op %d", s.hubName(), ErrProtocol, f.op))
			s.conn.Close()
			return
		}
	}
}

// acceptResult checks a result's header before its payload is read.
func (s *tcpSpoke) acceptResult(f frame) error {
	if f.n%4 != 0 || f.n > MaxFrameBytes || f.rank != 0 {
		return fmt.Errorf("result for rank %d of %d bytes", f.rank, f.n)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.seq != s.got+1 {
		return fmt.Errorf("result of collective %d, expected %d", f.seq, s.got+1)
	}
	for i, sq := range s.seq {
		if sq < f.seq {
			return fmt.Errorf("result of collective %d before rank %d posted it", f.seq, s.n.first+i)
		}
	}
	return nil
}

func (s *tcpSpoke) recv() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.msgs) == 0 && s.err == nil {
		s.cond.Wait()
	}
	if len(s.msgs) > 0 {
		m := s.msgs[0]
		s.msgs[0] = nil
		s.msgs = s.msgs[1:]
		return m, nil
	}
	return nil, s.err
}

func (s *tcpSpoke) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failLocked(err)
}

func (s *tcpSpoke) failLocked(err error) {
	if s.err != nil {
		return
	}
	s.err = err
	s.cond.Broadcast()
	s.n.ended(err)
}

func (s *tcpSpoke) close() {
	s.mu.Lock()
	s.closing = true
	if s.err == nil {
		s.err = ErrClosed
		s.n.ended(ErrClosed)
	}
	s.cond.Broadcast()
	s.mu.Unlock()
	s.conn.Close()
	<-s.reader
}

// ---------------------------------------------------------------- frames

type frame struct {
	op   byte
	rank uint32
	seq  uint64
	n    uint32 // payload bytes
}

func appendFrame(b []byte, op byte, rank uint32, seq uint64, n int) []byte {
	b = append(b, op, 0, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, rank)
	b = binary.LittleEndian.AppendUint64(b, seq)
	return binary.LittleEndian.AppendUint32(b, uint32(n))
}

// readHeader reads and decodes one frame header (the reserved bytes must be zero).
func readHeader(r io.Reader, hb *[frameHeader]byte) (frame, error) {
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		return frame{}, err
	}
	if hb[1] != 0 || hb[2] != 0 || hb[3] != 0 {
		return frame{}, fmt.Errorf("%w: reserved header bytes % x", ErrProtocol, hb[1:4])
	}
	return frame{op: hb[0], rank: binary.LittleEndian.Uint32(hb[4:]), seq: binary.LittleEndian.Uint64(hb[8:]),
		n: binary.LittleEndian.Uint32(hb[16:])}, nil
}

// readPayload reads n bytes into buf (reused), growing it only as the bytes arrive: a header
// that announces a gigabyte and sends nothing costs no gigabyte.
func readPayload(r io.Reader, buf []byte, n int) ([]byte, error) {
	buf = buf[:0]
	for len(buf) < n {
		chunk := min(n-len(buf), readChunk)
		buf = slices.Grow(buf, chunk)
		m, err := io.ReadFull(r, buf[len(buf):len(buf)+chunk])
		buf = buf[:len(buf)+m]
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return buf, err
		}
	}
	return buf, nil
}

func appendFloats(b []byte, f []float32) []byte {
	b = slices.Grow(b, 4*len(f))
	for _, v := range f {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

// decodeFloats decodes little-endian float32s into dst (grown as needed) and returns it.
func decodeFloats(dst []float32, b []byte) []float32 {
	n := len(b) / 4
	dst = slices.Grow(dst[:0], n)[:n]
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return dst
}

func (p *hubPeer) writeFloats(op byte, rank uint32, seq uint64, f []float32, timeout time.Duration) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.wbuf = appendFrame(p.wbuf[:0], op, rank, seq, 4*len(f))
	p.wbuf = appendFloats(p.wbuf, f)
	p.conn.SetWriteDeadline(time.Now().Add(timeout))
	_, err := p.conn.Write(p.wbuf)
	return err
}

func (p *hubPeer) writeBytes(op byte, msg []byte, timeout time.Duration) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.wbuf = appendFrame(p.wbuf[:0], op, 0, 0, len(msg))
	p.wbuf = append(p.wbuf, msg...)
	p.conn.SetWriteDeadline(time.Now().Add(timeout))
	_, err := p.conn.Write(p.wbuf)
	return err
}
