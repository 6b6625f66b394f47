package main

import (
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/llamacu/llamacu/sample"
)

// samplingFlags are the sampling flags run and chat share (llama.cpp's CLI defaults).
type samplingFlags struct {
	temp, topP, minP, rep *float64
	freq, pres            *float64
	topK, repN            *int
	seed                  *int64
}

func addSamplingFlags(fs *flag.FlagSet, seedHelp string) *samplingFlags {
	return &samplingFlags{
		temp: fs.Float64("temperature", 0.8, "sampling temperature; 0 is greedy"),
		topK: fs.Int("top-k", 40, "keep the k most likely tokens (0: all)"),
		topP: fs.Float64("top-p", 0.95, "nucleus sampling: keep the smallest set with this much probability (1: off)"),
		minP: fs.Float64("min-p", 0.05, "drop tokens less likely than this fraction of the most likely (0: off)"),
		rep:  fs.Float64("repeat-penalty", 1.0, "penalise the last --repeat-last-n tokens (1: off)"),
		freq: fs.Float64("frequency-penalty", 0, "subtract this times a token's count in the last --repeat-last-n tokens (0: off)"),
		pres: fs.Float64("presence-penalty", 0, "subtract this from every token in the last --repeat-last-n tokens (0: off)"),
		repN: fs.Int("repeat-last-n", 64, "how many recent tokens the penalties look at"),
		seed: fs.Int64("seed", -1, seedHelp),
	}
}

// params validates the flags and returns them as sample.Params. A negative seed is replaced by
// one from the clock, printed to stderr when it matters (temperature > 0).
func (f *samplingFlags) params(stderr io.Writer) (sample.Params, error) {
	if *f.seed < 0 {
		*f.seed = time.Now().UnixNano() & (1<<62 - 1)
		if *f.temp > 0 {
			fmt.Fprintf(stderr, "seed: %d\n", *f.seed)
		}
	}
	p := sample.Params{
		Temperature: float32(*f.temp), TopK: *f.topK, TopP: float32(*f.topP), MinP: float32(*f.minP),
		RepeatPenalty: float32(*f.rep), RepeatLastN: *f.repN, Seed: uint64(*f.seed),
		FrequencyPenalty: float32(*f.freq), PresencePenalty: float32(*f.pres),
	}
	if err := p.Validate(); err != nil {
		return p, fmt.Errorf("%w: %v", errUsage, err)
	}
	return p, nil
}
