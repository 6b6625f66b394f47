package tp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sort"
	"time"
)

// Multi-node start-up: one process per node, ranks meeting at a rendezvous address. Node 0
// listens; every other node dials it (retrying until the deadline), says who it is and what model
// it loaded; node 0 checks that every node has the same model and the same group shape, then sends
// each node the payload — for NCCL, the ncclUniqueId that lets the ranks find each other.
//
// The protocol is one JSON line each way over TCP:
//
//	node k → node 0:  {"node": k, "nodes": N, "fingerprint": "…", "tp": R}
//	node 0 → node k:  {"payload": "…base64…"}  or  {"error": "…"}
//
// ("tp", the group's ranks, only from JoinTCP, which keeps the connections open afterwards for
// the group's binary frames: tcp.go.)

// RendezvousConfig describes this node's part in a rendezvous.
type RendezvousConfig struct {
	Addr     string // HOST:PORT node 0 listens on and the others dial
	Nodes    int    // number of nodes (processes)
	NodeRank int    // this node, 0..Nodes−1
	// Fingerprint identifies the model and settings (config, file sizes, TP degree); every node
	// must present the same one.
	Fingerprint string
	// Payload is what node 0 hands every node (ignored on the others).
	Payload []byte
	// Timeout bounds the whole rendezvous (0: DefaultStartTimeout).
	Timeout time.Duration
	// Listener, when not nil, is where node 0 accepts the other nodes instead of listening on
	// Addr (tests listen on port 0 and hand the others Listener.Addr()). It is closed when the
	// rendezvous ends. Ignored on the other nodes.
	Listener net.Listener
}

type hello struct {
	Node        int    `json:"node"`
	Nodes       int    `json:"nodes"`
	Fingerprint string `json:"fingerprint"`
	// TP is the group's size in ranks when the connection goes on to carry a TCP group
	// (JoinTCP); 0 for a plain Rendezvous.
	TP int `json:"tp,omitempty"`
}

// peer is a connection the rendezvous made, kept open by JoinTCP for the group's traffic.
type peer struct {
	node int
	conn net.Conn
	r    *bufio.Reader // conn's reader: it may hold bytes read past the JSON line
}

type welcome struct {
	Payload []byte `json:"payload,omitempty"`
	Error   string `json:"error,omitempty"`
}

// ErrMismatch is returned when nodes disagree on the model or the group.
var ErrMismatch = errors.New("tp: nodes disagree")

// Rendezvous runs this node's side and returns node 0's payload. Errors name the nodes that never
// arrived or that disagree.
func Rendezvous(ctx context.Context, c RendezvousConfig) ([]byte, error) {
	p, peers, err := meet(ctx, c, 0)
	for _, pe := range peers {
		pe.conn.Close()
	}
	return p, err
}

