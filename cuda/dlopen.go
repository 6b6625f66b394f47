//go:build cuda

package cuda

import (
	"os"
	"path/filepath"
	"strings"
)

// libCandidates lists what to dlopen for a library, in order: the value of
// the environment variable env first (a file, or a directory holding one of
// the names), then the bare sonames, which the dynamic linker looks up in
// LD_LIBRARY_PATH, the ld.so cache and the default directories.
//
// On the GPU machine the libraries may live only inside a Python
// installation (pip's nvidia-cublas-cu12 / nvidia-nccl-cu12 wheels under
// site-packages/nvidia/{cublas,nccl}/lib): point the variable, or
// LD_LIBRARY_PATH, there.
func libCandidates(env string, sonames []string) []string {
	var out []string
	if v := strings.TrimSpace(os.Getenv(env)); v != "" {
		if st, err := os.Stat(v); err == nil && st.IsDir() {
			for _, n := range sonames {
				out = append(out, filepath.Join(v, n))
			}
		} else {
			out = append(out, v)
		}
	}
	return append(out, sonames...)
}

// siblingLt is the libcublasLt file that a libcublas at path needs, for
// libcublas files given by path (whose directory may not be searched).
func siblingLt(path string) string {
	if !strings.Contains(path, "/") {
		return ""
	}
	dir, base := filepath.Split(path)
	if !strings.HasPrefix(base, "libcublas.so") {
		return ""
	}
	return filepath.Join(dir, "libcublasLt"+strings.TrimPrefix(base, "libcublas"))
}
