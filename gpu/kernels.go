//go:build cuda || cudaemu

package gpu

import (
	"fmt"

	"github.com/llamacu/llamacu/cuda"
)

// kernelSet holds every kernel of the fatbin, looked up by name once at New (kernelset.go lists
// them).
type kernelSet = kernelFuncs[*cuda.Function]

// loadKernels looks every kernel of k up in m.
func loadKernels(k *kernelSet, m *cuda.Module) error {
	for name, dst := range k.table() {
		f, err := m.Function(name)
		if err != nil {
			return fmt.Errorf("kernel %q: %w", name, err)
		}
		*dst = f
	}
	return nil
}
