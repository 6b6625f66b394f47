//go:build cuda || cudaemu

package gpu

import (
	"fmt"
	"math"
	"math/bits"

	"github.com/llamacu/llamacu/cuda"
	"github.com/llamacu/llamacu/model"
)

// Constants of kernels/attention.cu.
const (
	decThreads  = 128 // DEC_THREADS
	decChunkMax = 512 // DEC_CHUNK_MAX
	decGMax     = 8   // DEC_GMAX
	decHDMax    = 128 // DEC_HD_MAX
	pfQuery     = 32  // PF_BQ: query vectors per prefill block
	pfThreads   = 128 // PF_THREADS
	pfHDMax     = 128 // PF_HD_MAX
	pmQuery     = 64  // PM_BQ: query vectors per tensor-core prefill block (v3)
	pmThreads   = 128 // PM_THREADS
	p4Query     = 64  // P4_BQ: the same for v4
	p4Threads   = 128 // P4_THREADS

	// prefillMinRun is the shortest run of consecutive positions of one sequence that goes to the
	// prefill kernel; shorter runs (decode rows) go to the split-K decode kernel, which spreads a
	// long context over many blocks where one prefill tile would walk it alone.
	prefillMinRun = 4
	// decMinChunk is the fewest tokens a decode split is given.
	decMinChunk = 64
	// decSplitsMax is the most splits attention_reduce_f32_v2 merges (DEC_SPLITS_MAX); more
	// (contexts over 512 Ki tokens) go to v2's kernels.
	decSplitsMax = 1024
	// decV3MinRows is the fewest decode rows in a step for which v3's decode attention is the
	// default. The second GPU check (H100, 4096-token context, bench/results/
	// gpu-h100-2026-11-28-run2) measured v3 against v2 at 1 row: 0.81× (7B, 59.1 vs 48.1 µs) and
	// 0.79× (70B shape, 46.6 vs 37.0 µs); at 8 rows (7B): 1.21× (242.9 vs 293.8 µs). Between them
	// nothing is measured yet; 8 is the smallest batch measured to gain.
	decV3MinRows = 8
	// d4Tile is v4 decode's tile (D4_BK keys): its chunks are multiples of it.
	d4Tile    = 32
	d4Threads = 128 // D4_THREADS
	// d4BlocksPerSM is how many v4 decode blocks a step's splits aim at per SM: 3 is what fits
	// at G = 8 (168 registers, __launch_bounds__(128, 3)), and each block keeps a 16 KB tile in
	// flight by itself, so more blocks (v2/v3 aim at 4) would only add splits to merge.
	d4BlocksPerSM = 3
	// d4BlockCost is what decodeSplitsV4 counts for a block's start, in token-times (one token's
	// K and V of one KV head streamed by an SM): ~1 µs before the first tile lands, at the ~64
	// tokens a µs an SM streams at head_dim 128 (H100), shared by the ~3 blocks that start
	// together on it, rounded down. An estimate, not a measurement.
	d4BlockCost = 16
	// d4MergeMax bounds G·splits for the in-kernel merge (D4_MERGE: the last block of a row and
	// KV head merges its G heads' splits, each thread summing G·splits·head_dim/128 partials);
	// beyond it attention_reduce_f32_v2 merges, spread over heads·rows blocks. D4_MERGE_MAX.
	d4MergeMax = 32
	// decodeV5MinGroup is the fewest query heads per KV head for which v5's decode attention
	// (tensor cores; kernels/attention.cu) is the default over v4. At G = 8 v4 issues ~800
	// instructions a warp per 8 keys, about what the SMs issue at HBM speed (the H200 check
	// measured it at 19% of the copy bandwidth, 70B shape, one row); v5 spends ~10× fewer. At
	// G = 1 the two issue about as much and v4 measured 52%: v5's deeper pipeline is unmeasured
	// there, so v4 stays (LLAMACU_DECODE=v5 or Options.Decode = 5 runs v5 for every G).
	decodeV5MinGroup = 2
	// v4's modes (D4_REDUCE, D4_DIRECT, D4_MERGE), v5's too.
	d4Reduce, d4Direct, d4Merge = 0, 1, 2
)

