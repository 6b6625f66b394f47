package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/bench"
	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/model"
)

// childEnv makes the test binary run the CLI instead of the tests (TestMain), so that a test can
// start real llamacu processes — one per node — without building the command.
const childEnv = "LLAMACU_TEST_CLI_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// syncBuffer is a bytes.Buffer safe to read while a process writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// child is a llamacu process.
type child struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	done           chan struct{}
	code           int
}

// startCLI starts `llamacu args…` as a process of its own; the test kills it if it is still
// running at the end.
func startCLI(t *testing.T, name string, args ...string) *child {
	t.Helper()
	c := &child{name: name, cmd: exec.Command(os.Args[0], args...), done: make(chan struct{})}
	c.cmd.Env = append(os.Environ(), childEnv+"=1")
	c.cmd.Stdout, c.cmd.Stderr = &c.stdout, &c.stderr
	require.NoError(t, c.cmd.Start())
	go func() {
		c.cmd.Wait()
		c.code = c.cmd.ProcessState.ExitCode()
		close(c.done)
	}()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			c.cmd.Process.Kill()
			<-c.done
		}
	})
	return c
}

// wait returns the exit status, failing the test if the process runs longer than d.
func (c *child) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-c.done:
		return c.code
	case <-time.After(d):
		c.cmd.Process.Kill()
		<-c.done
		t.Fatalf("%s still running after %v; stderr:\n%s", c.name, d, c.stderr.String())
		return -1
	}
}

// nodeArgs are the flags that make a process node k of a group of tp ranks over 2 nodes.
func nodeArgs(tp, k int, addr string) []string {
	return []string{"--tp", itoa(tp), "--nodes", "2", "--node-rank", itoa(k), "--rendezvous", addr, "--threads", "1"}
}

func itoa(i int) string { return strconv.Itoa(i) }

// `run` on two nodes (two processes, TCP between them) prints on node 0 exactly what --tp 1
// prints; node 1 prints nothing and exits 0 once node 0 is done.
func TestMultiNodeRunTwoProcesses(t *testing.T) {
	dir := shared(t, "stories260K")
	common := []string{"--model", filepath.Join(dir, "stories260K.bin"), "--tokenizer", filepath.Join(dir, "tok512.bin"),
		"--temperature", "0", "--max-tokens", "40"}
	want, errOut, code := cli(t, append(append([]string{"run"}, common...), "--tp", "1", "Once upon a time")...)
	require.Equal(t, 0, code, errOut)
	require.NotEmpty(t, want)
	for _, tp := range []int{2, 4} {
		t.Run(itoa(tp), func(t *testing.T) {
			addr := freeAddr(t)
			var nodes [2]*child
			for _, k := range []int{1, 0} { // the follower first: it waits for node 0
				args := append(append(append([]string{"run"}, common...), nodeArgs(tp, k, addr)...), "Once upon a time")
				nodes[k] = startCLI(t, "node "+itoa(k), args...)
			}
			for k, n := range nodes {
				require.Equal(t, 0, n.wait(t, 30*time.Second), "node %d stderr:\n%s", k, n.stderr.String())
			}
			require.Equal(t, want, nodes[0].stdout.String())
			require.Empty(t, nodes[1].stdout.String())
			require.Contains(t, nodes[1].stderr.String(), "node 0 stopped the group")
		})
	}
}

// A node whose model differs from node 0's: both exit non-zero, naming the mismatch.
func TestMultiNodeModelMismatch(t *testing.T) {
	dir := shared(t, "stories260K")
	bin := filepath.Join(dir, "stories260K.bin")
	other := filepath.Join(t.TempDir(), "other.bin")
	copyFile(t, bin, other, func(b []byte) []byte { b[100] ^= 0x40; return b })
	addr := freeAddr(t)
	var nodes [2]*child
	for k, path := range []string{bin, other} {
		args := append([]string{"run", "--model", path, "--tokenizer", filepath.Join(dir, "tok512.bin"), "--max-tokens", "5"}, nodeArgs(2, k, addr)...)
		nodes[k] = startCLI(t, "node "+itoa(k), append(args, "hi")...)
	}
	for k, n := range nodes {
		require.NotEqual(t, 0, n.wait(t, 30*time.Second), "node %d", k)
		require.Empty(t, n.stdout.String())
	}
	require.Contains(t, nodes[0].stderr.String(), "nodes disagree")
	require.Contains(t, nodes[0].stderr.String(), "node 1 has")
	require.Contains(t, nodes[1].stderr.String(), "node 0 refused node 1")
}

// dieAfter is a node's link that closes the node after n steps: the node vanishes
// mid-generation, as a process that is killed.
type dieAfter struct {
	model.StepLink
	n int
}

func (l *dieAfter) Recv() ([]byte, error) {
	if l.n == 0 {
		l.StepLink.Close()
	}
	l.n--
	return l.StepLink.Recv()
}

