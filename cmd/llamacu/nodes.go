package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/llamacu/llamacu/loader"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tp"
)

// Multi-node tensor parallelism: one process per node, each running --tp/--nodes ranks (group
// ranks node-rank·local … node-rank·local+local−1). Node 0 makes the NCCL unique id and hands it
// to the others through tp.Rendezvous at --rendezvous, which also refuses a node whose model
// fingerprint differs from node 0's. Validation and the fingerprint are pure Go; the group itself
// is built by the backend's groupBuilder (the cuda build registers one).

// errNeedsCUDA is what a build without a group builder says to --nodes > 1.
var errNeedsCUDA = errors.New("multi-node tensor parallelism needs the cuda build (NCCL): make cuda, then bin/llamacu-cuda --backend cuda")

// groupSpec is what a tensor-parallel group builder needs.
type groupSpec struct {
	tp         int    // ranks in the whole group
	nodes      int    // processes (nodes) the group spans
	nodeRank   int    // this node
	rendezvous string // HOST:PORT node 0 listens on (nodes > 1)
	// fingerprint identifies this node's model for the rendezvous (nodes > 1 only).
	fingerprint string
	stderr      io.Writer
}

// local is the number of ranks this node runs; first is the group rank of the first.
func (g groupSpec) local() int { return g.tp / g.nodes }
func (g groupSpec) first() int { return g.nodeRank * g.local() }

// groupBuilders make this process's ranks of a tensor-parallel group with their communicators,
// for backends that need more than one backend constructor call per rank (cuda: a device per
// rank, and NCCL). Backends without one get --tp backends from newBackend and in-process
// communicators.
var groupBuilders = map[string]func(g groupSpec) ([]model.Backend, []tp.Comm, error){}

// Limits of --tp and --threads: far beyond any machine, but small enough that the backends and
// worker goroutines made before the model is even opened cannot exhaust memory (--tp 10000000
// used to die of out-of-memory creating CPU backends).
const (
	maxTPFlag      = 1024
	maxThreadsFlag = 4096
)

// checkNodes validates --tp, --nodes, --node-rank and --rendezvous together, and --threads and
// --ctx, which every command that loads a model shares.
func (lf *loadFlags) checkNodes() error {
	switch {
	case lf.threads < 0 || lf.threads > maxThreadsFlag:
		return fmt.Errorf("%w: --threads %d: want 0 (all cores) .. %d", errUsage, lf.threads, maxThreadsFlag)
	case lf.ctx < 0:
		return fmt.Errorf("%w: --ctx %d: want ≥ 0 (0: the model's context length)", errUsage, lf.ctx)
	case lf.tp < 1:
		return fmt.Errorf("%w: --tp must be ≥ 1", errUsage)
	case lf.tp > maxTPFlag:
		return fmt.Errorf("%w: --tp %d: at most %d", errUsage, lf.tp, maxTPFlag)
	case lf.nodes < 1:
		return fmt.Errorf("%w: --nodes must be ≥ 1", errUsage)
	case lf.tp%lf.nodes != 0:
		return fmt.Errorf("%w: --nodes %d does not divide --tp %d (every node runs the same number of ranks)", errUsage, lf.nodes, lf.tp)
	case lf.nodeRank < 0 || lf.nodeRank >= lf.nodes:
		return fmt.Errorf("%w: --node-rank %d: want 0..%d for %d node(s)", errUsage, lf.nodeRank, lf.nodes-1, lf.nodes)
	case lf.nodes > 1 && lf.rendezvous == "":
		return fmt.Errorf("%w: --nodes %d needs --rendezvous HOST:PORT (node 0 listens there, the others dial it)", errUsage, lf.nodes)
	}
	if lf.rendezvous != "" {
		if lf.nodes == 1 {
			return fmt.Errorf("%w: --rendezvous is only for --nodes > 1", errUsage)
		}
		if _, port, err := net.SplitHostPort(lf.rendezvous); err != nil || port == "" {
			return fmt.Errorf("%w: --rendezvous %q: want HOST:PORT", errUsage, lf.rendezvous)
		}
	}
	return nil
}

// fingerprintBytes is how much of each model file the fingerprint hashes: the whole header of a
// llama2.c .bin, the metadata (and usually part of the vocabulary) of a GGUF, the JSON header of
// a safetensors shard.
const fingerprintBytes = 1 << 20

