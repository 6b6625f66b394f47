package main

import (
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tp"
)

// loadFlags are the flags every command that loads a model shares.
type loadFlags struct {
	model, tokenizer, backend string
	threads, ctx, tp          int
	nodes, nodeRank           int    // multi-node tensor parallelism (nodes.go)
	rendezvous                string // HOST:PORT where the nodes meet
	lora                      []engine.LoRAOption

	node *tp.TCPNode // after load with several nodes: the group (serve watches it)
}

func addLoadFlags(fs *flag.FlagSet) *loadFlags {
	lf := &loadFlags{}
	fs.StringVar(&lf.model, "model", "", "model: llama2.c .bin, .gguf, or Hugging Face folder (empty: built-in synthetic model)")
	fs.StringVar(&lf.tokenizer, "tokenizer", "", "tokenizer.model, llama2.c tokenizer.bin or .gguf (default: in or beside the model)")
	fs.StringVar(&lf.backend, "backend", "cpu", "compute backend: "+backendNames())
	fs.IntVar(&lf.threads, "threads", 0, "CPU threads (0: all cores)")
	fs.IntVar(&lf.ctx, "ctx", 0, "context length to allocate (0: the model's)")
	fs.IntVar(&lf.tp, "tp", 1, "tensor-parallel degree: ranks that split the heads and FFN (must divide the KV heads); with --nodes, over all nodes")
	fs.IntVar(&lf.nodes, "nodes", 1, "processes (one per node) the --tp ranks span, --tp/--nodes each (TCP between them; --backend cuda: NCCL)")
	fs.IntVar(&lf.nodeRank, "node-rank", 0, "this node, 0..--nodes−1 (node 0 runs the command; the others run its forward steps and print nothing)")
	fs.StringVar(&lf.rendezvous, "rendezvous", "", "HOST:PORT where node 0 listens and the other nodes dial (needed with --nodes > 1)")
	addLoRAFlags(fs, &lf.lora)
	return lf
}

// addLoRAFlags defines --lora PATH and --lora-scaled PATH:SCALE, each repeatable, appending to
// list.
func addLoRAFlags(fs *flag.FlagSet, list *[]engine.LoRAOption) {
	fs.Func("lora", "apply a LoRA adapter (PEFT folder or llama.cpp GGUF adapter): merged into F32/F16/BF16 weights, beside quantized ones; repeatable", func(v string) error {
		*list = append(*list, engine.LoRAOption{Path: v, Scale: 1})
		return nil
	})
	fs.Func("lora-scaled", "apply a LoRA adapter at a strength: PATH:SCALE (llama.cpp's --lora-scaled), repeatable", func(v string) error {
		i := strings.LastIndexByte(v, ':')
		if i <= 0 {
			return fmt.Errorf("want PATH:SCALE, got %q", v)
		}
		scale, err := strconv.ParseFloat(v[i+1:], 64)
		if err != nil || math.IsNaN(scale) || math.IsInf(scale, 0) {
			return fmt.Errorf("want PATH:SCALE with a finite number, got %q", v)
		}
		*list = append(*list, engine.LoRAOption{Path: v[:i], Scale: scale})
		return nil
	})
}

// load opens the model, showing a progress bar on a terminal. With several nodes it first meets
// the others (nodes.go); the group's TCP node is then lf.node.
func (lf *loadFlags) load(stderr io.Writer) (*engine.Engine, error) {
	rg, err := lf.backends(stderr)
	if err != nil {
		return nil, err
	}
	bes, comms := rg.backends, rg.comms
	opts := engine.Options{ModelPath: lf.model, TokenizerPath: lf.tokenizer, Backends: bes, Comms: comms, CloseBackend: true, Context: lf.ctx, LoRA: lf.lora}
	if lf.backend == "cuda" { // prompts in steps of 2048 tokens (serve's default --max-batch-tokens too)
		opts.PrefillChunk = engine.GPUPrefillChunk
	}
	if rg.node != nil {
		opts.Link, lf.node = rg.node, rg.node
	}
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		var bar *progressbar.ProgressBar
		opts.Progress = func(done, total int64) {
			if total < 64<<20 { // small files load too fast for a bar to help
				return
			}
			if bar == nil {
				bar = progressbar.DefaultBytes(total, "loading")
			}
			_ = bar.Set64(done)
		}
	}
	e, err := engine.Load(opts)
	if err != nil {
		for _, c := range comms { // engine.Load closed the backends
			c.Close()
		}
		if rg.node != nil {
			rg.node.Close() // the other nodes learn that node 0 (or this one) gave up
		}
		return nil, err
	}
	c := e.Model.Config
	fmt.Fprintf(stderr, "model: %s\n", e.Source)
	fmt.Fprintf(stderr, "loaded in %v: %s parameters, dim %d, %d layers, %d/%d heads, vocab %d, context %d; backend %s\n",
		e.LoadTime.Round(time.Millisecond), humanize.SIWithDigits(float64(c.ParamCount()), 1, ""), c.Dim, c.Layers,
		c.Heads, c.KVHeads, c.Vocab, e.Context, backendSummary(bes))
	if rg.node != nil {
		fmt.Fprintf(stderr, "node %d of %d: ranks %d..%d of %d, every node loaded\n", lf.nodeRank, lf.nodes,
			rg.node.First(), rg.node.First()+len(bes)-1, lf.tp)
	}
	return e, nil
}

// rankGroup is this process's ranks of a tensor-parallel group.
type rankGroup struct {
	backends []model.Backend
	comms    []tp.Comm // nil: the engine's in-process ones
	// node is the TCP group of a multi-node run (nil on one node): the ranks' communicators on
	// the CPU path, and on every path the link that carries node 0's steps to the others.
	node *tp.TCPNode
}

// backends makes this process's ranks: through the backend's group builder when it has one and
// there are several ranks (cuda: a device per rank, NCCL or staged communicators; several
// nodes), over TCP when several nodes run a backend without one (tcpGroup), else --tp backends
// from newBackend (comms nil: the engine's in-process ones).
func (lf *loadFlags) backends(stderr io.Writer) (rankGroup, error) {
	if err := lf.checkNodes(); err != nil {
		return rankGroup{}, err
	}
	build, ok := groupBuilders[lf.backend]
	if lf.nodes > 1 || (ok && lf.tp > 1) {
		g := groupSpec{tp: lf.tp, nodes: lf.nodes, nodeRank: lf.nodeRank, rendezvous: lf.rendezvous, stderr: stderr}
		if lf.nodes > 1 {
			fp, err := lf.nodeFingerprint()
			if err != nil {
				return rankGroup{}, err
			}
			g.fingerprint = fp
		}
		if ok {
			return build(g)
		}
		return lf.tcpGroup(g)
	}
	bes, err := lf.newBackends(lf.tp)
	return rankGroup{backends: bes}, err
}

// newBackends makes n backends of --backend that share --threads.
func (lf *loadFlags) newBackends(n int) ([]model.Backend, error) {
	threads := lf.threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	var bes []model.Backend
	for range n {
		be, err := newBackend(lf.backend, max(1, threads/n))
		if err != nil {
			for _, b := range bes {
				b.Close()
			}
			return nil, err
		}
		bes = append(bes, be)
	}
	return bes, nil
}

// backendSummary names the backend, and the TP degree when there are several ranks.
func backendSummary(bes []model.Backend) string {
	if len(bes) == 1 {
		return bes[0].Name()
	}
	return fmt.Sprintf("%s × %d tensor-parallel ranks", bes[0].Name(), len(bes))
}
