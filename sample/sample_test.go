package sample

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"testing"
)

// mustNew is New that fails the test on error.
func mustNew(tb testing.TB, p Params, vocab int) *Sampler {
	tb.Helper()
	s, err := New(p, vocab)
	if err != nil {
		tb.Fatalf("New(%+v, %d): %v", p, vocab, err)
	}
	return s
}

// with returns p changed by f, for compact tables.
func with(p Params, f func(*Params)) Params { f(&p); return p }

// sampling returns parameters for plain temperature sampling with every filter off.
func sampling(temp float32) Params {
	p := GreedyParams()
	p.Temperature = temp
	return p
}

// randLogits returns n logits drawn from N(0, sd²), like a language model's, from a fixed seed.
func randLogits(n int, sd float64, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 1))
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64() * sd)
	}
	return x
}

func TestArgmax(t *testing.T) {
	inf, nan := float32(math.Inf(1)), float32(math.NaN())
	tests := []struct {
		name string
		x    []float32
		want int32
	}{
		{"empty", nil, -1},
		{"single", []float32{-3}, 0},
		{"max last", []float32{1, 2, 3}, 2},
		{"tie takes lowest index", []float32{1, 3, 3, 2}, 1},
		{"all equal", []float32{5, 5, 5}, 0},
		{"nan skipped", []float32{nan, 1, 2, nan}, 2},
		{"nan first then negative", []float32{nan, -5, -7}, 1},
		{"all nan", []float32{nan, nan}, 0},
		{"all -inf", []float32{-inf, -inf, -inf}, 0},
		{"+inf wins", []float32{1, inf, inf}, 1},
		{"-inf and finite", []float32{-inf, -inf, -1e30}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Argmax(tt.x); got != tt.want {
				t.Errorf("Argmax(%v) = %d, want %d", tt.x, got, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	d := DefaultParams()
	nan := float32(math.NaN())
	tests := []struct {
		name   string
		p      Params
		wantOK bool
	}{
		{"default", d, true},
		{"greedy", GreedyParams(), true},
		{"zero value (greedy, filters off)", Params{}, true},
		{"temperature 0", with(d, func(p *Params) { p.Temperature = 0 }), true},
		{"temperature negative", with(d, func(p *Params) { p.Temperature = -0.1 }), false},
		{"temperature nan", with(d, func(p *Params) { p.Temperature = nan }), false},
		{"temperature inf", with(d, func(p *Params) { p.Temperature = float32(math.Inf(1)) }), false},
		{"top_k 0", with(d, func(p *Params) { p.TopK = 0 }), true},
		{"top_k negative", with(d, func(p *Params) { p.TopK = -1 }), false},
		{"top_p 1", with(d, func(p *Params) { p.TopP = 1 }), true},
		{"top_p tiny", with(d, func(p *Params) { p.TopP = 1e-9 }), true},
		{"top_p 0 (off)", with(d, func(p *Params) { p.TopP = 0 }), true},
		{"top_p above 1", with(d, func(p *Params) { p.TopP = 1.01 }), false},
		{"top_p negative", with(d, func(p *Params) { p.TopP = -0.5 }), false},
		{"top_p nan", with(d, func(p *Params) { p.TopP = nan }), false},
		{"min_p 0", with(d, func(p *Params) { p.MinP = 0 }), true},
		{"min_p 1", with(d, func(p *Params) { p.MinP = 1 }), true},
		{"min_p negative", with(d, func(p *Params) { p.MinP = -0.01 }), false},
		{"min_p above 1", with(d, func(p *Params) { p.MinP = 1.5 }), false},
		{"min_p nan", with(d, func(p *Params) { p.MinP = nan }), false},
		{"repeat penalty below 1", with(d, func(p *Params) { p.RepeatPenalty = 0.5 }), true},
		{"repeat penalty 0 (off)", with(d, func(p *Params) { p.RepeatPenalty = 0 }), true},
		{"repeat penalty negative", with(d, func(p *Params) { p.RepeatPenalty = -1 }), false},
		{"repeat penalty negative", with(d, func(p *Params) { p.RepeatPenalty = -1.1 }), false},
		{"repeat penalty nan", with(d, func(p *Params) { p.RepeatPenalty = nan }), false},
		{"frequency penalty negative", with(d, func(p *Params) { p.FrequencyPenalty = -2 }), true},
		{"frequency penalty nan", with(d, func(p *Params) { p.FrequencyPenalty = nan }), false},
		{"frequency penalty inf", with(d, func(p *Params) { p.FrequencyPenalty = float32(math.Inf(1)) }), false},
		{"presence penalty 2", with(d, func(p *Params) { p.PresencePenalty = 2 }), true},
		{"presence penalty nan", with(d, func(p *Params) { p.PresencePenalty = nan }), false},
		{"presence penalty -inf", with(d, func(p *Params) { p.PresencePenalty = float32(math.Inf(-1)) }), false},
		{"repeat last n -1", with(d, func(p *Params) { p.RepeatLastN = -1 }), true},
		{"repeat last n -2", with(d, func(p *Params) { p.RepeatLastN = -2 }), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if tt.wantOK {
				if err != nil {
					t.Fatalf("Validate(%+v) = %v, want nil", tt.p, err)
				}
				if _, err := New(tt.p, 10); err != nil {
					t.Fatalf("New(%+v) = %v, want nil", tt.p, err)
				}
				return
			}
			if !errors.Is(err, ErrParams) {
				t.Fatalf("Validate(%+v) = %v, want an error wrapping ErrParams", tt.p, err)
			}
			if _, err2 := New(tt.p, 10); !errors.Is(err2, ErrParams) {
				t.Fatalf("New(%+v) = %v, want an error wrapping ErrParams", tt.p, err2)
			}
			t.Logf("%v", err)
		})
	}
	for _, v := range []int{0, -1} {
		if _, err := New(d, v); !errors.Is(err, ErrParams) {
			t.Errorf("New(default, vocab %d) = %v, want ErrParams", v, err)
		}
	}
}

func TestDefaultParamsMatchLlamaCpp(t *testing.T) {
	// llama.cpp common/common.h (common_params_sampling): temp 0.80, top_k 40, top_p 0.95,
	// min_p 0.05, penalty_repeat 1.00, penalty_last_n 64.
	want := Params{Temperature: 0.80, TopK: 40, TopP: 0.95, MinP: 0.05, RepeatPenalty: 1.00, RepeatLastN: 64}
	if got := DefaultParams(); !reflect.DeepEqual(got, want) {
		t.Errorf("DefaultParams() = %+v, want %+v", got, want)
	}
}

func TestGreedy(t *testing.T) {
	inf, nan := float32(math.Inf(1)), float32(math.NaN())
	tests := []struct {
		name   string
		logits []float32
		want   int32
	}{
		{"simple", []float32{0.1, 2, -1, 1.9}, 1},
		{"tie takes lowest index", []float32{1, 3, 3, 2}, 1},
		{"tie of all", []float32{0, 0, 0, 0}, 0},
		{"nan ignored", []float32{nan, 1, 2, nan}, 2},
		{"all -inf", []float32{-inf, -inf, -inf, -inf}, 0},
		{"all nan", []float32{nan, nan, nan, nan}, 0},
		{"+inf", []float32{5, inf, 1, inf}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Temperature 0, and top-k 1 at any temperature, are both greedy.
			for _, p := range []Params{GreedyParams(), with(sampling(1), func(p *Params) { p.TopK = 1 })} {
				s := mustNew(t, p, len(tt.logits))
				for range 5 {
					if got := s.Sample(tt.logits, nil); got != tt.want {
						t.Fatalf("%+v: Sample(%v) = %d, want %d", p, tt.logits, got, tt.want)
					}
				}
			}
		})
	}
}

// TestDegenerateLogits checks that sampling (not greedy) survives NaN and ±Inf.
func TestDegenerateLogits(t *testing.T) {
	inf, nan := float32(math.Inf(1)), float32(math.NaN())
	tests := []struct {
		name    string
		logits  []float32
		allowed []int32
	}{
		{"all -inf", []float32{-inf, -inf, -inf}, []int32{0}},
		{"all nan", []float32{nan, nan, nan}, []int32{0}},
		{"+inf is a point mass", []float32{1, 2, inf, inf}, []int32{2}},
		{"nan never drawn", []float32{nan, 0, nan, 0}, []int32{1, 3}},
		{"-inf never drawn", []float32{-inf, 0, 0, -inf}, []int32{1, 2}},
		{"one finite", []float32{-inf, nan, 3, -inf}, []int32{2}},
	}
	params := []Params{
		sampling(1),
		DefaultParams(),
		with(sampling(0.7), func(p *Params) { p.TopP = 0.5 }),
		with(sampling(2), func(p *Params) { p.MinP = 0.3 }),
		with(sampling(1), func(p *Params) { p.TopK = 2; p.TopP = 0.9; p.MinP = 0.1 }),
		with(sampling(1), func(p *Params) { p.RepeatPenalty = 1.3; p.RepeatLastN = -1 }),
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, p := range params {
				s := mustNew(t, p, len(tt.logits))
				for range 200 {
					got := s.Sample(tt.logits, []int32{0, 1, 2, 3})
					if !slices.Contains(tt.allowed, got) {
						t.Fatalf("%+v: Sample(%v) = %d, want one of %v", p, tt.logits, got, tt.allowed)
					}
				}
			}
		})
	}
}

