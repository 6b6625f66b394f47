package loader

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// Open reads a model from path: a Hugging Face folder (config.json + safetensors), a .gguf file
// (detected by its magic) or a llama2.c .bin checkpoint. The returned Model has been checked
// against its config; Close it when done.
func Open(path string) (*Model, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("loader: %w", err)
	}
	if st.IsDir() {
		return openHF(path)
	}
	if !st.Mode().IsRegular() {
		// Opening a FIFO would block for ever; a device cannot be mapped as a model.
		return nil, &TensorError{Path: path, Err: fmt.Errorf("%w: not a regular file (a named pipe, device or socket)", ErrFormat)}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("loader: %w", err)
	}
	magic := make([]byte, 8)
	n, _ := io.ReadFull(f, magic)
	f.Close()
	magic = magic[:n]
	switch {
	case bytes.HasPrefix(magic, []byte("GGUF")):
		return openGGUF(path)
	case looksLikeSafetensors(magic):
		return openSafetensors(path)
	}
	return openLlama2C(path)
}

// looksLikeSafetensors: 8-byte little-endian header length, then a JSON object starting with '{'.
// The length alone cannot tell; openSafetensors reports a clear error if the guess is wrong.
func looksLikeSafetensors(magic []byte) bool {
	if len(magic) < 8 {
		return false
	}
	var n uint64
	for i := 7; i >= 0; i-- {
		n = n<<8 | uint64(magic[i])
	}
	return n > 1 && n < 100<<20 && magic[6] == 0 && magic[7] == 0 && magic[5] == 0
}
