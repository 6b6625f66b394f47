//go:build cuda

package kernels

import (
	"fmt"
	"os"
)

// Fatbin is the embedded fatbin (fatbin_embed.go): every kernel of this package for sm_80,
// sm_86, sm_89 and sm_90, plus compute_90 PTX that the driver JIT-compiles for newer GPUs. It is
// empty in a build with -tags nofatbin (fatbin_none.go), which loads $LLAMACU_FATBIN instead:
// the GPU check's bundle ships one fatbin file beside its binaries rather than one in each.
var Fatbin = embedded

// EnvFatbin names the environment variable that replaces the embedded fatbin with a file (for
// example one built on the GPU machine with a newer nvcc and sm_90a kernels).
const EnvFatbin = "LLAMACU_FATBIN"

// Load returns the fatbin to load and where it came from: the file named by $LLAMACU_FATBIN when
// set, else the embedded Fatbin ("embedded").
func Load() (image []byte, source string, err error) {
	if p := os.Getenv(EnvFatbin); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, "", fmt.Errorf("kernels: %s: %w", EnvFatbin, err)
		}
		return b, p, nil
	}
	if len(Fatbin) == 0 {
		if noFatbin {
			return nil, "", fmt.Errorf("kernels: this build embeds no fatbin (-tags nofatbin): set %s to kernels/llamacu.fatbin", EnvFatbin)
		}
		return nil, "", fmt.Errorf("kernels: the embedded fatbin is empty (run make kernels)")
	}
	return Fatbin, "embedded", nil
}