func TestTopK1IsGreedyAtAnyTemperature(t *testing.T) {
	const vocab = 1000
	for _, temp := range []float32{0.01, 0.5, 1, 3, 100} {
		t.Run(fmt.Sprint(temp), func(t *testing.T) {
			s := mustNew(t, with(sampling(temp), func(p *Params) { p.TopK = 1 }), vocab)
			for seed := range uint64(50) {
				x := randLogits(vocab, 3, seed)
				if got, want := s.Sample(x, nil), Argmax(x); got != want {
					t.Fatalf("seed %d: top-k 1 gave %d, argmax is %d", seed, got, want)
				}
			}
		})
	}
}

func TestTinyTopPIsGreedy(t *testing.T) {
	const vocab = 1000
	for _, topK := range []int{0, 50} {
		for _, temp := range []float32{0.3, 1, 10} {
			t.Run(fmt.Sprintf("topk%d/temp%v", topK, temp), func(t *testing.T) {
				p := with(sampling(temp), func(p *Params) { p.TopP = 1e-6; p.TopK = topK })
				s := mustNew(t, p, vocab)
				for seed := range uint64(50) {
					x := randLogits(vocab, 3, seed)
					if got, want := s.Sample(x, nil), Argmax(x); got != want {
						t.Fatalf("seed %d: top-p 1e-6 gave %d, argmax is %d", seed, got, want)
					}
				}
			})
		}
	}
}

