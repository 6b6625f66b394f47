//go:build cudaemu && !cuda

package kernels

import "embed"

// Sources are the kernel sources and the CPU shim that runs them (emu/), for the emulated CUDA
// driver of package cuda (build tag cudaemu): it compiles emu/harness.cpp, which #includes
// all.cu, with g++ and runs the real kernels on the CPU. See emu/emu.h for what that can and
// cannot check.
//
//go:embed *.cu *.cuh emu/*.h emu/*.cpp
var Sources embed.FS

// EmuImage is the "fatbin" of the emulated build: the kernels are compiled from Sources when a
// Context opens, so the module image only says which build it is.
var EmuImage = []byte("llamacu-emu-module")

// Load returns EmuImage: in the cudaemu build there is no fatbin to load.
func Load() (image []byte, source string, err error) {
	return EmuImage, "emulated: kernels/*.cu compiled for the CPU by g++", nil
}
