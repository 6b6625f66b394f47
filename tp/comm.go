// Package tp is tensor parallelism's communication layer: the Comm interface the forward pass
// uses between ranks (all-reduce after the attention output and after the FFN, all-gather of the
// vocabulary-split logits), an in-process implementation whose ranks are goroutines, a TCP one
// whose ranks are spread over processes (JoinTCP, for multi-node tensor parallelism on any
// backend), and (in cuda builds) NCCL.
//
// Every rank calls each collective in the same order with the same length; a collective returns
// only when all ranks have contributed. Results are bit-identical on every rank: the in-process
// and TCP sums always add rank 0, 1, 2, … in that order, so they also agree with each other.
package tp

import (
	"errors"
	"fmt"
	"time"
)

// Comm connects the ranks of one tensor-parallel group.
type Comm interface {
	Rank() int
	Size() int
	// AllReduceSum replaces buf on every rank by the elementwise sum of all ranks' bufs.
	AllReduceSum(buf []float32) error
	// AllGather concatenates every rank's src in rank order into dst (len(dst) = Size·len(src)).
	AllGather(dst, src []float32) error
	// Barrier returns when every rank has called it.
	Barrier() error
	// Close leaves the group; collectives still waiting on this rank fail with ErrClosed.
	Close() error
}

// Errors shared by implementations.
var (
	ErrClosed  = errors.New("tp: communicator closed")
	ErrTimeout = errors.New("tp: timed out waiting for ranks")
	ErrDegree  = errors.New("tp: bad tensor-parallel degree")
	// ErrProtocol is returned when a peer process sends a frame that breaks the TCP group's
	// protocol (tcp.go): a bad header, length, rank or sequence number.
	ErrProtocol = errors.New("tp: malformed message from a peer")
)

// RankError names the rank(s) a collective was waiting for.
type RankError struct {
	Op      string
	Missing []int // ranks that never arrived
	Err     error
}

func (e *RankError) Error() string {
	return fmt.Sprintf("tp: %s: ranks %v did not arrive: %v", e.Op, e.Missing, e.Err)
}

func (e *RankError) Unwrap() error { return e.Err }

// DefaultStartTimeout bounds how long the first Barrier (start-up) waits for every rank.
const DefaultStartTimeout = 60 * time.Second
