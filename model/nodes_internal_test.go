package model

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/llamacu/llamacu/tensor"
	"github.com/llamacu/llamacu/tp"
)

// recorder is node 0's end of a link with no other node: it keeps what Forward sends.
type recorder struct{ msgs [][]byte }

func (r *recorder) Sync() error { return nil }
func (r *recorder) Send(msg []byte) error {
	r.msgs = append(r.msgs, slices.Clone(msg))
	return nil
}
func (r *recorder) Recv() ([]byte, error) { return nil, errors.New("node 0 does not receive") }
func (r *recorder) Close() error          { return nil }

// nullBackend computes nothing: the recorder tests look at the messages, not the numbers (cpu
// imports model, so its backend is out of reach here).
type nullBackend struct{}

type nullBuf struct{ rows, cols int }

func (b nullBuf) Rows() int { return b.rows }
func (b nullBuf) Cols() int { return b.cols }

type nullWeight struct{ t *tensor.Tensor }

func (w nullWeight) Shape() []int        { return w.t.Shape }
func (w nullWeight) DType() tensor.DType { return w.t.DType }

type nullKV struct{ l KVLayout }

func (k nullKV) Layout() KVLayout { return k.l }

func (nullBackend) Name() string                                   { return "null" }
func (nullBackend) Upload(t *tensor.Tensor) (Weight, error)        { return nullWeight{t}, nil }
func (nullBackend) NewBuffer(rows, cols int) (Buffer, error)       { return nullBuf{rows, cols}, nil }
func (nullBackend) NewKVCache(l KVLayout) (KVCache, error)         { return nullKV{l}, nil }
func (nullBackend) Embed(Buffer, Weight, []int32)                  {}
func (nullBackend) RMSNorm(Buffer, Buffer, Weight, int, float32)   {}
func (nullBackend) MatMul(Buffer, Buffer, Weight, int)             {}
func (nullBackend) RoPE(Buffer, int, []int32, float32)             {}
func (nullBackend) StoreKV(KVCache, int, Buffer, Buffer, *Batch)   {}
func (nullBackend) Attention(Buffer, Buffer, KVCache, int, *Batch) {}
func (nullBackend) SwiGLU(Buffer, Buffer, Buffer, int)             {}
func (nullBackend) Add(Buffer, Buffer, int)                        {}
func (nullBackend) GatherRows(Buffer, Buffer, []int32)             {}
func (nullBackend) Read(dst []float32, _ Buffer, _ int) error      { clear(dst); return nil }
func (nullBackend) Close() error                                   { return nil }

func newTestBackend() Backend { return nullBackend{} }

