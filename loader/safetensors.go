package loader

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"

	"github.com/llamacu/llamacu/tensor"
)

// The safetensors format (https://github.com/huggingface/safetensors):
//
//	u64 little-endian N | N bytes of JSON header | data section
//
// The header is a JSON object {name: {"dtype": "F16", "shape": [r, c], "data_offsets": [begin, end]},
// "__metadata__": {string: string}}; offsets are relative to the start of the data section and
// end-begin is exactly the tensor's bytes. The header may be padded with trailing spaces (writers
// pad it to 8 bytes so that the data section is aligned).
//
// parseSafetensors is strict where a mistake would give wrong numbers (offsets, sizes, overlaps,
// dtypes) and lenient where it cannot: bytes between or after tensors that no tensor claims are
// allowed (the spec forbids such holes, but reading around them is harmless).

const (
	// stMaxHeader bounds the JSON header, as the reference implementation does (100 MB).
	stMaxHeader = 100 << 20
	// stMetadataKey is the reserved header key for free-form string metadata.
	stMetadataKey = "__metadata__"
)

// stDTypes maps the safetensors dtype names llamacu reads. Every other name the format defines
// (F64, I64, I32, I16, I8, U8, BOOL, F8_E4M3, ...) is rejected with tensor.ErrUnknownDType.
var stDTypes = map[string]tensor.DType{"F32": tensor.F32, "F16": tensor.F16, "BF16": tensor.BF16}

// stDTypeName is the inverse of stDTypes, for the writer.
func stDTypeName(d tensor.DType) (string, error) {
	switch d {
	case tensor.F32:
		return "F32", nil
	case tensor.F16:
		return "F16", nil
	case tensor.BF16:
		return "BF16", nil
	}
	return "", fmt.Errorf("%w: safetensors export supports F32, F16 and BF16, not %v", tensor.ErrUnknownDType, d)
}

// stEntry is one tensor's header record.
type stEntry struct {
	DType       string   `json:"dtype"`
	Shape       []int64  `json:"shape"`
	DataOffsets []uint64 `json:"data_offsets"`
}

// stFile is a parsed safetensors file. Tensors alias the bytes given to parseSafetensors and keep
// the file's own names.
type stFile struct {
	Tensors  map[string]*tensor.Tensor
	Metadata map[string]string
}