func TestMinPOneIsGreedy(t *testing.T) {
	// With distinct logits only the most likely token has p ≥ 1·p_max.
	const vocab = 1000
	for _, topK := range []int{0, 50} {
		p := with(sampling(1.5), func(p *Params) { p.MinP = 1; p.TopK = topK })
		s := mustNew(t, p, vocab)
		for seed := range uint64(50) {
			x := randLogits(vocab, 3, seed)
			if got, want := s.Sample(x, nil), Argmax(x); got != want {
				t.Fatalf("top-k %d, seed %d: min-p 1 gave %d, argmax is %d", topK, seed, got, want)
			}
		}
	}
}

func TestRepetitionPenalty(t *testing.T) {
	pen := func(penalty float32, lastN int) Params {
		return with(GreedyParams(), func(p *Params) { p.RepeatPenalty = penalty; p.RepeatLastN = lastN })
	}
	tests := []struct {
		name    string
		p       Params
		logits  []float32
		history []int32
		want    int32
	}{
		// 2.0/1.1 = 1.82 < 1.9: the repeated leader loses.
		{"positive logit divided", pen(1.1, 64), []float32{2.0, 1.9, -1, -3}, []int32{0}, 1},
		// -1·1.1 = -1.1 < -1.05: a negative logit is multiplied, so it also drops.
		{"negative logit multiplied", pen(1.1, 64), []float32{-1, -1.05, -4}, []int32{0}, 1},
		// Penalty 1 is off.
		{"penalty 1 is off", pen(1, 64), []float32{2.0, 1.9}, []int32{0}, 0},
		// lastN 0 is off.
		{"last n 0 is off", pen(1.1, 0), []float32{2.0, 1.9}, []int32{0}, 0},
		// 2/1.2 = 1.67 > 1.5: a token repeated three times is penalised once (1.16 if thrice).
		{"distinct tokens penalised once", pen(1.2, 64), []float32{2, 1.5}, []int32{0, 0, 0}, 0},
		// Only the last 2 history tokens count: token 0 is outside the window.
		{"window", pen(1.1, 2), []float32{2.0, 1.9, 0}, []int32{0, 2, 2}, 0},
		{"window includes", pen(1.1, 3), []float32{2.0, 1.9, 0}, []int32{0, 2, 2}, 1},
		{"whole history", pen(1.1, -1), []float32{2.0, 1.9, 0}, []int32{0, 2, 2, 2, 2, 2}, 1},
		// Penalty < 1 boosts repeated tokens.
		{"penalty below 1 boosts", pen(0.5, 64), []float32{1.0, 1.9}, []int32{0}, 0},
		// Ids outside the vocabulary are ignored, not a panic.
		{"out of range ids ignored", pen(1.1, 64), []float32{2.0, 1.9}, []int32{-1, 7, 1 << 30}, 0},
		// After penalising both leaders the third wins.
		{"two penalised", pen(2, 64), []float32{3, 2.9, 1.6}, []int32{1, 0}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustNew(t, tt.p, len(tt.logits))
			in := slices.Clone(tt.logits)
			for range 3 { // repeated calls see the same state
				if got := s.Sample(in, tt.history); got != tt.want {
					t.Fatalf("Sample(%v, history %v) = %d, want %d", tt.logits, tt.history, got, tt.want)
				}
			}
			if !slices.Equal(in, tt.logits) {
				t.Fatalf("Sample modified the caller's logits: %v, was %v", in, tt.logits)
			}
		})
	}
}

