// topk.cu — each row's k best logits on the device, so that sampling reads k candidates per row
// instead of the whole vocabulary.
//
//   (vals[i, r], ids[i, r]), r < k = the k best (x[i, j], j) of row i, best first, where
//   (a, j) beats (b, l) if a > b, or a == b and j < l.   NaN counts (and is returned) as −Inf,
//   −0 as +0.
//   vals (n, k) fp32, ids (n, k) int32; x (n, cols) fp32 logits; 1 ≤ k ≤ min(cols, TOPK_MAX)
//
// That order is sample.Sampler's (sample/topk.go has the host reference, sample.TopK), so a
// sampler whose top-k is at most k draws from these candidates exactly the token it would draw
// from the whole row (sample.Sampler.SampleTop).
//
// Both versions rank elements by one 64-bit key per element, larger = better:
//   key = ordered(value) << idbits | (2^idbits − 1 − j),   idbits = ⌈log2 cols⌉
// where ordered() maps a float's bits to an unsigned integer in the same order. The id part
// breaks ties toward the lower column, and makes every key distinct: "the k best" is a set of
// exactly k elements, ties included.
//
// Versions
//   topk_f32_v1 (the readable reference): one block of 1024 threads per row; k rounds, each a
//       block-wide max over the keys below the previous round's winner. Reads the row k times.
//   topk_f32 (v2, radix select): one block of 1024 threads per row. Walks the key from the top
//       in 8-bit digits: a shared-memory histogram of the digit over the keys that still match
//       the chosen prefix says which bucket holds the k-th best key; stop as soon as that whole
//       bucket is in. At most ⌈(32 + idbits)/8⌉ passes (6 for a 32000 vocabulary) whatever k
//       is, then one pass gathers the k keys at or above the threshold into shared memory and
//       a rank sort (each of k threads counts the keys above its own) writes them in order.
//
// Speed: v2 reads the row (128 KB for a 32000 vocabulary, from L2 after the first pass) at most
// 7 times; v1 k times. Either returns 8·k bytes per row instead of the 4·cols of the row.
// Checked against sample.TopK in gpu/conformance_test.go (TestTopK); timed in BenchmarkTopK.
#include "common.cuh"

#define TOPK_MAX 256
#define TOPK_THREADS 1024

// topk_ordered maps a float to an unsigned integer that sorts as the float does, NaN as −Inf
// and −0 as +0 (integer operations only: no fast-math or flush-to-zero can change it).
LLAMACU_DEVICE uint32_t topk_ordered(float v) {
    uint32_t u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) u = 0xff800000u;  // NaN → −Inf
    if ((u & 0x7fffffffu) == 0) u = 0;                      // −0 → +0
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// topk_value inverts topk_ordered (on canonical values).
LLAMACU_DEVICE float topk_value(uint32_t o) {
    return __uint_as_float((o & 0x80000000u) ? (o & 0x7fffffffu) : ~o);
}

// topk_idbits is the number of bits that hold a column index below cols.
LLAMACU_DEVICE int topk_idbits(int cols) {
    int b = 0;
    while ((1ull << b) < (unsigned long long)cols) b++;
    return b;
}

LLAMACU_DEVICE unsigned long long topk_key(float v, int j, int idbits) {
    return (unsigned long long)topk_ordered(v) << idbits | (((1ull << idbits) - 1) - (unsigned)j);
}

// topk_write stores key c as candidate r of the row.
LLAMACU_DEVICE void topk_write(float* vals, int* ids, int64_t at, unsigned long long c, int idbits) {
    vals[at] = topk_value((uint32_t)(c >> idbits));
    ids[at] = (int)(((1ull << idbits) - 1) - (c & ((1ull << idbits) - 1)));
}

