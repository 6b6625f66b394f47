package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/model"
)

// backends maps --backend names to constructors; a cuda build adds "cuda" in an init function.
var backends = map[string]func(threads int) (model.Backend, error){
	"cpu": func(threads int) (model.Backend, error) { return cpu.New(cpu.Options{Threads: threads}), nil },
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
