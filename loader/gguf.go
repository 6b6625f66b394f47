package loader

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// The GGUF format (ggml-org/ggml docs/gguf.md), versions 2 and 3, little-endian:
//
//	"GGUF" | u32 version | u64 tensor_count | u64 kv_count
//	kv_count × (string key | u32 value_type | value)
//	tensor_count × (string name | u32 n_dims | n_dims × u64 ne (innermost first) | u32 ggml_type | u64 offset)
//	padding to general.alignment (default 32)
//	tensor data: each tensor at data_start + offset, offset a multiple of the alignment
//
// A string is u64 length + bytes (no terminator); an array is u32 element type + u64 count +
// elements, and may nest. Version 1 (u32 counts and lengths) is rejected.
//
// parseGGUF is strict about what could give wrong numbers (bounds, alignment, block sizes,
// duplicate names) and lenient about what it does not need: it lists tensors of ggml types
// llamacu cannot compute with (openGGUF rejects those), so that ReadGGUFInfo can describe any file.

const (
	ggufMagic            = "GGUF"
	ggufDefaultAlignment = 32
	ggufMaxDims          = 4  // GGML_MAX_DIMS
	ggufMaxNesting       = 16 // arrays of arrays deeper than this are rejected
	// ggufMaxCount bounds tensor, key and array-element counts that do not fit the file: a larger
	// count is corrupt, a smaller one means the file was cut short.
	ggufMaxCount = 1 << 24
)

// GGUF metadata value types.
const (
	ggufUint8 uint32 = iota
	ggufInt8
	ggufUint16
	ggufInt16
	ggufUint32
	ggufInt32
	ggufFloat32
	ggufBool
	ggufString
	ggufArray
	ggufUint64
	ggufInt64
	ggufFloat64
)

// ggufValueSize is the encoded size of a fixed-size value type, or the minimum size of a
// variable one (string: its length; array: element type and count). 0 means unknown type.
func ggufValueSize(typ uint32) int64 {
	switch typ {
	case ggufUint8, ggufInt8, ggufBool:
		return 1
	case ggufUint16, ggufInt16:
		return 2
	case ggufUint32, ggufInt32, ggufFloat32:
		return 4
	case ggufUint64, ggufInt64, ggufFloat64, ggufString:
		return 8
	case ggufArray:
		return 12
	}
	return 0
}

// GGMLType is a ggml tensor type id as stored in a GGUF file (ggml.h's enum ggml_type).
type GGMLType uint32

// The ggml types llamacu computes with; see GGMLType.DType.
const (
	GGMLTypeF32  GGMLType = 0
	GGMLTypeF16  GGMLType = 1
	GGMLTypeQ4_0 GGMLType = 2
	GGMLTypeQ4_1 GGMLType = 3
	GGMLTypeQ5_0 GGMLType = 6
	GGMLTypeQ5_1 GGMLType = 7
	GGMLTypeQ8_0 GGMLType = 8
	GGMLTypeQ2_K GGMLType = 10
	GGMLTypeQ3_K GGMLType = 11
	GGMLTypeQ4_K GGMLType = 12
	GGMLTypeQ5_K GGMLType = 13
	GGMLTypeQ6_K GGMLType = 14
	GGMLTypeBF16 GGMLType = 30
)

// ggmlDTypes maps the ggml types llamacu reads to its dtypes (GGMLType.DType, ggmlTypeOf).
var ggmlDTypes = map[GGMLType]tensor.DType{
	GGMLTypeF32: tensor.F32, GGMLTypeF16: tensor.F16, GGMLTypeBF16: tensor.BF16,
	GGMLTypeQ8_0: tensor.Q8_0, GGMLTypeQ4_0: tensor.Q4_0, GGMLTypeQ4_1: tensor.Q4_1,
	GGMLTypeQ5_0: tensor.Q5_0, GGMLTypeQ5_1: tensor.Q5_1, GGMLTypeQ2_K: tensor.Q2_K,
	GGMLTypeQ3_K: tensor.Q3_K, GGMLTypeQ4_K: tensor.Q4_K, GGMLTypeQ5_K: tensor.Q5_K,
	GGMLTypeQ6_K: tensor.Q6_K,
}

// ggmlTypeInfo is a ggml type's name and block geometry (ggml's type_traits: blck_size, type_size).
type ggmlTypeInfo struct {
	name       string
	blockSize  int64
	blockBytes int64
}

// ggmlTypes lists every ggml type a GGUF file may hold (ids 4, 5 and 31-33, 36-38 were removed
// from ggml). Knowing their sizes lets parseGGUF bounds-check files it cannot compute with.
var ggmlTypes = map[GGMLType]ggmlTypeInfo{
	0: {"F32", 1, 4}, 1: {"F16", 1, 2}, 2: {"Q4_0", 32, 18}, 3: {"Q4_1", 32, 20},
	6: {"Q5_0", 32, 22}, 7: {"Q5_1", 32, 24}, 8: {"Q8_0", 32, 34}, 9: {"Q8_1", 32, 36},
	10: {"Q2_K", 256, 84}, 11: {"Q3_K", 256, 110}, 12: {"Q4_K", 256, 144}, 13: {"Q5_K", 256, 176},
	14: {"Q6_K", 256, 210}, 15: {"Q8_K", 256, 292}, 16: {"IQ2_XXS", 256, 66}, 17: {"IQ2_XS", 256, 74},
	18: {"IQ3_XXS", 256, 98}, 19: {"IQ1_S", 256, 50}, 20: {"IQ4_NL", 32, 18}, 21: {"IQ3_S", 256, 110},
	22: {"IQ2_S", 256, 82}, 23: {"IQ4_XS", 256, 136}, 24: {"I8", 1, 1}, 25: {"I16", 1, 2},
	26: {"I32", 1, 4}, 27: {"I64", 1, 8}, 28: {"F64", 1, 8}, 29: {"IQ1_M", 256, 56},
	30: {"BF16", 1, 2}, 34: {"TQ1_0", 256, 54}, 35: {"TQ2_0", 256, 66}, 39: {"MXFP4", 32, 17},
}

