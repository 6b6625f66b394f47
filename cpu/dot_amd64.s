//go:build !purego

#include "textflag.h"

// Horizontal sum of the 8 floats of Y register y into the low float of its X twin x, using t.
#define HSUM(y, x, t) \
	VEXTRACTF128 $1, y, t \
	VADDPS       t, x, x  \
	VHADDPS      x, x, x  \
	VHADDPS      x, x, x

// func dotF32AVX(a, b *float32, n int) float32
// n is a multiple of 8.
TEXT ·dotF32AVX(SB), NOSPLIT, $0-28
	MOVQ   a+0(FP), SI
	MOVQ   b+8(FP), DI
	MOVQ   n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

f32loop32:
	CMPQ        CX, $32
	JL          f32loop8
	VMOVUPS     (SI), Y4
	VMOVUPS     32(SI), Y5
	VMOVUPS     64(SI), Y6
	VMOVUPS     96(SI), Y7
	VFMADD231PS (DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	VFMADD231PS 64(DI), Y6, Y2
	VFMADD231PS 96(DI), Y7, Y3
	ADDQ        $128, SI
	ADDQ        $128, DI
	SUBQ        $32, CX
	JMP         f32loop32

f32loop8:
	CMPQ        CX, $8
	JL          f32done
	VMOVUPS     (SI), Y4
	VFMADD231PS (DI), Y4, Y0
	ADDQ        $32, SI
	ADDQ        $32, DI
	SUBQ        $8, CX
	JMP         f32loop8

f32done:
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	VADDPS Y2, Y0, Y0
	HSUM(Y0, X0, X1)
	VZEROUPPER
	MOVSS  X0, ret+24(FP)
	RET

// func axpyAVX(y, x *float32, a float32, n int)
// y += a·x with a multiply and then an add (no FMA: the same rounding as the scalar code). n is a
// multiple of 8.
TEXT ·axpyAVX(SB), NOSPLIT, $0-32
	MOVQ         y+0(FP), DI
	MOVQ         x+8(FP), SI
	VBROADCASTSS a+16(FP), Y0
	MOVQ         n+24(FP), CX

axloop32:
	CMPQ    CX, $32
	JL      axloop8
	VMULPS  (SI), Y0, Y1
	VMULPS  32(SI), Y0, Y2
	VMULPS  64(SI), Y0, Y3
	VMULPS  96(SI), Y0, Y4
	VADDPS  (DI), Y1, Y1
	VADDPS  32(DI), Y2, Y2
	VADDPS  64(DI), Y3, Y3
	VADDPS  96(DI), Y4, Y4
	VMOVUPS Y1, (DI)
	VMOVUPS Y2, 32(DI)
	VMOVUPS Y3, 64(DI)
	VMOVUPS Y4, 96(DI)
	ADDQ    $128, SI
	ADDQ    $128, DI
	SUBQ    $32, CX
	JMP     axloop32

axloop8:
	CMPQ    CX, $8
	JL      axdone
	VMULPS  (SI), Y0, Y1
	VADDPS  (DI), Y1, Y1
	VMOVUPS Y1, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	SUBQ    $8, CX
	JMP     axloop8

axdone:
	VZEROUPPER
	RET

// func dotQ8AVX(w *byte, x *float32, nb int) float32
// nb Q8_0 blocks of 34 bytes: fp16 scale, 32 int8.
TEXT ·dotQ8AVX(SB), NOSPLIT, $0-28
	MOVQ   w+0(FP), SI
	MOVQ   x+8(FP), DI
	MOVQ   nb+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1

q8loop:
	TESTQ        CX, CX
	JZ           q8done
	VPMOVSXBD    2(SI), Y4
	VPMOVSXBD    10(SI), Y5
	VPMOVSXBD    18(SI), Y6
	VPMOVSXBD    26(SI), Y7
	VCVTDQ2PS    Y4, Y4
	VCVTDQ2PS    Y5, Y5
	VCVTDQ2PS    Y6, Y6
	VCVTDQ2PS    Y7, Y7
	VMULPS       (DI), Y4, Y4
	VMULPS       32(DI), Y5, Y5
	VFMADD231PS  64(DI), Y6, Y4
	VFMADD231PS  96(DI), Y7, Y5
	VADDPS       Y5, Y4, Y4
	VPBROADCASTW (SI), X8
	VCVTPH2PS    X8, Y8
	VFMADD231PS  Y8, Y4, Y0
	ADDQ         $34, SI
	ADDQ         $128, DI
	DECQ         CX
	JZ           q8done
	VPMOVSXBD    2(SI), Y4
	VPMOVSXBD    10(SI), Y5
	VPMOVSXBD    18(SI), Y6
	VPMOVSXBD    26(SI), Y7
	VCVTDQ2PS    Y4, Y4
	VCVTDQ2PS    Y5, Y5
	VCVTDQ2PS    Y6, Y6
	VCVTDQ2PS    Y7, Y7
	VMULPS       (DI), Y4, Y4
	VMULPS       32(DI), Y5, Y5
	VFMADD231PS  64(DI), Y6, Y4
	VFMADD231PS  96(DI), Y7, Y5
	VADDPS       Y5, Y4, Y4
	VPBROADCASTW (SI), X8
	VCVTPH2PS    X8, Y8
	VFMADD231PS  Y8, Y4, Y1
	ADDQ         $34, SI
	ADDQ         $128, DI
	DECQ         CX
	JMP          q8loop

q8done:
	VADDPS Y1, Y0, Y0
	HSUM(Y0, X0, X1)
	VZEROUPPER
	MOVSS  X0, ret+24(FP)
	RET

// func dotQ4AVX(w *byte, x *float32, nb int) float32
// nb Q4_0 blocks of 18 bytes: fp16 scale, 16 bytes; byte j holds element j (low nibble) and
// j+16 (high nibble), each stored +8.
TEXT ·dotQ4AVX(SB), NOSPLIT, $0-28
	MOVQ         w+0(FP), SI
	MOVQ         x+8(FP), DI
	MOVQ         nb+16(FP), CX
	VXORPS       Y0, Y0, Y0
	VXORPS       Y1, Y1, Y1
	MOVL         $0x0f0f0f0f, AX
	VMOVD        AX, X14
	VPBROADCASTD X14, X14                // 16 × 0x0f
	MOVL         $0x08080808, AX
	VMOVD        AX, X15
	VPBROADCASTD X15, X15                // 16 × 8

q4loop:
	TESTQ        CX, CX
	JZ           q4done
	VMOVDQU      2(SI), X4
	VPSRLW       $4, X4, X5
	VPAND        X14, X4, X4             // low nibbles: elements 0..15
	VPAND        X14, X5, X5             // high nibbles: elements 16..31
	VPSUBB       X15, X4, X4
	VPSUBB       X15, X5, X5
	VPMOVSXBD    X4, Y6                  // elements 0..7
	VPSRLDQ      $8, X4, X4
	VPMOVSXBD    X4, Y7                  // 8..15
	VPMOVSXBD    X5, Y8                  // 16..23
	VPSRLDQ      $8, X5, X5
	VPMOVSXBD    X5, Y9                  // 24..31
	VCVTDQ2PS    Y6, Y6
	VCVTDQ2PS    Y7, Y7
	VCVTDQ2PS    Y8, Y8
	VCVTDQ2PS    Y9, Y9
	VMULPS       (DI), Y6, Y6
	VMULPS       32(DI), Y7, Y7
	VFMADD231PS  64(DI), Y8, Y6
	VFMADD231PS  96(DI), Y9, Y7
	VADDPS       Y7, Y6, Y6
	VPBROADCASTW (SI), X10
	VCVTPH2PS    X10, Y10
	VFMADD231PS  Y10, Y6, Y0
	ADDQ         $18, SI
	ADDQ         $128, DI
	DECQ         CX
	JMP          q4loop

q4done:
	VADDPS Y1, Y0, Y0
	HSUM(Y0, X0, X1)
	VZEROUPPER
	MOVSS  X0, ret+24(FP)
	RET

// func dotF16AVX(w *byte, x *float32, n int) float32
// n (elements) is a multiple of 8.
TEXT ·dotF16AVX(SB), NOSPLIT, $0-28
	MOVQ   w+0(FP), SI
	MOVQ   x+8(FP), DI
	MOVQ   n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

f16loop32:
	CMPQ        CX, $32
	JL          f16loop8
	VCVTPH2PS   (SI), Y4
	VCVTPH2PS   16(SI), Y5
	VCVTPH2PS   32(SI), Y6
	VCVTPH2PS   48(SI), Y7
	VFMADD231PS (DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	VFMADD231PS 64(DI), Y6, Y2
	VFMADD231PS 96(DI), Y7, Y3
	ADDQ        $64, SI
	ADDQ        $128, DI
	SUBQ        $32, CX
	JMP         f16loop32

f16loop8:
	CMPQ        CX, $8
	JL          f16done
	VCVTPH2PS   (SI), Y4
	VFMADD231PS (DI), Y4, Y0
	ADDQ        $16, SI
	ADDQ        $32, DI
	SUBQ        $8, CX
	JMP         f16loop8

f16done:
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	VADDPS Y2, Y0, Y0
	HSUM(Y0, X0, X1)
	VZEROUPPER
	MOVSS  X0, ret+24(FP)
	RET

// func cvtF16AVX(dst *float32, src *byte, n int)
// n is a multiple of 8.
TEXT ·cvtF16AVX(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX

cvtloop:
	CMPQ      CX, $8
	JL        cvtdone
	VCVTPH2PS (SI), Y0
	VMOVUPS   Y0, (DI)
	ADDQ      $16, SI
	ADDQ      $32, DI
	SUBQ      $8, CX
	JMP       cvtloop

cvtdone:
	VZEROUPPER
	RET

// func deqQ8AVX(dst *float32, w *byte, nb int)
// Widens nb Q8_0 blocks to 32·nb floats.
TEXT ·deqQ8AVX(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ w+8(FP), SI
	MOVQ nb+16(FP), CX

dq8loop:
	TESTQ        CX, CX
	JZ           dq8done
	VPBROADCASTW (SI), X8
	VCVTPH2PS    X8, Y8
	VPMOVSXBD    2(SI), Y4
	VPMOVSXBD    10(SI), Y5
	VPMOVSXBD    18(SI), Y6
	VPMOVSXBD    26(SI), Y7
	VCVTDQ2PS    Y4, Y4
	VCVTDQ2PS    Y5, Y5
	VCVTDQ2PS    Y6, Y6
	VCVTDQ2PS    Y7, Y7
	VMULPS       Y8, Y4, Y4
	VMULPS       Y8, Y5, Y5
	VMULPS       Y8, Y6, Y6
	VMULPS       Y8, Y7, Y7
	VMOVUPS      Y4, (DI)
	VMOVUPS      Y5, 32(DI)
	VMOVUPS      Y6, 64(DI)
	VMOVUPS      Y7, 96(DI)
	ADDQ         $34, SI
	ADDQ         $128, DI
	DECQ         CX
	JMP          dq8loop

dq8done:
	VZEROUPPER
	RET

// func deqQ4AVX(dst *float32, w *byte, nb int)
// Widens nb Q4_0 blocks to 32·nb floats.
TEXT ·deqQ4AVX(SB), NOSPLIT, $0-24
	MOVQ         dst+0(FP), DI
	MOVQ         w+8(FP), SI
	MOVQ         nb+16(FP), CX
	MOVL         $0x0f0f0f0f, AX
	VMOVD        AX, X14
	VPBROADCASTD X14, X14
	MOVL         $0x08080808, AX
	VMOVD        AX, X15
	VPBROADCASTD X15, X15

dq4loop:
	TESTQ        CX, CX
	JZ           dq4done
	VPBROADCASTW (SI), X10
	VCVTPH2PS    X10, Y10
	VMOVDQU      2(SI), X4
	VPSRLW       $4, X4, X5
	VPAND        X14, X4, X4
	VPAND        X14, X5, X5
	VPSUBB       X15, X4, X4
	VPSUBB       X15, X5, X5
	VPMOVSXBD    X4, Y6
	VPSRLDQ      $8, X4, X4
	VPMOVSXBD    X4, Y7
	VPMOVSXBD    X5, Y8
	VPSRLDQ      $8, X5, X5
	VPMOVSXBD    X5, Y9
	VCVTDQ2PS    Y6, Y6
	VCVTDQ2PS    Y7, Y7
	VCVTDQ2PS    Y8, Y8
	VCVTDQ2PS    Y9, Y9
	VMULPS       Y10, Y6, Y6
	VMULPS       Y10, Y7, Y7
	VMULPS       Y10, Y8, Y8
	VMULPS       Y10, Y9, Y9
	VMOVUPS      Y6, (DI)
	VMOVUPS      Y7, 32(DI)
	VMOVUPS      Y8, 64(DI)
	VMOVUPS      Y9, 96(DI)
	ADDQ         $18, SI
	ADDQ         $128, DI
	DECQ         CX
	JMP          dq4loop

dq4done:
	VZEROUPPER
	RET

// WIDEN32(y, x): the 32 bytes of Y register y (x its X twin) as unsigned integers, widened to
// floats in Y6 (bytes 0…7), Y7 (8…15), Y8 (16…23), Y9 (24…31). x is read before X8 is written.
#define WIDEN32(y, x) \
	VPMOVZXBD    x, Y6    \
	VPSRLDQ      $8, x, X7 \
	VPMOVZXBD    X7, Y7   \
	VEXTRACTI128 $1, y, X8 \
	VPSRLDQ      $8, X8, X9 \
	VPMOVZXBD    X8, Y8   \
	VPMOVZXBD    X9, Y9   \
	VCVTDQ2PS    Y6, Y6   \
	VCVTDQ2PS    Y7, Y7   \
	VCVTDQ2PS    Y8, Y8   \
	VCVTDQ2PS    Y9, Y9

// DOT32(o0, o1, o2, o3, out): Σ of Y6…Y9 times the 32 floats at o0(DI) … o3(DI) (8 each), into
// the float at out(DX).
#define DOT32(o0, o1, o2, o3, out) \
	VMULPS      o0(DI), Y6, Y6 \
	VMULPS      o1(DI), Y7, Y7 \
	VFMADD231PS o2(DI), Y8, Y6 \
	VFMADD231PS o3(DI), Y9, Y7 \
	VADDPS      Y7, Y6, Y6     \
	HSUM(Y6, X6, X7)           \
	VMOVSS      X6, out(DX)

// func nibDotsAVX(q *byte, x *float32, n int, out *float32)
// n chunks of 32 bytes of nibbles against 64 floats each (Q4_K's layout): out[2c] = Σ_l
// (q[l] & 15)·x[l], out[2c+1] = Σ_l (q[l] >> 4)·x[32+l].
TEXT ·nibDotsAVX(SB), NOSPLIT, $0-32
	MOVQ         q+0(FP), SI
	MOVQ         x+8(FP), DI
	MOVQ         n+16(FP), CX
	MOVQ         out+24(FP), DX
	MOVL         $0x0f0f0f0f, AX
	VMOVD        AX, X14
	VPBROADCASTD X14, Y14                // 32 × 0x0f

nibloop:
	TESTQ        CX, CX
	JZ           nibdone
	VMOVDQU      (SI), Y4
	VPSRLW       $4, Y4, Y5
	VPAND        Y14, Y4, Y4             // low nibbles: x[0..31]
	VPAND        Y14, Y5, Y5             // high nibbles: x[32..63]

	WIDEN32(Y4, X4)
	DOT32(0, 32, 64, 96, 0)

	WIDEN32(Y5, X5)
	DOT32(128, 160, 192, 224, 4)

	ADDQ         $32, SI
	ADDQ         $256, DI
	ADDQ         $8, DX
	DECQ         CX
	JMP          nibloop

nibdone:
	VZEROUPPER
	RET

// DOT16(xs, xoff, xoff2, ooff): the 16 signed bytes of xs (an X register) widened to float,
// times the 16 floats at xoff(DI) and xoff2(DI) = xoff+32, summed into the float at ooff(DX).
// Uses X/Y 6, 7, 9.
#define DOT16(xs, xoff, xoff2, ooff) \
	VPSRLDQ     $8, xs, X9        \
	VPMOVSXBD   xs, Y6            \
	VPMOVSXBD   X9, Y7            \
	VCVTDQ2PS   Y6, Y6            \
	VCVTDQ2PS   Y7, Y7            \
	VMULPS      xoff(DI), Y6, Y6  \
	VFMADD231PS xoff2(DI), Y7, Y6 \
	HSUM(Y6, X6, X7)              \
	VMOVSS      X6, ooff(DX)

// func q6DotsAVX(ql, qh *byte, x *float32, out *float32)
// One half of a Q6_K block (128 elements: 64 bytes of ql, 32 of qh): element 32g + l (g = 0…3,
// l = 0…31) is q = (nibble of ql[l + 32(g&1)], low for g < 2) | (bits 2g, 2g+1 of qh[l]) << 4,
// minus 32; out[2g + l/16] = Σ q·x over each run of 16.
TEXT ·q6DotsAVX(SB), NOSPLIT, $0-32
	MOVQ         ql+0(FP), SI
	MOVQ         qh+8(FP), BX
	MOVQ         x+16(FP), DI
	MOVQ         out+24(FP), DX
	MOVL         $0x0f0f0f0f, AX
	VMOVD        AX, X14
	VPBROADCASTD X14, Y14              // 32 × 0x0f
	MOVL         $0x03030303, AX
	VMOVD        AX, X13
	VPBROADCASTD X13, Y13              // 32 × 0x03
	MOVL         $0x20202020, AX
	VMOVD        AX, X12
	VPBROADCASTD X12, Y12              // 32 × 32
	VMOVDQU      (SI), Y0              // ql[0:32]
	VMOVDQU      32(SI), Y1            // ql[32:64]
	VMOVDQU      (BX), Y2              // qh[0:32]

	// g = 0: low nibbles of ql[0:32], qh bits 0-1.
	VPAND        Y13, Y2, Y10
	VPSLLW       $4, Y10, Y10
	VPAND        Y14, Y0, Y3
	VPOR         Y10, Y3, Y3
	VPSUBB       Y12, Y3, Y3
	VEXTRACTI128 $1, Y3, X11
	DOT16(X3, 0, 32, 0)
	DOT16(X11, 64, 96, 4)

	// g = 1: low nibbles of ql[32:64], qh bits 2-3.
	VPSRLW       $2, Y2, Y10
	VPAND        Y13, Y10, Y10
	VPSLLW       $4, Y10, Y10
	VPAND        Y14, Y1, Y3
	VPOR         Y10, Y3, Y3
	VPSUBB       Y12, Y3, Y3
	VEXTRACTI128 $1, Y3, X11
	DOT16(X3, 128, 160, 8)
	DOT16(X11, 192, 224, 12)

	// g = 2: high nibbles of ql[0:32], qh bits 4-5.
	VPSRLW       $4, Y2, Y10
	VPAND        Y13, Y10, Y10
	VPSLLW       $4, Y10, Y10
	VPSRLW       $4, Y0, Y3
	VPAND        Y14, Y3, Y3
	VPOR         Y10, Y3, Y3
	VPSUBB       Y12, Y3, Y3
	VEXTRACTI128 $1, Y3, X11
	DOT16(X3, 256, 288, 16)
	DOT16(X11, 320, 352, 20)

	// g = 3: high nibbles of ql[32:64], qh bits 6-7.
	VPSRLW       $6, Y2, Y10
	VPAND        Y13, Y10, Y10
	VPSLLW       $4, Y10, Y10
	VPSRLW       $4, Y1, Y3
	VPAND        Y14, Y3, Y3
	VPOR         Y10, Y3, Y3
	VPSUBB       Y12, Y3, Y3
	VEXTRACTI128 $1, Y3, X11
	DOT16(X3, 384, 416, 24)
	DOT16(X11, 448, 480, 28)

	VZEROUPPER
	RET

// QH5: Q5_K's fifth bits, for chunk c (R8 = 2c), from qh in Y2 into the nibbles in Y4 (low)
// and Y5 (high): bit 2c of qh[l] as 16 into Y4's byte l, bit 2c+1 into Y5's. Y13 is 32 × 0x01.
// Uses X/Y 10, 11, 15.
#define QH5 \
	VMOVQ        R8, X15      \
	VPSRLW       X15, Y2, Y10 \
	VPSRLW       $1, Y10, Y11 \
	VPAND        Y13, Y10, Y10 \
	VPAND        Y13, Y11, Y11 \
	VPSLLW       $4, Y10, Y10 \
	VPSLLW       $4, Y11, Y11 \
	VPOR         Y10, Y4, Y4  \
	VPOR         Y11, Y5, Y5

// func nib5DotsAVX(q, qh *byte, x *float32, out *float32)
// nibDotsAVX for one Q5_K block (4 chunks of 32 bytes of nibbles, 256 floats), each nibble
// first given bit 4 from qh: bit 2c of qh[l] for the low nibble of chunk c, bit 2c+1 for the
// high one. out gets 8 sums.
TEXT ·nib5DotsAVX(SB), NOSPLIT, $0-32
	MOVQ         q+0(FP), SI
	MOVQ         qh+8(FP), BX
	MOVQ         x+16(FP), DI
	MOVQ         out+24(FP), DX
	MOVL         $0x0f0f0f0f, AX
	VMOVD        AX, X14
	VPBROADCASTD X14, Y14                // 32 × 0x0f
	MOVL         $0x01010101, AX
	VMOVD        AX, X13
	VPBROADCASTD X13, Y13                // 32 × 0x01
	VMOVDQU      (BX), Y2                // qh[0:32]
	MOVQ         $4, CX
	XORQ         R8, R8                  // 2c: the bit of the low nibbles

nib5loop:
	VMOVDQU      (SI), Y4
	VPSRLW       $4, Y4, Y5
	VPAND        Y14, Y4, Y4             // low nibbles: x[0..31]
	VPAND        Y14, Y5, Y5             // high nibbles: x[32..63]
	QH5

	WIDEN32(Y4, X4)
	DOT32(0, 32, 64, 96, 0)

	WIDEN32(Y5, X5)
	DOT32(128, 160, 192, 224, 4)

	ADDQ         $32, SI
	ADDQ         $256, DI
	ADDQ         $8, DX
	ADDQ         $2, R8
	DECQ         CX
	JNZ          nib5loop
	VZEROUPPER
	RET

// SCALE32(sc, mn, o0, o1, o2, o3): the 32 floats of Y6…Y9 (WIDEN32's) times sc minus mn, stored
// at o0(DI) … o3(DI). A multiply, then a subtract (no FMA): tensor.Decode's rounding.
#define SCALE32(sc, mn, o0, o1, o2, o3) \
	VMULPS  sc, Y6, Y6 \
	VMULPS  sc, Y7, Y7 \
	VMULPS  sc, Y8, Y8 \
	VMULPS  sc, Y9, Y9 \
	VSUBPS  mn, Y6, Y6 \
	VSUBPS  mn, Y7, Y7 \
	VSUBPS  mn, Y8, Y8 \
	VSUBPS  mn, Y9, Y9 \
	VMOVUPS Y6, o0(DI) \
	VMOVUPS Y7, o1(DI) \
	VMOVUPS Y8, o2(DI) \
	VMOVUPS Y9, o3(DI)

// func deqNibAVX(dst *float32, q *byte, s *float32, n int)
// Widens n chunks of 32 bytes of nibbles (Q4_K's layout) to 64 floats each: dst[l] =
// (q[l] & 15)·s[0] − s[1], dst[32+l] = (q[l] >> 4)·s[2] − s[3], s advancing 4 floats a chunk.
// A multiply, then a subtract (no FMA): tensor.Decode's rounding, so ggml's values.
TEXT ·deqNibAVX(SB), NOSPLIT, $0-32
	MOVQ         dst+0(FP), DI
	MOVQ         q+8(FP), SI
	MOVQ         s+16(FP), BX
	MOVQ         n+24(FP), CX
	MOVL         $0x0f0f0f0f, AX
	VMOVD        AX, X14
	VPBROADCASTD X14, Y14                // 32 × 0x0f

deqnibloop:
	TESTQ        CX, CX
	JZ           deqnibdone
	VMOVDQU      (SI), Y4
	VPSRLW       $4, Y4, Y5
	VPAND        Y14, Y4, Y4
	VPAND        Y14, Y5, Y5
	VBROADCASTSS (BX), Y0                // low scale
	VBROADCASTSS 4(BX), Y1               // low min
	VBROADCASTSS 8(BX), Y2               // high scale
	VBROADCASTSS 12(BX), Y3              // high min

	WIDEN32(Y4, X4)
	SCALE32(Y0, Y1, 0, 32, 64, 96)
	WIDEN32(Y5, X5)
	SCALE32(Y2, Y3, 128, 160, 192, 224)

	ADDQ         $32, SI
	ADDQ         $256, DI
	ADDQ         $16, BX
	DECQ         CX
	JMP          deqnibloop

deqnibdone:
	VZEROUPPER
	RET

// func deq5AVX(dst *float32, q, qh *byte, s *float32)
// Widens one Q5_K block's 4 chunks (q 128 bytes, qh 32) to 256 floats: deqNibAVX's arithmetic
// on the nibbles given their fifth bit from qh (QH5).
TEXT ·deq5AVX(SB), NOSPLIT, $0-32
	MOVQ         dst+0(FP), DI
	MOVQ         q+8(FP), SI
	MOVQ         qh+16(FP), DX
	MOVQ         s+24(FP), BX
	MOVL         $0x0f0f0f0f, AX
	VMOVD        AX, X14
	VPBROADCASTD X14, Y14                // 32 × 0x0f
	MOVL         $0x01010101, AX
	VMOVD        AX, X13
	VPBROADCASTD X13, Y13                // 32 × 0x01
	VMOVDQU      (DX), Y2                // qh[0:32]
	MOVQ         $4, CX
	XORQ         R8, R8                  // 2c

deq5loop:
	VMOVDQU      (SI), Y4
	VPSRLW       $4, Y4, Y5
	VPAND        Y14, Y4, Y4
	VPAND        Y14, Y5, Y5
	QH5
	VBROADCASTSS (BX), Y0                // low scale
	VBROADCASTSS 4(BX), Y1               // low min
	VBROADCASTSS 8(BX), Y12              // high scale
	VBROADCASTSS 12(BX), Y3              // high min
	WIDEN32(Y4, X4)
	SCALE32(Y0, Y1, 0, 32, 64, 96)
	WIDEN32(Y5, X5)
	SCALE32(Y12, Y3, 128, 160, 192, 224)

	ADDQ         $32, SI
	ADDQ         $256, DI
	ADDQ         $16, BX
	ADDQ         $2, R8
	DECQ         CX
	JNZ          deq5loop
	VZEROUPPER
	RET

// STORE16(xs, soff, doff): the 16 signed bytes of xs widened to float, times the scale at
// soff(BX), stored at doff(DI) and doff+32. Uses X/Y 6, 7, 9, 10.
#define STORE16(xs, soff, doff, doff2) \
	VPSRLDQ      $8, xs, X9       \
	VPMOVSXBD    xs, Y6           \
	VPMOVSXBD    X9, Y7           \
	VCVTDQ2PS    Y6, Y6           \
	VCVTDQ2PS    Y7, Y7           \
	VBROADCASTSS soff(BX), Y10    \
	VMULPS       Y10, Y6, Y6      \
	VMULPS       Y10, Y7, Y7      \
	VMOVUPS      Y6, doff(DI)     \
	VMOVUPS      Y7, doff2(DI)

// func deq6AVX(dst *float32, ql, qh *byte, s *float32)
// Widens one half of a Q6_K block (q6DotsAVX's layout) to 128 floats: dst[32g + l] =
// s[2g + l/16]·q, q the 6-bit value minus 32 (s holds d·scale, so (d·sc)·q as tensor.Decode).
TEXT ·deq6AVX(SB), NOSPLIT, $0-32
	MOVQ         dst+0(FP), DI
	MOVQ         ql+8(FP), SI
	MOVQ         qh+16(FP), DX
	MOVQ         s+24(FP), BX
	MOVL         $0x0f0f0f0f, AX
	VMOVD        AX, X14
	VPBROADCASTD X14, Y14
	MOVL         $0x03030303, AX
	VMOVD        AX, X13
	VPBROADCASTD X13, Y13
	MOVL         $0x20202020, AX
	VMOVD        AX, X12
	VPBROADCASTD X12, Y12
	VMOVDQU      (SI), Y0
	VMOVDQU      32(SI), Y1
	VMOVDQU      (DX), Y2

	VPAND        Y13, Y2, Y11
	VPSLLW       $4, Y11, Y11
	VPAND        Y14, Y0, Y3
	VPOR         Y11, Y3, Y3
	VPSUBB       Y12, Y3, Y3
	VEXTRACTI128 $1, Y3, X11
	STORE16(X3, 0, 0, 32)
	STORE16(X11, 4, 64, 96)

	VPSRLW       $2, Y2, Y11
	VPAND        Y13, Y11, Y11
	VPSLLW       $4, Y11, Y11
	VPAND        Y14, Y1, Y3
	VPOR         Y11, Y3, Y3
	VPSUBB       Y12, Y3, Y3
	VEXTRACTI128 $1, Y3, X11
	STORE16(X3, 8, 128, 160)
	STORE16(X11, 12, 192, 224)

	VPSRLW       $4, Y2, Y11
	VPAND        Y13, Y11, Y11
	VPSLLW       $4, Y11, Y11
	VPSRLW       $4, Y0, Y3
	VPAND        Y14, Y3, Y3
	VPOR         Y11, Y3, Y3
	VPSUBB       Y12, Y3, Y3
	VEXTRACTI128 $1, Y3, X11
	STORE16(X3, 16, 256, 288)
	STORE16(X11, 20, 320, 352)

	VPSRLW       $6, Y2, Y11
	VPAND        Y13, Y11, Y11
	VPSLLW       $4, Y11, Y11
	VPSRLW       $4, Y1, Y3
	VPAND        Y14, Y3, Y3
	VPOR         Y11, Y3, Y3
	VPSUBB       Y12, Y3, Y3
	VEXTRACTI128 $1, Y3, X11
	STORE16(X3, 24, 384, 416)
	STORE16(X11, 28, 448, 480)

	VZEROUPPER
	RET

// func axpyF16AVX(y *float32, x *byte, a float32, n int)
// y += a·widen(x) for n F16 values of x (a multiply, then an add: axpyAVX's rounding). n is a
// multiple of 8.
TEXT ·axpyF16AVX(SB), NOSPLIT, $0-32
	MOVQ         y+0(FP), DI
	MOVQ         x+8(FP), SI
	VBROADCASTSS a+16(FP), Y0
	MOVQ         n+24(FP), CX

ahloop32:
	CMPQ      CX, $32
	JL        ahloop8
	VCVTPH2PS (SI), Y1
	VCVTPH2PS 16(SI), Y2
	VCVTPH2PS 32(SI), Y3
	VCVTPH2PS 48(SI), Y4
	VMULPS    Y1, Y0, Y1
	VMULPS    Y2, Y0, Y2
	VMULPS    Y3, Y0, Y3
	VMULPS    Y4, Y0, Y4
	VADDPS    (DI), Y1, Y1
	VADDPS    32(DI), Y2, Y2
	VADDPS    64(DI), Y3, Y3
	VADDPS    96(DI), Y4, Y4
	VMOVUPS   Y1, (DI)
	VMOVUPS   Y2, 32(DI)
	VMOVUPS   Y3, 64(DI)
	VMOVUPS   Y4, 96(DI)
	ADDQ      $64, SI
	ADDQ      $128, DI
	SUBQ      $32, CX
	JMP       ahloop32

ahloop8:
	CMPQ      CX, $8
	JL        ahdone
	VCVTPH2PS (SI), Y1
	VMULPS    Y1, Y0, Y1
	VADDPS    (DI), Y1, Y1
	VMOVUPS   Y1, (DI)
	ADDQ      $16, SI
	ADDQ      $32, DI
	SUBQ      $8, CX
	JMP       ahloop8

ahdone:
	VZEROUPPER
	RET