// Node 1 dies mid-generation: node 0 (a real process) exits non-zero within seconds, naming it.
// Node 1 is played by this test, so that it dies at a chosen step.
func TestMultiNodeRunFollowerDies(t *testing.T) {
	dir := shared(t, "stories260K")
	bin, tok := filepath.Join(dir, "stories260K.bin"), filepath.Join(dir, "tok512.bin")
	addr := freeAddr(t)
	start := time.Now()
	leader := startCLI(t, "node 0", append([]string{"run", "--model", bin, "--tokenizer", tok, "--temperature", "0", "--max-tokens", "200"},
		append(nodeArgs(2, 0, addr), "Once upon a time")...)...)

	lf := &loadFlags{model: bin, tp: 2, nodes: 2, nodeRank: 1, rendezvous: addr}
	fp, err := lf.nodeFingerprint()
	require.NoError(t, err)
	node, err := joinNodes(context.Background(), groupSpec{tp: 2, nodes: 2, nodeRank: 1, rendezvous: addr, fingerprint: fp, stderr: io.Discard}, nil)
	require.NoError(t, err)
	e, err := engine.Load(engine.Options{ModelPath: bin, Backends: []model.Backend{cpu.New(cpu.Options{Threads: 1})}, CloseBackend: true,
		Comms: node.Comms(), Link: &dieAfter{node, 10}})
	require.NoError(t, err)
	defer e.Close()
	require.Error(t, e.Model.Follow(context.Background()))

	require.Equal(t, 1, leader.wait(t, 30*time.Second), leader.stderr.String())
	stderr := leader.stderr.String()
	require.Contains(t, stderr, "node 1")
	require.Contains(t, stderr, "ranks [1]")
	require.Less(t, time.Since(start), 20*time.Second)
	t.Logf("node 0: %s", lastLine(stderr))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

var listening = regexp.MustCompile(`listening on (http://\S+)`)

// startServeNodes starts `serve` on two nodes and returns node 0's URL once it is healthy.
func startServeNodes(t *testing.T, tp int) (base string, nodes [2]*child) {
	t.Helper()
	dir := shared(t, "stories260K")
	addr := freeAddr(t)
	for _, k := range []int{1, 0} {
		args := append([]string{"serve", "--model", filepath.Join(dir, "stories260K.bin"), "--tokenizer", filepath.Join(dir, "tok512.bin"),
			"--addr", "127.0.0.1:0", "--max-seqs", "2"}, nodeArgs(tp, k, addr)...)
		nodes[k] = startCLI(t, "node "+itoa(k), args...)
	}
	require.Eventually(t, func() bool { return listening.MatchString(nodes[0].stderr.String()) }, 20*time.Second, 10*time.Millisecond,
		"node 0 never listened: %s", nodes[0].stderr.String())
	base = listening.FindStringSubmatch(nodes[0].stderr.String())[1]
	waitHealthy(t, base)
	return base, nodes
}

// `serve` on two nodes: node 0 answers like `run --tp 1`, node 1 runs the steps and listens for
// no HTTP. When node 1 dies, node 0 stops serving and exits non-zero naming it; when node 0 dies,
// node 1 exits non-zero naming node 0.
func TestMultiNodeServe(t *testing.T) {
	dir := shared(t, "stories260K")
	want, errOut, code := cli(t, "run", "--model", filepath.Join(dir, "stories260K.bin"), "--tokenizer", filepath.Join(dir, "tok512.bin"),
		"--temperature", "0", "--max-tokens", "40", "Once upon a time")
	require.Equal(t, 0, code, errOut)

	t.Run("node 1 dies", func(t *testing.T) {
		base, nodes := startServeNodes(t, 4)
		for range 2 {
			out := complete(t, base, `{"prompt":"Once upon a time","max_tokens":40,"temperature":0}`)
			require.Equal(t, want, out["choices"].([]any)[0].(map[string]any)["text"])
		}
		require.NotContains(t, nodes[1].stderr.String(), "listening")
		require.NoError(t, nodes[1].cmd.Process.Signal(syscall.SIGKILL))
		require.Equal(t, 1, nodes[0].wait(t, 20*time.Second), nodes[0].stderr.String())
		require.Contains(t, nodes[0].stderr.String(), "node 1")
		t.Logf("node 0: %s", lastLine(nodes[0].stderr.String()))
	})
	t.Run("node 0 dies", func(t *testing.T) {
		_, nodes := startServeNodes(t, 2)
		require.NoError(t, nodes[0].cmd.Process.Signal(syscall.SIGKILL))
		require.Equal(t, 1, nodes[1].wait(t, 20*time.Second), nodes[1].stderr.String())
		require.Contains(t, nodes[1].stderr.String(), "node 0")
		t.Logf("node 1: %s", lastLine(nodes[1].stderr.String()))
	})
	t.Run("node 0 stops", func(t *testing.T) {
		_, nodes := startServeNodes(t, 2)
		require.NoError(t, nodes[0].cmd.Process.Signal(syscall.SIGTERM))
		require.Equal(t, 0, nodes[0].wait(t, 20*time.Second), nodes[0].stderr.String())
		require.Equal(t, 0, nodes[1].wait(t, 20*time.Second), nodes[1].stderr.String())
	})
}

// bench over two processes: node 0 writes the report (its header says the other ranks ran on
// another node), node 1 runs node 0's steps and prints nothing.
func TestMultiNodeBench(t *testing.T) {
	addr := freeAddr(t)
	var nodes [2]*child
	for _, k := range []int{1, 0} {
		args := append([]string{"bench", "--synthetic", "tiny", "--threads", "1", "-p", "16", "-n", "4", "--batch", "1",
			"--depth", "0", "--reps", "1", "--warmup", "0", "--no-profile", "--format", "json"}, nodeArgs(2, k, addr)...)
		nodes[k] = startCLI(t, "node "+itoa(k), args...)
	}
	for k, n := range nodes {
		require.Equal(t, 0, n.wait(t, 60*time.Second), "node %d stderr:\n%s", k, n.stderr.String())
	}
	require.Empty(t, nodes[1].stdout.String())
	rep, err := bench.ReadReport(strings.NewReader(nodes[0].stdout.String()))
	require.NoError(t, err)
	require.Contains(t, rep.Backend, "on node 0 (ranks 0–0 of 2; the rest on 1 more node(s))")
	require.Len(t, rep.Results, 2)
}
