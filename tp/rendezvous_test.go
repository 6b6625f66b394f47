package tp

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func rendezvousAll(t *testing.T, addr string, fps []string, present []int, timeout time.Duration) ([][]byte, []error) {
	n := len(fps)
	out, errs := make([][]byte, n), make([]error, n)
	var wg sync.WaitGroup
	for _, k := range present {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := RendezvousConfig{Addr: addr, Nodes: n, NodeRank: k, Fingerprint: fps[k], Timeout: timeout}
			if k == 0 {
				cfg.Payload = []byte("nccl-unique-id-bytes")
			}
			out[k], errs[k] = Rendezvous(context.Background(), cfg)
		}()
	}
	wg.Wait()
	return out, errs
}

func TestRendezvousSharesPayload(t *testing.T) {
	addr := freeAddr(t)
	fps := []string{"7b/fp16/tp8", "7b/fp16/tp8", "7b/fp16/tp8"}
	out, errs := rendezvousAll(t, addr, fps, []int{2, 1, 0}, 10*time.Second) // node 0 last: the others retry
	for k := range fps {
		if errs[k] != nil || string(out[k]) != "nccl-unique-id-bytes" {
			t.Errorf("node %d: %q, %v", k, out[k], errs[k])
		}
	}
}

func TestRendezvousMismatchedModels(t *testing.T) {
	addr := freeAddr(t)
	fps := []string{"llama-2-70b sha 1", "llama-2-70b sha 1", "llama-2-70b sha 2"}
	_, errs := rendezvousAll(t, addr, fps, []int{0, 1, 2}, 10*time.Second)
	if !errors.Is(errs[0], ErrMismatch) || !strings.Contains(errs[0].Error(), "node 2") {
		t.Errorf("node 0: %v, want a mismatch naming node 2", errs[0])
	}
	for _, k := range []int{1, 2} {
		if errs[k] == nil || !strings.Contains(errs[k].Error(), "node 2") {
			t.Errorf("node %d: %v, want the refusal naming node 2", k, errs[k])
		}
	}
}

func TestRendezvousTimeoutNamesMissingNode(t *testing.T) {
	addr := freeAddr(t)
	fps := []string{"m", "m", "m"}
	_, errs := rendezvousAll(t, addr, fps, []int{0, 1}, 300*time.Millisecond) // node 2 never starts
	var re *RankError
	if !errors.As(errs[0], &re) || len(re.Missing) != 1 || re.Missing[0] != 2 || !errors.Is(errs[0], ErrTimeout) {
		t.Errorf("node 0: %v, want a time-out naming node 2", errs[0])
	}
	if errs[1] == nil || !strings.Contains(errs[1].Error(), "[2]") {
		t.Errorf("node 1: %v, want node 0's refusal naming node 2", errs[1])
	}
	// A node whose node 0 never comes names node 0.
	_, err := Rendezvous(context.Background(), RendezvousConfig{Addr: freeAddr(t), Nodes: 2, NodeRank: 1, Timeout: 300 * time.Millisecond})
	if !errors.As(err, &re) || re.Missing[0] != 0 {
		t.Errorf("lonely node 1: %v", err)
	}
	if _, err := Rendezvous(context.Background(), RendezvousConfig{Nodes: 2, NodeRank: 2}); !errors.Is(err, ErrDegree) {
		t.Errorf("bad node rank: %v", err)
	}
}