// String returns ggml's name for the type ("Q4_K"), or "ggml type N" for an id ggml does not define.
func (t GGMLType) String() string {
	if ti, ok := ggmlTypes[t]; ok {
		return ti.name
	}
	return "ggml type " + strconv.FormatUint(uint64(t), 10)
}

// DType returns the llamacu dtype of a ggml type, or an error wrapping tensor.ErrUnknownDType
// for the types llamacu does not read (Q8_1, Q8_K, the IQ and TQ types, integers, F64, MXFP4).
func (t GGMLType) DType() (tensor.DType, error) {
	if d, ok := ggmlDTypes[t]; ok {
		return d, nil
	}
	return 0, fmt.Errorf("%w: %v (ggml type %d); llamacu reads F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and Q2_K…Q6_K",
		tensor.ErrUnknownDType, t, uint32(t))
}

// ggmlTypeOf is the inverse of GGMLType.DType.
func ggmlTypeOf(d tensor.DType) (GGMLType, error) {
	for g, dd := range ggmlDTypes {
		if dd == d {
			return g, nil
		}
	}
	return 0, fmt.Errorf("%w: %v has no GGUF type", tensor.ErrUnknownDType, d)
}

// GGUFInfo is the header of a GGUF file: its metadata and tensor directory.
type GGUFInfo struct {
	Version    uint32
	Alignment  int64 // general.alignment, or 32
	DataOffset int64 // where the tensor data section starts (may lie past the end of a file without tensors)
	// Keys lists the metadata keys in file order; Meta holds their values as Go values:
	// uint8, int8, uint16, int16, uint32, int32, uint64, int64, float32, float64, bool, string;
	// an array of one of those becomes a slice of it ([]string, []float32, []int32, ...), an array
	// of arrays becomes []any. Nothing aliases the file.
	Keys    []string
	Meta    map[string]any
	Tensors []GGUFTensor // in file order
}

// GGUFTensor is one entry of a GGUF tensor directory.
type GGUFTensor struct {
	Name   string   // as stored in the file ("blk.0.attn_q.weight")
	Type   GGMLType // storage type
	Shape  []int    // row-major, outermost first: GGUF's dimensions reversed
	Offset int64    // relative to GGUFInfo.DataOffset
	Size   int64    // bytes, or -1 for a ggml type this package does not know
}

// ggufReader decodes little-endian values from a byte slice, reporting ErrTruncated when the
// slice ends early.
type ggufReader struct {
	data []byte
	off  int64
	path string
}

func (r *ggufReader) errf(sentinel error, format string, a ...any) error {
	return &TensorError{Path: r.path, Err: fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, a...))}
}

// take returns the next n bytes, or an error naming what was being read.
func (r *ggufReader) take(n int64, what string) ([]byte, error) {
	left := int64(len(r.data)) - r.off
	if n < 0 || n > left {
		return nil, r.errf(ErrTruncated, "GGUF %s at offset %d needs %d bytes, %d left", what, r.off, n, left)
	}
	b := r.data[r.off : r.off+n]
	r.off += n
	return b, nil
}

