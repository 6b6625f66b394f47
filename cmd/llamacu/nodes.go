package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/llamacu/llamacu/loader"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tp"
)

// Multi-node tensor parallelism: one process per node, each running --tp/--nodes ranks (group
// ranks node-rank·local … node-rank·local+local−1). The nodes meet at --rendezvous
// (tp.JoinTCP), which refuses a node whose model fingerprint differs from node 0's and hands
// node 0's payload (the cuda build's NCCL id) to the others; the connections stay open as the
// group's TCP node. Node 0 runs the command — scheduler, sampler, tokenizer — and sends every
// forward step to the others over that node (model.NewParallelNode); the other nodes run
// nothing else: they load their ranks and follow node 0's steps (follow) until node 0 stops,
// printing nothing on stdout. Collectives go over the same TCP node on the CPU path (any
// backend without a groupBuilder), over NCCL in the cuda build.

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
// communicators on one node, TCP ones (tcpGroup) on several.
var groupBuilders = map[string]func(g groupSpec) (rankGroup, error){}

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

// rendezvousTimeout bounds the multi-node meeting (nodes start within this of each other) and
// the wait, after loading, for every node to have loaded.
var rendezvousTimeout = 5 * time.Minute

// collectiveTimeout bounds each TCP collective's wait for the other nodes' ranks: how long a
// hung node (one that has not exited: an exit is noticed at once) stalls the others.
var collectiveTimeout = tp.DefaultCollectiveTimeout

// joinNodes runs this node's side of the rendezvous and returns the group's TCP node: node 0
// hands payload (the cuda build's NCCL id) to every other node (node.Payload()); an error
// names the nodes that never came or whose model differs from node 0's.
func joinNodes(ctx context.Context, g groupSpec, payload []byte) (*tp.TCPNode, error) {
	if g.nodeRank == 0 {
		fmt.Fprintf(g.stderr, "node 0 of %d: waiting at %s for the other nodes (model %s)\n", g.nodes, g.rendezvous, g.fingerprint)
	} else {
		fmt.Fprintf(g.stderr, "node %d of %d: joining %s (model %s)\n", g.nodeRank, g.nodes, g.rendezvous, g.fingerprint)
	}
	n, err := tp.JoinTCP(ctx, tp.TCPConfig{
		RendezvousConfig: tp.RendezvousConfig{Addr: g.rendezvous, Nodes: g.nodes, NodeRank: g.nodeRank,
			Fingerprint: g.fingerprint, Payload: payload, Timeout: rendezvousTimeout},
		Size: g.tp, Timeout: collectiveTimeout, StartTimeout: rendezvousTimeout})
	if err != nil {
		return nil, fmt.Errorf("node %d of %d: %w", g.nodeRank, g.nodes, err)
	}
	return n, nil
}

// tcpGroup makes this node's ranks of a multi-node group on --backend, talking over TCP.
func (lf *loadFlags) tcpGroup(g groupSpec) (rankGroup, error) {
	bes, err := lf.newBackends(g.local())
	if err != nil {
		return rankGroup{}, err
	}
	n, err := joinNodes(context.Background(), g, nil)
	if err != nil {
		for _, b := range bes {
			b.Close()
		}
		return rankGroup{}, err
	}
	fmt.Fprintf(g.stderr, "tensor parallel: ranks %d..%d of %d here, TCP to the other %d node(s)\n", g.first(), g.first()+g.local()-1, g.tp, g.nodes-1)
	return rankGroup{backends: bes, comms: n.Comms(), node: n}, nil
}

// follower reports whether this process is a node other than 0: it loads its ranks and runs
// node 0's forward steps (follow) instead of the command.
func (lf *loadFlags) follower() bool { return lf.nodes > 1 && lf.nodeRank > 0 }

// follow is what every command does on a node other than 0: load this node's ranks, then run
// node 0's forward steps until node 0 stops (exit 0) or goes away (an error). Nothing goes to
// stdout.
func (lf *loadFlags) follow(stderr io.Writer) error {
	e, err := lf.load(stderr)
	if err != nil {
		return err
	}
	defer e.Close()
	return lf.followModel(e.Model, stderr)
}

func (lf *loadFlags) followModel(m *model.Model, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(stderr, "node %d of %d: following node 0's forward steps\n", lf.nodeRank, lf.nodes)
	if err := m.Follow(ctx); err != nil {
		return fmt.Errorf("node %d of %d: %w", lf.nodeRank, lf.nodes, err)
	}
	fmt.Fprintf(stderr, "node %d of %d: node 0 stopped the group\n", lf.nodeRank, lf.nodes)
	return nil
}
