#!/usr/bin/env bash
# GPU check: builds ggml's CUDA backend for the GPU in this machine, checks
# that chatglm offloads to it and computes the same logits as the CPU, and
# benchmarks a synthetic full-size ChatGLM3-6B (f16 and q4_0) with every layer
# on the GPU against the GPU's memory bandwidth measured in the same run.
# Run from the repository root:
#   scripts/gpu-check.sh
# Everything it prints also goes to $OUT (default gpu-check-out): summary.md
# (the table), and the raw logs.
#
# On a development machine (Go, a CUDA toolkit >= 11.8, cmake) it builds
# bin/chatglm and bin/libggml-cuda.so with make and also runs `make test` with
# the GPU visible. A machine without Go (a rented GPU box) needs prebuilt
# parts, named by:
#   CHATGLM_BIN       a chatglm binary (e.g. built with `make build
#                     CPU_ARCH=x86-64-v3` for a portable one); the CUDA module
#                     is built beside it
#   GGML_SRC          the ggml source folder of the pinned module
#                     (<ollama module>/ml/backend/ggml/ggml)
#   SYNTH             the synth command (go build ./tools/synth)
#   CHATGLM_TESTDATA  the folder holding chatglm3-6b/{config.json,tokenizer.model,...}
# Other settings:
#   CHATGLM_BENCH_DIR where the models are made and cached (~/.cache/chatglm-bench)
#   CUDA_ARCHITECTURES  (default native)
#   GPU_CHECK_REPS    bench repetitions (3)
#   GPU_CHECK_DEADLINE  seconds after which the remaining steps are skipped (0 = none)
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:/usr/local/cuda/bin"
t0=$(date +%s)
out=${OUT:-gpu-check-out}
mkdir -p "$out"
work=${CHATGLM_BENCH_DIR:-$HOME/.cache/chatglm-bench}
mkdir -p "$work"
reps=${GPU_CHECK_REPS:-3}
deadline=${GPU_CHECK_DEADLINE:-0}
archs=${CUDA_ARCHITECTURES:-native}

log() { printf '== [%3ds] %s\n' "$(($(date +%s) - t0))" "$*" | tee -a "$out/summary.txt" >&2; }
late() { [ "$deadline" -gt 0 ] && [ $(($(date +%s) - t0)) -ge "$deadline" ]; }
die() { log "FAILED: $*"; exit 1; }

log "host: $(uname -srm), $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB; disk free in $work: $(df -h --output=avail "$work" | tail -1)"
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader | tee -a "$out/summary.txt"
command -v nvcc >/dev/null || die "nvcc not found (Debian 12: third_party/cuda/install-toolkit.sh)"
log "nvcc: $(nvcc --version | tail -1)"

have_go=false
command -v go >/dev/null && have_go=true
if [ -z "${CHATGLM_BIN:-}" ]; then
	$have_go || die "no Go here: set CHATGLM_BIN, GGML_SRC and SYNTH to prebuilt parts"
	make build >"$out/build.log" 2>&1 || die "make build (see build.log)"
	CHATGLM_BIN=bin/chatglm
fi
BIN=$CHATGLM_BIN
libdir=$(dirname "$BIN")
if [ -z "${GGML_SRC:-}" ]; then
	$have_go || die "no Go here: set GGML_SRC"
	GGML_SRC="$(go list -m -f '{{.Dir}}' github.com/ollama/ollama)/ml/backend/ggml/ggml"
fi
[ -n "${SYNTH:-}" ] || SYNTH="go run ./tools/synth"

# 1. The CUDA module, in the background: the models are made meanwhile.
build_pid=
if [ ! -f "$libdir/libggml-cuda.so" ]; then
	log "building libggml-cuda.so for CUDA architectures $archs (log: cuda-build.log)"
	( GGML_SRC=$GGML_SRC CUDA_BUILD_DIR=build/cuda-check \
		third_party/cuda/build.sh "" "$archs" "$libdir" >"$out/cuda-build.log" 2>&1 ) &
	build_pid=$!
fi

# 2. The synthetic full-size models (cached in $work).
f16=$work/chatglm3-6b-f16.gguf q4=$work/chatglm3-6b-q4_0.gguf
if [ ! -f "$f16" ]; then
	log "making the synthetic checkpoint and $f16"
	nice $SYNTH -o "$work/chatglm3-6b-synth" >"$out/synth.log" 2>&1 || die "synth (see synth.log)"
	nice "$BIN" convert "$work/chatglm3-6b-synth" -o "$f16" --type f16 >"$out/convert.log" 2>&1 || die "convert (see convert.log)"
	[ -n "${GPU_CHECK_KEEP_SRC:-}" ] || rm -rf "$work/chatglm3-6b-synth"
fi
if [ ! -f "$q4" ]; then
	log "quantizing $q4"
	nice "$BIN" quantize "$f16" "$q4" q4_0 >"$out/quantize.log" 2>&1 || die "quantize (see quantize.log)"
fi
log "models ready: $(du -h "$f16" "$q4" | awk '{printf "%s %s; ", $2, $1}')"

