package gpu

import "fmt"

// kernelFuncs holds one F per kernel of kernels/llamacu.fatbin that the backend launches. The
// backend's kernelSet is kernelFuncs[*cuda.Function]; the type is generic, and this file has no
// build tag, so that the default-build test (kernelsig_test.go) can run table() and check every
// name and every launch site against the extern "C" signatures of kernels/*.cu.
type kernelFuncs[F any] struct {
	embedF32, embedF16, embedBF16 F    // embed.cu
	embedQ                        [5]F // by quantised type: Q8_0, Q4_0, Q4_K, Q6_K, Q5_K

	rmsnormV1, rmsnorm F // rmsnorm.cu
	addRMSNorm         F

	rope                           F // rope.cu
	ropeStoreF32, ropeStoreF16     F
	ropeStoreFrom                  [2][2]F // from q, k, v in fp16 / bf16 (F16, BF16), into the cache (f32, f16)
	storeKVF32, storeKVF16         F       // kvcache.cu
	attnV1F32, attnV1F16           F       // attention.cu
	attnDecF32, attnDecF16         [4]F    // by group width 1, 2, 4, 8
	attnReduce                     F
	attnDecV3F32, attnDecV3F16     [4]F // v3 decode, by group width
	attnReduceV2                   F
	attnDecV4                      [2][4]F // v4 decode (fp16 cache), by head_dim (64, 128) and group width
	attnDecV5                      [2]F    // v5 decode (fp16 cache, tensor cores), by head_dim (64, 128)
	attnPrefillF32, attnPrefillF16 F
	attnPrefillMMA                 [2]F // fp16 cache, tensor cores (v3): head_dim 64, 128
	attnPrefillV4                  [2]F // v4: pipelined, ldmatrix; head_dim 64, 128

	gemvV1          [3]F       // gemv.cu, by wdt (F32, F16, BF16)
	gemvV2          [3][4]F    // by wdt, batch width 1, 2, 4, 8
	gemvQKV         [3][4]F    // fused q, k, v projections, by wdt and batch width
	gemvGLU         [3][4]F    // fused gate/up projections and SwiGLU, by wdt and batch width
	gemvV3          [3][4][3]F // v3 (split K), by wdt, batch width and ks (1, 2, 4)
	gemvQKV3        [3][4][3]F
	gemvGLU3        [3][4][3]F
	gemvQKVRoPE     [3][2][4]F // v3 q, k, v with RoPE and the KV store (ks = 4), by wdt, cache (f32, f16), batch width
	gemvQKVRoPENorm [3][2]F    // v3n: that kernel at one row with the residual add and RMSNorm folded in, by wdt, cache
	gemvGLUNorm     [3]F       // v3n: gemv_<dt>_v3_glu_n1_k4 with them folded in, by wdt
	gemvV4          [2][2]F    // gemv_mma.cu (v4, tensor cores), by dtype (F16, BF16) and ks (4, 8)
	gemvQKV4        [2][2]F
	gemvGLU4        [2][2]F
	gemvQV4         [2][2]F // v4 for Q8_0 and Q4_0 weights, by quantised type and ks
	gemvQQKV4       [2][2]F
	gemvQGLU4       [2][2]F
	gemvQQKVRoPE4   [2][2][2]F // by quantised type, cache (f32, f16) and ks
	gemvQKVRoPE4    [2][2][2]F // by dtype, cache (f32, f16) and ks
	gemvQV1         [5]F       // gemv.cu, kquant.cu, by quantised type: Q8_0, Q4_0, Q4_K, Q6_K, Q5_K
	gemvQV2         [5][4]F    // by quantised type, batch width 1, 2, 4, 8
	gemvQQKV        [2][4]F    // fused q, k, v projections, by quantised type (Q8_0, Q4_0) and batch width
	gemvQGLU        [2][4]F    // fused gate/up projections and SwiGLU, by quantised type (Q8_0, Q4_0) and batch width
	gemvKGLU        [2][4]F    // kquant.cu: the same for Q4_K and Q5_K
	dequantQ        [5]F       // Q8_0, Q4_0, Q4_K, Q6_K, Q5_K → fp16 for cuBLAS
	gemmV1          [3]F       // gemm.cu
	toF16, toBF16   F

	swigluV1, swiglu F    // swiglu.cu
	swigluHalf       [2]F // fp16 and bf16 in and out: F16, BF16
	addV1, add       F    // add.cu
	gather           F    // gather.cu
	argmax           F    // argmax.cu
	topkV1, topk     F    // topk.cu
}