// Frequency and presence penalties subtract c·frequency + presence from a token seen c times in
// the window (after the repetition penalty, as llama.cpp does), and turn TopKNeeded off.
func TestFrequencyPresencePenalty(t *testing.T) {
	pen := func(rep, freq, pres float32, lastN int) Params {
		return with(GreedyParams(), func(p *Params) {
			p.RepeatPenalty, p.FrequencyPenalty, p.PresencePenalty, p.RepeatLastN = rep, freq, pres, lastN
		})
	}
	tests := []struct {
		name    string
		p       Params
		logits  []float32
		history []int32
		want    int32
	}{
		// 2 − 1·0.15 = 1.85 < 1.9.
		{"frequency once", pen(1, 0.15, 0, 64), []float32{2, 1.9}, []int32{0}, 1},
		// Token 0 thrice: 2 − 3·0.05 = 1.85; token 1 once: 1.9 − 0.05 = 1.85; token 2, unseen,
		// keeps 1.86 and wins.
		{"frequency counts", pen(1, 0.05, 0, 64), []float32{2, 1.9, 1.86}, []int32{0, 1, 0, 0}, 2},
		// Presence ignores the count: 2 − 0.05 = 1.95 > 1.9 however often token 0 came.
		{"presence once per token", pen(1, 0, 0.05, 64), []float32{2, 1.9}, []int32{0, 0, 0, 0}, 0},
		{"presence", pen(1, 0, 0.2, 64), []float32{2, 1.9}, []int32{0}, 1},
		// Negative penalties encourage repetition: 1.9 + 0.2 > 2.
		{"negative frequency", pen(1, -0.2, 0, 64), []float32{2, 1.9}, []int32{1}, 1},
		// Repetition first, then the additive ones: 2/2 − 0.5 = 0.5 (the other order: 0.75).
		{"order", pen(2, 0, 0.5, 64), []float32{2, 0.6}, []int32{0}, 1},
		{"order (other side)", pen(2, 0, 0.5, 64), []float32{2, 0.4}, []int32{0}, 0},
		// The window is RepeatLastN's: token 0 falls outside the last 2.
		{"window", pen(1, 1, 1, 2), []float32{2, 1.9, 0}, []int32{0, 2, 2}, 0},
		{"last n 0 is off", pen(1, 1, 1, 0), []float32{2, 1.9}, []int32{0}, 0},
		{"out of range ids ignored", pen(1, 1, 1, 64), []float32{2, 1.9}, []int32{-1, 9, 1 << 30}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustNew(t, tt.p, len(tt.logits))
			if tt.p.RepeatLastN != 0 && s.TopKNeeded() != 0 {
				t.Fatalf("TopKNeeded() = %d with a penalty on, want 0 (the whole row)", s.TopKNeeded())
			}
			for range 3 { // repeated calls see the same state
				if got := s.Sample(tt.logits, tt.history); got != tt.want {
					t.Fatalf("Sample(%v, history %v) = %d, want %d", tt.logits, tt.history, got, tt.want)
				}
			}
		})
	}
}

// LogitBias is added before everything else: it can ban the argmax (−100), force a token
// (+100), and the penalties then apply to the biased logit; bad biases and ids are errors.
func TestLogitBias(t *testing.T) {
	logits := []float32{2, 1.9, 0.5, -1}
	bias := func(m map[int32]float32) Params {
		return with(GreedyParams(), func(p *Params) { p.LogitBias = m })
	}
	for _, tc := range []struct {
		name    string
		p       Params
		history []int32
		want    int32
	}{
		{"ban the argmax", bias(map[int32]float32{0: -100}), nil, 1},
		{"force a token", bias(map[int32]float32{3: 100}), nil, 3},
		{"small nudge", bias(map[int32]float32{2: 1.6}), nil, 2},
		{"lifts past the argmax", bias(map[int32]float32{1: 0.2}), nil, 1},                                                                         // 2.1 > 2
		{"then the penalty", with(bias(map[int32]float32{1: 0.2}), func(p *Params) { p.PresencePenalty, p.RepeatLastN = 0.2, 64 }), []int32{1}, 0}, // 2.1 − 0.2 < 2
		{"sampling too", with(bias(map[int32]float32{0: -100, 1: -100, 2: -100}), func(p *Params) { p.Temperature = 1 }), nil, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mustNew(t, tc.p, len(logits))
			for range 3 {
				if got := s.Sample(logits, tc.history); got != tc.want {
					t.Fatalf("Sample = %d, want %d", got, tc.want)
				}
			}
		})
	}
	if _, err := New(bias(map[int32]float32{4: 1}), 4); !errors.Is(err, ErrParams) {
		t.Errorf("bias on token 4 of a 4-token vocabulary: err %v", err)
	}
	if _, err := New(bias(map[int32]float32{1: float32(math.NaN())}), 4); !errors.Is(err, ErrParams) {
		t.Errorf("NaN bias: err %v", err)
	}
}

