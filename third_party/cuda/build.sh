#!/usr/bin/env bash
# make cuda: builds libggml-cuda.so from the pinned ggml sources into OUT.
# Usage: build.sh <ollama module dir> <CUDA architectures> <out dir>
# GGML_SRC, when set, names the ggml source folder instead of the module's
# (for a machine without Go: scripts/gpu-check.sh).
set -euo pipefail
module=$1 archs=${2:-native} out=${3:-bin}
here=$(cd "$(dirname "$0")" && pwd)
if ! command -v nvcc >/dev/null; then
	echo "make cuda: nvcc not found. Install a CUDA toolkit >= 11.8 (Debian 12: third_party/cuda/install-toolkit.sh)" >&2
	exit 1
fi
if ! command -v cmake >/dev/null; then
	echo "make cuda: cmake not found (apt-get install cmake)" >&2
	exit 1
fi
build=${CUDA_BUILD_DIR:-build/cuda}
cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=Release \
	-DGGML_SRC="${GGML_SRC:-$module/ml/backend/ggml/ggml}" \
	-DCMAKE_CUDA_ARCHITECTURES="$archs"
cmake --build "$build" -j "$(nproc)"
mkdir -p "$out"
cp "$build/libggml-cuda.so" "$out/libggml-cuda.so.tmp"
mv "$out/libggml-cuda.so.tmp" "$out/libggml-cuda.so"
echo "built $out/libggml-cuda.so (architectures: $archs)"