func (r *ggufReader) u32(what string) (uint32, error) {
	b, err := r.take(4, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (r *ggufReader) u64(what string) (uint64, error) {
	b, err := r.take(8, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

func (r *ggufReader) str(what string) (string, error) {
	n, err := r.u64(what + " length")
	if err != nil {
		return "", err
	}
	if n > uint64(len(r.data)) {
		return "", r.errf(ErrCorrupt, "GGUF %s at offset %d claims %d bytes, more than the whole file (%d)", what, r.off-8, n, len(r.data))
	}
	b, err := r.take(int64(n), what)
	return string(b), err
}

// count reads a u64 element count and checks that count elements of at least minSize bytes each
// fit in what is left of the file: when they do not, a count over ggufMaxCount is corrupt and a
// smaller one means the file is truncated.
func (r *ggufReader) count(minSize int64, what string) (int64, error) {
	at := r.off
	n, err := r.u64(what)
	if err != nil {
		return 0, err
	}
	left := int64(len(r.data)) - r.off
	if n > uint64(left) || int64(n)*minSize > left {
		if n > ggufMaxCount {
			return 0, r.errf(ErrCorrupt, "GGUF %s at offset %d is %d, impossible in a %d-byte file", what, at, n, len(r.data))
		}
		return 0, r.errf(ErrTruncated, "GGUF %s at offset %d is %d, which needs at least %d bytes, %d left", what, at, n, int64(n)*minSize, left)
	}
	return int64(n), nil
}

// value reads one metadata value of type typ.
func (r *ggufReader) value(typ uint32, key string, depth int) (any, error) {
	what := "value of " + strconv.Quote(key)
	if size := ggufValueSize(typ); size == 0 {
		return nil, r.errf(ErrCorrupt, "GGUF %s at offset %d has unknown value type %d", what, r.off, typ)
	} else if typ != ggufString && typ != ggufArray {
		b, err := r.take(size, what)
		if err != nil {
			return nil, err
		}
		return ggufScalar(typ, b), nil
	}
	if typ == ggufString {
		return r.str(what)
	}
	if depth >= ggufMaxNesting {
		return nil, r.errf(ErrCorrupt, "GGUF %s nests arrays more than %d deep", what, ggufMaxNesting)
	}
	et, err := r.u32(what + " element type")
	if err != nil {
		return nil, err
	}
	es := ggufValueSize(et)
	if es == 0 {
		return nil, r.errf(ErrCorrupt, "GGUF %s at offset %d is an array of unknown value type %d", what, r.off-4, et)
	}
	n, err := r.count(es, what+" element count")
	if err != nil {
		return nil, err
	}
	switch et {
	case ggufString:
		out := make([]string, n)
		for i := range out {
			if out[i], err = r.str(what); err != nil {
				return nil, err
			}
		}
		return out, nil
	case ggufArray:
		out := make([]any, n)
		for i := range out {
			if out[i], err = r.value(ggufArray, key, depth+1); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	b, err := r.take(n*es, what)
	if err != nil {
		return nil, err
	}
	return ggufScalars(et, b, int(n)), nil
}

// ggufScalar decodes a fixed-size value.
func ggufScalar(typ uint32, b []byte) any {
	le := binary.LittleEndian
	switch typ {
	case ggufUint8:
		return b[0]
	case ggufInt8:
		return int8(b[0])
	case ggufBool:
		return b[0] != 0
	case ggufUint16:
		return le.Uint16(b)
	case ggufInt16:
		return int16(le.Uint16(b))
	case ggufUint32:
		return le.Uint32(b)
	case ggufInt32:
		return int32(le.Uint32(b))
	case ggufFloat32:
		return math.Float32frombits(le.Uint32(b))
	case ggufUint64:
		return le.Uint64(b)
	case ggufInt64:
		return int64(le.Uint64(b))
	case ggufFloat64:
		return math.Float64frombits(le.Uint64(b))
	}
	panic(fmt.Sprintf("ggufScalar: type %d is not a fixed-size scalar", typ))
}

// ggufScalars decodes n fixed-size values into a typed slice.
func ggufScalars(typ uint32, b []byte, n int) any {
	es := int(ggufValueSize(typ))
	switch typ {
	case ggufUint8:
		return append([]uint8{}, b...)
	case ggufInt8:
		return decodeSlice[int8](typ, b, n, es)
	case ggufBool:
		return decodeSlice[bool](typ, b, n, es)
	case ggufUint16:
		return decodeSlice[uint16](typ, b, n, es)
	case ggufInt16:
		return decodeSlice[int16](typ, b, n, es)
	case ggufUint32:
		return decodeSlice[uint32](typ, b, n, es)
	case ggufInt32:
		return decodeSlice[int32](typ, b, n, es)
	case ggufFloat32:
		return decodeSlice[float32](typ, b, n, es)
	case ggufUint64:
		return decodeSlice[uint64](typ, b, n, es)
	case ggufInt64:
		return decodeSlice[int64](typ, b, n, es)
	case ggufFloat64:
		return decodeSlice[float64](typ, b, n, es)
	}
	panic(fmt.Sprintf("ggufScalars: type %d is not a fixed-size scalar", typ))
}

func decodeSlice[T any](typ uint32, b []byte, n, es int) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = ggufScalar(typ, b[i*es:(i+1)*es]).(T)
	}
	return out
}

// parseGGUF reads the header and tensor directory of a GGUF file held in data and checks every
// tensor lies, aligned, inside data. path is used in errors only.
func parseGGUF(data []byte, path string) (*GGUFInfo, error) {
	r := &ggufReader{data: data, path: path}
	magic, err := r.take(4, "magic")
	if err != nil {
		return nil, err
	}
	if string(magic) != ggufMagic {
		return nil, r.errf(ErrFormat, "not a GGUF file: magic %q, want %q", magic, ggufMagic)
	}
	info := &GGUFInfo{Meta: map[string]any{}, Alignment: ggufDefaultAlignment}
	if info.Version, err = r.u32("version"); err != nil {
		return nil, err
	}
	switch info.Version {
	case 2, 3:
	case 1:
		return nil, r.errf(ErrFormat, "GGUF version 1 (32-bit counts, 2023) is not supported; convert the file again with a current llama.cpp")
	default:
		if info.Version&0xffff == 0 {
			return nil, r.errf(ErrFormat, "GGUF version %#x looks big-endian; llamacu reads little-endian GGUF v2 and v3", info.Version)
		}
		return nil, r.errf(ErrFormat, "GGUF version %d is not supported (llamacu reads v2 and v3)", info.Version)
	}
	// A tensor info is at least 24 bytes (empty name, no dims); a key/value pair 13 (empty key, u8).
	nTensors, err := r.count(24, "tensor count")
	if err != nil {
		return nil, err
	}
	nKV, err := r.count(13, "metadata key/value count")
	if err != nil {
		return nil, err
	}
	for i := int64(0); i < nKV; i++ {
		key, err := r.str(fmt.Sprintf("metadata key #%d", i))
		if err != nil {
			return nil, err
		}
		if _, dup := info.Meta[key]; dup {
			return nil, r.errf(ErrCorrupt, "GGUF metadata key %q appears twice", key)
		}
		typ, err := r.u32("type of " + strconv.Quote(key))
		if err != nil {
			return nil, err
		}
		v, err := r.value(typ, key, 0)
		if err != nil {
			return nil, err
		}
		info.Keys = append(info.Keys, key)
		info.Meta[key] = v
	}
	if v, ok := info.Meta["general.alignment"]; ok {
		a, ok := v.(uint32)
		if !ok || a == 0 || a&(a-1) != 0 {
			return nil, r.errf(ErrCorrupt, "general.alignment %v (%T) is not a power of two stored as uint32", v, v)
		}
		info.Alignment = int64(a)
	}

	seen := make(map[string]bool, nTensors)
	for i := int64(0); i < nTensors; i++ {
		name, err := r.str(fmt.Sprintf("name of tensor #%d", i))
		if err != nil {
			return nil, err
		}
		terr := func(sentinel error, format string, a ...any) error {
			return &TensorError{Path: path, Tensor: name, Err: fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, a...))}
		}
		if seen[name] {
			return nil, terr(ErrCorrupt, "appears twice in the GGUF tensor directory")
		}
		seen[name] = true
		nd, err := r.u32("dimension count of tensor " + strconv.Quote(name))
		if err != nil {
			return nil, err
		}
		if nd > ggufMaxDims {
			return nil, terr(ErrCorrupt, "%d dimensions, GGUF allows at most %d", nd, ggufMaxDims)
		}
		t := GGUFTensor{Name: name, Shape: make([]int, nd), Size: -1}
		elems := int64(1)
		for j := range int(nd) {
			ne, err := r.u64("dimensions of tensor " + strconv.Quote(name))
			if err != nil {
				return nil, err
			}
			if ne == 0 || ne > math.MaxInt32 || int64(ne) > (1<<48)/elems {
				return nil, terr(ErrCorrupt, "dimension %d is %d (elements so far %d): impossible", j, ne, elems)
			}
			elems *= int64(ne)
			t.Shape[int(nd)-1-j] = int(ne) // GGUF lists ne[0] (innermost) first
		}
		typ, err := r.u32("type of tensor " + strconv.Quote(name))
		if err != nil {
			return nil, err
		}
		t.Type = GGMLType(typ)
		off, err := r.u64("offset of tensor " + strconv.Quote(name))
		if err != nil {
			return nil, err
		}
		if off > math.MaxInt64/4 {
			return nil, terr(ErrCorrupt, "offset %d is impossible", off)
		}
		t.Offset = int64(off)
		if t.Offset%info.Alignment != 0 {
			return nil, terr(ErrCorrupt, "offset %d is not a multiple of the alignment %d", off, info.Alignment)
		}
		if ti, ok := ggmlTypes[t.Type]; ok {
			inner := int64(1)
			if nd > 0 {
				inner = int64(t.Shape[nd-1])
			}
			if inner%ti.blockSize != 0 {
				return nil, terr(ErrCorrupt, "%v rows of %d elements are not whole blocks of %d", t.Type, inner, ti.blockSize)
			}
			t.Size = elems / ti.blockSize * ti.blockBytes
		}
		info.Tensors = append(info.Tensors, t)
	}
	info.DataOffset = (r.off + info.Alignment - 1) / info.Alignment * info.Alignment
	for _, t := range info.Tensors {
		begin := info.DataOffset + t.Offset
		if t.Size < 0 && begin > int64(len(data)) {
			return nil, &TensorError{Path: path, Tensor: t.Name, Err: fmt.Errorf(
				"%w: %v %v starts at byte %d, past the end of the %d-byte file", ErrTruncated, t.Type, t.Shape, begin, len(data))}
		}
		if end := begin + max(t.Size, 0); end > int64(len(data)) {
			return nil, &TensorError{Path: path, Tensor: t.Name, Err: fmt.Errorf(
				"%w: %v %v needs bytes [%d, %d), the file has %d", ErrTruncated, t.Type, t.Shape, begin, end, len(data))}
		}
	}
	return info, nil
}

// ReadGGUFInfo reads the metadata and tensor directory of a GGUF file (any architecture, any
// ggml types), for inspection. It checks that every tensor of a known type lies inside the file.
func ReadGGUFInfo(path string) (*GGUFInfo, error) {
	data, unmap, err := mapFile(path)
	if err != nil {
		return nil, err
	}
	defer unmap()
	return parseGGUF(data, path)
}

// ReadGGUFVocab reads the tokenizer vocabulary (tokenizer.ggml.*) of a GGUF file, which may be a
// vocabulary-only file with no tensors (llama.cpp's ggml-vocab-*.gguf) or a whole model. The
// result does not alias the file. A file without tokenizer.ggml.tokens is an error wrapping
// ErrMissing.
func ReadGGUFVocab(path string) (*Vocab, error) {
	data, unmap, err := mapFile(path)
	if err != nil {
		return nil, err
	}
	defer unmap()
	info, err := parseGGUF(data, path)
	if err != nil {
		return nil, err
	}
	v, err := ggufVocab(info.Meta, path)
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, &TensorError{Path: path, Err: fmt.Errorf("%w: no tokenizer.ggml.tokens: the file holds no vocabulary", ErrMissing)}
	}
	return v, nil
}

// openGGUF memory-maps a GGUF LLaMA model; its tensors alias the mapping. A vocabulary-only file
// (no tensors) is an error wrapping ErrMissing that points to ReadGGUFVocab.
func openGGUF(path string) (*Model, error) { return openMapped(path, ggufModel) }

// ggufModel builds a checked Model from a GGUF file held in data; the tensors alias data.
func ggufModel(data []byte, path string) (*Model, error) {
	info, err := parseGGUF(data, path)
	if err != nil {
		return nil, err
	}
	bad := func(sentinel error, format string, a ...any) error {
		return &TensorError{Path: path, Err: fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, a...))}
	}
	arch, _ := info.Meta["general.architecture"].(string)
	if arch != "llama" {
		if _, ok := info.Meta["general.architecture"]; !ok {
			return nil, bad(ErrFormat, "no general.architecture key; llamacu reads \"llama\" GGUF files")
		}
		return nil, bad(ErrFormat, "general.architecture is %q; llamacu reads \"llama\" GGUF files", info.Meta["general.architecture"])
	}
	if len(info.Tensors) == 0 {
		return nil, bad(ErrMissing, "the file has no tensors (a vocabulary-only GGUF?); read its tokenizer with ReadGGUFVocab")
	}
	vocab, err := ggufVocab(info.Meta, path)
	if err != nil {
		return nil, err
	}
	m := &Model{Path: path, Format: FormatGGUF, Vocab: vocab, Meta: info.Meta, Tensors: make(map[string]*tensor.Tensor, len(info.Tensors))}
	for _, gt := range info.Tensors {
		canon, skip := ggufCanonicalName(gt.Name)
		if skip != "" {
			m.Skipped = append(m.Skipped, gt.Name+": "+skip)
			continue
		}
		if canon == "" {
			return nil, &TensorError{Path: path, Tensor: gt.Name, Err: fmt.Errorf("%w: not a LLaMA weight name llamacu knows", ErrUnused)}
		}
		dt, err := gt.Type.DType()
		if err != nil {
			return nil, &TensorError{Path: path, Tensor: gt.Name, Err: err}
		}
		begin := info.DataOffset + gt.Offset
		end := begin + gt.Size // Size is known for every type DType accepts
		m.Tensors[canon] = &tensor.Tensor{Name: canon, DType: dt, Shape: gt.Shape, Data: data[begin:end:end]}
	}
	if m.Config, err = ggufConfig(info.Meta, m, path); err != nil {
		return nil, err
	}
	if err := m.check(); err != nil {
		return nil, err
	}
	return m, nil
}

