package main

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/model"
)

// backends maps --backend names to constructors; a cuda build adds "cuda" in an init function.
var backends = map[string]func(threads int) (model.Backend, error){
	"cpu": func(threads int) (model.Backend, error) {
		kv, err := kvType()
		if err != nil {
			return nil, err
		}
		return cpu.New(cpu.Options{Threads: threads, KVF16: kv == "f16"}), nil
	},
}

// kvType reads $LLAMACU_KV, the KV cache's element type: "f16" or "f32", or "" for the
// backend's default (f32 on the CPU, exactly llama2.c's; f16 on a GPU).
func kvType() (string, error) {
	switch kv := strings.ToLower(os.Getenv("LLAMACU_KV")); kv {
	case "", "f16", "f32":
		return kv, nil
	default:
		return "", fmt.Errorf("%w: LLAMACU_KV=%q: want f16 or f32", errUsage, kv)
	}
}

func backendNames() string {
	var names []string
	for n := range backends {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func newBackend(name string, threads int) (model.Backend, error) {
	mk, ok := backends[name]
	if !ok {
		hint := ""
		if name == "cuda" {
			hint = " (this binary was built without CUDA: make cuda)"
		}
		return nil, fmt.Errorf("%w: unknown backend %q%s; have %s", errUsage, name, hint, backendNames())
	}
	return mk(threads)
}