// parseSafetensors parses a whole safetensors file held in data (usually a memory map). name is the
// path used in error messages. Every error is a *TensorError wrapping ErrTruncated, ErrCorrupt or
// tensor.ErrUnknownDType; it never panics on any input.
func parseSafetensors(data []byte, name string) (*stFile, error) {
	fail := func(tensorName string, sentinel error, f string, a ...any) error {
		return &TensorError{Path: name, Tensor: tensorName, Err: fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(f, a...))}
	}
	if len(data) < 8 {
		return nil, fail("", ErrTruncated, "%d bytes is too short for the 8-byte safetensors header length", len(data))
	}
	n := binary.LittleEndian.Uint64(data)
	if n > stMaxHeader {
		return nil, fail("", ErrCorrupt, "safetensors header length %d exceeds the %d-byte limit (not a safetensors file?)", n, stMaxHeader)
	}
	if n > uint64(len(data)-8) {
		return nil, fail("", ErrTruncated, "safetensors header length %d runs past the end of the %d-byte file", n, len(data))
	}
	header := data[8 : 8+n]
	body := data[8+n:]
	if trimmed := bytes.TrimLeft(header, " \t\r\n"); len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, fail("", ErrCorrupt, "safetensors header is not a JSON object")
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(header, &raw); err != nil {
		return nil, fail("", ErrCorrupt, "safetensors header is not valid JSON: %v", err)
	}

	f := &stFile{Tensors: make(map[string]*tensor.Tensor, len(raw))}
	if m, ok := raw[stMetadataKey]; ok {
		delete(raw, stMetadataKey)
		if err := json.Unmarshal(m, &f.Metadata); err != nil {
			return nil, fail("", ErrCorrupt, "%s must be an object of strings: %v", stMetadataKey, err)
		}
	}

	type span struct {
		name       string
		begin, end uint64
	}
	spans := make([]span, 0, len(raw))
	names := make([]string, 0, len(raw))
	for k := range raw {
		names = append(names, k)
	}
	sort.Strings(names) // report the first bad tensor deterministically
	for _, tn := range names {
		var e stEntry
		dec := json.NewDecoder(bytes.NewReader(raw[tn]))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			return nil, fail(tn, ErrCorrupt, "bad safetensors header entry: %v", err)
		}
		if e.DType == "" || e.Shape == nil || e.DataOffsets == nil {
			return nil, fail(tn, ErrCorrupt, "header entry needs dtype, shape and data_offsets")
		}
		dt, ok := stDTypes[e.DType]
		if !ok {
			return nil, &TensorError{Path: name, Tensor: tn, Err: fmt.Errorf("%w: safetensors dtype %q (llamacu reads F32, F16 and BF16)", tensor.ErrUnknownDType, e.DType)}
		}
		if len(e.DataOffsets) != 2 {
			return nil, fail(tn, ErrCorrupt, "data_offsets must be [begin, end], got %v", e.DataOffsets)
		}
		begin, end := e.DataOffsets[0], e.DataOffsets[1]
		if begin > end {
			return nil, fail(tn, ErrCorrupt, "data_offsets [%d, %d] run backwards", begin, end)
		}
		if end > uint64(len(body)) {
			return nil, fail(tn, ErrTruncated, "data_offsets [%d, %d] run past the %d-byte data section", begin, end, len(body))
		}
		// Element count, guarding overflow: end ≤ len(body) bounds any valid product.
		elems := uint64(1)
		shape := make([]int, len(e.Shape))
		for i, s := range e.Shape {
			if s < 0 {
				return nil, fail(tn, ErrCorrupt, "negative dimension in shape %v", e.Shape)
			}
			shape[i] = int(s)
			if s != 0 && elems > math.MaxInt64/uint64(s) {
				return nil, fail(tn, ErrCorrupt, "shape %v is absurdly large", e.Shape)
			}
			elems *= uint64(s)
		}
		if elems > uint64(len(body)) { // every supported dtype takes at least one byte an element
			return nil, fail(tn, ErrCorrupt, "%s %v has %d elements, more than the %d-byte data section holds", e.DType, e.Shape, elems, len(body))
		}
		want := elems * uint64(dt.BlockBytes()) // F32/F16/BF16: block size 1
		if end-begin != want {
			return nil, fail(tn, ErrCorrupt, "%s %v needs %d bytes but data_offsets [%d, %d] hold %d", e.DType, e.Shape, want, begin, end, end-begin)
		}
		spans = append(spans, span{tn, begin, end})
		f.Tensors[tn] = &tensor.Tensor{Name: tn, DType: dt, Shape: shape, Data: body[begin:end:end]}
	}

	// No two tensors may share a byte. (Empty tensors occupy none and cannot overlap.)
	sort.Slice(spans, func(i, j int) bool {
		if spans[i].begin != spans[j].begin {
			return spans[i].begin < spans[j].begin
		}
		return spans[i].name < spans[j].name
	})
	var prev *span
	for i := range spans {
		s := &spans[i]
		if s.begin == s.end {
			continue
		}
		if prev != nil && s.begin < prev.end {
			return nil, fail(s.name, ErrCorrupt, "data_offsets [%d, %d] overlap tensor %q at [%d, %d]", s.begin, s.end, prev.name, prev.begin, prev.end)
		}
		prev = s
	}
	return f, nil
}

// mapSafetensors memory-maps and parses one safetensors file. The returned unmap releases it; the
// tensors alias the mapping until then.
func mapSafetensors(path string) (*stFile, func() error, error) {
	data, unmap, err := mapFile(path)
	if err != nil {
		return nil, nil, err
	}
	f, err := parseSafetensors(data, path)
	if err != nil {
		unmap()
		return nil, nil, err
	}
	return f, unmap, nil
}

// openSafetensors opens a single .safetensors file. The format carries no model configuration, so
// a config.json must sit in the same folder: the file is then read as that Hugging Face folder's
// weights (if the folder's model.safetensors.index.json lists this file as one of its shards, the
// whole sharded folder is opened).
func openSafetensors(path string) (*Model, error) {
	dir := filepath.Dir(path)
	if _, err := os.Stat(filepath.Join(dir, hfConfigName)); err != nil {
		return nil, &TensorError{Path: path, Err: fmt.Errorf("%w: a safetensors file holds no model configuration; it needs config.json in the same folder (%v)", ErrFormat, err)}
	}
	if idx, err := readHFIndex(filepath.Join(dir, hfIndexName)); err == nil {
		base := filepath.Base(path)
		for _, shard := range idx.WeightMap {
			if shard == base {
				return openHF(dir)
			}
		}
	}
	return openHFWeights(dir, []string{filepath.Base(path)}, nil, path)
}