// table maps the extern "C" name of every kernel to the slot of k that holds it.
func (k *kernelFuncs[F]) table() map[string]*F {
	dts := [3]string{"f32", "f16", "bf16"}
	widths := [4]int{1, 2, 4, 8}
	table := map[string]*F{
		"embed_f32": &k.embedF32, "embed_f16": &k.embedF16, "embed_bf16": &k.embedBF16, "embed_q8_0": &k.embedQ[0], "embed_q4_0": &k.embedQ[1],
		"embed_q4_K": &k.embedQ[2], "embed_q6_K": &k.embedQ[3], "embed_q5_K": &k.embedQ[4],
		"gemv_q8_0_v1": &k.gemvQV1[0], "gemv_q4_0_v1": &k.gemvQV1[1], "gemv_q4_K_v1": &k.gemvQV1[2], "gemv_q6_K_v1": &k.gemvQV1[3], "gemv_q5_K_v1": &k.gemvQV1[4],
		"dequant_q8_0_f16": &k.dequantQ[0], "dequant_q4_0_f16": &k.dequantQ[1],
		"dequant_q4_K_f16": &k.dequantQ[2], "dequant_q6_K_f16": &k.dequantQ[3], "dequant_q5_K_f16": &k.dequantQ[4],
		"rmsnorm_f32_v1": &k.rmsnormV1, "rmsnorm_f32": &k.rmsnorm, "add_rmsnorm_f32": &k.addRMSNorm,
		"rope_f32": &k.rope, "rope_qk_store_kv_f32": &k.ropeStoreF32, "rope_qk_store_kv_f16": &k.ropeStoreF16,
		"store_kv_f32": &k.storeKVF32, "store_kv_f16": &k.storeKVF16,
		"attention_f32_v1": &k.attnV1F32, "attention_f16_v1": &k.attnV1F16,
		"attention_reduce_f32": &k.attnReduce, "attention_reduce_f32_v2": &k.attnReduceV2,
		"attention_prefill_f32": &k.attnPrefillF32, "attention_prefill_f16": &k.attnPrefillF16,
		"attention_prefill_f16_v3_hd64": &k.attnPrefillMMA[0], "attention_prefill_f16_v3_hd128": &k.attnPrefillMMA[1],
		"attention_prefill_f16_v4_hd64": &k.attnPrefillV4[0], "attention_prefill_f16_v4_hd128": &k.attnPrefillV4[1],
		"convert_f32_to_f16": &k.toF16, "convert_f32_to_bf16": &k.toBF16,
		"swiglu_f32_v1": &k.swigluV1, "swiglu_f32": &k.swiglu, "swiglu_f16": &k.swigluHalf[0], "swiglu_bf16": &k.swigluHalf[1],
		"add_f32_v1": &k.addV1, "add_f32": &k.add,
		"gather_rows_f32": &k.gather, "argmax_f32": &k.argmax,
		"topk_f32_v1": &k.topkV1, "topk_f32": &k.topk,
		"attention_decode_v5_f16_hd64": &k.attnDecV5[0], "attention_decode_v5_f16_hd128": &k.attnDecV5[1],
	}
	for g, w := range widths {
		table[fmt.Sprintf("attention_decode_f32_g%d", w)] = &k.attnDecF32[g]
		table[fmt.Sprintf("attention_decode_f16_g%d", w)] = &k.attnDecF16[g]
		table[fmt.Sprintf("attention_decode_v3_f32_g%d", w)] = &k.attnDecV3F32[g]
		table[fmt.Sprintf("attention_decode_v3_f16_g%d", w)] = &k.attnDecV3F16[g]
		table[fmt.Sprintf("attention_decode_v4_f16_hd64_g%d", w)] = &k.attnDecV4[0][g]
		table[fmt.Sprintf("attention_decode_v4_f16_hd128_g%d", w)] = &k.attnDecV4[1][g]
		table[fmt.Sprintf("gemv_q8_0_v2_n%d", w)] = &k.gemvQV2[0][g]
		table[fmt.Sprintf("gemv_q4_0_v2_n%d", w)] = &k.gemvQV2[1][g]
		table[fmt.Sprintf("gemv_q4_K_v2_n%d", w)] = &k.gemvQV2[2][g]
		table[fmt.Sprintf("gemv_q6_K_v2_n%d", w)] = &k.gemvQV2[3][g]
		table[fmt.Sprintf("gemv_q5_K_v2_n%d", w)] = &k.gemvQV2[4][g]
		table[fmt.Sprintf("gemv_q4_K_v2_glu_n%d", w)] = &k.gemvKGLU[0][g]
		table[fmt.Sprintf("gemv_q5_K_v2_glu_n%d", w)] = &k.gemvKGLU[1][g]
		for q, name := range []string{"q8_0", "q4_0"} {
			table[fmt.Sprintf("gemv_%s_v2_qkv_n%d", name, w)] = &k.gemvQQKV[q][g]
			table[fmt.Sprintf("gemv_%s_v2_glu_n%d", name, w)] = &k.gemvQGLU[q][g]
		}
	}
	for d, dt := range dts[1:] {
		for c, kv := range [2]string{"f32", "f16"} {
			table[fmt.Sprintf("rope_qk_store_kv_%s_from_%s", kv, dt)] = &k.ropeStoreFrom[d][c]
		}
		for i, ks := range [2]int{4, 8} {
			for c, kv := range [2]string{"f32", "f16"} {
				table[fmt.Sprintf("gemv_%s_v4_qkv_rope_%s_k%d", dt, kv, ks)] = &k.gemvQKVRoPE4[d][c][i]
			}
		}
	}
	for i, ks := range [2]int{4, 8} {
		for d, dt := range dts[1:] {
			table[fmt.Sprintf("gemv_%s_v4_k%d", dt, ks)] = &k.gemvV4[d][i]
			table[fmt.Sprintf("gemv_%s_v4_qkv_k%d", dt, ks)] = &k.gemvQKV4[d][i]
			table[fmt.Sprintf("gemv_%s_v4_glu_k%d", dt, ks)] = &k.gemvGLU4[d][i]
		}
		for q, name := range []string{"q8_0", "q4_0"} {
			table[fmt.Sprintf("gemv_%s_v4_k%d", name, ks)] = &k.gemvQV4[q][i]
			table[fmt.Sprintf("gemv_%s_v4_qkv_k%d", name, ks)] = &k.gemvQQKV4[q][i]
			table[fmt.Sprintf("gemv_%s_v4_glu_k%d", name, ks)] = &k.gemvQGLU4[q][i]
			for c, kv := range [2]string{"f32", "f16"} {
				table[fmt.Sprintf("gemv_%s_v4_qkv_rope_%s_k%d", name, kv, ks)] = &k.gemvQQKVRoPE4[q][c][i]
			}
		}
	}
	for d, dt := range dts {
		table["gemv_"+dt+"_v1"] = &k.gemvV1[d]
		table["gemm_"+dt+"_v1"] = &k.gemmV1[d]
		for j, w := range widths {
			table[fmt.Sprintf("gemv_%s_v2_n%d", dt, w)] = &k.gemvV2[d][j]
			table[fmt.Sprintf("gemv_%s_v2_qkv_n%d", dt, w)] = &k.gemvQKV[d][j]
			table[fmt.Sprintf("gemv_%s_v2_glu_n%d", dt, w)] = &k.gemvGLU[d][j]
			for i, ks := range [3]int{1, 2, 4} {
				table[fmt.Sprintf("gemv_%s_v3_n%d_k%d", dt, w, ks)] = &k.gemvV3[d][j][i]
				table[fmt.Sprintf("gemv_%s_v3_qkv_n%d_k%d", dt, w, ks)] = &k.gemvQKV3[d][j][i]
				table[fmt.Sprintf("gemv_%s_v3_glu_n%d_k%d", dt, w, ks)] = &k.gemvGLU3[d][j][i]
			}
			for c, kv := range [2]string{"f32", "f16"} {
				table[fmt.Sprintf("gemv_%s_v3_qkv_rope_%s_n%d", dt, kv, w)] = &k.gemvQKVRoPE[d][c][j]
			}
		}
		table["gemv_"+dt+"_v3n_glu_n1"] = &k.gemvGLUNorm[d]
		for c, kv := range [2]string{"f32", "f16"} {
			table[fmt.Sprintf("gemv_%s_v3n_qkv_rope_%s_n1", dt, kv)] = &k.gemvQKVRoPENorm[d][c]
		}
	}
	return table
}
