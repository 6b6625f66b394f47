//go:build cuda || cudaemu

package gpu

import (
	"errors"
	"fmt"
	"strings"

	"github.com/llamacu/llamacu/bench"
	"github.com/llamacu/llamacu/cuda"
)

// The bench harness's optional interfaces: without them `llamacu bench --backend cuda` would
// describe the host CPU and compute "% copy BW" against a host memmove.
var (
	_ bench.DeviceDescriber    = (*Backend)(nil)
	_ bench.CopyBandwidthMeter = (*Backend)(nil)
)

// denseF16TFLOPs is the datasheet dense fp16 tensor-core peak (fp32 accumulate) by device name
// fragment, the first match winning: the ceiling of the prefill GEMMs.
var denseF16TFLOPs = []struct {
	name   string
	tflops float64
}{
	{"H200", 989.5}, {"H100 PCIe", 756.5}, {"H100 NVL", 835.5}, {"H100", 989.5}, {"GH200", 989.5},
	{"A100", 312}, {"A800", 312}, {"L40S", 362.1}, {"L4", 121}, {"A10G", 70}, {"A10", 125},
}

// DeviceInfo names the GPU and the driver, with the datasheet fp16 peak where the name is known.
func (b *Backend) DeviceInfo() bench.Device {
	v := cuda.DriverVersion()
	d := bench.Device{Name: b.ctx.DeviceName(), Driver: fmt.Sprintf("CUDA driver %d.%d", v/1000, v%1000/10)}
	major, minor := b.ctx.ComputeCapability()
	d.Name += fmt.Sprintf(" (sm_%d%d, %d SMs)", major, minor, b.ctx.SMCount())
	for _, p := range denseF16TFLOPs {
		if strings.Contains(b.ctx.DeviceName(), p.name) {
			d.PeakTFLOPs = p.tflops
			break
		}
	}
	return d
}

// copyBandwidthBytes is the buffer CopyBandwidth copies: far larger than any L2 (50 MB on an
// H100), so the copy streams from HBM. The emulator copies a small one (its figure means
// nothing anyway).
func copyBandwidthBytes() int64 {
	if cuda.Emulated {
		return 8 << 20
	}
	return 1 << 30
}

// CopyBandwidth times cuMemcpyDtoD of a 1 GiB buffer, best of 5 after a warm-up, and returns
// bytes read + written per second: the roofline the GEMV and attention kernels are held to.
func (b *Backend) CopyBandwidth() (float64, error) {
	size := copyBandwidthBytes()
	ctx := b.ctx
	src, err := ctx.Alloc(size)
	if err != nil {
		return 0, fmt.Errorf("gpu: copy bandwidth: %w", err)
	}
	defer ctx.Free(src)
	dst, err := ctx.Alloc(size)
	if err != nil {
		return 0, fmt.Errorf("gpu: copy bandwidth: %w", err)
	}
	defer ctx.Free(dst)
	start, err := ctx.NewEvent()
	if err != nil {
		return 0, err
	}
	defer start.Close()
	end, err := ctx.NewEvent()
	if err != nil {
		return 0, err
	}
	defer end.Close()
	best := 0.0
	for rep := range 6 {
		err := errors.Join(start.Record(nil), ctx.CopyDtoD(dst, src, size, nil), end.Record(nil), end.Synchronize())
		if err != nil {
			return 0, fmt.Errorf("gpu: copy bandwidth: %w", err)
		}
		ms, err := cuda.ElapsedMs(start, end)
		if err != nil {
			return 0, fmt.Errorf("gpu: copy bandwidth: %w", err)
		}
		if rep > 0 && ms > 0 { // rep 0 warms up
			best = max(best, 2*float64(size)/(float64(ms)*1e-3))
		}
	}
	if best == 0 {
		return 0, fmt.Errorf("gpu: copy bandwidth: no timing")
	}
	return best, nil
}