// grid (n), block (1024).
extern "C" __global__ void __launch_bounds__(TOPK_THREADS)
    topk_f32_v1(float* __restrict__ vals, int* __restrict__ ids, const float* __restrict__ x, int cols, int k) {
    pdl_begin();
    __shared__ unsigned long long warp_best[32];
    __shared__ unsigned long long winner;
    const float* row = x + (int64_t)blockIdx.x * cols;
    const int idbits = topk_idbits(cols);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    // Every key is > 0 (the smallest ordered value, −Inf's, is 0x007fffff) and < 2^63.
    unsigned long long below = ~0ull;  // this round looks at keys below the last winner
    for (int r = 0; r < k; r++) {
        unsigned long long best = 0;
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            unsigned long long c = topk_key(row[j], j, idbits);
            if (c < below && c > best) best = c;
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) best = max(best, __shfl_xor_sync(0xffffffffu, best, o));
        if (lane == 0) warp_best[warp] = best;
        __syncthreads();
        if (warp == 0) {
            best = lane < (int)(blockDim.x >> 5) ? warp_best[lane] : 0;
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) best = max(best, __shfl_xor_sync(0xffffffffu, best, o));
            if (lane == 0) {
                winner = best;
                topk_write(vals, ids, (int64_t)blockIdx.x * k + r, best, idbits);
            }
        }
        __syncthreads();
        below = winner;  // rewritten next round only after every thread passed its first barrier
    }
}

// grid (n), block (1024).
extern "C" __global__ void __launch_bounds__(TOPK_THREADS)
    topk_f32(float* __restrict__ vals, int* __restrict__ ids, const float* __restrict__ x, int cols, int k) {
    pdl_begin();
    __shared__ unsigned hist[256];          // digit histogram of the keys still in the running
    __shared__ unsigned scan[2][256];       // scan[.][t]: keys in buckets 255−t … 255
    __shared__ unsigned long long sel_prefix;
    __shared__ int sel_need, sel_done, taken;
    __shared__ unsigned long long cand[TOPK_MAX];
    const float* row = x + (int64_t)blockIdx.x * cols;
    const int idbits = topk_idbits(cols);
    const int t = threadIdx.x;

    // The keys still in the running are those with (key & mask) == prefix; the k-th best is the
    // need-th best of them.
    unsigned long long prefix = 0, mask = 0;
    int need = k;
    for (int shift = (32 + idbits + 7) / 8 * 8 - 8; shift >= 0; shift -= 8) {
        if (t < 256) hist[t] = 0;
        __syncthreads();
        for (int j = t; j < cols; j += blockDim.x) {
            unsigned long long c = topk_key(row[j], j, idbits);
            if ((c & mask) == prefix) atomicAdd(&hist[(c >> shift) & 0xff], 1u);
        }
        __syncthreads();
        // Inclusive scan from the top bucket down (Hillis–Steele, double-buffered).
        if (t < 256) scan[0][t] = hist[255 - t];
        __syncthreads();
        int src = 0;
        for (int off = 1; off < 256; off <<= 1) {
            if (t < 256) scan[src ^ 1][t] = scan[src][t] + (t >= off ? scan[src][t - off] : 0);
            src ^= 1;
            __syncthreads();
        }
        // The bucket where the running count first reaches need: exactly one thread sees it
        // (an empty bucket cannot, its count before and after being equal).
        if (t < 256) {
            const unsigned upto = scan[src][t], in = hist[255 - t], above = upto - in;
            if (above < (unsigned)need && (unsigned)need <= upto) {
                sel_prefix = prefix | (unsigned long long)(255 - t) << shift;
                sel_need = need - (int)above;
                sel_done = in == (unsigned)(need - (int)above);  // the whole bucket is in
            }
        }
        __syncthreads();
        prefix = sel_prefix;
        mask |= 0xffull << shift;
        need = sel_need;
        const bool done = sel_done;
        __syncthreads();  // everyone has read sel_* before the next pass may rewrite them
        if (done) break;  // the same for every thread
    }
    // Exactly k keys are ≥ prefix (with the bits below the last digit zero): those above it
    // counted in earlier passes, and the whole last bucket.
    if (t == 0) taken = 0;
    __syncthreads();
    for (int j = t; j < cols; j += blockDim.x) {
        unsigned long long c = topk_key(row[j], j, idbits);
        if (c >= prefix) {
            const int slot = atomicAdd(&taken, 1);
            if (slot < TOPK_MAX) cand[slot] = c;
        }
    }
    __syncthreads();
    // Rank sort: the keys are distinct, so each has a unique rank.
    for (int i = t; i < k; i += blockDim.x) {
        const unsigned long long c = cand[i];
        int r = 0;
        for (int m = 0; m < k; m++) r += cand[m] > c;
        topk_write(vals, ids, (int64_t)blockIdx.x * k + r, c, idbits);
    }
}
