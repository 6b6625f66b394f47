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
//	node k → node 0:  {"node": k, "nodes": N, "fingerprint": "…"}
//	node 0 → node k:  {"payload": "…base64…"}  or  {"error": "…"}

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
}

type hello struct {
	Node        int    `json:"node"`
	Nodes       int    `json:"nodes"`
	Fingerprint string `json:"fingerprint"`
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
	if c.Nodes < 1 || c.NodeRank < 0 || c.NodeRank >= c.Nodes {
		return nil, fmt.Errorf("%w: node rank %d of %d nodes", ErrDegree, c.NodeRank, c.Nodes)
	}
	if c.Nodes == 1 {
		return c.Payload, nil
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultStartTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if c.NodeRank == 0 {
		return c.Payload, serveRendezvous(ctx, c)
	}
	return joinRendezvous(ctx, c)
}

func serveRendezvous(ctx context.Context, c RendezvousConfig) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", c.Addr)
	if err != nil {
		return fmt.Errorf("tp: rendezvous: listen on %s: %w", c.Addr, err)
	}
	defer ln.Close()
	go func() { <-ctx.Done(); ln.Close() }()

	conns := map[int]net.Conn{}
	defer func() {
		for _, conn := range conns {
			conn.Close()
		}
	}()
	var mismatches []string
	for len(conns) < c.Nodes-1 {
		conn, err := ln.Accept()
		if err != nil {
			re := &RankError{Op: "rendezvous on " + c.Addr, Missing: missingNodes(conns, c.Nodes), Err: ErrTimeout}
			for _, conn := range conns {
				reject(conn, re.Error())
			}
			return re
		}
		conn.SetDeadline(deadline(ctx))
		var h hello
		line, err := bufio.NewReader(conn).ReadBytes('\n')
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
		conns[h.Node] = conn
		if h.Fingerprint != c.Fingerprint {
			mismatches = append(mismatches, fmt.Sprintf("node %d has %q, node 0 has %q", h.Node, h.Fingerprint, c.Fingerprint))
		}
	}
	if len(mismatches) > 0 {
		sort.Strings(mismatches)
		msg := fmt.Sprintf("%v: %v", ErrMismatch, mismatches)
		for _, conn := range conns {
			reject(conn, msg)
		}
		return fmt.Errorf("%w: %v", ErrMismatch, mismatches)
	}
	for k, conn := range conns {
		if err := json.NewEncoder(conn).Encode(welcome{Payload: c.Payload}); err != nil {
			return fmt.Errorf("tp: rendezvous: node %d: %w", k, err)
		}
	}
	return nil
}

func joinRendezvous(ctx context.Context, c RendezvousConfig) ([]byte, error) {
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, "tcp", c.Addr)
		if err != nil {
			select {
			case <-ctx.Done():
				return nil, &RankError{Op: "rendezvous at " + c.Addr, Missing: []int{0}, Err: ErrTimeout}
			case <-time.After(200 * time.Millisecond): // node 0 may not be listening yet
				continue
			}
		}
		defer conn.Close()
		// Wait a little past our own deadline for node 0's answer: it times out at about the
		// same moment and then says which nodes never came.
		conn.SetDeadline(deadline(ctx).Add(2 * time.Second))
		if err := json.NewEncoder(conn).Encode(hello{Node: c.NodeRank, Nodes: c.Nodes, Fingerprint: c.Fingerprint}); err != nil {
			return nil, fmt.Errorf("tp: rendezvous at %s: %w", c.Addr, err)
		}
		var w welcome
		line, err := bufio.NewReader(conn).ReadBytes('\n')
		if err == nil {
			err = json.Unmarshal(line, &w)
		}
		if err != nil {
			return nil, &RankError{Op: "rendezvous at " + c.Addr, Missing: []int{0}, Err: fmt.Errorf("%w (waiting for the other nodes: %v)", ErrTimeout, err)}
		}
		if w.Error != "" {
			return nil, fmt.Errorf("tp: rendezvous at %s: node 0 refused node %d: %s", c.Addr, c.NodeRank, w.Error)
		}
		return w.Payload, nil
	}
}

func reject(conn net.Conn, msg string) {
	conn.SetWriteDeadline(time.Now().Add(time.Second)) // the rendezvous deadline may have passed
	json.NewEncoder(conn).Encode(welcome{Error: msg})
	conn.Close()
}

func missingNodes(have map[int]net.Conn, n int) []int {
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
