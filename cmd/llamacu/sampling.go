package main

import (
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/llamacu/llamacu/grammar"
	"github.com/llamacu/llamacu/sample"
)

// samplingFlags are the sampling flags run and chat share (llama.cpp's CLI defaults).
type samplingFlags struct {
	temp, topP, minP, rep *float64
	freq, pres            *float64
	topK, repN            *int
	seed                  *int64
	bias                  map[int32]float32 // --logit-bias, repeatable

	gbnf, gbnfFile, schema, schemaFile, regex *string
	json                                      *bool
}

func addSamplingFlags(fs *flag.FlagSet, seedHelp string) *samplingFlags {
	f := &samplingFlags{
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
	fs.Func("logit-bias", "add BIAS to token ID's logit: ID+BIAS or ID-BIAS, repeatable (llama.cpp's form; -100 bans it)", f.addBias)
	f.gbnf = fs.String("grammar", "", "constrain the output to this GBNF grammar (llama.cpp's format; generation starts at rule root)")
	f.gbnfFile = fs.String("grammar-file", "", "constrain the output to the GBNF grammar in this file")
	f.json = fs.Bool("json", false, "constrain the output to a JSON object")
	f.schema = fs.String("json-schema", "", "constrain the output to JSON that this JSON Schema accepts")
	f.schemaFile = fs.String("json-schema-file", "", "constrain the output to JSON that the JSON Schema in this file accepts")
	f.regex = fs.String("regex", "", "constrain the output to the texts this regular expression matches in full (vLLM's guided_regex)")
	return f
}

// grammar compiles the one constraint the flags give (nil when none).
func (f *samplingFlags) grammar() (*grammar.Grammar, error) {
	var given []string
	for _, c := range []struct {
		name string
		set  bool
	}{{"--grammar", *f.gbnf != ""}, {"--grammar-file", *f.gbnfFile != ""}, {"--json", *f.json},
		{"--json-schema", *f.schema != ""}, {"--json-schema-file", *f.schemaFile != ""}, {"--regex", *f.regex != ""}} {
		if c.set {
			given = append(given, c.name)
		}
	}
	if len(given) > 1 {
		return nil, fmt.Errorf("%w: %s and %s both constrain the output: give one", errUsage, given[0], given[1])
	}
	read := func(name string) (string, error) {
		b, err := os.ReadFile(name)
		return string(b), err
	}
	var g *grammar.Grammar
	var err error
	switch {
	case *f.gbnf != "":
		g, err = grammar.Parse(*f.gbnf)
	case *f.gbnfFile != "":
		var src string
		if src, err = read(*f.gbnfFile); err == nil {
			g, err = grammar.Parse(src)
		}
	case *f.json:
		g = grammar.JSON()
	case *f.schema != "":
		g, err = grammar.FromJSONSchema([]byte(*f.schema))
	case *f.schemaFile != "":
		var src string
		if src, err = read(*f.schemaFile); err == nil {
			g, err = grammar.FromJSONSchema([]byte(src))
		}
	case *f.regex != "":
		g, err = grammar.FromRegex(*f.regex)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", errUsage, given[0], err)
	}
	return g, nil
}

// addBias parses one --logit-bias: "15043+1.5", "15043-100".
func (f *samplingFlags) addBias(v string) error {
	i := strings.IndexAny(v, "+-") // the first sign: the bias may be 1e-5
	if i <= 0 {
		return fmt.Errorf("want ID+BIAS or ID-BIAS, got %q", v)
	}
	id, err := strconv.ParseInt(v[:i], 10, 32)
	if err != nil || id < 0 {
		return fmt.Errorf("token id %q: want a number ≥ 0", v[:i])
	}
	b, err := strconv.ParseFloat(v[i:], 32)
	if err != nil || math.IsInf(b, 0) || math.IsNaN(b) {
		return fmt.Errorf("bias %q: want a finite number", v[i:])
	}
	if f.bias == nil {
		f.bias = map[int32]float32{}
	}
	f.bias[int32(id)] += float32(b)
	return nil
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
		FrequencyPenalty: float32(*f.freq), PresencePenalty: float32(*f.pres), LogitBias: f.bias,
	}
	if err := p.Validate(); err != nil {
		return p, fmt.Errorf("%w: %v", errUsage, err)
	}
	return p, nil
}
