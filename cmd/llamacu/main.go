// Command llamacu runs LLaMA 2 models: generation, chat, an OpenAI-compatible server,
// benchmarks, memory planning, tokenization and model inspection.
//
//	llamacu run      [--model PATH] [--tokenizer PATH] [--temperature F] [--top-k N] [--top-p F]
//	                 [--seed N] [--max-tokens N] [--tp N] PROMPT
//	llamacu chat     [--model PATH] [--system TEXT] …
//	llamacu serve    --model PATH --addr HOST:PORT [--api-key KEY] [--max-queue N] …
//	llamacu bench    --model PATH | --synthetic 7b|13b|70b|tiny|110m [-p N] [-n N] [--batch …] …
//	llamacu bench serve --url URL --concurrency 1,8,64 --requests N …
//	llamacu plan     --model PATH | --preset 7b|13b|70b [--dtype …] [--gpus N] [--gpu-mem 80GiB] …
//	llamacu tokenize --model PATH | --tokenizer PATH [--no-bos] TEXT
//	llamacu info     --model PATH | --preset 7b|13b|70b [--json]
//
// run prints only the generated text on stdout; timings go to stderr. Without --model, run uses a
// built-in synthetic model (the LLaMA 2 architecture with small random weights) and says so.
// Each command lives in its own file and registers itself in an init function.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
)

// command is one subcommand: it parses args and writes to stdout/stderr.
type command struct {
	name, summary string
	run           func(args []string, stdout, stderr io.Writer) error
}

// commands lists the subcommands in usage order. Each command's file adds itself in an init
// function with register, so a new command is one new file.
var commands []command

func register(c command) {
	commands = append(commands, c)
	sort.SliceStable(commands, func(i, j int) bool { return order(commands[i].name) < order(commands[j].name) })
}

// order puts the everyday commands first; the rest follow alphabetically.
func order(name string) string {
	for i, n := range []string{"run", "chat", "serve", "bench", "plan", "tokenize", "info"} {
		if n == name {
			return fmt.Sprintf("%02d", i)
		}
	}
	return "99" + name
}

func main() {
	os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
}

// Main runs the CLI and returns the exit status (0 ok, 1 failure, 2 usage).
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands {
		if c.name == args[0] {
			err := c.run(args[1:], stdout, stderr)
			switch {
			case err == nil:
				return 0
			case errors.Is(err, flag.ErrHelp):
				return 0
			case errors.Is(err, errUsage):
				fmt.Fprintf(stderr, "llamacu %s: %v\n", c.name, err)
				return 2
			}
			fmt.Fprintf(stderr, "llamacu %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "llamacu: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: llamacu <command> [flags] [args]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nrun 'llamacu <command> -h' for a command's flags")
}

var errUsage = errors.New("usage")

// parseInterleaved parses flags that may come before or after positional arguments
// ("run PROMPT --model x" and "run --model x PROMPT" both work); everything after "--" is
// positional, so a prompt may start with a dash.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	for i, a := range args {
		if a == "--" {
			args, rest = args[:i], args[i+1:]
			break
		}
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			// An unknown flag or a value that does not parse ("--tp two") is a usage error (2).
			return nil, fmt.Errorf("%w: %w", errUsage, err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return append(pos, rest...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}
