package sample

import "math"

// MaxTopK is the most candidates per row that TopK, SampleTop and the backends' device top-k
// (model.TopKer, kernels/topk.cu) handle.
const MaxTopK = 256

// TopK sets vals[:k] and ids[:k] to the k best entries of row, best first, in the Sampler's
// order: a larger value first, and of equal values the lower index. NaN counts as −Inf and −0
// as +0, and vals holds those canonical values (they change no weight the Sampler computes).
// It needs 1 ≤ k ≤ len(row), len(vals) ≥ k and len(ids) ≥ k, allocates nothing, and costs
// O(len(row)) for random rows (an insertion into the sorted prefix only for a new candidate).
//
// This is the reference of every backend's device top-k (model.TopKer).
func TopK(vals []float32, ids []int32, row []float32, k int) {
	n := 0
	for j, v := range row {
		n = insertTop(vals[:k], ids[:k], n, canonical(v), int32(j))
	}
}

// MergeTopK sets vals[:k] and ids[:k] to the k best of the candidates (cv[i], cid[i]) (in any
// order; ids distinct), in TopK's order. It needs 1 ≤ k ≤ len(cv) = len(cid).
func MergeTopK(vals []float32, ids []int32, cv []float32, cid []int32, k int) {
	n := 0
	for i, v := range cv {
		n = insertTop(vals[:k], ids[:k], n, canonical(v), cid[i])
	}
}

// insertTop inserts (v, id) into the sorted candidates vals[:n], ids[:n] (capacity len(vals)),
// dropping the worst when full, and returns the new count.
func insertTop(vals []float32, ids []int32, n int, v float32, id int32) int {
	k := len(vals)
	if n == k && !beats(v, id, vals[k-1], ids[k-1]) {
		return n
	}
	i := n
	if n < k {
		n++
	} else {
		i = k - 1
	}
	for i > 0 && beats(v, id, vals[i-1], ids[i-1]) {
		vals[i], ids[i] = vals[i-1], ids[i-1]
		i--
	}
	vals[i], ids[i] = v, id
	return n
}

// beats is better() on (value, id) pairs.
func beats(v float32, id int32, w float32, wid int32) bool {
	return v > w || (v == w && id < wid)
}

// canonical maps NaN to −Inf and −0 to +0.
func canonical(v float32) float32 {
	if v != v {
		return float32(math.Inf(-1))
	}
	if v == 0 {
		return 0
	}
	return v
}
