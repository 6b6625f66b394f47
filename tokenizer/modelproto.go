package tokenizer

import (
	"fmt"
	"math"
	"os"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of sentencepiece_model.proto.
const (
	fModelPieces       = 1 // repeated SentencePiece
	fModelTrainerSpec  = 2 // TrainerSpec
	fModelNormalizer   = 3 // NormalizerSpec
	fModelDenormalizer = 5 // NormalizerSpec

	fPiecePiece = 1 // string
	fPieceScore = 2 // float
	fPieceType  = 3 // enum Type, default NORMAL

	fTrainerModelType     = 3  // enum ModelType, default UNIGRAM
	fTrainerWSAsSuffix    = 24 // bool treat_whitespace_as_suffix
	fTrainerByteFallback  = 35 // bool
	fTrainerUnkID         = 40 // int32, default 0
	fTrainerBosID         = 41 // int32, default 1
	fTrainerEosID         = 42 // int32, default 2
	fTrainerPadID         = 43 // int32, default -1
	fTrainerUnkSurface    = 44 // string, default " ⁇ "
	fNormName             = 1  // string
	fNormCharsmap         = 2  // bytes precompiled_charsmap
	fNormAddDummyPrefix   = 3  // bool, default true
	fNormRemoveExtraSpace = 4  // bool, default true
	fNormEscapeSpace      = 5  // bool, default true
)

// SentencePiece's TrainerSpec.ModelType values.
var modelTypeNames = map[uint64]string{1: "unigram", 2: "bpe", 3: "word", 4: "char"}

const modelTypeBPE = 2

// LoadModelProto reads a SentencePiece tokenizer.model file (see FromModelProto).
func LoadModelProto(path string) (*Tokenizer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	t, err := fromModelProto(data, path)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// FromModelProto parses a serialized SentencePiece ModelProto (the tokenizer.model file) of a BPE
// model. Unigram, word and char models, precompiled normalisation rules (for instance nmt_nfkc)
// and treat_whitespace_as_suffix are rejected with an error wrapping ErrUnsupported.
func FromModelProto(data []byte) (*Tokenizer, error) {
	return fromModelProto(data, "model proto")
}

// modelProto is the part of a ModelProto that the tokenizer uses.
type modelProto struct {
	pieces []string
	scores []float32
	types  []PieceType

	modelType     uint64
	byteFallback  bool
	wsAsSuffix    bool
	unk, bos, eos int32
	pad           int32
	unkSurface    string

	normName         string
	charsmapLen      int
	addDummyPrefix   bool
	removeExtraSpace bool
	escapeSpace      bool
	denormCharsmap   int
}

func fromModelProto(data []byte, src string) (*Tokenizer, error) {
	m := modelProto{
		modelType: 1, unk: 0, bos: 1, eos: 2, pad: -1, unkSurface: defaultUnkSurface,
		addDummyPrefix: true, removeExtraSpace: true, escapeSpace: true,
	}
	if err := m.parse(data); err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w: %w", src, ErrFormat, err)
	}
	if m.modelType != modelTypeBPE {
		name, ok := modelTypeNames[m.modelType]
		if !ok {
			name = fmt.Sprintf("type %d", m.modelType)
		}
		return nil, fmt.Errorf("tokenizer: %s: %w: model_type is %s; only BPE (SentencePiece model_type 2) is implemented", src, ErrUnsupported, name)
	}
	if m.charsmapLen > 0 {
		return nil, fmt.Errorf("tokenizer: %s: %w: normalizer %q has a precompiled charsmap (%d bytes); only identity normalisation is implemented", src, ErrUnsupported, m.normName, m.charsmapLen)
	}
	if m.denormCharsmap > 0 {
		return nil, fmt.Errorf("tokenizer: %s: %w: denormalizer has a precompiled charsmap", src, ErrUnsupported)
	}
	if m.wsAsSuffix {
		return nil, fmt.Errorf("tokenizer: %s: %w: treat_whitespace_as_suffix", src, ErrUnsupported)
	}
	t, err := build(m.pieces, m.scores, m.types, config{
		src: src, bos: m.bos, eos: m.eos, pad: m.pad, unk: -1,
		byteFallback:     m.byteFallback,
		strictDuplicates: true,
		addDummyPrefix:   m.addDummyPrefix,
		removeExtraSpace: m.removeExtraSpace,
		escapeSpace:      m.escapeSpace,
		unkSurface:       m.unkSurface,
	})
	if err != nil {
		return nil, err
	}
	if m.unk != t.unk {
		return nil, fmt.Errorf("tokenizer: %s: %w: trainer_spec.unk_id is %d but the unknown piece is %d", src, ErrVocab, m.unk, t.unk)
	}
	return t, nil
}

// fields calls f for each field of the message in b; v is the raw value: the varint, the fixed
// bits, or the bytes of a length-delimited field.
func fields(b []byte, f func(num protowire.Number, typ protowire.Type, v uint64, bytes []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var (
			v     uint64
			bytes []byte
		)
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var x uint32
			x, n = protowire.ConsumeFixed32(b)
			v = uint64(x)
		case protowire.Fixed64Type:
			v, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			bytes, n = protowire.ConsumeBytes(b)
		default: // groups and reserved wire types
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		if n < 0 {
			return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := f(num, typ, v, bytes); err != nil {
			return err
		}
	}
	return nil
}

// want checks that a known field has the wire type its proto declaration implies.
func want(num protowire.Number, got, want protowire.Type, msg string) error {
	if got != want {
		return fmt.Errorf("%s field %d has wire type %d, want %d", msg, num, got, want)
	}
	return nil
}

func (m *modelProto) parse(data []byte) error {
	return fields(data, func(num protowire.Number, typ protowire.Type, _ uint64, b []byte) error {
		switch num {
		case fModelPieces:
			if err := want(num, typ, protowire.BytesType, "ModelProto"); err != nil {
				return err
			}
			return m.parsePiece(b)
		case fModelTrainerSpec:
			if err := want(num, typ, protowire.BytesType, "ModelProto"); err != nil {
				return err
			}
			return m.parseTrainer(b)
		case fModelNormalizer:
			if err := want(num, typ, protowire.BytesType, "ModelProto"); err != nil {
				return err
			}
			return m.parseNormalizer(b)
		case fModelDenormalizer:
			if err := want(num, typ, protowire.BytesType, "ModelProto"); err != nil {
				return err
			}
			return fields(b, func(num protowire.Number, typ protowire.Type, _ uint64, b []byte) error {
				if num == fNormCharsmap && typ == protowire.BytesType {
					m.denormCharsmap = len(b)
				}
				return nil
			})
		}
		return nil
	})
}

func (m *modelProto) parsePiece(b []byte) error {
	i := len(m.pieces)
	var (
		piece string
		score float32
		typ   = TypeNormal
	)
	err := fields(b, func(num protowire.Number, wt protowire.Type, v uint64, b []byte) error {
		switch num {
		case fPiecePiece:
			if err := want(num, wt, protowire.BytesType, "SentencePiece"); err != nil {
				return err
			}
			piece = string(b)
		case fPieceScore:
			if err := want(num, wt, protowire.Fixed32Type, "SentencePiece"); err != nil {
				return err
			}
			score = math.Float32frombits(uint32(v))
		case fPieceType:
			if err := want(num, wt, protowire.VarintType, "SentencePiece"); err != nil {
				return err
			}
			if v < uint64(TypeNormal) || v > uint64(TypeByte) {
				return fmt.Errorf("type %d", int64(v))
			}
			typ = PieceType(v)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("piece %d: %w", i, err)
	}
	m.pieces = append(m.pieces, piece)
	m.scores = append(m.scores, score)
	m.types = append(m.types, typ)
	return nil
}

func (m *modelProto) parseTrainer(b []byte) error {
	return fields(b, func(num protowire.Number, wt protowire.Type, v uint64, b []byte) error {
		var id *int32
		switch num {
		case fTrainerModelType:
			if err := want(num, wt, protowire.VarintType, "TrainerSpec"); err != nil {
				return err
			}
			m.modelType = v
		case fTrainerByteFallback, fTrainerWSAsSuffix:
			if err := want(num, wt, protowire.VarintType, "TrainerSpec"); err != nil {
				return err
			}
			if num == fTrainerByteFallback {
				m.byteFallback = v != 0
			} else {
				m.wsAsSuffix = v != 0
			}
		case fTrainerUnkID:
			id = &m.unk
		case fTrainerBosID:
			id = &m.bos
		case fTrainerEosID:
			id = &m.eos
		case fTrainerPadID:
			id = &m.pad
		case fTrainerUnkSurface:
			if err := want(num, wt, protowire.BytesType, "TrainerSpec"); err != nil {
				return err
			}
			m.unkSurface = string(b)
		}
		if id != nil {
			if err := want(num, wt, protowire.VarintType, "TrainerSpec"); err != nil {
				return err
			}
			*id = int32(v) // proto int32: negative values are sign-extended varints
		}
		return nil
	})
}

func (m *modelProto) parseNormalizer(b []byte) error {
	return fields(b, func(num protowire.Number, wt protowire.Type, v uint64, b []byte) error {
		switch num {
		case fNormName:
			if err := want(num, wt, protowire.BytesType, "NormalizerSpec"); err != nil {
				return err
			}
			m.normName = string(b)
		case fNormCharsmap:
			if err := want(num, wt, protowire.BytesType, "NormalizerSpec"); err != nil {
				return err
			}
			m.charsmapLen = len(b)
		case fNormAddDummyPrefix, fNormRemoveExtraSpace, fNormEscapeSpace:
			if err := want(num, wt, protowire.VarintType, "NormalizerSpec"); err != nil {
				return err
			}
			switch num {
			case fNormAddDummyPrefix:
				m.addDummyPrefix = v != 0
			case fNormRemoveExtraSpace:
				m.removeExtraSpace = v != 0
			default:
				m.escapeSpace = v != 0
			}
		}
		return nil
	})
}
