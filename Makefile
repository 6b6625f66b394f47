# llamacu — see README.md. Everything here runs on a machine without a GPU.
GO        ?= go
NVCC      ?= nvcc
BIN       ?= bin
# SASS for Ampere (A100, A10/3090), Ada (L4/4090) and Hopper, plus PTX for newer GPUs to JIT.
NVCCFLAGS ?= -O3 --use_fast_math -std=c++17 \
	-gencode arch=compute_80,code=sm_80 -gencode arch=compute_86,code=sm_86 \
	-gencode arch=compute_89,code=sm_89 -gencode arch=compute_90,code=sm_90 \
	-gencode arch=compute_90,code=compute_90
KERNELS   := $(wildcard kernels/*.cu)

.PHONY: all build test test-short fmt-check vet fuzz bench kernels cuda clean

all: build

build:
	$(GO) build -o $(BIN)/llamacu ./cmd/llamacu

# The tests CI runs (README: "make test"): formatting, vet, and every package's tests.
test: fmt-check vet
	$(GO) test -count=1 ./...

test-short:
	$(GO) test -short ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# Each fuzz target for FUZZTIME (default 20s).
FUZZTIME ?= 20s
fuzz:
	$(GO) test ./loader -run '^$$' -fuzz '^FuzzGGUF$$' -fuzztime $(FUZZTIME)
	$(GO) test ./loader -run '^$$' -fuzz '^FuzzLlama2C$$' -fuzztime $(FUZZTIME)
	$(GO) test ./loader -run '^$$' -fuzz '^FuzzSafetensors$$' -fuzztime $(FUZZTIME)
	$(GO) test ./tokenizer -run '^$$' -fuzz '^FuzzModelProto$$' -fuzztime $(FUZZTIME)

# CPU benchmarks: matmul GB/s and decode tokens/s on a synthetic ~110M-parameter model.
bench:
	$(GO) test ./cpu -run '^$$' -bench . -benchtime 2s
	$(GO) test ./engine -run '^$$' -bench Decode -benchtime 20x

# The CUDA kernels as one fatbin (needs nvcc: CUDA 11.8 or newer).
kernels: kernels/llamacu.fatbin
kernels/llamacu.fatbin: $(KERNELS) $(wildcard kernels/*.cuh)
	@if [ -z "$(KERNELS)" ]; then echo "no kernels/*.cu yet"; exit 0; fi; \
	$(NVCC) $(NVCCFLAGS) --fatbin -o $@ $(KERNELS)

cuda: kernels
	$(GO) build -tags cuda -o $(BIN)/llamacu-cuda ./cmd/llamacu

clean:
	rm -rf $(BIN) kernels/llamacu.fatbin
