#!/usr/bin/env bash
# ggml_fetch.sh DIR — puts a prebuilt llama.cpp (ggml's libraries, CPU only) in DIR, from the npm
# package @node-llama-cpp/linux-x64 (x86-64 Linux), for bench/reference/ggml_quants.py.
# Needs npm and tar; nothing is built.
set -euo pipefail
dir=${1:?usage: ggml_fetch.sh DIR}
version=${GGML_NPM_VERSION:-3.21.1}
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "@node-llama-cpp/linux-x64@$version" >/dev/null)
tar xzf "$tmp"/*.tgz -C "$tmp"
cp "$tmp"/package/bins/linux-x64/* "$dir"/
echo "ggml libraries from @node-llama-cpp/linux-x64@$version in $dir:"
cat "$dir/_nlcBuildMetadata.json"; echo
