package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// run --draft prints the text run prints without it, greedy and sampled, in fewer steps than
// tokens when proposals are kept.
func TestRunDraft(t *testing.T) {
	m := shared(t, "stories260K/stories260K.gguf")
	for _, sampling := range [][]string{{"--temperature", "0"}, {"--temperature", "1", "--seed", "7"}} {
		base := append(append([]string{"run", "--model", m, "--max-tokens", "150"}, sampling...), "Once upon a time")
		plain, errPlain, code := cli(t, base...)
		require.Equal(t, 0, code, errPlain)
		drafted, errDraft, code := cli(t, append([]string{base[0], "--draft", "4"}, base[1:]...)...)
		require.Equal(t, 0, code, errDraft)
		require.Equal(t, plain, drafted, "%v", sampling)
		require.Contains(t, errDraft, "proposals kept")
		require.Equal(t, stopOf(errPlain), stopOf(errDraft))
	}
	_, errOut, code := cli(t, "run", "--draft", "17", "x")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "--draft must be 0 to 16")
}

func stopOf(stderr string) string {
	_, after, _ := strings.Cut(stderr, "stop: ")
	return strings.TrimSpace(after)
}
