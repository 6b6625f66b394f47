package loader

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/llamacu/llamacu/tensor"
)

// check validates m.Tensors against m.Config: every weight the config needs is present with the
// right shape and a supported dtype (norms must be F32, F16 or BF16), its data is exactly the right
// size, and no tensor is left over. Call it after a format reader has filled m.
func (m *Model) check() error {
	if err := m.Config.Validate(); err != nil {
		return &TensorError{Path: m.Path, Err: fmt.Errorf("%w: %w", ErrCorrupt, err)}
	}
	want := m.Config.WeightShapes()
	seen := make(map[string]bool, len(want))
	for _, ws := range want {
		seen[ws.Name] = true
		t, ok := m.Tensors[ws.Name]
		if !ok {
			return &TensorError{Path: m.Path, Tensor: ws.Name, Err: ErrMissing}
		}
		if !slices.Equal(t.Shape, ws.Shape) {
			return &TensorError{Path: m.Path, Tensor: ws.Name, Err: fmt.Errorf("%w: have %v, the config needs %v", ErrShape, t.Shape, ws.Shape)}
		}
		if len(ws.Shape) == 1 && t.DType != tensor.F32 && t.DType != tensor.F16 && t.DType != tensor.BF16 {
			return &TensorError{Path: m.Path, Tensor: ws.Name, Err: fmt.Errorf("%w: a norm vector must be F32, F16 or BF16, not %v", ErrCorrupt, t.DType)}
		}
		if err := t.Validate(); err != nil {
			return &TensorError{Path: m.Path, Tensor: ws.Name, Err: fmt.Errorf("%w: %w", ErrCorrupt, err)}
		}
	}
	var extra []string
	for name := range m.Tensors {
		if !seen[name] {
			extra = append(extra, name)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		return &TensorError{Path: m.Path, Tensor: extra[0], Err: fmt.Errorf("%w: the file has tensors a %d-layer LLaMA does not use: %s", ErrUnused, m.Config.Layers, strings.Join(extra, ", "))}
	}
	return nil
}
