package bench

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"
)

// Host describes the machine a benchmark ran on.
type Host struct {
	CPU      string `json:"cpu"`   // model name from /proc/cpuinfo
	Cores    int    `json:"cores"` // runtime.NumCPU
	OS       string `json:"os"`    // GOOS/GOARCH and kernel release
	MemBytes int64  `json:"mem_bytes,omitempty"`
}

// Device describes the device a backend computes on, and its measured and rated peaks.
type Device struct {
	Name   string `json:"name"`
	Driver string `json:"driver,omitempty"`
	// CopyGBps is the measured copy bandwidth (bytes read + bytes written per second, 10⁹): a
	// device-to-device copy on a GPU, a parallel host memmove on the CPU.
	CopyGBps float64 `json:"copy_gbps"`
	// CopyMethod says how CopyGBps was measured.
	CopyMethod string `json:"copy_method,omitempty"`
	// PeakTFLOPs is the rated dense peak of the arithmetic the matmuls use (0: unknown).
	PeakTFLOPs float64 `json:"peak_tflops,omitempty"`
}

// DeviceDescriber is optionally implemented by a backend that knows its device: the CUDA backend
// reports the GPU's name, the driver version, and the datasheet dense fp16 peak. Without it, the
// harness describes the host CPU.
type DeviceDescriber interface {
	DeviceInfo() Device
}

// CopyBandwidthMeter is optionally implemented by a backend that can time a copy on its device
// (CUDA: cuMemcpyDtoD of a buffer far larger than L2, best of several); it returns bytes read +
// written per second. Without it, the harness times a host copy (HostCopyBandwidth).
type CopyBandwidthMeter interface {
	CopyBandwidth() (bytesPerSec float64, err error)
}

// HostInfo describes this machine.
func HostInfo() Host {
	h := Host{CPU: cpuModel(), Cores: runtime.NumCPU(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.OS += ", Linux " + strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			var kb int64
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				for _, c := range f[1] {
					kb = kb*10 + int64(c-'0')
				}
				h.MemBytes = kb << 10
			}
		}
	}
	return h
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

// HostCopyBandwidth measures the host's copy bandwidth: threads goroutines each copy() their
// share of a size-byte buffer into another (size should be far larger than the last-level cache;
// 256 MiB is), best of reps. It returns bytes read + written per second — the same accounting as
// OpStat.Bytes, so an op's GB/s over this is its fraction of what memory can do.
func HostCopyBandwidth(size, threads, reps int) float64 {
	threads = max(threads, 1)
	src, dst := make([]byte, size), make([]byte, size)
	for i := range src { // fault the pages in
		src[i] = byte(i)
	}
	copy(dst, src)
	chunk := (size + threads - 1) / threads
	best := 0.0
	for r := 0; r < max(reps, 1); r++ {
		var wg sync.WaitGroup
		t0 := time.Now()
		for w := 0; w < threads; w++ {
			lo, hi := w*chunk, min((w+1)*chunk, size)
			if lo >= hi {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				copy(dst[lo:hi], src[lo:hi])
			}()
		}
		wg.Wait()
		if sec := time.Since(t0).Seconds(); sec > 0 {
			best = max(best, 2*float64(size)/sec)
		}
	}
	return best
}

// Commit returns the source revision: $LLAMACU_COMMIT when set (bench/device/lib.sh sets it to
// the commit the device bundle was built from: on the GPU machine the working directory's git
// state is the device tool's copy, not the build's), else `git rev-parse --short HEAD` in the
// working directory (with "-dirty" when there are uncommitted changes), else the vcs.revision
// the binary was built from, else "unknown".
func Commit() string {
	if c := strings.TrimSpace(os.Getenv("LLAMACU_COMMIT")); c != "" {
		return c
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		rev := strings.TrimSpace(string(out))
		if st, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
			rev += "-dirty"
		}
		return rev
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if len(rev) > 7 {
			rev = rev[:7]
		}
		if rev != "" && dirty {
			rev += "-dirty"
		}
		if rev != "" {
			return rev
		}
	}
	return "unknown"
}

func goVersion() string { return runtime.Version() }
