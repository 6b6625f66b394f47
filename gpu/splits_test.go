//go:build cuda || cudaemu

package gpu

import "testing"

// decodeSplitsV4's choices on LLaMA 2 shapes (132 SMs as on the H100 and H200, 3 blocks per SM),
// worked by hand from its model (see its comment), and the invariants every choice keeps.
func TestDecodeSplitsV4(t *testing.T) {
	for _, tc := range []struct {
		name                       string
		ctx, blocks, sms, perSM, g int
		chunk, splits              int
	}{
		// 32 KV heads, one row: 16 splits of 256 (512 blocks, 4 on the busiest SM: 1024
		// token-times + 4·18 for the blocks) beat 12 of 352 (1056 + 3·18) and the old rule's 13
		// of 320 (1280 + 4·18).
		{"7B/4096", 4096, 32, 132, 3, 1, 256, 16},
		// 8 rows: 2 splits of 2048 (512 blocks; 8192 + 4·18) beat one of 4096 (256 blocks, 2 an
		// SM: below perSM, 12288 + 2·16), 4 of 1024 (8192 + 8·18) and 32 of 128 (63 blocks on
		// the busiest SM: 8064 + 63·18).
		{"7B/8rows/4096", 4096, 256, 132, 3, 1, 2048, 2},
		// 8 KV heads, G = 8: 43 splits of 96 (344 blocks, 3 on the busiest SM: 288 + 3·32) tie
		// with 64 of 64 (256 + 4·32) and win as the fewer.
		{"70B/4096", 4096, 8, 132, 3, 8, 96, 43},
		// A rank of 70B at TP 8 (one KV head): as many splits as decMinChunk allows.
		{"70B-rank-of-8/4096", 4096, 1, 132, 3, 8, 64, 64},
		// A short context: two splits of 64 (192 + 18) beat one of 128 (384 + 16).
		{"7B/100", 100, 32, 132, 3, 1, 64, 2},
		// TestDecodeBlocksPerSM's cases (8 emulated SMs, G = 4, 1000 tokens).
		{"emu/1perSM", 1000, 1, 8, 1, 4, 128, 8},
		{"emu/6perSM", 1000, 1, 8, 6, 4, 64, 16},
		{"one token", 1, 32, 132, 3, 1, 32, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chunk, splits := decodeSplitsV4(tc.ctx, tc.blocks, tc.sms, tc.perSM, tc.g)
			if chunk != tc.chunk || splits != tc.splits {
				t.Errorf("decodeSplitsV4(%d, %d, %d, %d, %d) = %d splits of %d, want %d of %d",
					tc.ctx, tc.blocks, tc.sms, tc.perSM, tc.g, splits, chunk, tc.splits, tc.chunk)
			}
		})
	}
	for ctx := 1; ctx <= 5000; ctx += 37 {
		for _, blocks := range []int{1, 8, 32, 256} {
			chunk, splits := decodeSplitsV4(ctx, blocks, 132, 3, 8)
			if chunk%d4Tile != 0 || splits < 1 || splits > decSplitsMax || splits*chunk < ctx || (splits-1)*chunk >= ctx {
				t.Fatalf("ctx %d, %d blocks: %d splits of %d do not cover the context exactly once", ctx, blocks, splits, chunk)
			}
			if splits > 1 && chunk < decMinChunk {
				t.Fatalf("ctx %d, %d blocks: chunks of %d < decMinChunk", ctx, blocks, chunk)
			}
		}
	}
}
