package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// startServe runs `serve` in-process with args and returns its base URL once it listens, and a
// channel that yields runServe's error when it returns.
func startServe(t *testing.T, ctx context.Context, args ...string) (string, <-chan error) {
	t.Helper()
	addr := make(chan string, 1)
	done := make(chan error, 1)
	var stderr strings.Builder
	var mu sync.Mutex
	go func() {
		err := runServe(ctx, append([]string{"--addr", "127.0.0.1:0", "--threads", "1"}, args...),
			lockedWriter{&mu, &stderr}, func(a string) { addr <- a })
		done <- err
	}()
	select {
	case a := <-addr:
		return "http://" + a, done
	case err := <-done:
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("serve ended before listening: %v\n%s", err, stderr.String())
	}
	return "", nil
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func waitHealthy(t *testing.T, base string) {
	t.Helper()
	require.Eventually(t, func() bool {
		resp, err := http.Get(base + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 10*time.Second, 5*time.Millisecond)
}

func complete(t *testing.T, base, body string) map[string]any {
	t.Helper()
	resp, err := http.Post(base+"/v1/completions", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
	var out map[string]any
	require.NoError(t, json.Unmarshal(b, &out))
	return out
}

// A greedy completion through `llamacu serve` equals `llamacu run` and llama2.c's reference;
// cancelling the context (a signal) stops the server cleanly.
func TestServeMatchesRun(t *testing.T) {
	dir := shared(t, "stories260K")
	model := filepath.Join(dir, "stories260K.gguf")
	once := readText(t, filepath.Join(dir, "expected_once_upon_a_time_n64.txt"))
	runOut, errOut, code := cli(t, "run", "--model", model, "--temperature", "0", "--max-tokens", "60", "Once upon a time")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, strings.TrimPrefix(once, "Once upon a time"), runOut)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base, done := startServe(t, ctx, "--model", model)
	waitHealthy(t, base)
	out := complete(t, base, `{"prompt":"Once upon a time","max_tokens":60,"temperature":0}`)
	choice := out["choices"].([]any)[0].(map[string]any)
	require.Equal(t, runOut, choice["text"])
	require.Equal(t, "stories260K", out["model"])

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop")
	}
	_, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), time.Second)
	require.Error(t, err, "still listening after shutdown")
}

// SIGTERM drains: requests running and queued when it arrives still complete, then `serve`
// exits 0 and stops listening.
func TestServeSIGTERMDrains(t *testing.T) {
	model := shared(t, "stories260K/stories260K.gguf")
	runOut, _, _ := cli(t, "run", "--model", model, "--temperature", "0", "--max-tokens", "200", "Once upon a time")

	addr := make(chan string, 1)
	serveListening = func(a string) { addr <- a }
	defer func() { serveListening = nil }()
	exit := make(chan int, 1)
	var stderr strings.Builder // read only after Main returns
	var mu sync.Mutex
	go func() {
		exit <- Main([]string{"serve", "--model", model, "--addr", "127.0.0.1:0", "--threads", "1", "--max-seqs", "1", "--grace", "20s"},
			io.Discard, lockedWriter{&mu, &stderr})
	}()
	var base string
	select {
	case a := <-addr:
		base = "http://" + a
	case code := <-exit:
		t.Fatalf("serve exited with %d before listening: %s", code, stderr.String()) // Main has returned
	}
	waitHealthy(t, base)

	// One request runs (--max-seqs 1), the others wait in the queue.
	const n = 4
	texts := make([]string, n)
	errs := make([]error, n)
	started := make(chan struct{}, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Post(base+"/v1/completions", "application/json",
				strings.NewReader(`{"prompt":"Once upon a time","max_tokens":200,"temperature":0,"stream":true}`))
			if err != nil {
				errs[i] = err
				started <- struct{}{}
				return
			}
			defer resp.Body.Close()
			started <- struct{}{}
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				data, ok := strings.CutPrefix(sc.Text(), "data: ")
				if !ok || data == "[DONE]" {
					continue
				}
				var c struct {
					Choices []struct{ Text string } `json:"choices"`
				}
				if err := json.Unmarshal([]byte(data), &c); err != nil {
					errs[i] = err
					return
				}
				for _, ch := range c.Choices {
					texts[i] += ch.Text
				}
			}
		}()
	}
	<-started // the first response has begun streaming
	// Signal only once the server holds every request (one running, the rest queued): a request
	// still in the kernel's accept queue when the listener closes would be refused, not drained.
	require.Eventually(t, func() bool {
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), fmt.Sprintf("\nllamacu_queue_depth %d\n", n-1))
	}, 10*time.Second, 5*time.Millisecond, "the other requests never reached the queue")
	require.NoError(t, syscall.Kill(syscall.Getpid(), syscall.SIGTERM))
	wg.Wait()
	select {
	case code := <-exit:
		require.Equal(t, 0, code, stderr.String())
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not exit after SIGTERM")
	}
	for i := range texts {
		require.NoError(t, errs[i])
		require.Equal(t, runOut, texts[i], "request %d was not completed during the drain", i)
	}
	require.Contains(t, stderr.String(), "shutting down")
	_, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), time.Second)
	require.Error(t, err)
}

func TestServeUsage(t *testing.T) {
	for _, args := range [][]string{
		{"serve", "--max-seqs", "0"},
		{"serve", "--max-queue", "-1"},
		{"serve", "extra"},
	} {
		_, errOut, code := cli(t, args...)
		require.Equal(t, 2, code, errOut)
	}
	_, errOut, code := cli(t, "serve", "--addr", "256.0.0.1:99999")
	require.Equal(t, 1, code, errOut)
}
