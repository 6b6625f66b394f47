//go:build cuda || cudaemu

package gpu

import "github.com/llamacu/llamacu/model"

var _ model.StepRunner = (*Backend)(nil)

// RunStep runs a forward step on the context's locked OS thread (cuda.Context.Do), where kernel
// launches are direct calls with no goroutine hand-off or allocation.
func (b *Backend) RunStep(f func() error) error { return b.ctx.Do(f) }
