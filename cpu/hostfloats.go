package cpu

// HostFloats exposes the buffer's storage, (rows, cols) row-major, so that host-side
// collectives (tensor parallelism's in-process all-reduce) can work on it in place.
func (b *Buffer) HostFloats() []float32 { return b.data }