// attnPlan assigns the rows of a batch to attention kernels (see kernels/attention.cu), for one
// batch version and head geometry. On the device, one int32 array:
//
//	v1 rows (nV1) | decode rows (nDec) | prefill tiles (nTiles, 2)
type attnPlan struct {
	slab  intSlab
	host  []int32
	key   planKey
	valid bool

	nV1, nDec, nTiles int
	chunk, splits     int  // decode: tokens per split, splits of the longest row
	decV4             bool // decode rows go to v4 (fp16 cache, head_dim 64 or 128)
	decV5             bool // … and to v5 rather than v4 (the same splits and merges)
	mma               bool // prefill tiles go to the tensor-core kernel (v3)
}

type planKey struct {
	version                 uint64
	heads, kvHeads, headDim int
	f32                     bool
}

// decodeFits reports whether the v2 decode kernel handles this geometry: G ≤ 8, head_dim ≤ 128
// and a power-of-two number (≤ 32) of 16-byte vectors per row.
func decodeFits(g, hd int, f32 bool) bool {
	vec := 8
	if f32 {
		vec = 4
	}
	if g > decGMax || hd > decHDMax || hd%vec != 0 {
		return false
	}
	nv := hd / vec
	return nv >= 1 && nv <= 32 && nv&(nv-1) == 0
}

// decodeV4Fits reports whether v4's decode kernels handle this geometry: an fp16 cache, head_dim
// 64 or 128, G ≤ 8.
func decodeV4Fits(g, hd int, f32 bool) bool { return !f32 && (hd == 64 || hd == 128) && g <= decGMax }

// prefillFits reports whether the v2 prefill kernel handles this geometry.
func prefillFits(g, hd int) bool { return hd%2 == 0 && hd <= pfHDMax && g <= pfQuery }

// prefillMMA reports whether the tensor-core prefill kernels (v3, v4) handle this geometry: an
// fp16 cache and head_dim 64 or 128. Both take tiles of pmQuery (= p4Query) query vectors.
func prefillMMA(g, hd int, f32 bool) bool { return !f32 && (hd == 64 || hd == 128) && g <= pmQuery }