// ggufLayerNames maps GGUF per-layer names (blk.N.<name>.weight) to canonical ones.
var ggufLayerNames = map[string]string{
	"attn_norm":   model.NameAttnNorm,
	"attn_q":      model.NameWq,
	"attn_k":      model.NameWk,
	"attn_v":      model.NameWv,
	"attn_output": model.NameWo,
	"ffn_norm":    model.NameFFNNorm,
	"ffn_gate":    model.NameW1,
	"ffn_down":    model.NameW2,
	"ffn_up":      model.NameW3,
}

// ggufGlobalNames maps GGUF's model-wide names to canonical ones.
var ggufGlobalNames = map[string]string{
	"token_embd.weight":  model.NameTokEmbed,
	"output_norm.weight": model.NameNorm,
	"output.weight":      model.NameOutput,
}

// ggufCanonicalName maps a GGUF tensor name to its canonical name, or returns a reason to skip
// it, or neither for a name it does not know.
func ggufCanonicalName(name string) (canon, skip string) {
	if c, ok := ggufGlobalNames[name]; ok {
		return c, ""
	}
	if name == "rope_freqs.weight" {
		return "", "RoPE frequency factors are not used: LLaMA 2 has no RoPE scaling, frequencies come from rope_theta"
	}
	rest, ok := strings.CutPrefix(name, "blk.")
	if !ok {
		return "", ""
	}
	num, rest, ok := strings.Cut(rest, ".")
	if !ok {
		return "", ""
	}
	l, err := strconv.Atoi(num)
	if err != nil || l < 0 || strconv.Itoa(l) != num {
		return "", ""
	}
	base, ok := strings.CutSuffix(rest, ".weight")
	if !ok {
		return "", ""
	}
	if c, ok := ggufLayerNames[base]; ok {
		return model.LayerName(l, c), ""
	}
	return "", ""
}