// modelFingerprint identifies a model for the multi-node rendezvous, readably enough that the
// error naming a mismatched node says what differs:
//
//	dim D, L layers, H/KV heads, ffn F, vocab V; <files>; tp N
//
// where <files> is "N bytes, sha256 …" over the file's size and first MiB — or, for a Hugging
// Face folder, over the name, size and first MiB of config.json, every *.safetensors shard and
// *.json index in it. A different file, a truncated copy, another shard set or another TP degree
// all change it; reading 1 MiB per file keeps it fast for 70B. path "" is the built-in synthetic
// model (cfg alone).
func modelFingerprint(path string, cfg model.Config, tpDegree int) (string, error) {
	// Not cfg.Name: a llama2.c model is named after its file, and a copy under another name is
	// the same model.
	shape := fmt.Sprintf("dim %d, %d layers, %d/%d heads, ffn %d, vocab %d", cfg.Dim, cfg.Layers, cfg.Heads, cfg.KVHeads, cfg.FFN, cfg.Vocab)
	if path == "" {
		return fmt.Sprintf("%s; synthetic; tp %d", shape, tpDegree), nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("fingerprint: %w", err)
	}
	files := []string{path}
	if st.IsDir() {
		files = nil
		entries, err := os.ReadDir(path)
		if err != nil {
			return "", fmt.Errorf("fingerprint: %w", err)
		}
		for _, e := range entries {
			n := e.Name()
			if e.Type().IsRegular() && (strings.HasSuffix(n, ".safetensors") || strings.HasSuffix(n, ".json")) {
				files = append(files, filepath.Join(path, n))
			}
		}
		if len(files) == 0 {
			return "", fmt.Errorf("fingerprint: %s: no config.json or *.safetensors", path)
		}
		sort.Strings(files)
	}
	h := sha256.New()
	var total int64
	for _, name := range files {
		size, err := hashHead(h, name, st.IsDir())
		if err != nil {
			return "", fmt.Errorf("fingerprint: %w", err)
		}
		total += size
	}
	what := "bytes"
	if len(files) > 1 {
		what = fmt.Sprintf("bytes in %d files", len(files))
	}
	return fmt.Sprintf("%s; %d %s, sha256 %s; tp %d", shape, total, what, hex.EncodeToString(h.Sum(nil))[:16], tpDegree), nil
}

// hashHead feeds h with (the base name, when named,) the size and the first fingerprintBytes of
// a file, and returns its size.
func hashHead(h io.Writer, path string, named bool) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if named {
		fmt.Fprintf(h, "%s\x00", filepath.Base(path))
	}
	fmt.Fprintf(h, "%d\x00", st.Size())
	if _, err := io.CopyN(h, f, fingerprintBytes); err != nil && err != io.EOF {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return st.Size(), nil
}

// nodeFingerprint is modelFingerprint of the model lf loads (its config read from the file).
func (lf *loadFlags) nodeFingerprint() (string, error) {
	cfg := model.Tiny // engine.Load's built-in model when there is no --model
	if lf.model != "" {
		f, err := loader.Open(lf.model)
		if err != nil {
			return "", err
		}
		cfg = f.Config
		f.Close()
	}
	return modelFingerprint(lf.model, cfg, lf.tp)
}

// rendezvousTimeout bounds the multi-node meeting (nodes start within this of each other).
var rendezvousTimeout = 5 * time.Minute

// meetNodes runs this node's side of the rendezvous: node 0 hands payload (its NCCL id) to every
// other node, which gets it back; an error names the nodes that never came or whose model
// differs from node 0's.
func meetNodes(ctx context.Context, g groupSpec, payload []byte) ([]byte, error) {
	if g.nodeRank == 0 {
		fmt.Fprintf(g.stderr, "node 0 of %d: waiting at %s for the other nodes (model %s)\n", g.nodes, g.rendezvous, g.fingerprint)
	} else {
		fmt.Fprintf(g.stderr, "node %d of %d: joining %s (model %s)\n", g.nodeRank, g.nodes, g.rendezvous, g.fingerprint)
	}
	p, err := tp.Rendezvous(ctx, tp.RendezvousConfig{Addr: g.rendezvous, Nodes: g.nodes, NodeRank: g.nodeRank,
		Fingerprint: g.fingerprint, Payload: payload, Timeout: rendezvousTimeout})
	if err != nil {
		return nil, fmt.Errorf("node %d of %d: %w", g.nodeRank, g.nodes, err)
	}
	return p, nil
}

// errMultiNodeForward is where multi-node start-up ends today: the communicators are built, but
// model.NewParallel drives only ranks in its own process (rank 0 hands each step to the others
// through channels); the other nodes would need the step's batch sent to them each step.
var errMultiNodeForward = errors.New("multi-node: the nodes met and NCCL started, but the forward pass cannot drive ranks in other processes yet (model.NewParallel runs every rank in one process)")
