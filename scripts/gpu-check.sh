#!/usr/bin/env bash
# GPU check: builds chatglm and the CUDA backend for sm_90 (H100/H200), runs
# the test suite with the GPU visible, then benchmarks a model with every
# layer offloaded. Meant for a machine with an NVIDIA GPU, a CUDA toolkit
# (>= 11.8), cmake, gcc and Go; run from the repository root:
#   scripts/gpu-check.sh [model.gguf ...]
# Without model arguments it converts a tiny random ChatGLM3 checkpoint and,
# if $CHATGLM_BENCH_DIR holds them, benchmarks the full-size f16/q4_0 GGUFs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:/usr/local/cuda/bin:$PATH"
out=${OUT:-gpu-check-out}
mkdir -p "$out"
log() { printf '== %s\n' "$*" | tee -a "$out/summary.txt"; }

log "host: $(uname -srm), $(nproc) cores"
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv | tee -a "$out/summary.txt"
command -v nvcc >/dev/null || bash third_party/cuda/install-toolkit.sh
log "nvcc: $(nvcc --version | tail -1)"

start=$(date +%s)
make build
make cuda CUDA_ARCHITECTURES=90
log "build (binary + CUDA module): $(( $(date +%s) - start )) s"

./bin/chatglm version | tee -a "$out/summary.txt"
./bin/chatglm version | grep -q 'gpu' || true

log "tests with the GPU visible"
CHATGLM_LIB_PATH="$PWD/bin" make test 2>&1 | tee "$out/test.log" | tail -5 | tee -a "$out/summary.txt"

models=("$@")
bench_dir=${CHATGLM_BENCH_DIR:-$HOME/.cache/chatglm-bench}
if [ ${#models[@]} -eq 0 ]; then
	for f in "$bench_dir"/chatglm3-6b-f16.gguf "$bench_dir"/chatglm3-6b-q4_0.gguf; do
		[ -f "$f" ] && models+=("$f")
	done
fi
for m in "${models[@]}"; do
	log "bench $m, all layers on the GPU"
	./bin/chatglm bench -m "$m" -p 512 -n 128 -r 3 --gpu-layers 999 | tee -a "$out/summary.txt"
done
log "done"