// ggufName maps a canonical name to its GGUF name (the inverse of ggufCanonicalName).
func ggufName(canon string) (string, bool) {
	for g, c := range ggufGlobalNames {
		if c == canon {
			return g, true
		}
	}
	rest, ok := strings.CutPrefix(canon, "layers.")
	if !ok {
		return "", false
	}
	num, base, ok := strings.Cut(rest, ".")
	if !ok {
		return "", false
	}
	for g, c := range ggufLayerNames {
		if c == base {
			return "blk." + num + "." + g + ".weight", true
		}
	}
	return "", false
}

// ggufInt reads an integer metadata value of any integer type; ok is false when the key is absent.
func ggufInt(meta map[string]any, key string) (v int64, ok bool, err error) {
	raw, ok := meta[key]
	if !ok {
		return 0, false, nil
	}
	switch x := raw.(type) {
	case uint8:
		return int64(x), true, nil
	case int8:
		return int64(x), true, nil
	case uint16:
		return int64(x), true, nil
	case int16:
		return int64(x), true, nil
	case uint32:
		return int64(x), true, nil
	case int32:
		return int64(x), true, nil
	case int64:
		return x, true, nil
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x), true, nil
		}
		return 0, true, fmt.Errorf("%w: %s = %d is out of range", ErrCorrupt, key, x)
	}
	return 0, true, fmt.Errorf("%w: %s has type %T, want an integer", ErrCorrupt, key, raw)
}

// ggufFloat reads a float32 or float64 metadata value.
func ggufFloat(meta map[string]any, key string) (v float64, ok bool, err error) {
	raw, ok := meta[key]
	if !ok {
		return 0, false, nil
	}
	switch x := raw.(type) {
	case float32:
		return float64(x), true, nil
	case float64:
		return x, true, nil
	}
	return 0, true, fmt.Errorf("%w: %s has type %T, want a float", ErrCorrupt, key, raw)
}

