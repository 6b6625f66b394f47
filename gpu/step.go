//go:build cuda || cudaemu

package gpu

import "github.com/llamacu/llamacu/model"

var _ model.StepRunner = (*Backend)(nil)

// RunStep runs a forward step on the context's locked OS thread (cuda.Context.Do), where kernel
// launches are direct calls with no goroutine hand-off or allocation. With Options.Graphs the
// step is recorded and replayed as a CUDA graph where an identical step was seen (graph.go).
func (b *Backend) RunStep(f func() error) error {
	return b.ctx.Do(func() error {
		if !b.opts.Graphs || !b.ok() {
			return f()
		}
		b.startRecording()
		err := f()
		b.flush()
		if err == nil {
			err = b.err
		}
		return err
	})
}
