//go:build cudaemu && !cuda

package cuda

// The emulated device: kernels/emu/harness.cpp (which #includes kernels/all.cu) compiled for
// the CPU by g++ and run as a child process per Context. The process holds the "device
// memory"; this package talks to it over its stdin/stdout with the script protocol documented
// at the top of harness.cpp. A device address is buffer id << 40 | byte offset, so pointer
// arithmetic in callers works as on a GPU and a wrong pointer is caught by id and range.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/llamacu/llamacu/kernels"
)

const (
	emuAddrShift = 40
	emuOffMask   = 1<<emuAddrShift - 1
)

// emuAddr splits a device address into its buffer id and offset.
func emuAddr(p DevicePtr) (id uint32, off uint64) {
	return uint32(uint64(p) >> emuAddrShift), uint64(p) & emuOffMask
}

// EnvEmuCache names the directory that caches the compiled emulator (default: the user cache
// directory's llamacu/).
const EnvEmuCache = "LLAMACU_EMU_CACHE"

var emuBuild struct {
	once   sync.Once
	path   string
	err    error
	kernel map[string]bool // the harness's kernel table
}

// emuHarness compiles the harness once per process (and once per source version on this
// machine: the binary is cached under a hash of the sources) and returns its path.
func emuHarness() (string, map[string]bool, error) {
	emuBuild.once.Do(func() {
		emuBuild.path, emuBuild.err = buildHarness()
		if emuBuild.err != nil {
			return
		}
		out, err := exec.Command(emuBuild.path, "--list").Output()
		if err != nil {
			emuBuild.err = fmt.Errorf("cuda (emulated): %s --list: %w", emuBuild.path, err)
			return
		}
		emuBuild.kernel = map[string]bool{}
		for _, name := range strings.Fields(string(out)) {
			emuBuild.kernel[name] = true
		}
	})
	return emuBuild.path, emuBuild.kernel, emuBuild.err
}

func buildHarness() (string, error) {
	h := sha256.New()
	files := map[string][]byte{}
	err := fs.WalkDir(kernels.Sources, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := kernels.Sources.ReadFile(p)
		files[p] = b
		fmt.Fprintf(h, "%s\x00%d\x00", p, len(b))
		h.Write(b)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("cuda (emulated): kernel sources: %w", err)
	}
	cxx := os.Getenv("CXX")
	if cxx == "" {
		cxx = "g++"
	}
	flags := []string{"-std=c++20", "-O1", "-pthread", "-fno-strict-aliasing", "-ffp-contract=off", "-Wno-unknown-pragmas"}
	fmt.Fprintf(h, "%s %s", cxx, strings.Join(flags, " "))
	root := os.Getenv(EnvEmuCache)
	if root == "" {
		if d, err := os.UserCacheDir(); err == nil {
			root = filepath.Join(d, "llamacu")
		} else {
			root = filepath.Join(os.TempDir(), "llamacu-cache")
		}
	}
	bin := filepath.Join(root, "emu-"+hex.EncodeToString(h.Sum(nil))[:16])
	if st, err := os.Stat(bin); err == nil && st.Mode().IsRegular() {
		return bin, nil
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("cuda (emulated): %w", err)
	}
	src, err := os.MkdirTemp(root, "src-")
	if err != nil {
		return "", fmt.Errorf("cuda (emulated): %w", err)
	}
	defer os.RemoveAll(src)
	for p, b := range files {
		full := filepath.Join(src, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return "", fmt.Errorf("cuda (emulated): %w", err)
		}
		if err := os.WriteFile(full, b, 0o644); err != nil {
			return "", fmt.Errorf("cuda (emulated): %w", err)
		}
	}
	tmp := filepath.Join(src, "harness")
	args := append(flags, "-I", filepath.Join(src, "emu"), "-o", tmp, filepath.Join(src, "emu", "harness.cpp"))
	if out, err := exec.Command(cxx, args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("cuda (emulated): compiling the kernels for the CPU (%s): %w\n%s", cxx, err, out)
	}
	// Rename is atomic: test binaries of several packages may build at once.
	if err := os.Rename(tmp, bin); err != nil {
		return "", fmt.Errorf("cuda (emulated): %w", err)
	}
	return bin, nil
}

// emuProc is one running harness: the memory and the queue of one emulated device.
type emuProc struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	w      *bufio.Writer
	r      *bufio.Reader
	stderr *lockedBuffer
	err    error // sticky: the process failed
	buf    [64]byte
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.TrimSpace(l.b.String())
}

func startEmu(path string) (*emuProc, error) {
	p := &emuProc{cmd: exec.Command(path), stderr: &lockedBuffer{}}
	p.cmd.Stderr = p.stderr
	in, err := p.cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("cuda (emulated): start %s: %w", path, err)
	}
	p.in, p.w, p.r = in, bufio.NewWriterSize(in, 1<<20), bufio.NewReaderSize(out, 1<<16)
	return p, nil
}

// failed turns an I/O error with the process into the sticky device error: what the harness
// printed (a fault, a bad launch, a deadlock) as a CUDA_ERROR_LAUNCH_FAILED, which on a GPU is
// sticky too.
func (p *emuProc) failed(op string, ioErr error) error {
	if p.err != nil {
		return p.err
	}
	p.in.Close()
	waitErr := p.cmd.Wait()
	msg := p.stderr.String()
	if msg == "" {
		msg = fmt.Sprintf("the emulator stopped (%v; %v)", ioErr, waitErr)
	}
	p.err = &Error{Lib: "cuda", Op: op + ": " + msg, Code: 719, Name: "CUDA_ERROR_LAUNCH_FAILED"}
	return p.err
}

// The writers below queue a command; errors show at the next flush (sync or read).

func (p *emuProc) op(c byte)  { p.w.WriteByte(c) }
func (p *emuProc) u8(v uint8) { p.w.WriteByte(v) }
func (p *emuProc) u32(v uint32) {
	binary.LittleEndian.PutUint32(p.buf[:4], v)
	p.w.Write(p.buf[:4])
}
func (p *emuProc) u64(v uint64) {
	binary.LittleEndian.PutUint64(p.buf[:8], v)
	p.w.Write(p.buf[:8])
}

// sync waits until the harness has done everything queued.
func (p *emuProc) sync(op string) error {
	if p.err != nil {
		return p.err
	}
	p.op('S')
	if err := p.w.Flush(); err != nil {
		return p.failed(op, err)
	}
	b, err := p.r.ReadByte()
	if err != nil || b != 6 {
		return p.failed(op, errors.Join(err, fmt.Errorf("unexpected reply %d", b)))
	}
	return nil
}

// read copies n bytes at (id, off) into dst.
func (p *emuProc) read(op string, dst []byte, id uint32, off uint64) error {
	if p.err != nil {
		return p.err
	}
	p.op('G')
	p.u32(id)
	p.u64(off)
	p.u64(uint64(len(dst)))
	if err := p.w.Flush(); err != nil {
		return p.failed(op, err)
	}
	if _, err := io.ReadFull(p.r, dst); err != nil {
		return p.failed(op, err)
	}
	return nil
}

func (p *emuProc) quit() error {
	if p.err != nil {
		return nil // already reported
	}
	p.op('Q')
	p.w.Flush()
	p.in.Close()
	if err := p.cmd.Wait(); err != nil {
		return fmt.Errorf("cuda (emulated): %v: %s", err, p.stderr.String())
	}
	return nil
}