// ggufConfig reads the llama.* hyperparameters. The vocabulary size comes from the tokenizer's
// token list, else llama.vocab_size, else the rows of the token embedding in m.
func ggufConfig(meta map[string]any, m *Model, path string) (model.Config, error) {
	bad := func(err error) error { return &TensorError{Path: path, Err: err} }
	// intKey reads a required (def < 0) or optional positive integer that fits a plausible size.
	intKey := func(key string, def int64) (int, error) {
		v, ok, err := ggufInt(meta, key)
		switch {
		case err != nil:
			return 0, bad(err)
		case !ok && def < 0:
			return 0, bad(fmt.Errorf("%w: missing metadata key %s", ErrCorrupt, key))
		case !ok:
			return int(def), nil
		case v <= 0 || v > math.MaxInt32:
			return 0, bad(fmt.Errorf("%w: %s = %d is out of range", ErrCorrupt, key, v))
		}
		return int(v), nil
	}
	var c model.Config
	var err error
	c.Name, _ = meta["general.name"].(string)
	if c.Name == "" {
		c.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	for _, f := range []struct {
		dst *int
		key string
	}{
		{&c.Dim, "llama.embedding_length"},
		{&c.Layers, "llama.block_count"},
		{&c.FFN, "llama.feed_forward_length"},
		{&c.Heads, "llama.attention.head_count"},
		{&c.MaxSeq, "llama.context_length"},
	} {
		if *f.dst, err = intKey(f.key, -1); err != nil {
			return c, err
		}
	}
	if c.KVHeads, err = intKey("llama.attention.head_count_kv", int64(c.Heads)); err != nil {
		return c, err
	}
	eps, ok, err := ggufFloat(meta, "llama.attention.layer_norm_rms_epsilon")
	if err != nil {
		return c, bad(err)
	}
	if !ok {
		return c, bad(fmt.Errorf("%w: missing metadata key llama.attention.layer_norm_rms_epsilon", ErrCorrupt))
	}
	c.NormEps = float32(eps)
	theta, ok, err := ggufFloat(meta, "llama.rope.freq_base")
	if err != nil {
		return c, bad(err)
	}
	if !ok {
		theta = 10000
	}
	c.RopeTheta = float32(theta)
	if st, scaled := meta["llama.rope.scaling.type"]; scaled && st != "none" {
		return c, bad(fmt.Errorf("%w: RoPE scaling %v is not supported (LLaMA 2 uses none)", ErrCorrupt, st))
	}
	if rd, ok, err := ggufInt(meta, "llama.rope.dimension_count"); err != nil {
		return c, bad(err)
	} else if ok && c.Heads > 0 && (c.Dim%c.Heads != 0 || rd != int64(c.Dim/c.Heads)) {
		return c, bad(fmt.Errorf("%w: llama.rope.dimension_count %d ≠ head_dim (%d / %d heads): partial RoPE is not LLaMA", ErrCorrupt, rd, c.Dim, c.Heads))
	}
	if toks, ok := meta["tokenizer.ggml.tokens"].([]string); ok {
		c.Vocab = len(toks)
		if v, ok, err := ggufInt(meta, "llama.vocab_size"); err != nil {
			return c, bad(err)
		} else if ok && v != int64(c.Vocab) {
			return c, bad(fmt.Errorf("%w: llama.vocab_size %d ≠ %d tokens in tokenizer.ggml.tokens", ErrCorrupt, v, c.Vocab))
		}
	} else if v, ok, err := ggufInt(meta, "llama.vocab_size"); err != nil {
		return c, bad(err)
	} else if ok {
		if v <= 0 || v > math.MaxInt32 {
			return c, bad(fmt.Errorf("%w: llama.vocab_size %d is out of range", ErrCorrupt, v))
		}
		c.Vocab = int(v)
	} else if e, ok := m.Tensors[model.NameTokEmbed]; ok && len(e.Shape) == 2 {
		c.Vocab = e.Shape[0]
	}
	_, hasOutput := m.Tensors[model.NameOutput]
	c.TiedOutput = !hasOutput
	return c, nil
}

// ggufVocab reads tokenizer.ggml.*; it returns nil, nil when there is no token list.
func ggufVocab(meta map[string]any, path string) (*Vocab, error) {
	raw, ok := meta["tokenizer.ggml.tokens"]
	if !ok {
		return nil, nil
	}
	bad := func(format string, a ...any) error {
		return &TensorError{Path: path, Err: fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, a...))}
	}
	toks, ok := raw.([]string)
	if !ok {
		return nil, bad("tokenizer.ggml.tokens has type %T, want an array of strings", raw)
	}
	v := &Vocab{Tokens: toks, AddBOS: true}
	if raw, ok := meta["tokenizer.ggml.model"]; ok {
		if v.Model, ok = raw.(string); !ok {
			return nil, bad("tokenizer.ggml.model has type %T, want a string", raw)
		}
	}
	if raw, ok := meta["tokenizer.ggml.scores"]; ok {
		s, ok := raw.([]float32)
		if !ok || len(s) != len(toks) {
			return nil, bad("tokenizer.ggml.scores (%T of length %d) must be %d float32s", raw, ggufLen(raw), len(toks))
		}
		v.Scores = s
	}
	if raw, ok := meta["tokenizer.ggml.token_type"]; ok {
		types, ok := ggufInt32s(raw)
		if !ok || len(types) != len(toks) {
			return nil, bad("tokenizer.ggml.token_type (%T of length %d) must be %d integers", raw, ggufLen(raw), len(toks))
		}
		v.Types = types
	}
	for _, id := range []struct {
		dst *int32
		key string
	}{
		{&v.BOS, "tokenizer.ggml.bos_token_id"},
		{&v.EOS, "tokenizer.ggml.eos_token_id"},
		{&v.UNK, "tokenizer.ggml.unknown_token_id"},
		{&v.PAD, "tokenizer.ggml.padding_token_id"},
	} {
		x, ok, err := ggufInt(meta, id.key)
		switch {
		case err != nil:
			return nil, &TensorError{Path: path, Err: err}
		case !ok || x == -1 || x == math.MaxUint32: // absent, or -1 stored as int32 or uint32
			*id.dst = -1
		case x < 0 || x >= int64(len(toks)):
			return nil, bad("%s = %d is not a token id (the vocabulary has %d)", id.key, x, len(toks))
		default:
			*id.dst = int32(x)
		}
	}
	if raw, ok := meta["tokenizer.ggml.add_bos_token"]; ok {
		if v.AddBOS, ok = raw.(bool); !ok {
			return nil, bad("tokenizer.ggml.add_bos_token has type %T, want a bool", raw)
		}
	}
	return v, nil
}

// ggufLen is the length of a metadata slice value (0 for a scalar), for error messages.
func ggufLen(v any) int {
	switch x := v.(type) {
	case []string:
		return len(x)
	case []any:
		return len(x)
	case []uint8:
		return len(x)
	case []int8:
		return len(x)
	case []bool:
		return len(x)
	case []uint16:
		return len(x)
	case []int16:
		return len(x)
	case []uint32:
		return len(x)
	case []int32:
		return len(x)
	case []float32:
		return len(x)
	case []uint64:
		return len(x)
	case []int64:
		return len(x)
	case []float64:
		return len(x)
	}
	return 0
}

// ggufInt32s converts an integer array value that fits int32 to []int32.
func ggufInt32s(v any) ([]int32, bool) {
	conv := func(n int, at func(int) int64) ([]int32, bool) {
		out := make([]int32, n)
		for i := range out {
			x := at(i)
			if x < math.MinInt32 || x > math.MaxInt32 {
				return nil, false
			}
			out[i] = int32(x)
		}
		return out, true
	}
	switch x := v.(type) {
	case []int32:
		return x, true
	case []uint32:
		return conv(len(x), func(i int) int64 { return int64(x[i]) })
	case []int8:
		return conv(len(x), func(i int) int64 { return int64(x[i]) })
	case []uint8:
		return conv(len(x), func(i int) int64 { return int64(x[i]) })
	case []int16:
		return conv(len(x), func(i int) int64 { return int64(x[i]) })
	case []uint16:
		return conv(len(x), func(i int) int64 { return int64(x[i]) })
	case []int64:
		return conv(len(x), func(i int) int64 { return x[i] })
	}
	return nil, false
}