// meet is Rendezvous that keeps the connections open: node 0 gets one per other node (in node
// order), the others their connection to node 0. tpSize is checked equal on every node (0 for a
// plain rendezvous).
func meet(ctx context.Context, c RendezvousConfig, tpSize int) ([]byte, []*peer, error) {
	if c.Nodes < 1 || c.NodeRank < 0 || c.NodeRank >= c.Nodes {
		if c.Listener != nil {
			c.Listener.Close()
		}
		return nil, nil, fmt.Errorf("%w: node rank %d of %d nodes", ErrDegree, c.NodeRank, c.Nodes)
	}
	if c.Nodes == 1 {
		if c.Listener != nil {
			c.Listener.Close()
		}
		return c.Payload, nil, nil
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultStartTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if c.NodeRank == 0 {
		peers, err := serveRendezvous(ctx, c, tpSize)
		return c.Payload, peers, err
	}
	pe, payload, err := joinRendezvous(ctx, c, tpSize)
	if err != nil {
		return nil, nil, err
	}
	return payload, []*peer{pe}, nil
}

func serveRendezvous(ctx context.Context, c RendezvousConfig, tpSize int) ([]*peer, error) {
	ln := c.Listener
	if ln == nil {
		var lc net.ListenConfig
		var err error
		if ln, err = lc.Listen(ctx, "tcp", c.Addr); err != nil {
			return nil, fmt.Errorf("tp: rendezvous: listen on %s: %w", c.Addr, err)
		}
	}
	where := c.Addr
	if where == "" {
		where = ln.Addr().String()
	}
	defer ln.Close()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	conns := map[int]*peer{}
	kept := false
	defer func() {
		if kept {
			return
		}
		for _, pe := range conns {
			pe.conn.Close()
		}
	}()
	var mismatches []string
	for len(conns) < c.Nodes-1 {
		conn, err := ln.Accept()
		if err != nil {
			re := &RankError{Op: "rendezvous on " + where, Missing: missingNodes(conns, c.Nodes), Err: ErrTimeout}
			for _, pe := range conns {
				reject(pe.conn, re.Error())
			}
			return nil, re
		}
		conn.SetDeadline(deadline(ctx))
		var h hello
		br := bufio.NewReader(conn)
		line, err := br.ReadBytes('\n')
		if err == nil {
			err = json.Unmarshal(line, &h)
		}
		switch {
		case err != nil:
			conn.Close() // not one of ours, or it went away: keep waiting for the real nodes
			continue
		case h.Node < 1 || h.Node >= c.Nodes || h.Nodes != c.Nodes:
			reject(conn, fmt.Sprintf("node %d of %d does not fit a group of %d nodes", h.Node, h.Nodes, c.Nodes))
			mismatches = append(mismatches, fmt.Sprintf("node %d says %d nodes", h.Node, h.Nodes))
			continue
		case conns[h.Node] != nil:
			reject(conn, fmt.Sprintf("node rank %d joined twice", h.Node))
			continue
		}
		conns[h.Node] = &peer{node: h.Node, conn: conn, r: br}
		if h.Fingerprint != c.Fingerprint {
			mismatches = append(mismatches, fmt.Sprintf("node %d has %q, node 0 has %q", h.Node, h.Fingerprint, c.Fingerprint))
		}
		if h.TP != tpSize {
			mismatches = append(mismatches, fmt.Sprintf("node %d has a group of %d ranks, node 0 has %d", h.Node, h.TP, tpSize))
		}
	}
	if len(mismatches) > 0 {
		sort.Strings(mismatches)
		msg := fmt.Sprintf("%v: %v", ErrMismatch, mismatches)
		for _, pe := range conns {
			reject(pe.conn, msg)
		}
		return nil, fmt.Errorf("%w: %v", ErrMismatch, mismatches)
	}
	peers := make([]*peer, 0, len(conns))
	for k := 1; k < c.Nodes; k++ {
		pe := conns[k]
		if err := json.NewEncoder(pe.conn).Encode(welcome{Payload: c.Payload}); err != nil {
			return nil, fmt.Errorf("tp: rendezvous: node %d: %w", k, err)
		}
		pe.conn.SetDeadline(time.Time{}) // the connection may live on (JoinTCP)
		peers = append(peers, pe)
	}
	kept = true
	return peers, nil
}

func joinRendezvous(ctx context.Context, c RendezvousConfig, tpSize int) (*peer, []byte, error) {
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, "tcp", c.Addr)
		if err != nil {
			select {
			case <-ctx.Done():
				return nil, nil, &RankError{Op: "rendezvous at " + c.Addr, Missing: []int{0}, Err: ErrTimeout}
			case <-time.After(200 * time.Millisecond): // node 0 may not be listening yet
				continue
			}
		}
		pe, payload, err := greet(ctx, conn, c, tpSize)
		if err != nil {
			conn.Close()
			return nil, nil, err
		}
		return pe, payload, nil
	}
}

// greet says who this node is on conn and reads node 0's answer.
func greet(ctx context.Context, conn net.Conn, c RendezvousConfig, tpSize int) (*peer, []byte, error) {
	// Wait a little past our own deadline for node 0's answer: it times out at about the
	// same moment and then says which nodes never came.
	conn.SetDeadline(deadline(ctx).Add(2 * time.Second))
	if err := json.NewEncoder(conn).Encode(hello{Node: c.NodeRank, Nodes: c.Nodes, Fingerprint: c.Fingerprint, TP: tpSize}); err != nil {
		return nil, nil, fmt.Errorf("tp: rendezvous at %s: %w", c.Addr, err)
	}
	var w welcome
	br := bufio.NewReader(conn)
	line, err := br.ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &w)
	}
	if err != nil {
		return nil, nil, &RankError{Op: "rendezvous at " + c.Addr, Missing: []int{0}, Err: fmt.Errorf("%w (waiting for the other nodes: %v)", ErrTimeout, err)}
	}
	if w.Error != "" {
		return nil, nil, fmt.Errorf("tp: rendezvous at %s: node 0 refused node %d: %s", c.Addr, c.NodeRank, w.Error)
	}
	conn.SetDeadline(time.Time{})
	return &peer{node: 0, conn: conn, r: br}, w.Payload, nil
}

func reject(conn net.Conn, msg string) {
	conn.SetWriteDeadline(time.Now().Add(time.Second)) // the rendezvous deadline may have passed
	json.NewEncoder(conn).Encode(welcome{Error: msg})
	conn.Close()
}

func missingNodes(have map[int]*peer, n int) []int {
	var m []int
	for k := 1; k < n; k++ {
		if have[k] == nil {
			m = append(m, k)
		}
	}
	return m
}

func deadline(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}