// makePlan fills p for batch bt (already validated) and uploads it.
func (b *Backend) makePlan(p *attnPlan, bt *model.Batch, key planKey) cuda.DevicePtr {
	g := key.heads / key.kvHeads
	dec := !b.opts.Naive && decodeFits(g, key.headDim, key.f32)
	fits := dec && decodeV4Fits(g, key.headDim, key.f32)
	switch b.opts.Decode {
	case 0: // v5 from two query heads per KV head (decodeV5MinGroup), v4 below
		p.decV4, p.decV5 = fits, fits && g >= decodeV5MinGroup
	case 4:
		p.decV4, p.decV5 = fits, false
	case 5:
		p.decV4, p.decV5 = fits, fits
	default:
		p.decV4, p.decV5 = false, false
	}
	pre := !b.opts.Naive && prefillFits(g, key.headDim)
	p.mma = pre && !b.opts.SIMTPrefill && prefillMMA(g, key.headDim, key.f32)
	rowsPerTile := pfQuery / g
	if p.mma {
		rowsPerTile = pmQuery / g
	}
	B := bt.Len()

	// Runs of consecutive positions of one sequence; each run goes whole to one kernel. The
	// host array lists v1 rows, then decode rows, then prefill tiles: three passes over the runs.
	p.host = p.host[:0]
	p.nV1, p.nDec, p.nTiles = 0, 0, 0
	for want := 0; want < 3; want++ { // 0 v1, 1 decode, 2 prefill
		for i := 0; i < B; {
			j := i + 1
			for j < B && bt.Seq[j] == bt.Seq[i] && bt.Pos[j] == bt.Pos[j-1]+1 {
				j++
			}
			kind := 0
			switch {
			case pre && j-i >= prefillMinRun:
				kind = 2
			case dec:
				kind = 1
			}
			switch {
			case kind != want:
			case kind == 2:
				for r := i; r < j; r += rowsPerTile {
					p.host = append(p.host, int32(r), int32(min(rowsPerTile, j-r)))
					p.nTiles++
				}
			default:
				for r := i; r < j; r++ {
					p.host = append(p.host, int32(r))
				}
				if kind == 1 {
					p.nDec += j - i
				} else {
					p.nV1 += j - i
				}
			}
			i = j
		}
	}
	decRows := p.host[p.nV1 : p.nV1+p.nDec]

	// Decode splits: enough blocks to give every SM about four, chunks of 64…512 tokens.
	p.chunk, p.splits = decChunkMax, 1
	if p.nDec > 0 {
		maxCtx := 0
		for _, r := range decRows {
			maxCtx = max(maxCtx, int(bt.Pos[r])+1)
		}
		if b.opts.Graphs {
			// Plan for the bucket (the splits past a row's end are empty, as for a batch's
			// shorter rows), so that the launches stay the same, and a graph replayable, for
			// graphCtxBucket steps.
			maxCtx = ceilDiv(maxCtx, graphCtxBucket) * graphCtxBucket
		}
		perSM := 4 // v2, v3
		if p.decV4 {
			perSM = d4BlocksPerSM
			if n := b.opts.DecodeBlocksPerSM; n > 0 {
				perSM = n
			}
		}
		if p.decV4 {
			p.chunk, p.splits = decodeSplitsV4(maxCtx, p.nDec*key.kvHeads, b.sms, perSM, g)
		} else {
			p.chunk, p.splits = decodeSplits(maxCtx, p.nDec*key.kvHeads, b.sms, perSM)
		}
	}
	p.key, p.valid = key, true
	return b.upload(&p.slab, p.host)
}

// decodeSplits chooses v2's and v3's decode chunk (tokens per block) and the split count of the
// longest context for blocks = rows·kv_heads blocks per split: enough splits to give every SM
// about perSM blocks (4), chunks of at least decMinChunk tokens, a multiple of 32 and at most
// decChunkMax (they keep a chunk's scores in shared memory).
func decodeSplits(maxCtx, blocks, sms, perSM int) (chunk, splits int) {
	splits = ceilDiv(perSM*sms, blocks)
	splits = max(1, min(splits, ceilDiv(maxCtx, decMinChunk), decSplitsMax))
	chunk = min(ceilDiv(maxCtx, splits*d4Tile)*d4Tile, decChunkMax)
	return chunk, ceilDiv(maxCtx, chunk)
}

// decodeSplitsV4 chooses v4's and v5's chunk (a multiple of d4Tile, at least decMinChunk unless
// the context is shorter) for blocks = rows·kv_heads blocks per split and G query heads per KV
// head, by a model of the busiest SM. With n splits, the n·blocks blocks spread over the SMs
// put k = ⌈n·blocks/sms⌉ on the busiest; it streams k·chunk tokens' K and V, at full speed once
// it runs perSM blocks (fewer keep too few bytes in flight: Little's law), so it takes about
// chunk·max(k, perSM) token-times. Each block adds its start (d4BlockCost token-times: about a
// microsecond of latency before its first tile lands, shared by the blocks that start together)
// and, with partials to merge, 2·G more (G·head_dim fp32 values written and read back, against
// 2·head_dim fp16 values a token). Ties go to fewer splits. The rule it replaces,
// ⌈perSM·sms/blocks⌉ splits, overshoots: 7B's 32 KV heads at 4096 tokens got 13 splits of 320,
// 416 blocks on 132 SMs, 20 of them running a fourth block of 320 tokens after the others were
// done (this model: 16 splits of 256, 512 blocks, 1096 token-times against 1352).
func decodeSplitsV4(maxCtx, blocks, sms, perSM, g int) (chunk, splits int) {
	most := max(1, min(ceilDiv(maxCtx, decMinChunk), decSplitsMax))
	best := math.MaxInt
	for s := 1; s <= most; s++ {
		c := ceilDiv(maxCtx, s*d4Tile) * d4Tile
		n := ceilDiv(maxCtx, c)
		k := ceilDiv(n*blocks, sms)
		cost := c * max(k, perSM)
		cost += k * d4BlockCost
		if n > 1 {
			cost += k * 2 * g
		}
		if cost < best {
			best, chunk, splits = cost, c, n
		}
	}
	return chunk, splits
}