// WriteGGUF writes a GGUF v3 file: the metadata (keys in sorted order), the tensor directory in
// the order given, then the tensor data, each tensor at a multiple of general.alignment (32 unless
// meta sets it, as a uint32 power of two). Tensor names are written as given and shapes are
// reversed into GGUF's innermost-first order; tensors of any dtype GGMLType.DType maps are accepted.
//
// Metadata values must be one of the Go types GGUFInfo.Meta documents: a sized integer
// (uint8 … int64, not int), float32, float64, bool, string, a slice of one of those, or []any
// whose elements are such slices (an array of arrays; each inner array carries its own element
// type, as GGUF allows).
func WriteGGUF(w io.Writer, meta map[string]any, tensors []*tensor.Tensor) error {
	align := int64(ggufDefaultAlignment)
	if v, ok := meta["general.alignment"]; ok {
		a, ok := v.(uint32)
		if !ok || a == 0 || a&(a-1) != 0 {
			return fmt.Errorf("loader: WriteGGUF: general.alignment %v (%T) must be a uint32 power of two", v, v)
		}
		align = int64(a)
	}
	var buf []byte
	le := binary.LittleEndian
	putStr := func(s string) {
		buf = le.AppendUint64(buf, uint64(len(s)))
		buf = append(buf, s...)
	}
	buf = append(buf, ggufMagic...)
	buf = le.AppendUint32(buf, 3)
	buf = le.AppendUint64(buf, uint64(len(tensors)))
	buf = le.AppendUint64(buf, uint64(len(meta)))
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		putStr(k)
		var err error
		if buf, err = ggufAppendValue(buf, meta[k], true); err != nil {
			return fmt.Errorf("loader: WriteGGUF: metadata %q: %w", k, err)
		}
	}
	pad := func(n int64) int64 { return (n + align - 1) / align * align }
	offsets := make([]int64, len(tensors))
	var dataSize int64
	for i, t := range tensors {
		if err := t.Validate(); err != nil {
			return fmt.Errorf("loader: WriteGGUF: %w", err)
		}
		typ, err := ggmlTypeOf(t.DType)
		if err != nil {
			return fmt.Errorf("loader: WriteGGUF: tensor %q: %w", t.Name, err)
		}
		if len(t.Shape) > ggufMaxDims {
			return fmt.Errorf("loader: WriteGGUF: tensor %q: %d dimensions, GGUF allows %d", t.Name, len(t.Shape), ggufMaxDims)
		}
		putStr(t.Name)
		buf = le.AppendUint32(buf, uint32(len(t.Shape)))
		for j := len(t.Shape) - 1; j >= 0; j-- {
			buf = le.AppendUint64(buf, uint64(t.Shape[j]))
		}
		buf = le.AppendUint32(buf, uint32(typ))
		offsets[i] = dataSize
		buf = le.AppendUint64(buf, uint64(dataSize))
		dataSize = pad(dataSize + int64(len(t.Data)))
	}
	buf = append(buf, make([]byte, pad(int64(len(buf)))-int64(len(buf)))...)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("loader: WriteGGUF: %w", err)
	}
	var written int64
	for i, t := range tensors {
		if gap := offsets[i] - written; gap > 0 {
			if _, err := w.Write(make([]byte, gap)); err != nil {
				return fmt.Errorf("loader: WriteGGUF: %w", err)
			}
			written += gap
		}
		if _, err := w.Write(t.Data); err != nil {
			return fmt.Errorf("loader: WriteGGUF: %w", err)
		}
		written += int64(len(t.Data))
	}
	// Pad the end too, as llama.cpp's writer does, so that every tensor is followed by padding.
	if gap := dataSize - written; gap > 0 {
		if _, err := w.Write(make([]byte, gap)); err != nil {
			return fmt.Errorf("loader: WriteGGUF: %w", err)
		}
	}
	return nil
}

// ggufAppendValue appends a metadata value, preceded by its type when withType is set (array
// elements carry no type of their own).
func ggufAppendValue(buf []byte, v any, withType bool) ([]byte, error) {
	le := binary.LittleEndian
	typed := func(t uint32) {
		if withType {
			buf = le.AppendUint32(buf, t)
		}
	}
	array := func(et uint32, n int) {
		typed(ggufArray)
		buf = le.AppendUint32(buf, et)
		buf = le.AppendUint64(buf, uint64(n))
	}
	switch x := v.(type) {
	case uint8:
		typed(ggufUint8)
		buf = append(buf, x)
	case int8:
		typed(ggufInt8)
		buf = append(buf, byte(x))
	case bool:
		typed(ggufBool)
		b := byte(0)
		if x {
			b = 1
		}
		buf = append(buf, b)
	case uint16:
		typed(ggufUint16)
		buf = le.AppendUint16(buf, x)
	case int16:
		typed(ggufInt16)
		buf = le.AppendUint16(buf, uint16(x))
	case uint32:
		typed(ggufUint32)
		buf = le.AppendUint32(buf, x)
	case int32:
		typed(ggufInt32)
		buf = le.AppendUint32(buf, uint32(x))
	case float32:
		typed(ggufFloat32)
		buf = le.AppendUint32(buf, math.Float32bits(x))
	case uint64:
		typed(ggufUint64)
		buf = le.AppendUint64(buf, x)
	case int64:
		typed(ggufInt64)
		buf = le.AppendUint64(buf, uint64(x))
	case float64:
		typed(ggufFloat64)
		buf = le.AppendUint64(buf, math.Float64bits(x))
	case string:
		typed(ggufString)
		buf = le.AppendUint64(buf, uint64(len(x)))
		buf = append(buf, x...)
	case []string:
		array(ggufString, len(x))
		for _, s := range x {
			buf = le.AppendUint64(buf, uint64(len(s)))
			buf = append(buf, s...)
		}
	case []any:
		array(ggufArray, len(x))
		for i, e := range x {
			if !isSlice(e) {
				return nil, fmt.Errorf("element %d of a []any is %T, not an array", i, e)
			}
			var err error
			// Each nested array writes its own element type and count, but not the outer type.
			if buf, err = ggufAppendValue(buf, e, false); err != nil {
				return nil, err
			}
		}
	case []uint8:
		array(ggufUint8, len(x))
		buf = append(buf, x...)
	case []int8:
		return appendSlice(buf, x, ggufInt8, withType)
	case []bool:
		return appendSlice(buf, x, ggufBool, withType)
	case []uint16:
		return appendSlice(buf, x, ggufUint16, withType)
	case []int16:
		return appendSlice(buf, x, ggufInt16, withType)
	case []uint32:
		return appendSlice(buf, x, ggufUint32, withType)
	case []int32:
		return appendSlice(buf, x, ggufInt32, withType)
	case []float32:
		return appendSlice(buf, x, ggufFloat32, withType)
	case []uint64:
		return appendSlice(buf, x, ggufUint64, withType)
	case []int64:
		return appendSlice(buf, x, ggufInt64, withType)
	case []float64:
		return appendSlice(buf, x, ggufFloat64, withType)
	default:
		return nil, fmt.Errorf("value of type %T has no GGUF encoding (use a sized integer, float32/64, bool, string or a slice of those)", v)
	}
	return buf, nil
}

