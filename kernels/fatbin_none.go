//go:build cuda && nofatbin

package kernels

// embedded is empty in a -tags nofatbin build: Load reads $LLAMACU_FATBIN.
var embedded []byte

const noFatbin = true