func TestDoesNotModifyInputs(t *testing.T) {
	const vocab = 500
	x := randLogits(vocab, 2, 7)
	x[3] = float32(math.NaN())
	hist := []int32{1, 2, 3, 4, 4, 9}
	p := DefaultParams()
	p.RepeatPenalty = 1.3
	s := mustNew(t, p, vocab)
	x0, h0 := slices.Clone(x), slices.Clone(hist)
	for range 20 {
		s.Sample(x, hist)
	}
	for i := range x {
		if math.Float32bits(x[i]) != math.Float32bits(x0[i]) {
			t.Fatalf("logits[%d] changed: %v, was %v", i, x[i], x0[i])
		}
	}
	if !slices.Equal(hist, h0) {
		t.Fatalf("history changed: %v, was %v", hist, h0)
	}
}

func TestLengthMismatchPanics(t *testing.T) {
	s := mustNew(t, DefaultParams(), 10)
	defer func() {
		if r := recover(); r == nil {
			t.Fatal("Sample with 9 logits for vocabulary 10 did not panic")
		} else {
			t.Log(r)
		}
	}()
	s.Sample(make([]float32, 9), nil)
}

// checkDistribution draws n tokens and checks every token's frequency against want (exact
// probabilities): within 5 standard errors, and never drawn where want is 0.
func checkDistribution(t *testing.T, s *Sampler, logits []float32, history []int32, want []float64, n int) {
	t.Helper()
	counts := make([]int, len(logits))
	for range n {
		counts[s.Sample(logits, history)]++
	}
	for i, p := range want {
		got := float64(counts[i]) / float64(n)
		if p == 0 {
			if counts[i] != 0 {
				t.Errorf("token %d: drawn %d times, want never (p = 0)", i, counts[i])
			}
			continue
		}
		se := math.Sqrt(p * (1 - p) / float64(n))
		if d := math.Abs(got - p); d > 5*se+1e-12 {
			t.Errorf("token %d: frequency %.4f, want %.4f ± %.4f (5 s.e.), off by %.1f s.e.", i, got, p, 5*se, d/se)
		}
	}
}