// decodeV3 says whether a step with nDec decode rows runs v3's decode attention (Options.Decode).
func (b *Backend) decodeV3(nDec int) bool {
	switch b.opts.Decode {
	case 2:
		return false
	case 3:
		return true
	}
	return nDec >= decV3MinRows
}

// Attention is causal grouped-query attention over the cache (see model.Backend): for token i
// and query head h, softmax over t ≤ pos of q·K[t]/sqrt(head_dim), then Σ a[t]·V[t].
// out, q (B, heads·head_dim). StoreKV for this step must have run first.
//
// Rows are split between kernels/attention.cu's kernels (see makePlan): runs of ≥ 4 consecutive
// positions of one sequence go to the prefill kernel (v4 on tensor cores for an fp16 cache and
// head_dim 64 or 128, else v2), other rows to the split-K decode kernel
// (plus its reduce), and geometries neither handles (or Options.Naive) to v1.
func (b *Backend) Attention(out, q model.Buffer, c model.KVCache, layer int, bt *model.Batch) {
	cc, ob, qb := kvc(c), buf(out), buf(q)
	hd := cc.l.HeadDim
	if qb.cols != ob.cols || qb.cols%hd != 0 || (qb.cols/hd)%cc.l.KVHeads != 0 || ob == qb || hd > 1024 {
		panic(fmt.Sprintf("gpu: Attention: out (%d, %d), q (%d, %d) with %d kv heads of %d (out must not be q)", bt.Len(), ob.cols, bt.Len(), qb.cols, cc.l.KVHeads, hd))
	}
	d := b.prepareBatch("Attention", cc, layer, bt, true, ob, qb)
	if bt.Len() == 0 || !b.ok() {
		return
	}
	heads, kvHeads, l := qb.cols/hd, cc.l.KVHeads, cc.l
	key := planKey{version: d.version, heads: heads, kvHeads: kvHeads, headDim: hd, f32: cc.f32}
	p := &b.plan
	var base cuda.DevicePtr
	if p.valid && p.key == key {
		base = b.upload(&p.slab, p.host) // unchanged: no copy
	} else {
		base = b.makePlan(p, bt, key)
	}
	if !b.ok() {
		return
	}
	v1Rows := base
	decRows := base + cuda.DevicePtr(4*p.nV1)
	tiles := base + cuda.DevicePtr(4*(p.nV1+p.nDec))
	g := heads / kvHeads
	cache := []cuda.Arg{cuda.Ptr(cc.k), cuda.Ptr(cc.v)}
	common := []cuda.Arg{cuda.Ptr(d.pos), cuda.Ptr(d.rowTab), cuda.Ptr(d.tables),
		i32(heads), i32(kvHeads), i32(hd), i32(layer), i32(l.NumBlocks), i32(l.BlockSize)}

	if p.nV1 > 0 {
		f := b.k.attnV1F16
		if cc.f32 {
			f = b.k.attnV1F32
		}
		b.launch(f, cuda.Dim3{X: heads, Y: p.nV1}, cuda.Dim3{X: (hd + 31) / 32 * 32},
			cuda.Ptr(ob.ptr), cuda.Ptr(qb.ptr), cache[0], cache[1], cuda.Ptr(v1Rows),
			common[0], common[1], common[2], common[3], common[4], common[5], common[6], common[7], common[8])
	}
	if p.nDec > 0 {
		gi := bits.Len(uint(g - 1)) // 1→0, 2→1, 3,4→2, 5…8→3
		// v4's mode; v2 and v3 take the same 0 (partials, then the reduce) and 1 (direct).
		mode := d4Reduce
		var po, pml, cnt cuda.DevicePtr
		if p.splits == 1 {
			mode = d4Direct
		} else {
			if p.decV4 && g*p.splits <= d4MergeMax {
				mode = d4Merge
				cnt = b.ensureZeroed(&b.decCnt, int64(p.nDec)*int64(kvHeads)*4)
			}
			n := int64(p.nDec) * int64(heads) * int64(p.splits)
			po = b.ensure(&b.partO, n*int64(hd)*4)
			pml = b.ensure(&b.partML, n*2*4)
			if !b.ok() {
				return
			}
		}
		grid := cuda.Dim3{X: p.splits, Y: kvHeads, Z: p.nDec}
		reduce := b.k.attnReduceV2
		if p.decV4 {
			// Compiled per head_dim (64 or 128): no head_dim argument; v5 takes any G ≤ 8.
			f := b.k.attnDecV4[hd/128][gi]
			if p.decV5 {
				f = b.k.attnDecV5[hd/128]
			}
			b.launch(f, grid, cuda.Dim3{X: d4Threads}, cuda.Ptr(ob.ptr), cuda.Ptr(po), cuda.Ptr(pml),
				cuda.Ptr(cnt), cuda.Ptr(qb.ptr), cache[0], cache[1], cuda.Ptr(decRows), common[0], common[1], common[2],
				common[3], common[4], common[6], common[7], common[8], i32(p.chunk), i32(p.splits), i32(mode))
		} else {
			f := b.k.attnDecV3F16[gi]
			if cc.f32 {
				f = b.k.attnDecV3F32[gi]
			}
			if !b.decodeV3(p.nDec) || p.splits > decSplitsMax {
				f, reduce = b.k.attnDecF16[gi], b.k.attnReduce
				if cc.f32 {
					f = b.k.attnDecF32[gi]
				}
			}
			b.launch(f, grid, cuda.Dim3{X: decThreads}, cuda.Ptr(ob.ptr), cuda.Ptr(po), cuda.Ptr(pml), cuda.Ptr(qb.ptr), cache[0], cache[1],
				cuda.Ptr(decRows), common[0], common[1], common[2], common[3], common[4], common[5],
				common[6], common[7], common[8], i32(p.chunk), i32(p.splits), i32(mode))
		}
		if mode == d4Reduce {
			b.launch(reduce, cuda.Dim3{X: heads, Y: p.nDec}, cuda.Dim3{X: 128},
				cuda.Ptr(ob.ptr), cuda.Ptr(po), cuda.Ptr(pml), cuda.Ptr(decRows), common[0],
				i32(heads), i32(hd), i32(p.chunk), i32(p.splits))
		}
	}
	if p.nTiles > 0 && p.mma {
		hi := 0
		if hd == 128 {
			hi = 1
		}
		args := []cuda.Arg{cuda.Ptr(ob.ptr), cuda.Ptr(qb.ptr), cache[0], cache[1], cuda.Ptr(tiles),
			common[0], common[1], common[2], common[3], common[4], common[6], common[7], common[8]}
		if b.opts.PrefillV3 {
			b.launch(b.k.attnPrefillMMA[hi], cuda.Dim3{X: p.nTiles, Y: kvHeads}, cuda.Dim3{X: pmThreads}, args...)
			return
		}
		// v4 takes its tiles in reverse (heaviest first): the grid's y is the tile.
		b.launch(b.k.attnPrefillV4[hi], cuda.Dim3{X: kvHeads, Y: p.nTiles}, cuda.Dim3{X: p4Threads}, args...)
		return
	}
	if p.nTiles > 0 {
		f := b.k.attnPrefillF16
		if cc.f32 {
			f = b.k.attnPrefillF32
		}
		b.launch(f, cuda.Dim3{X: p.nTiles, Y: kvHeads}, cuda.Dim3{X: pfThreads},
			cuda.Ptr(ob.ptr), cuda.Ptr(qb.ptr), cache[0], cache[1], cuda.Ptr(tiles),
			common[0], common[1], common[2], common[3], common[4], common[5], common[6], common[7], common[8])
	}
}
