//go:build !amd64 || purego

package cpu

// hasAVX2 is false where the assembly kernels do not exist.
const hasAVX2 = false

func useAsm() {}