func newRecorded(tb testing.TB) (*Model, *recorder) {
	tb.Helper()
	comms, err := tp.NewInProcess(1)
	if err != nil {
		tb.Fatal(err)
	}
	rec := &recorder{}
	m, err := NewParallelNode([]Backend{newTestBackend()}, Tiny, Synthetic(Tiny, 1, tensor.F32), comms, rec, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	return m, rec
}

// What node 0 sends decodes to the step it ran: the state's sizes, the batch (with the tables
// of the slots it uses only) and the logit rows; Close sends stop.
func TestStepMessageRoundTrip(t *testing.T) {
	m, rec := newRecorded(t)
	s, err := m.NewState(4, 2, 8, 6)
	if err != nil {
		t.Fatal(err)
	}
	b := &Batch{Tokens: []int32{1, 2, 3}, Pos: []int32{0, 1, 9}, Seq: []int32{0, 0, 2}, BlockTables: [][]int32{{4}, {1, 2, 3}, {0, 5}}}
	if _, err := m.Forward(s, b, []int32{1, 2}); err != nil {
		t.Fatal(err)
	}
	var st step
	if err := decodeStep(rec.msgs[0], &st); err != nil {
		t.Fatal(err)
	}
	want := step{id: s.id, maxBatch: 4, maxLogits: 2, blockSize: 8, nBlocks: 6, frees: []uint64{},
		batch: Batch{Tokens: b.Tokens, Pos: b.Pos, Seq: b.Seq, BlockTables: [][]int32{{4}, {}, {0, 5}}}, rows: []int32{1, 2}}
	if got, w := fmt.Sprintf("%+v", st), fmt.Sprintf("%+v", want); got != w {
		t.Errorf("decoded step (-want +got):\n%s\n%s", w, got)
	}
	// ForwardTopK's k travels with the step.
	if _, _, err := m.ForwardTopK(s, b, []int32{2}, 5); err != nil {
		t.Fatal(err)
	}
	if err := decodeStep(rec.msgs[len(rec.msgs)-1], &st); err != nil || st.topK != 5 || !slices.Equal(st.rows, []int32{2}) {
		t.Errorf("ForwardTopK's step: top k %d, rows %v, %v", st.topK, st.rows, err)
	}
	m.Close()
	if err := decodeStep(rec.msgs[len(rec.msgs)-1], &st); err != nil || !st.stop {
		t.Errorf("last message: stop %v, %v", st.stop, err)
	}
}

// A State node 0 drops is named in a later step, so that the other nodes drop theirs.
func TestStepMessageFreesStates(t *testing.T) {
	m, rec := newRecorded(t)
	old, err := m.NewState(1, 1, 4, 2)
	if err != nil {
		t.Fatal(err)
	}
	oldID := old.id
	old = nil
	s, err := m.NewState(1, 1, 4, 2)
	if err != nil {
		t.Fatal(err)
	}
	b := &Batch{Tokens: []int32{1}, Pos: []int32{0}, Seq: []int32{0}, BlockTables: [][]int32{{0}}}
	var st step
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		runtime.GC()
		if _, err := m.Forward(s, b, []int32{0}); err != nil {
			t.Fatal(err)
		}
		if err := decodeStep(rec.msgs[len(rec.msgs)-1], &st); err != nil {
			t.Fatal(err)
		}
		if slices.Contains(st.frees, oldID) {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Errorf("state %d was never freed", oldID)
}

// Malformed step messages are errors, never panics or huge allocations.
func TestDecodeStepRejects(t *testing.T) {
	good := func() []byte {
		var g tpGroup
		g.link = &recorder{}
		_ = g.send(&State{id: 7, MaxBatch: 2, MaxLogits: 1, KV: nullKV{KVLayout{BlockSize: 4, NumBlocks: 3}}},
			&Batch{Tokens: []int32{1, 2}, Pos: []int32{0, 1}, Seq: []int32{0, 0}, BlockTables: [][]int32{{0}}}, []int32{1}, 40)
		return g.link.(*recorder).msgs[0]
	}()
	var st step
	if err := decodeStep(good, &st); err != nil {
		t.Fatal(err)
	}
	for name, msg := range map[string][]byte{
		"empty":         {},
		"unknown kind":  {9},
		"long stop":     {stepStop, 0},
		"truncated":     good[:len(good)-3],
		"trailing":      append(slices.Clone(good), 0),
		"huge count":    {stepRun, 0xff, 0xff, 0xff, 0xff},
		"zero sizes":    append([]byte{stepRun, 0, 0, 0, 0}, make([]byte, 8+16)...),
		"huge list":     append(slices.Clone(good[:1+4+8+16]), 0xff, 0xff, 0xff, 0x7f),
		"header only":   {stepRun},
		"huge top k":    append(slices.Clone(good[:len(good)-4]), 0x01, 0x01, 0, 0),
		"huge max size": append(append([]byte{stepRun, 0, 0, 0, 0}, make([]byte, 8)...), 0xff, 0xff, 0xff, 0xff),
	} {
		if err := decodeStep(msg, &st); !errors.Is(err, errStep) {
			t.Errorf("%s: %v, want errStep", name, err)
		}
	}
}

// FuzzDecodeStep: any bytes decode to a step or an error; a step re-encodes to the same bytes.
func FuzzDecodeStep(f *testing.F) {
	f.Add([]byte{stepStop})
	var g tpGroup
	g.link = &recorder{}
	_ = g.send(&State{id: 1, MaxBatch: 3, MaxLogits: 2, KV: nullKV{KVLayout{BlockSize: 16, NumBlocks: 4}}},
		&Batch{Tokens: []int32{5, 6, 7}, Pos: []int32{0, 1, 0}, Seq: []int32{0, 0, 1}, BlockTables: [][]int32{{0}, {1, 2}}}, []int32{1, 2}, 3)
	f.Add(g.link.(*recorder).msgs[0])
	f.Fuzz(func(t *testing.T, msg []byte) {
		var st step
		if err := decodeStep(msg, &st); err != nil || st.stop {
			return
		}
		// A decoded step's lists were all in the message: nothing was made up.
		n := len(st.frees)*8 + 4*(len(st.batch.Tokens)+len(st.batch.Pos)+len(st.batch.Seq)+len(st.rows))
		for _, tb := range st.batch.BlockTables {
			n += 4 * len(tb)
		}
		if n > len(msg) {
			t.Fatalf("decoded %d bytes of lists from a %d-byte message", n, len(msg))
		}
	})
}
