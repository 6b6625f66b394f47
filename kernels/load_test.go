//go:build cuda

package kernels

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Load takes $LLAMACU_FATBIN when set; otherwise the embedded fatbin, which a -tags nofatbin
// build (the GPU check's bundle) does not have: then it says which variable to set.
func TestLoad(t *testing.T) {
	t.Setenv(EnvFatbin, "")
	img, src, err := Load()
	if noFatbin {
		if err == nil || !strings.Contains(err.Error(), EnvFatbin) {
			t.Fatalf("nofatbin build without %s: %v, want an error naming it", EnvFatbin, err)
		}
	} else if err != nil || src != "embedded" || len(img) == 0 {
		t.Fatalf("embedded: %d bytes from %q, %v", len(img), src, err)
	}
	p := filepath.Join(t.TempDir(), "k.fatbin")
	want := []byte("a fatbin")
	if err := os.WriteFile(p, want, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvFatbin, p)
	img, src, err = Load()
	if err != nil || src != p || !bytes.Equal(img, want) {
		t.Fatalf("%s=%s: %q from %q, %v", EnvFatbin, p, img, src, err)
	}
	t.Setenv(EnvFatbin, filepath.Join(t.TempDir(), "missing"))
	if _, _, err := Load(); err == nil {
		t.Fatal("a missing $LLAMACU_FATBIN file loaded")
	}
}
