package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
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
}

func addLoadFlags(fs *flag.FlagSet) *loadFlags {
	lf := &loadFlags{}
	fs.StringVar(&lf.model, "model", "", "model: llama2.c .bin, .gguf, or Hugging Face folder (empty: built-in synthetic model)")
	fs.StringVar(&lf.tokenizer, "tokenizer", "", "tokenizer.model, llama2.c tokenizer.bin or .gguf (default: in or beside the model)")
	fs.StringVar(&lf.backend, "backend", "cpu", "compute backend: "+backendNames())
	fs.IntVar(&lf.threads, "threads", 0, "CPU threads (0: all cores)")
	fs.IntVar(&lf.ctx, "ctx", 0, "context length to allocate (0: the model's)")
	fs.IntVar(&lf.tp, "tp", 1, "tensor-parallel degree: ranks that split the heads and FFN (must divide the KV heads); with --nodes, over all nodes")
	fs.IntVar(&lf.nodes, "nodes", 1, "processes (one per node) the --tp ranks span, --tp/--nodes each (cuda build: NCCL)")
	fs.IntVar(&lf.nodeRank, "node-rank", 0, "this node, 0..--nodes−1 (node 0 hands the others its NCCL id)")
	fs.StringVar(&lf.rendezvous, "rendezvous", "", "HOST:PORT where node 0 listens and the other nodes dial (needed with --nodes > 1)")
	return lf
}

// load opens the model, showing a progress bar on a terminal.
func (lf *loadFlags) load(stderr io.Writer) (*engine.Engine, error) {
	bes, comms, err := lf.backends(stderr)
	if err != nil {
		return nil, err
	}
	opts := engine.Options{ModelPath: lf.model, TokenizerPath: lf.tokenizer, Backends: bes, Comms: comms, CloseBackend: true, Context: lf.ctx}
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
		return nil, err
	}
	c := e.Model.Config
	fmt.Fprintf(stderr, "model: %s\n", e.Source)
	fmt.Fprintf(stderr, "loaded in %v: %s parameters, dim %d, %d layers, %d/%d heads, vocab %d, context %d; backend %s\n",
		e.LoadTime.Round(time.Millisecond), humanize.SIWithDigits(float64(c.ParamCount()), 1, ""), c.Dim, c.Layers,
		c.Heads, c.KVHeads, c.Vocab, e.Context, backendSummary(bes))
	return e, nil
}

// backends makes this process's ranks: through the backend's group builder when it has one and
// there are several ranks (cuda: a device per rank, NCCL or staged communicators; several
// nodes), else --tp backends from newBackend (comms nil: the engine's in-process ones).
func (lf *loadFlags) backends(stderr io.Writer) ([]model.Backend, []tp.Comm, error) {
	if err := lf.checkNodes(); err != nil {
		return nil, nil, err
	}
	build, ok := groupBuilders[lf.backend]
	if lf.nodes > 1 {
		if len(groupBuilders) == 0 {
			return nil, nil, errNeedsCUDA
		}
		if !ok {
			return nil, nil, fmt.Errorf("%w: --nodes %d needs --backend cuda (NCCL), not %q", errUsage, lf.nodes, lf.backend)
		}
	}
	if ok && lf.tp > 1 {
		g := groupSpec{tp: lf.tp, nodes: lf.nodes, nodeRank: lf.nodeRank, rendezvous: lf.rendezvous, stderr: stderr}
		if lf.nodes > 1 {
			fp, err := lf.nodeFingerprint()
			if err != nil {
				return nil, nil, err
			}
			g.fingerprint = fp
		}
		return build(g)
	}
	threads := lf.threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	var bes []model.Backend
	for range lf.tp {
		be, err := newBackend(lf.backend, max(1, threads/lf.tp))
		if err != nil {
			for _, b := range bes {
				b.Close()
			}
			return nil, nil, err
		}
		bes = append(bes, be)
	}
	return bes, nil, nil
}

// backendSummary names the backend, and the TP degree when there are several ranks.
func backendSummary(bes []model.Backend) string {
	if len(bes) == 1 {
		return bes[0].Name()
	}
	return fmt.Sprintf("%s × %d tensor-parallel ranks", bes[0].Name(), len(bes))
}
