//go:build !amd64 || purego

package cpu

// hasAVX2 is false where the assembly kernels do not exist.
const hasAVX2 = false

func useAsm() {}

// deqNibAsm is deqNibGo where the assembly kernels do not exist (deqNibAsmOn stays false).
func deqNibAsm(dst []float32, q []byte, s []float32) { deqNibGo(dst, q, s) }

// deq6Asm is deq6Go where the assembly kernels do not exist.
func deq6Asm(dst []float32, ql, qh []byte, s []float32) { deq6Go(dst, ql, qh, s) }

// deq5Asm is deq5Go where the assembly kernels do not exist.
func deq5Asm(dst []float32, q, qh []byte, s []float32) { deq5Go(dst, q, qh, s) }
