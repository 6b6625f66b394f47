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
	for _, c := range []struct {
		name string
		opts Options
	}{
		{"threads=default", Options{}},
		{"threads=1", Options{Threads: 1}},
		{"threads=3/keep-half", Options{Threads: 3, KeepHalf: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			be := New(c.opts)
			defer be.Close()
			modeltest.Run(t, be, modeltest.Options{Large: largeConformance() && c.name == "threads=default"})
		})
	}
}
