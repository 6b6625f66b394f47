// Package kernels holds llamacu's hand-written CUDA kernels: the *.cu sources (one file per op
// family, extern "C" entry points named <op>_<dtype>[_vN], each file's header giving the formula,
// the versions and what limits their speed), common.cuh, and all.cu, the single translation unit
// that `make kernels` compiles with nvcc into llamacu.fatbin (SASS for sm_80, sm_86, sm_89, sm_90
// and PTX for compute_90).
//
// In a build with -tags cuda the package embeds that fatbin as Fatbin (kernels.go); without the
// tag it is empty, so the default build needs neither nvcc nor a GPU. The gpu package loads the
// fatbin through the cuda package and launches the kernels by name.
package kernels
