package main

import (
	"fmt"
	"io"

	"github.com/llamacu/llamacu/bench"
)

// cmdBenchSummarize is `llamacu bench summarize DIR`: the GPU check's output folder (check.sh's
// $OUT: check.log, llamacu-*.json, hf-*.jsonl) as one Markdown table of figures against the
// CUDA backend's targets, for bench/results/.
func cmdBenchSummarize(args []string, stdout, stderr io.Writer) error {
	if len(args) != 1 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(stderr, "usage: llamacu bench summarize DIR   (the folder bench/device/check.sh wrote)")
		return fmt.Errorf("%w: bench summarize takes one folder", errUsage)
	}
	s, err := bench.SummarizeDeviceCheck(args[0])
	if err != nil {
		return err
	}
	return s.WriteMarkdown(stdout)
}