// TestDistributionClosedForm checks empirical frequencies against probabilities worked out by
// hand. Logits ln 4, ln 2, ln 1, ln 1 give softmax 1/2, 1/4, 1/8, 1/8 at temperature 1.
func TestDistributionClosedForm(t *testing.T) {
	ln := func(v float64) float32 { return float32(math.Log(v)) }
	base := []float32{ln(4), ln(2), 0, 0}
	r2 := math.Sqrt2
	tests := []struct {
		name   string
		p      Params
		logits []float32
		want   []float64
	}{
		{"temperature 1", sampling(1), base, []float64{0.5, 0.25, 0.125, 0.125}},
		// T = 0.5 squares the weights: 16, 4, 1, 1.
		{"temperature 0.5", sampling(0.5), base, []float64{16.0 / 22, 4.0 / 22, 1.0 / 22, 1.0 / 22}},
		// T = 2 takes square roots: 2, √2, 1, 1.
		{"temperature 2", sampling(2), base, []float64{2 / (4 + r2), r2 / (4 + r2), 1 / (4 + r2), 1 / (4 + r2)}},
		{"top-k 2", with(sampling(1), func(p *Params) { p.TopK = 2 }), base, []float64{2.0 / 3, 1.0 / 3, 0, 0}},
		// Top-k 3 with the tie at ln 1 keeps the lower index.
		{"top-k 3 tie", with(sampling(1), func(p *Params) { p.TopK = 3 }), base, []float64{4.0 / 7, 2.0 / 7, 1.0 / 7, 0}},
		{"top-k 2 temperature 0.5", with(sampling(0.5), func(p *Params) { p.TopK = 2 }), base, []float64{0.8, 0.2, 0, 0}},
		// Cumulative 0.5, 0.75: 0.7 is reached with two tokens.
		{"top-p 0.7", with(sampling(1), func(p *Params) { p.TopP = 0.7 }), base, []float64{2.0 / 3, 1.0 / 3, 0, 0}},
		{"top-p 0.4", with(sampling(1), func(p *Params) { p.TopP = 0.4 }), base, []float64{1, 0, 0, 0}},
		// Cumulative 0.5, 0.75, 0.875: three tokens, the tie again to the lower index.
		{"top-p 0.8", with(sampling(1), func(p *Params) { p.TopP = 0.8 }), base, []float64{4.0 / 7, 2.0 / 7, 1.0 / 7, 0}},
		// Temperature before top-p: at T = 0.5 the top token alone has 16/22 = 0.727 ≥ 0.7.
		{"top-p 0.7 temperature 0.5", with(sampling(0.5), func(p *Params) { p.TopP = 0.7 }), base, []float64{1, 0, 0, 0}},
		// At T = 2: 0.369, 0.630 ≥ 0.6.
		{"top-p 0.6 temperature 2", with(sampling(2), func(p *Params) { p.TopP = 0.6 }), base, []float64{2 / (2 + r2), r2 / (2 + r2), 0, 0}},
		// Top-p on the top-k set: renormalised 2/3, 1/3 over k=2; 0.6 needs one token.
		{"top-k 2 then top-p 0.6", with(sampling(1), func(p *Params) { p.TopK = 2; p.TopP = 0.6 }), base, []float64{1, 0, 0, 0}},
		// Two equal logits and top-p 0.3: the first token alone reaches it.
		{"top-p tie", with(sampling(1), func(p *Params) { p.TopP = 0.3 }), []float32{0, 0}, []float64{1, 0}},
		// Min-p 0.3: threshold 0.15, drops the two 1/8 tokens.
		{"min-p 0.3", with(sampling(1), func(p *Params) { p.MinP = 0.3 }), base, []float64{2.0 / 3, 1.0 / 3, 0, 0}},
		{"min-p 0.2", with(sampling(1), func(p *Params) { p.MinP = 0.2 }), base, []float64{0.5, 0.25, 0.125, 0.125}},
		// Min-p after temperature 2: weights 2, 1.41, 1, 1; 0.6·2 = 1.2 keeps two.
		{"min-p 0.6 temperature 2", with(sampling(2), func(p *Params) { p.MinP = 0.6 }), base, []float64{2 / (2 + r2), r2 / (2 + r2), 0, 0}},
		{"min-p with top-k", with(sampling(1), func(p *Params) { p.TopK = 3; p.MinP = 0.3 }), base, []float64{2.0 / 3, 1.0 / 3, 0, 0}},
		// Top-p 0.9 keeps four (cumulative 0.875 < 0.9), then min-p 0.3 keeps two.
		{"top-p then min-p", with(sampling(1), func(p *Params) { p.TopP = 0.9; p.MinP = 0.3 }), base, []float64{2.0 / 3, 1.0 / 3, 0, 0}},
		// -Inf and NaN tokens have probability 0.
		{"masked tokens", sampling(1), []float32{ln(3), float32(math.Inf(-1)), 0, float32(math.NaN())}, []float64{0.75, 0, 0.25, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustNew(t, with(tt.p, func(p *Params) { p.Seed = 12345 }), len(tt.logits))
			checkDistribution(t, s, tt.logits, nil, tt.want, 20000)
		})
	}
}

// refProbs is a plain, unoptimised statement of the sampling rule in float64: sort every token
// (higher logit first, lower index on ties), keep the top k, softmax at temperature T, keep the
// shortest prefix reaching top_p, drop p < min_p·p_max, renormalise.
func refProbs(logits []float32, history []int32, p Params) []float64 {
	n := len(logits)
	l := make([]float64, n)
	for i, v := range logits {
		l[i] = float64(v)
		if math.IsNaN(l[i]) {
			l[i] = math.Inf(-1)
		}
	}
	if p.RepeatPenalty != 1 && p.RepeatLastN != 0 {
		h := history
		if p.RepeatLastN > 0 && len(h) > p.RepeatLastN {
			h = h[len(h)-p.RepeatLastN:]
		}
		seen := map[int32]bool{}
		for _, t := range h {
			if t < 0 || int(t) >= n || seen[t] {
				continue
			}
			seen[t] = true
			// The penalised logit is a float32, like the input.
			if v := logits[t]; v > 0 {
				l[t] = float64(v / p.RepeatPenalty)
			} else if v == v {
				l[t] = float64(v * p.RepeatPenalty)
			}
		}
	}
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return l[order[a]] > l[order[b]] })
	out := make([]float64, n)
	if p.Temperature == 0 || p.TopK == 1 {
		out[order[0]] = 1
		return out
	}
	if p.TopK > 0 && p.TopK < n {
		order = order[:p.TopK]
	}
	probs := make([]float64, len(order))
	var z float64
	for i, t := range order {
		probs[i] = math.Exp((l[t] - l[order[0]]) / float64(p.Temperature))
		z += probs[i]
	}
	for i := range probs {
		probs[i] /= z
	}
	keep := len(order)
	if p.TopP < 1 {
		var cum float64
		for i, q := range probs {
			cum += q
			if cum >= float64(p.TopP) {
				keep = i + 1
				break
			}
		}
	}
	for i := range keep {
		if probs[i] < float64(p.MinP)*probs[0] {
			keep = i
			break
		}
	}
	z = 0
	for _, q := range probs[:keep] {
		z += q
	}
	for i, t := range order[:keep] {
		out[t] = probs[i] / z
	}
	return out
}

