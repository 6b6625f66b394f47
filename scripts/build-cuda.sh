#!/usr/bin/env bash
# Builds the CUDA llamacu binary: the kernels' fatbin (nvcc), then the Go binary that embeds it.
# Dockerfile.cuda's build stage runs exactly this; .ci/run runs it too, so it is tested without
# a Docker engine. Usage: scripts/build-cuda.sh [OUTDIR]   (default: bin)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bin}
mkdir -p "$out"
command -v nvcc >/dev/null || { echo "build-cuda: nvcc not found (install the CUDA toolkit)" >&2; exit 1; }
make kernels
CGO_ENABLED=1 go build -tags cuda -trimpath -ldflags '-s -w' -o "$out/llamacu" ./cmd/llamacu
echo "built $out/llamacu ($(du -h "$out/llamacu" | cut -f1)) with $(nvcc --version | tail -1)"