// appendSlice appends a typed array of fixed-size scalars.
func appendSlice[T any](buf []byte, xs []T, et uint32, withType bool) ([]byte, error) {
	le := binary.LittleEndian
	if withType {
		buf = le.AppendUint32(buf, ggufArray)
	}
	buf = le.AppendUint32(buf, et)
	buf = le.AppendUint64(buf, uint64(len(xs)))
	for _, x := range xs {
		var err error
		if buf, err = ggufAppendValue(buf, any(x), false); err != nil {
			return nil, err
		}
	}
	return buf, nil
}

func isSlice(v any) bool {
	switch v.(type) {
	case []string, []any, []uint8, []int8, []bool, []uint16, []int16, []uint32, []int32, []float32, []uint64, []int64, []float64:
		return true
	}
	return false
}

// WriteGGUFModel writes a LLaMA model as a GGUF v3 file that openGGUF reads back: llama.*
// hyperparameters from cfg, the vocabulary (if not nil) as tokenizer.ggml.*, and tensors, keyed
// by canonical name, in cfg.WeightShapes order under their GGUF names. Every weight cfg needs must
// be present with its shape, and nothing else; their dtypes are written as they are (convert
// with tensor.Encode first to produce, say, a Q8_0 file).
func WriteGGUFModel(w io.Writer, cfg model.Config, vocab *Vocab, tensors map[string]*tensor.Tensor) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("loader: WriteGGUFModel: %w", err)
	}
	meta := map[string]any{
		"general.architecture":                   "llama",
		"llama.embedding_length":                 uint32(cfg.Dim),
		"llama.block_count":                      uint32(cfg.Layers),
		"llama.feed_forward_length":              uint32(cfg.FFN),
		"llama.attention.head_count":             uint32(cfg.Heads),
		"llama.attention.head_count_kv":          uint32(cfg.KVHeads),
		"llama.context_length":                   uint32(cfg.MaxSeq),
		"llama.attention.layer_norm_rms_epsilon": cfg.NormEps,
		"llama.rope.freq_base":                   cfg.RopeTheta,
		"llama.rope.dimension_count":             uint32(cfg.HeadDim()),
	}
	if cfg.Name != "" {
		meta["general.name"] = cfg.Name
	}
	if vocab == nil {
		meta["llama.vocab_size"] = uint32(cfg.Vocab)
	} else {
		if len(vocab.Tokens) != cfg.Vocab {
			return fmt.Errorf("loader: WriteGGUFModel: the vocabulary has %d tokens, the config %d", len(vocab.Tokens), cfg.Vocab)
		}
		meta["tokenizer.ggml.model"] = vocab.Model
		meta["tokenizer.ggml.tokens"] = vocab.Tokens
		if len(vocab.Scores) > 0 {
			meta["tokenizer.ggml.scores"] = vocab.Scores
		}
		if len(vocab.Types) > 0 {
			meta["tokenizer.ggml.token_type"] = vocab.Types
		}
		for key, id := range map[string]int32{
			"tokenizer.ggml.bos_token_id": vocab.BOS, "tokenizer.ggml.eos_token_id": vocab.EOS,
			"tokenizer.ggml.unknown_token_id": vocab.UNK, "tokenizer.ggml.padding_token_id": vocab.PAD,
		} {
			if id >= 0 {
				meta[key] = uint32(id)
			}
		}
		meta["tokenizer.ggml.add_bos_token"] = vocab.AddBOS
	}
	want := cfg.WeightShapes()
	if len(tensors) != len(want) {
		return fmt.Errorf("loader: WriteGGUFModel: %d tensors given, the config needs %d", len(tensors), len(want))
	}
	out := make([]*tensor.Tensor, 0, len(want))
	for _, ws := range want {
		t, ok := tensors[ws.Name]
		if !ok {
			return fmt.Errorf("loader: WriteGGUFModel: tensor %q: %w", ws.Name, ErrMissing)
		}
		if !slices.Equal(t.Shape, ws.Shape) {
			return fmt.Errorf("loader: WriteGGUFModel: tensor %q: %w: have %v, the config needs %v", ws.Name, ErrShape, t.Shape, ws.Shape)
		}
		name, _ := ggufName(ws.Name)
		out = append(out, &tensor.Tensor{Name: name, DType: t.DType, Shape: t.Shape, Data: t.Data})
	}
	return WriteGGUF(w, meta, out)
}
