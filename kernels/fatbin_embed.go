//go:build cuda && !nofatbin

package kernels

import _ "embed"

// embedded is kernels/llamacu.fatbin as built by `make kernels` (which `make cuda` runs first).
//
//go:embed llamacu.fatbin
var embedded []byte

const noFatbin = false