// TestDistributionAgainstReference samples random small vocabularies under many parameter
// combinations and compares frequencies with refProbs.
func TestDistributionAgainstReference(t *testing.T) {
	const vocab = 12
	history := []int32{3, 5, 5, 1, 0}
	params := []Params{
		sampling(1),
		sampling(0.6),
		sampling(1.7),
		with(sampling(0.8), func(p *Params) { p.TopK = 5 }),
		with(sampling(1.3), func(p *Params) { p.TopK = 11 }),
		with(sampling(0.8), func(p *Params) { p.TopP = 0.9 }),
		with(sampling(1.5), func(p *Params) { p.TopP = 0.6 }),
		with(sampling(1), func(p *Params) { p.MinP = 0.1 }),
		with(sampling(2), func(p *Params) { p.MinP = 0.4 }),
		with(sampling(0.9), func(p *Params) { p.TopK = 6; p.TopP = 0.8 }),
		with(sampling(1.2), func(p *Params) { p.TopP = 0.85; p.MinP = 0.2 }),
		with(sampling(1), func(p *Params) { p.TopK = 8; p.TopP = 0.95; p.MinP = 0.05 }),
		with(sampling(1), func(p *Params) { p.RepeatPenalty = 1.5; p.RepeatLastN = 3 }),
		with(DefaultParams(), func(p *Params) { p.RepeatPenalty = 1.3; p.RepeatLastN = -1 }),
	}
	for i, p := range params {
		t.Run(fmt.Sprintf("%d/T%v_k%d_p%v_min%v_pen%v", i, p.Temperature, p.TopK, p.TopP, p.MinP, p.RepeatPenalty), func(t *testing.T) {
			logits := randLogits(vocab, 1.2, uint64(100+i))
			want := refProbs(logits, history, p)
			s := mustNew(t, with(p, func(p *Params) { p.Seed = uint64(i) }), vocab)
			checkDistribution(t, s, logits, history, want, 20000)
		})
	}
}

// TestLargeVocabFilters checks on a 32000-token vocabulary (where the top-p pre-filter and the
// top-k heap matter) that every drawn token is in the reference's support.
func TestLargeVocabFilters(t *testing.T) {
	const vocab = 32000
	logits := randLogits(vocab, 2.5, 99)
	params := []Params{
		with(sampling(0.8), func(p *Params) { p.TopP = 0.9 }),
		with(sampling(1), func(p *Params) { p.TopP = 0.5 }),
		with(sampling(1), func(p *Params) { p.MinP = 0.2 }),
		DefaultParams(),
		with(sampling(1), func(p *Params) { p.TopK = 7 }),
	}
	for i, p := range params {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			want := refProbs(logits, nil, p)
			support := 0
			for _, q := range want {
				if q > 0 {
					support++
				}
			}
			s := mustNew(t, p, vocab)
			seen := map[int32]bool{}
			for range 300 {
				tok := s.Sample(logits, nil)
				if want[tok] == 0 {
					t.Fatalf("%+v: drew token %d (logit %v), outside the reference support of %d tokens", p, tok, logits[tok], support)
				}
				seen[tok] = true
			}
			t.Logf("%+v: support %d tokens, %d distinct drawn", p, support, len(seen))
		})
	}
}

// TestFilterExact compares the set of tokens that survive the filters, and their renormalised
// probabilities, with refProbs on full-size vocabularies: the histogram top-p, the top-k heap and
// the compactions must keep exactly the reference's tokens.
func TestFilterExact(t *testing.T) {
	const vocab = 32000
	params := []Params{
		sampling(1),
		with(sampling(0.8), func(p *Params) { p.TopP = 0.9 }),
		with(sampling(1), func(p *Params) { p.TopP = 0.5 }),
		with(sampling(1.3), func(p *Params) { p.TopP = 0.99 }),
		with(sampling(0.5), func(p *Params) { p.TopP = 0.999 }),
		with(sampling(1), func(p *Params) { p.MinP = 0.05 }),
		with(sampling(0.7), func(p *Params) { p.TopP = 0.95; p.MinP = 0.02 }),
		with(sampling(0.7), func(p *Params) { p.TopP = 0.95; p.MinP = 0.3 }),
		with(sampling(1), func(p *Params) { p.TopK = 40 }),
		with(sampling(1), func(p *Params) { p.TopK = 5000; p.TopP = 0.9 }),
		DefaultParams(),
		with(DefaultParams(), func(p *Params) { p.RepeatPenalty = 1.3; p.TopK = 0 }),
	}
	history := make([]int32, 200)
	for i := range history {
		history[i] = int32(i * 151 % vocab)
	}
	for _, sd := range []float64{0.5, 2.5, 8} {
		for _, ties := range []bool{false, true} {
			for pi, p := range params {
				p.RepeatLastN = 128
				name := fmt.Sprintf("sd%v/ties%v/%d", sd, ties, pi)
				t.Run(name, func(t *testing.T) {
					logits := randLogits(vocab, sd, uint64(pi)+uint64(sd*10))
					if ties { // quantise: many equal logits, so ties fall on the boundaries
						for i := range logits {
							logits[i] = float32(math.Round(float64(logits[i])*4) / 4)
						}
					}
					want := refProbs(logits, history, p)
					s := mustNew(t, p, vocab)
					kept, _ := s.filter(logits, history)
					var z float64
					for _, c := range kept {
						z += c.p
					}
					got := make([]float64, vocab)
					for _, c := range kept {
						got[c.id] = c.p / z
					}
					nWant, bad := 0, 0
					for i := range want {
						if want[i] > 0 {
							nWant++
						}
						if (want[i] > 0) != (got[i] > 0) || math.Abs(got[i]-want[i]) > 1e-9*want[i]+1e-300 {
							if bad < 5 {
								t.Errorf("token %d (logit %v): p = %.6g, want %.6g", i, logits[i], got[i], want[i])
							}
							bad++
						}
					}
					if bad > 0 {
						t.Errorf("%+v: %d of %d tokens differ (reference support %d, kept %d)", p, bad, vocab, nWant, len(kept))
					}
				})
			}
		}
	}
}

