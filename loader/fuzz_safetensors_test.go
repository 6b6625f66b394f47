package loader

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/llamacu/llamacu/tensor"
)

// FuzzSafetensors feeds arbitrary bytes to the safetensors parser: it must return a *TensorError
// wrapping ErrTruncated, ErrCorrupt or tensor.ErrUnknownDType, or tensors whose data lies inside
// the input and holds exactly what their dtype and shape need. Never a panic.
//
//	go test ./loader -run '^$' -fuzz FuzzSafetensors -fuzztime 60s
func FuzzSafetensors(f *testing.F) {
	cfg := tinyConfig(true)
	dir := filepath.Join(f.TempDir(), "hf")
	if err := ExportHF(dir, cfg, randomTensors(f, cfg, 1), ExportOptions{DType: tensor.BF16}); err != nil {
		f.Fatal(err)
	}
	good, err := os.ReadFile(filepath.Join(dir, hfSingleName))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	n := int(binary.LittleEndian.Uint64(good))
	for _, cut := range []int{0, 7, 8, 9, 8 + n/2, 8 + n - 1, 8 + n, 8 + n + 1, len(good) - 1} {
		f.Add(good[:cut])
	}
	f.Add([]byte("\x08\x00\x00\x00\x00\x00\x00\x00{}      "))
	f.Add([]byte("\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":{\"dtype\":1}}"))
	f.Add([]byte("\x40\x00\x00\x00\x00\x00\x00\x00{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}          \x00\x00\x80\x3f"))

	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := parseSafetensors(data, "fuzz.safetensors")
		if err != nil {
			var te *TensorError
			if !errors.As(err, &te) || te.Path != "fuzz.safetensors" {
				t.Fatalf("error does not name the file: %T %v", err, err)
			}
			if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrCorrupt) && !errors.Is(err, tensor.ErrUnknownDType) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		for name, tt := range st.Tensors {
			want, err := tt.DType.Bytes(tt.NumElements())
			if err != nil || int64(len(tt.Data)) != want {
				t.Fatalf("%s: %v %v with %d bytes (%v)", name, tt.DType, tt.Shape, len(tt.Data), err)
			}
			if len(tt.Data) > 0 {
				tt.Float32s() // decodes without a panic
			}
		}
	})
}
