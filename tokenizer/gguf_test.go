package tokenizer

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
)

// readGGUFVocab is a test-only reader of the tokenizer.ggml.* metadata of a GGUF v2/v3 file, so
// that FromVocab can be tested on llama.cpp's own vocabulary without importing package loader
// (both are leaves). It converts the keys the way the lead's loader.Vocab → tokenizer.Vocab
// conversion is expected to.
func readGGUFVocab(path string) (Vocab, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Vocab{}, err
	}
	r := &ggufReader{b: data}
	if string(r.next(4)) != "GGUF" {
		return Vocab{}, fmt.Errorf("%s: not a GGUF file", path)
	}
	if v := r.u32(); v != 2 && v != 3 {
		return Vocab{}, fmt.Errorf("%s: GGUF version %d", path, v)
	}
	r.u64() // tensor count
	nkv := r.u64()
	kv := map[string]any{}
	for i := uint64(0); i < nkv && r.err == nil; i++ {
		key := r.str()
		kv[key] = r.value(r.u32())
	}
	if r.err != nil {
		return Vocab{}, fmt.Errorf("%s: %w", path, r.err)
	}
	if m, _ := kv["tokenizer.ggml.model"].(string); m != "llama" {
		return Vocab{}, fmt.Errorf("%s: tokenizer.ggml.model is %q, not llama", path, m)
	}
	v := Vocab{BOS: -1, EOS: -1, UNK: -1, PAD: -1, AddDummyPrefix: true}
	for _, x := range kv["tokenizer.ggml.tokens"].([]any) {
		v.Tokens = append(v.Tokens, x.(string))
	}
	if s, ok := kv["tokenizer.ggml.scores"].([]any); ok {
		for _, x := range s {
			v.Scores = append(v.Scores, x.(float32))
		}
	}
	if s, ok := kv["tokenizer.ggml.token_type"].([]any); ok {
		for _, x := range s {
			v.Types = append(v.Types, x.(int32))
		}
	}
	for key, dst := range map[string]*int32{
		"tokenizer.ggml.bos_token_id":     &v.BOS,
		"tokenizer.ggml.eos_token_id":     &v.EOS,
		"tokenizer.ggml.unknown_token_id": &v.UNK,
		"tokenizer.ggml.padding_token_id": &v.PAD,
	} {
		if x, ok := kv[key].(uint32); ok {
			*dst = int32(x)
		}
	}
	if x, ok := kv["tokenizer.ggml.add_space_prefix"].(bool); ok {
		v.AddDummyPrefix = x
	}
	return v, nil
}

type ggufReader struct {
	b   []byte
	err error
}

func (r *ggufReader) next(n uint64) []byte {
	if r.err != nil || n > uint64(len(r.b)) {
		if r.err == nil {
			r.err = fmt.Errorf("truncated")
		}
		return make([]byte, n%64)
	}
	x := r.b[:n]
	r.b = r.b[n:]
	return x
}

func (r *ggufReader) u32() uint32 {
	b := r.next(4)
	if r.err != nil {
		return 0
	}
	return binary.LittleEndian.Uint32(b)
}

func (r *ggufReader) u64() uint64 {
	b := r.next(8)
	if r.err != nil {
		return 0
	}
	return binary.LittleEndian.Uint64(b)
}

func (r *ggufReader) str() string { return string(r.next(r.u64())) }

func (r *ggufReader) value(typ uint32) any {
	switch typ {
	case 0, 1, 7: // u8, i8, bool
		b := r.next(1)
		if r.err != nil {
			return nil
		}
		if typ == 7 {
			return b[0] != 0
		}
		return b[0]
	case 2, 3: // u16, i16
		r.next(2)
		return nil
	case 4:
		return r.u32()
	case 5:
		return int32(r.u32())
	case 6:
		return math.Float32frombits(r.u32())
	case 8:
		return r.str()
	case 9:
		et := r.u32()
		n := r.u64()
		if n > uint64(len(r.b)) {
			r.err = fmt.Errorf("array of %d elements", n)
			return nil
		}
		a := make([]any, 0, n)
		for i := uint64(0); i < n && r.err == nil; i++ {
			a = append(a, r.value(et))
		}
		return a
	case 10, 11, 12:
		return r.u64()
	}
	r.err = fmt.Errorf("unknown GGUF value type %d", typ)
	return nil
}
