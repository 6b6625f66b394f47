package bench

import "testing"

// TestCommitFromEnvironment: $LLAMACU_COMMIT (the device bundle's commit) wins over the working
// directory's git state, which on the GPU machine is a copy's.
func TestCommitFromEnvironment(t *testing.T) {
	t.Setenv("LLAMACU_COMMIT", "afc6047")
	if got := Commit(); got != "afc6047" {
		t.Fatalf("Commit() = %q with LLAMACU_COMMIT=afc6047", got)
	}
	t.Setenv("LLAMACU_COMMIT", "")
	if got := Commit(); got == "afc6047" || got == "" {
		t.Fatalf("Commit() = %q without LLAMACU_COMMIT", got)
	}
}
