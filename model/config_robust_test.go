package model

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
)

// Absurd config.json values are ErrBadConfig, never a config that makes later code misbehave.
func TestFromHFConfigRejectsAbsurdValues(t *testing.T) {
	base := map[string]string{
		"model_type": `"llama"`, "hidden_size": "64", "num_attention_heads": "8", "num_key_value_heads": "4",
		"num_hidden_layers": "2", "intermediate_size": "172", "vocab_size": "512", "max_position_embeddings": "512",
		"rms_norm_eps": "1e-5", "rope_theta": "10000",
	}
	doc := func(k, v string) []byte {
		var parts []string
		for kk, vv := range base {
			if kk == k {
				vv = v
			}
			if vv != "" {
				parts = append(parts, fmt.Sprintf("%q:%s", kk, vv))
			}
		}
		if _, ok := base[k]; !ok && k != "" {
			parts = append(parts, fmt.Sprintf("%q:%s", k, v))
		}
		return []byte("{" + strings.Join(parts, ",") + "}")
	}
	if _, err := FromHFConfig(doc("", "")); err != nil {
		t.Fatalf("base config: %v", err)
	}
	cases := []struct{ key, value string }{
		{"hidden_size", "-64"}, {"hidden_size", "0"}, {"hidden_size", "1e30"}, {"hidden_size", "9223372036854775808"},
		{"hidden_size", "2147483648"}, {"hidden_size", "60"}, // 60/8 heads: not a multiple
		{"hidden_size", "8"}, // head_dim 1: odd
		{"num_attention_heads", "0"}, {"num_attention_heads", "-8"}, {"num_attention_heads", "3"},
		{"num_key_value_heads", "3"}, {"num_key_value_heads", "16"}, {"num_key_value_heads", "-4"},
		{"num_hidden_layers", "0"}, {"num_hidden_layers", "1000000"}, {"num_hidden_layers", "-1"},
		{"intermediate_size", "-1"}, {"intermediate_size", "1073741824"},
		{"vocab_size", "0"}, {"vocab_size", "-32000"}, {"vocab_size", "4294967296"},
		{"max_position_embeddings", "-1"}, {"max_position_embeddings", "1099511627776"},
		{"rms_norm_eps", "-1e-5"}, {"rms_norm_eps", "1e300"}, // overflows float32 to +Inf
		{"rope_theta", "-10000"}, {"rope_theta", "1e39"}, {"rope_theta", "1e-50"}, // rounds to 0 in float32
		{"rope_theta", `"10000"`}, {"rope_theta", "null"},
		{"head_dim", "7"}, {"head_dim", "4611686018427387904"},
		{"rope_scaling", `{"type":"dynamic","factor":4}`},
		{"model_type", `"gpt2"`}, {"model_type", "5"},
	}
	for _, tc := range cases {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			c, err := FromHFConfig(doc(tc.key, tc.value))
			if tc.value == "null" { // null is absent: the default applies
				if err != nil || c.RopeTheta != 10000 {
					t.Errorf("rope_theta null: %+v, %v", c, err)
				}
				return
			}
			if !errors.Is(err, ErrBadConfig) {
				t.Errorf("FromHFConfig: %+v, %v; want ErrBadConfig", c, err)
			}
		})
	}
}

func TestValidateRejectsNonFinite(t *testing.T) {
	inf, nan := float32(math.Inf(1)), float32(math.NaN())
	for _, c := range []Config{
		func() Config { c := Tiny; c.NormEps = inf; return c }(),
		func() Config { c := Tiny; c.NormEps = nan; return c }(),
		func() Config { c := Tiny; c.RopeTheta = inf; return c }(),
		func() Config { c := Tiny; c.RopeTheta = nan; return c }(),
		func() Config { c := Tiny; c.RopeTheta = -inf; return c }(),
		func() Config { c := Tiny; c.HeadSize = -16; return c }(),
	} {
		if err := c.Validate(); !errors.Is(err, ErrBadConfig) {
			t.Errorf("Validate(eps %g, theta %g, head size %d) = %v, want ErrBadConfig", c.NormEps, c.RopeTheta, c.HeadSize, err)
		}
	}
}

// FuzzFromHFConfig: any bytes give a valid Config or ErrBadConfig, never a panic.
func FuzzFromHFConfig(f *testing.F) {
	f.Add([]byte(`{"model_type":"llama","hidden_size":64,"num_attention_heads":8,"num_key_value_heads":4,"num_hidden_layers":2,"intermediate_size":172,"vocab_size":512}`))
	f.Add([]byte(`{"hidden_size":4096,"intermediate_size":11008,"num_attention_heads":32,"num_hidden_layers":32,"vocab_size":32000,"rms_norm_eps":1e-05,"head_dim":128}`))
	f.Add([]byte(`{"rope_scaling":null,"tie_word_embeddings":true}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := FromHFConfig(data)
		if err != nil {
			if !errors.Is(err, ErrBadConfig) {
				t.Fatalf("error does not wrap ErrBadConfig: %v", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("FromHFConfig returned an invalid config: %v", err)
		}
		_ = c.ParamCount()
		_ = c.KVBytesPerToken(4)
	})
}
