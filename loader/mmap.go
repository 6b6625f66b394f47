package loader

import (
	"fmt"
	"os"
	"syscall"
)

// openMapped memory-maps path and parses it with parse; what parse returns aliases the mapping
// and unmaps it when closed (the mapping is undone at once when parse fails).
func openMapped[T interface{ addCloser(func() error) }](path string, parse func(data []byte, path string) (T, error)) (T, error) {
	var zero T
	data, unmap, err := mapFile(path)
	if err != nil {
		return zero, err
	}
	v, err := parse(data, path)
	if err != nil {
		unmap()
		return zero, err
	}
	v.addCloser(unmap)
	return v, nil
}

// mapFile memory-maps path read-only. An empty file maps to an empty slice.
func mapFile(path string) (data []byte, unmap func() error, err error) {
	if st, err := os.Stat(path); err == nil && !st.IsDir() && !st.Mode().IsRegular() {
		// Opening a FIFO would block for ever; a device cannot be mapped as a model.
		return nil, nil, fmt.Errorf("loader: %s: %w: not a regular file (a named pipe, device or socket)", path, ErrFormat)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("loader: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("loader: %w", err)
	}
	if st.IsDir() {
		return nil, nil, fmt.Errorf("loader: %s: %w: is a directory", path, ErrFormat)
	}
	size := st.Size()
	if size == 0 {
		return []byte{}, func() error { return nil }, nil
	}
	if size != int64(int(size)) {
		return nil, nil, fmt.Errorf("loader: %s: file too large to map", path)
	}
	data, err = syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, fmt.Errorf("loader: mmap %s: %w", path, err)
	}
	// Ask the kernel to read the file ahead: the weights are all needed by the first forward
	// step, and faulting them in one page at a time made a cold prompt ~2x slower. A hint only:
	// it returns at once, and an error changes nothing.
	_ = syscall.Madvise(data, syscall.MADV_WILLNEED)
	return data, func() error { return syscall.Munmap(data) }, nil
}
