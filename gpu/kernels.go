//go:build cuda

package gpu

import (
	"fmt"

	"github.com/llamacu/llamacu/cuda"
)

// kernelSet holds every kernel of the fatbin, looked up by name once at New.
type kernelSet struct {
	embedF32, embedF16, embedBF16 *cuda.Function // embed.cu

	rmsnormV1, rmsnorm *cuda.Function // rmsnorm.cu

	rope                           *cuda.Function // rope.cu
	ropeStoreF32, ropeStoreF16     *cuda.Function
	storeKVF32, storeKVF16         *cuda.Function // kvcache.cu
	attnV1F32, attnV1F16           *cuda.Function // attention.cu
	attnDecF32, attnDecF16         [4]*cuda.Function
	attnReduce                     *cuda.Function
	attnPrefillF32, attnPrefillF16 *cuda.Function

	gemvV1        [3]*cuda.Function    // gemv.cu, by wdt (F32, F16, BF16)
	gemvV2        [3][4]*cuda.Function // by wdt, batch width 1, 2, 4, 8
	gemmV1        [3]*cuda.Function    // gemm.cu
	toF16, toBF16 *cuda.Function

	swigluV1, swiglu *cuda.Function // swiglu.cu
	addV1, add       *cuda.Function // add.cu
	gather           *cuda.Function // gather.cu
	argmax           *cuda.Function // argmax.cu
}

// load looks every kernel up.
func (k *kernelSet) load(m *cuda.Module) error {
	dts := [3]string{"f32", "f16", "bf16"}
	widths := [4]int{1, 2, 4, 8}
	table := map[string]**cuda.Function{
		"embed_f32": &k.embedF32, "embed_f16": &k.embedF16, "embed_bf16": &k.embedBF16,
		"rmsnorm_f32_v1": &k.rmsnormV1, "rmsnorm_f32": &k.rmsnorm,
		"rope_f32": &k.rope, "rope_qk_store_kv_f32": &k.ropeStoreF32, "rope_qk_store_kv_f16": &k.ropeStoreF16,
		"store_kv_f32": &k.storeKVF32, "store_kv_f16": &k.storeKVF16,
		"attention_f32_v1": &k.attnV1F32, "attention_f16_v1": &k.attnV1F16,
		"attention_reduce_f32":  &k.attnReduce,
		"attention_prefill_f32": &k.attnPrefillF32, "attention_prefill_f16": &k.attnPrefillF16,
		"convert_f32_to_f16": &k.toF16, "convert_f32_to_bf16": &k.toBF16,
		"swiglu_f32_v1": &k.swigluV1, "swiglu_f32": &k.swiglu,
		"add_f32_v1": &k.addV1, "add_f32": &k.add,
		"gather_rows_f32": &k.gather, "argmax_f32": &k.argmax,
	}
	for g, w := range widths {
		table[fmt.Sprintf("attention_decode_f32_g%d", w)] = &k.attnDecF32[g]
		table[fmt.Sprintf("attention_decode_f16_g%d", w)] = &k.attnDecF16[g]
	}
	for d, dt := range dts {
		table["gemv_"+dt+"_v1"] = &k.gemvV1[d]
		table["gemm_"+dt+"_v1"] = &k.gemmV1[d]
		for j, w := range widths {
			table[fmt.Sprintf("gemv_%s_v2_n%d", dt, w)] = &k.gemvV2[d][j]
		}
	}
	for name, dst := range table {
		f, err := m.Function(name)
		if err != nil {
			return fmt.Errorf("kernel %q: %w", name, err)
		}
		*dst = f
	}
	return nil
}
