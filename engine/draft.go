package engine

// Speculative decoding by prompt lookup (vLLM's "ngram" method, llama.cpp's lookup decoding):
// the last few tokens of a sequence are looked for earlier in its prompt and output, and the
// tokens that followed them there are proposed as the next ones. The step feeds them after the
// sequence's last token, each with its logits row, and samples every row in order as if the
// proposals had been generated: while the sampled token equals the proposal, the next row's
// logits are the model's for exactly the history sequential decoding would have had, so the
// output — greedy or sampled, each token one draw from the generator in order — is the same as
// without drafts, in fewer steps: bit for bit where the backend computes a row the same in any
// batch (the CPU); on a GPU a step of several rows of one sequence runs the prefill kernels,
// whose fp16 rounding differs from one-row decode's. The first token that differs from its
// proposal is kept and the rest dropped (their K and V, written at positions beyond what was
// kept, are overwritten later).

// Lookup bounds: the longest and shortest suffix looked for.
const (
	draftMaxN = 3
	draftMinN = 1
)

// lookupDraft appends to dst up to k tokens that followed the most recent earlier occurrence
// of history's last n tokens (n from draftMaxN down to draftMinN; longer matches first), and
// returns it; nothing when the suffix occurs nowhere else.
func lookupDraft(dst, history []int32, k int) []int32 {
	l := len(history)
	for n := min(draftMaxN, l-1); n >= draftMinN; n-- {
		suffix := history[l-n:]
	search:
		for i := l - n - 1; i >= 0; i-- { // occurrence history[i:i+n], ending before the suffix
			for j := range n {
				if history[i+j] != suffix[j] {
					continue search
				}
			}
			return append(dst, history[i+n:min(i+n+k, l)]...)
		}
	}
	return dst
}
