//go:build !amd64 || purego

package cpu

// bestGemm is the pure-Go kernel where no assembly exists.
func bestGemm() *gemmKernel { return &gemmGo }

// gemmKernels lists every kernel this CPU runs (for tests).
func gemmKernels() []*gemmKernel { return []*gemmKernel{&gemmGo} }
