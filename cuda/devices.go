//go:build cuda

package cuda

import "gorgonia.org/cu"

// DeviceCount is the number of CUDA devices the driver shows (cuDeviceGetCount), honouring
// CUDA_VISIBLE_DEVICES. It needs no Context.
func DeviceCount() (int, error) {
	n, err := cu.NumDevices()
	if err != nil {
		return 0, wrap("cuDeviceGetCount", err)
	}
	return n, nil
}
