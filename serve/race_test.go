//go:build race

package serve_test

// raceEnabled: the race detector slows the forward pass ~5×, so timing-only phases are skipped.
const raceEnabled = true
