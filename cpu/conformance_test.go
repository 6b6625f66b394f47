package cpu

import (
	"os"
	"testing"

	"github.com/llamacu/llamacu/model/modeltest"
)

// largeConformance reports whether to add the real LLaMA shapes (slow on a small CPU):
// LLAMACU_LARGE_TESTS=1 go test ./cpu -run Conformance.
func largeConformance() bool { return os.Getenv("LLAMACU_LARGE_TESTS") == "1" && !testing.Short() }

func TestConformance(t *testing.T) {
	// An F16 KV cache rounds K and V to 11 significant bits as they are stored: the GPU's
	// fp16 tolerance (gpu/conformance_test.go) applies.
	half := modeltest.Options{ATol: 1e-3, RTol: 5e-3}
	for _, c := range []struct {
		name string
		opts Options
		mt   modeltest.Options
	}{
		{"threads=default", Options{}, modeltest.Options{Large: largeConformance()}},
		{"threads=1", Options{Threads: 1}, modeltest.Options{}},
		{"threads=3/keep-half", Options{Threads: 3, KeepHalf: true}, modeltest.Options{}},
		{"threads=2/kv-f16", Options{Threads: 2, KVF16: true}, half},
	} {
		t.Run(c.name, func(t *testing.T) {
			be := New(c.opts)
			defer be.Close()
			modeltest.Run(t, be, c.mt)
		})
	}
}
