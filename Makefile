# llamacu — see README.md. Everything here runs on a machine without a GPU.
GO        ?= go
NVCC      ?= nvcc
BIN       ?= bin
# SASS for Ampere (A100, A10/3090), Ada (L4/4090) and Hopper, plus PTX for newer GPUs to JIT.
NVCCFLAGS ?= -O3 --use_fast_math -std=c++17 \
	-gencode arch=compute_80,code=sm_80 -gencode arch=compute_86,code=sm_86 \
	-gencode arch=compute_89,code=sm_89 -gencode arch=compute_90,code=sm_90 \
	-gencode arch=compute_90,code=compute_90
# One translation unit (nvcc --fatbin takes one input per output): all.cu #includes the rest.
KERNELS   := kernels/all.cu

.PHONY: all build test test-emu test-short fmt-check vet fuzz bench kernels cuda device-bundle device-dryrun clean

all: build

build:
	$(GO) build -o $(BIN)/llamacu ./cmd/llamacu

# The tests CI runs (README: "make test"): formatting, vet, every package's tests, then the CUDA
# backend's own tests on the emulated driver (build tag cudaemu: kernels/*.cu compiled for the
# CPU by g++, package gpu driving them exactly as on a GPU; see cuda/emu.go). The emulated gpu
# package takes about 10 minutes on 2 cores (every CUDA thread a fiber; GEMV v3's barriers and
# per-group shuffles doubled it), past go test's default 10-minute timeout.
test: fmt-check vet test-emu
	$(GO) test -count=1 ./...

EMU_PKGS := ./cuda ./gpu ./cmd/llamacu
test-emu:
	$(GO) test -count=1 -timeout 30m -tags cudaemu $(EMU_PKGS)

test-short:
	$(GO) test -short ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...
	$(GO) vet -tags cudaemu ./...

# Each fuzz target for FUZZTIME (default 20s). -fuzzminimizetime keeps the engine from spending
# the whole budget shrinking the (KB-sized) seed inputs on a 2-core machine.
FUZZTIME ?= 20s
FUZZ = $(GO) test -run '^$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s
fuzz:
	$(FUZZ) ./loader -fuzz '^FuzzGGUF$$'
	$(FUZZ) ./loader -fuzz '^FuzzLlama2C$$'
	$(FUZZ) ./loader -fuzz '^FuzzSafetensors$$'
	$(FUZZ) ./tokenizer -fuzz '^FuzzModelProto$$'
	$(FUZZ) ./tokenizer -fuzz '^FuzzLlama2cBin$$'
	$(FUZZ) ./tokenizer -fuzz '^FuzzEncodeDecode$$'
	$(FUZZ) ./tokenizer -fuzz '^FuzzUserTrie$$'
	$(FUZZ) ./model -fuzz '^FuzzFromHFConfig$$'
	$(FUZZ) ./model -fuzz '^FuzzDecodeStep$$'
	$(FUZZ) ./tp -fuzz '^FuzzTCPFrames$$'

# CPU benchmarks: matmul GB/s and decode tokens/s on a synthetic ~110M-parameter model.
bench:
	$(GO) test ./cpu -run '^$$' -bench . -benchtime 2s
	$(GO) test ./engine -run '^$$' -bench Decode -benchtime 20x

# The CUDA kernels as one fatbin (needs nvcc: CUDA 11.8 or newer).
kernels: kernels/llamacu.fatbin
kernels/llamacu.fatbin: $(wildcard kernels/*.cu) $(wildcard kernels/*.cuh)
	$(NVCC) $(NVCCFLAGS) --fatbin -o $@ $(KERNELS)

cuda: kernels
	$(GO) build -tags cuda -o $(BIN)/llamacu-cuda ./cmd/llamacu

# Everything the GPU machine needs (it has no Go): the cuda CLI, the GPU test binaries, the
# PyTorch peer, the test data the tests read, and bench/device/check.sh. Carry dist/device.
DEV := dist/device
DEVTAGS ?= cuda
SHARED ?= ../shared/testdata
# The binaries are built with -tags nofatbin and share one fatbin file ($$LLAMACU_FATBIN, set by
# check.sh), made for the lent GPUs only (H100/H200: sm_90 SASS, plus compute_90 PTX), so that
# the bundle stays well under the device tool's 64 MiB.
DEVGENCODE ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90
device-bundle:
	rm -rf $(DEV) && mkdir -p $(DEV)/pkg/cuda $(DEV)/pkg/gpu $(DEV)/shared/testdata
	$(NVCC) -O3 --use_fast_math -std=c++17 $(DEVGENCODE) --fatbin -o $(DEV)/llamacu.fatbin $(KERNELS)
	$(GO) build -tags '$(DEVTAGS) nofatbin' -ldflags '-s -w' -o $(DEV)/llamacu ./cmd/llamacu
	$(GO) test -tags '$(DEVTAGS) nofatbin' -c -ldflags '-s -w' -o $(DEV)/gpu.test ./gpu
	$(GO) test -tags '$(DEVTAGS) nofatbin' -c -ldflags '-s -w' -o $(DEV)/cuda.test ./cuda
	cp bench/device/check.sh bench/device/followup.sh bench/device/lib.sh bench/reference/hf_peer.py bench/reference/hf_logits.py $(DEV)/
	cp -r $(SHARED)/stories260K $(DEV)/shared/testdata/
	mkdir -p $(DEV)/pkg/loader/testdata/kquant
	cp loader/testdata/kquant/kq256-Q4_K_M.gguf loader/testdata/kquant/kq256-Q3_K_M.gguf loader/testdata/kquant/kq256-Q5_K_M.gguf \
		$(DEV)/pkg/loader/testdata/kquant/
	git rev-parse --short HEAD > $(DEV)/COMMIT 2>/dev/null || echo unknown > $(DEV)/COMMIT
	echo "-tags $(DEVTAGS)" > $(DEV)/BUILD
	@du -sh $(DEV)

# The GPU check rehearsed here: the same bundle and script on the emulated driver (the kernels
# on the CPU, see cuda/emu.go), with a tiny model and no kernel benchmarks, so that a broken step
# shows before it costs GPU time. Minutes; the output lands in dist/dryrun-out/.
DRYRUN_SCRIPT ?= check.sh
device-dryrun:
	$(MAKE) device-bundle DEV=dist/device-emu DEVTAGS=cudaemu
	rm -rf dist/dryrun-out
	OUT=$(CURDIR)/dist/dryrun-out CHECK_SHAPE=tiny CHECK_PREFILL=64 CHECK_GEN=8 CHECK_BENCH='^$$' CHECK_BUDGET=1500 \
		CHECK_RANK_SHAPE=tiny CHECK_RANKS=4 CHECK_QSHAPE=tiny256 CHECK_KQ_SHAPE=tiny256 CHECK_GPU_TEST_LIMIT=900 \
		bash dist/device-emu/$(DRYRUN_SCRIPT)

clean:
	rm -rf $(BIN) dist kernels/llamacu.fatbin
