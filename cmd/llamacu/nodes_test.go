package main

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/loader"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tp"
)

func TestCheckNodes(t *testing.T) {
	for _, tc := range []struct {
		name          string
		tp, nodes, nr int
		rdv           string
		wantErr       string // "" for valid
	}{
		{"single node", 1, 1, 0, "", ""},
		{"tp 8 on one node", 8, 1, 0, "", ""},
		{"tp 8 over 2 nodes, node 1", 8, 2, 1, "10.0.0.1:29500", ""},
		{"tp 8 over 8 nodes", 8, 8, 7, "head:29500", ""},
		{"ipv6 rendezvous", 4, 2, 0, "[::1]:29500", ""},
		{"tp 0", 0, 1, 0, "", "--tp must be ≥ 1"},
		{"nodes 0", 2, 0, 0, "", "--nodes must be ≥ 1"},
		{"nodes do not divide tp", 8, 3, 0, "h:1", "--nodes 3 does not divide --tp 8"},
		{"more nodes than ranks", 2, 4, 0, "h:1", "--nodes 4 does not divide --tp 2"},
		{"node rank = nodes", 8, 2, 2, "h:1", "--node-rank 2: want 0..1"},
		{"negative node rank", 8, 2, -1, "h:1", "--node-rank -1"},
		{"node rank without nodes", 1, 1, 1, "", "--node-rank 1: want 0..0"},
		{"no rendezvous", 8, 2, 0, "", "needs --rendezvous HOST:PORT"},
		{"rendezvous without port", 8, 2, 0, "head", `--rendezvous "head": want HOST:PORT`},
		{"rendezvous empty port", 8, 2, 0, "head:", `--rendezvous "head:": want HOST:PORT`},
		{"rendezvous on one node", 8, 1, 0, "h:1", "--rendezvous is only for --nodes > 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lf := &loadFlags{tp: tc.tp, nodes: tc.nodes, nodeRank: tc.nr, rendezvous: tc.rdv}
			err := lf.checkNodes()
			if tc.wantErr == "" {
				require.NoError(t, err)
				g := groupSpec{tp: tc.tp, nodes: tc.nodes, nodeRank: tc.nr}
				require.Equal(t, tc.tp, g.local()*tc.nodes)
				require.Equal(t, tc.nr*tc.tp/tc.nodes, g.first())
				return
			}
			require.ErrorIs(t, err, errUsage)
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

// copyFile copies src to dst, then applies edit to the bytes (nil: none).
func copyFile(t testing.TB, src, dst string, edit func([]byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(src)
	require.NoError(t, err)
	if edit != nil {
		b = edit(append([]byte(nil), b...))
	}
	require.NoError(t, os.WriteFile(dst, b, 0o644))
}

func fileConfig(t testing.TB, path string) model.Config {
	t.Helper()
	f, err := loader.Open(path)
	require.NoError(t, err)
	defer f.Close()
	return f.Config
}

// TestModelFingerprint: the same bytes (another copy) give the same fingerprint; a byte changed
// in the header, a longer file, another format of the same model, another TP degree, or a
// different shard set in a Hugging Face folder give another.
func TestModelFingerprint(t *testing.T) {
	bin := shared(t, "stories260K/stories260K.bin")
	gguf := shared(t, "stories260K/stories260K.gguf")
	dir := t.TempDir()
	cfg := fileConfig(t, bin)
	fp := func(path string, tpDegree int) string {
		t.Helper()
		s, err := modelFingerprint(path, cfg, tpDegree)
		require.NoError(t, err)
		return s
	}
	base := fp(bin, 2)
	require.Contains(t, base, "dim 64, 5 layers, 8/4 heads")
	require.Contains(t, base, "tp 2")

	cp := filepath.Join(dir, "copy.bin")
	copyFile(t, bin, cp, nil)
	flipped := filepath.Join(dir, "flipped.bin")
	copyFile(t, bin, flipped, func(b []byte) []byte { b[len(b)/2] ^= 1; return b }) // within the first MiB
	longer := filepath.Join(dir, "longer.bin")
	copyFile(t, bin, longer, func(b []byte) []byte { return append(b, 0) })

	// A fake Hugging Face folder: what matters is which files and bytes it has.
	hf := func(name string, files map[string]string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.Mkdir(p, 0o755))
		for n, body := range files {
			require.NoError(t, os.WriteFile(filepath.Join(p, n), []byte(body), 0o644))
		}
		return p
	}
	hfA := hf("a", map[string]string{"config.json": `{"hidden_size": 64}`, "model-1.safetensors": "shard one", "model-2.safetensors": "shard two", "README.md": "ignored"})
	hfA2 := hf("a2", map[string]string{"config.json": `{"hidden_size": 64}`, "model-1.safetensors": "shard one", "model-2.safetensors": "shard two"})
	hfB := hf("b", map[string]string{"config.json": `{"hidden_size": 64}`, "model-1.safetensors": "shard one", "model-2.safetensors": "shard 2wo"})
	hfC := hf("c", map[string]string{"config.json": `{"hidden_size": 64}`, "model-1.safetensors": "shard one"})
	hfD := hf("d", map[string]string{"config.json": `{"hidden_size": 64}`, "model-1.safetensors": "shard one", "model-3.safetensors": "shard two"})

	for _, tc := range []struct {
		name string
		a, b string
		same bool
	}{
		{"same file", base, fp(bin, 2), true},
		{"a copy", base, fp(cp, 2), true},
		{"a byte changed", base, fp(flipped, 2), false},
		{"one byte longer", base, fp(longer, 2), false},
		{"gguf of the same model", base, fp(gguf, 2), false},
		{"another tp degree", base, fp(bin, 4), false},
		{"hf folder copy (README ignored)", fp(hfA, 8), fp(hfA2, 8), true},
		{"hf shard changed", fp(hfA, 8), fp(hfB, 8), false},
		{"hf shard missing", fp(hfA, 8), fp(hfC, 8), false},
		{"hf shard renamed", fp(hfA, 8), fp(hfD, 8), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.same {
				require.Equal(t, tc.a, tc.b)
			} else {
				require.NotEqual(t, tc.a, tc.b)
			}
		})
	}
	require.Contains(t, fp(hfA, 8), "in 3 files")

	_, err := modelFingerprint(filepath.Join(dir, "missing.bin"), cfg, 2)
	require.ErrorContains(t, err, "missing.bin")
	_, err = modelFingerprint(hf("empty", nil), cfg, 2)
	require.ErrorContains(t, err, "no config.json or *.safetensors")
	syn, err := modelFingerprint("", model.Tiny, 2)
	require.NoError(t, err)
	require.Contains(t, syn, "synthetic")
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestMeetNodes: two nodes that loaded the same model file (under any name) get node 0's payload (the NCCL id);
// a node whose copy of the model differs is refused, and both errors name it.
func TestMeetNodes(t *testing.T) {
	bin := shared(t, "stories260K/stories260K.bin")
	dir := t.TempDir()
	other := filepath.Join(dir, "other.bin")
	copyFile(t, bin, other, func(b []byte) []byte { b[100] ^= 0x40; return b })
	renamed := filepath.Join(dir, "renamed.bin")
	copyFile(t, bin, renamed, nil)
	old := rendezvousTimeout
	rendezvousTimeout = 10 * time.Second
	t.Cleanup(func() { rendezvousTimeout = old })

	for _, tc := range []struct {
		name      string
		node1     string
		wantErr0  string // "" when the nodes agree
		wantErr1  string
		wantBytes []byte
	}{
		{"same model, another file name", renamed, "", "", []byte("nccl-unique-id")},
		{"different model", other, "node 1 has", "node 0 refused node 1", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := freeAddr(t)
			var errs [2]error
			var got [2][]byte
			var wg sync.WaitGroup
			for k, path := range []string{bin, tc.node1} {
				lf := &loadFlags{model: path, tp: 2, nodes: 2, nodeRank: k, rendezvous: addr}
				require.NoError(t, lf.checkNodes())
				fp, err := lf.nodeFingerprint()
				require.NoError(t, err)
				g := groupSpec{tp: 2, nodes: 2, nodeRank: k, rendezvous: addr, fingerprint: fp, stderr: io.Discard}
				var payload []byte
				if k == 0 {
					payload = []byte("nccl-unique-id")
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					n, err := joinNodes(context.Background(), g, payload)
					if errs[k] = err; err == nil {
						got[k] = n.Payload()
						t.Cleanup(func() { n.Close() })
					}
				}()
			}
			wg.Wait()
			if tc.wantErr0 == "" {
				require.NoError(t, errors.Join(errs[:]...))
				require.Equal(t, tc.wantBytes, got[1])
				return
			}
			require.ErrorIs(t, errs[0], tp.ErrMismatch)
			require.ErrorContains(t, errs[0], tc.wantErr0)
			require.ErrorContains(t, errs[0], "node 0 of 2")
			require.ErrorContains(t, errs[1], tc.wantErr1)
			require.True(t, strings.Contains(errs[1].Error(), "sha256"), "the refusal says what differs: %v", errs[1])
		})
	}
}

// TestNodesNeedRendezvous: --nodes > 1 without --rendezvous is refused before anything is loaded.
func TestNodesNeedRendezvous(t *testing.T) {
	_, stderr, code := cli(t, "run", "--tp", "2", "--nodes", "2", "--max-tokens", "1", "hi")
	require.Equal(t, 2, code)
	require.Contains(t, stderr, "needs --rendezvous")
}