if [ -n "$build_pid" ]; then
	wait "$build_pid" || { tail -30 "$out/cuda-build.log" >&2; die "CUDA build (see cuda-build.log)"; }
	log "CUDA module built: $(du -h "$libdir/libggml-cuda.so" | cut -f1)"
fi
"$BIN" version | tee -a "$out/summary.txt"
"$BIN" version | grep -q '^gpu: .*NVIDIA\|^device: CUDA' || log "WARNING: chatglm version names no CUDA device"

# 3. The test suite with the GPU visible (needs Go).
if $have_go && [ -z "${GPU_CHECK_SKIP_TESTS:-}" ] && ! late; then
	log "make test with the GPU visible"
	CHATGLM_LIB_PATH="$PWD/$libdir" make test >"$out/test.log" 2>&1 && log "make test: ok" || log "make test FAILED (see test.log)"
fi

# 4. The memory-bandwidth baseline.
nvcc -O3 -arch=native -o "$out/gpu-bw" scripts/gpu-bw.cu 2>"$out/gpu-bw.log" || die "nvcc gpu-bw (see gpu-bw.log)"
"$out/gpu-bw" 4 | tee "$out/gpu-bw.txt" | tee -a "$out/summary.txt"
read_gbs=$(awk '/^read_gbs/ {print $2}' "$out/gpu-bw.txt")

# 5. Same logits on the GPU as on the CPU (q4_0, a few hundred tokens).
if ! late; then
	log "perplexity and logits, CPU against GPU (q4_0)"
	head -c 1500 README.md >"$out/ppl.txt"
	for where in cpu gpu; do
		layers=0
		[ $where = gpu ] && layers=-1
		"$BIN" perplexity -m "$q4" -f "$out/ppl.txt" -c 512 --gpu-layers $layers --flash-attn off \
			--logits-out "$work/logits-$where.f32" >"$out/ppl-$where.txt" 2>"$out/ppl-$where.log" ||
			log "perplexity on the $where FAILED (see ppl-$where.log)"
		log "$where: $(tail -1 "$out/ppl-$where.txt")"
	done
	python3 - "$work/logits-cpu.f32" "$work/logits-gpu.f32" <<-'EOF' | tee -a "$out/summary.txt"
	import sys
	try:
	    import numpy as np
	except ImportError:
	    print("numpy missing: logits not compared"); sys.exit(0)
	a = np.fromfile(sys.argv[1], dtype=np.float32).reshape(-1, 65024)
	b = np.fromfile(sys.argv[2], dtype=np.float32).reshape(-1, 65024)
	d = np.abs(a - b)
	agree = (a.argmax(1) == b.argmax(1)).mean()
	print(f"logits {a.shape[0]} x {a.shape[1]}: max |cpu-gpu| {d.max():.4g}, mean {d.mean():.4g}, "
	      f"logit spread (std) {a.std():.4g}, argmax agreement {agree:.3f}")
	EOF
fi

# 6. A chat reply through the whole stack on the GPU.
if ! late; then
	log "chatglm run on the GPU (q4_0, greedy, 32 tokens)"
	"$BIN" run -m "$q4" -p "你好" -n 32 --temperature 0 --json >"$out/run.json" 2>"$out/run.log" &&
		head -c 600 "$out/run.json" | tee -a "$out/summary.txt" && echo | tee -a "$out/summary.txt" ||
		log "chatglm run FAILED (see run.log)"
fi

# 7. pp512 / tg128 with every layer on the GPU, flash attention on and off.
log "bench f16 and q4_0, all layers on the GPU"
"$BIN" bench -m "$f16,$q4" -p 512 -n 128 -r "$reps" --gpu-layers -1 --flash-attn on,off \
	-o json >"$out/bench.json" 2>"$out/bench.log" || die "bench (see bench.log)"
python3 - "$out/bench.json" "$read_gbs" <<-'EOF' | tee "$out/summary.md" | tee -a "$out/summary.txt"
import json, sys
recs = json.load(open(sys.argv[1]))
bw = float(sys.argv[2] or 0)
spec = 4800.0  # H200 datasheet HBM3e bandwidth, GB/s
print(f"GPU read bandwidth measured in this run: {bw:.0f} GB/s (datasheet {spec:.0f})\n")
print("| model | fa | test | t/s | load s | GB/token | x measured bw | x datasheet |")
print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
for r in recs:
    kind = r["model_type"].split()[-1]
    test = f"pp{r['n_prompt']}" if r["n_gen"] == 0 else f"tg{r['n_gen']}"
    ts = f"{r['avg_ts']:.1f} ± {r['stddev_ts']:.1f}"
    frac = frac_spec = ""
    if r["n_gen"] and r.get("bytes_per_token"):
        gbs = r["avg_ts"] * r["bytes_per_token"] / 1e9
        frac = f"{gbs / bw:.2f}" if bw else ""
        frac_spec = f"{gbs / spec:.2f}"
    print(f"| {kind} | { {1: 'on', 0: 'off'}.get(r['flash_attn'], 'auto') } | {test} | {ts} | "
          f"{r['load_ns'] / 1e9:.1f} | {r.get('bytes_per_token', 0) / 1e9:.2f} | {frac} | {frac_spec} |")
EOF
log "done"