func TestReproducible(t *testing.T) {
	const vocab, n = 1000, 300
	logits := randLogits(vocab, 1, 3)
	draw := func(s *Sampler) []int32 {
		out := make([]int32, n)
		for i := range out {
			out[i] = s.Sample(logits, out[:i])
		}
		return out
	}
	p := DefaultParams()
	p.TopK, p.MinP, p.RepeatPenalty = 0, 0, 1.1
	p.Seed = 42
	a := draw(mustNew(t, p, vocab))
	b := draw(mustNew(t, p, vocab))
	if !slices.Equal(a, b) {
		t.Fatalf("same seed, different tokens:\n%v\n%v", a, b)
	}
	s := mustNew(t, p, vocab)
	draw(s)
	s.Reseed(42)
	if c := draw(s); !slices.Equal(a, c) {
		t.Fatalf("Reseed(42) did not restart the sequence:\n%v\n%v", a, c)
	}
	distinct := map[int32]bool{}
	for _, tok := range a {
		distinct[tok] = true
	}
	if len(distinct) < 10 {
		t.Fatalf("only %d distinct tokens in %d draws: not sampling", len(distinct), n)
	}
	for _, seed := range []uint64{0, 1, 43, math.MaxUint64} {
		p.Seed = seed
		if d := draw(mustNew(t, p, vocab)); slices.Equal(a, d) {
			t.Errorf("seed %d gives the same %d tokens as seed 42", seed, n)
		}
	}
}

func TestNoAllocs(t *testing.T) {
	const vocab = 32000
	logits := randLogits(vocab, 2, 5)
	history := []int32{5, 17, 17, 400, 31999}
	params := map[string]Params{
		"greedy":         GreedyParams(),
		"greedy penalty": with(GreedyParams(), func(p *Params) { p.RepeatPenalty = 1.1; p.RepeatLastN = 64 }),
		"default":        DefaultParams(),
		"temperature":    sampling(0.8),
		"top-p":          with(sampling(0.8), func(p *Params) { p.TopP = 0.9 }),
		"min-p":          with(sampling(0.8), func(p *Params) { p.MinP = 0.05 }),
		"everything":     with(DefaultParams(), func(p *Params) { p.RepeatPenalty = 1.1; p.TopK = 100 }),
	}
	for name, p := range params {
		t.Run(name, func(t *testing.T) {
			s := mustNew(t, p, vocab)
			if a := testing.AllocsPerRun(20, func() { s.Sample(logits, history) }); a != 0 {
				t.Errorf("Sample allocates %v times per call, want 0", a)
			}
		})
	}
}

func BenchmarkSample(b *testing.B) {
	const vocab = 32000
	logits := randLogits(vocab, 2, 11)
	history := make([]int32, 64)
	for i := range history {
		history[i] = int32(i * 37)
	}
	benches := []struct {
		name string
		p    Params
	}{
		{"greedy", GreedyParams()},
		{"topp0.9_temp0.8", with(sampling(0.8), func(p *Params) { p.TopP = 0.9 })},
		{"default", DefaultParams()},
		{"default_penalty1.1", with(DefaultParams(), func(p *Params) { p.RepeatPenalty = 1.1 })},
	}
	for _, bb := range benches {
		b.Run(bb.name, func(b *testing.B) {
			s := mustNew(b, bb.p, vocab)
			b.SetBytes(4 * vocab)
			b.ReportAllocs()
			for b.Loop() {
				s.Sample(logits, history)
			}
		})
	}
}
