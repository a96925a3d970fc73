#!/usr/bin/env bash
# Server load test (make bench; not a unit test): 8 concurrent clients send
# 200 chat completions to `chatglm serve --parallel 4`, then the same to
# `--parallel 1` on the same model, and the script reports zero failures,
# aggregate generated tokens/s of each, their ratio (target >= 2x) and
# p50/p99 latency, ending with one JSON line.
#
# The model is $BENCH_SERVER_MODEL (a GGUF file or a store name such as
# THUDM/chatglm3-6b); without it a random ChatGLM3 model with the real
# tokenizer is made (hidden $BENCH_SERVER_HIDDEN, default 512, with
# $BENCH_SERVER_LAYERS layers, default 4), big enough that a decode step
# costs more than the HTTP around it, small enough to run in minutes on 2
# cores. Environment: BIN (default bin/chatglm), BENCH_SERVER_CLIENTS (8),
# BENCH_SERVER_REQUESTS (200), BENCH_SERVER_MAX_TOKENS (32),
# BENCH_SERVER_PARALLEL (4), BENCH_SERVER_THREADS (0 = all cores),
# BENCH_SERVER_STRICT=1 to fail when the ratio misses 2x (failed requests
# always fail the script). Figures from a machine shared with other work
# vary; each run's line carries the load average.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-bin/chatglm}
CLIENTS=${BENCH_SERVER_CLIENTS:-8}
REQUESTS=${BENCH_SERVER_REQUESTS:-200}
MAX_TOKENS=${BENCH_SERVER_MAX_TOKENS:-32}
PARALLEL=${BENCH_SERVER_PARALLEL:-4}
THREADS=${BENCH_SERVER_THREADS:-0}
HIDDEN=${BENCH_SERVER_HIDDEN:-512}
LAYERS=${BENCH_SERVER_LAYERS:-4}

[ -x "$BIN" ] || make build
. scripts/bench-lib.sh
bench_setup "${BENCH_SERVER_MODEL:-}" "$HIDDEN" "$LAYERS"
echo "bench-server: model $desc; $CLIENTS clients, $REQUESTS requests, max_tokens $MAX_TOKENS"

# run_load P OUT: serve with --parallel P, run the load, stop with SIGTERM.
run_load() {
	local p=$1 out=$2 log="$work/serve-$1.log"
	serve_start "$log" -m "$model" --port 0 --parallel "$p" --threads "$THREADS" --queue 64 \
		--ctx-size 1024 --log-level warn
	"$work/loadgen" -url "$url" -clients "$CLIENTS" -requests "$REQUESTS" -max-tokens "$MAX_TOKENS" \
		-label "parallel=$p" >"$out"
	kill -TERM "$server_pid"
	local rc=0
	wait "$server_pid" || rc=$?
	server_pid=
	if [ "$rc" -ne 0 ]; then cat "$log" >&2; echo "bench-server: serve exited with $rc after SIGTERM" >&2; exit 1; fi
	cat "$out"
}

run_load "$PARALLEL" "$work/batched.json"
run_load 1 "$work/base.json"
strict=()
[ "${BENCH_SERVER_STRICT:-0}" = 1 ] && strict=(-strict)
"$work/loadgen" -compare "${strict[@]}" -model "$desc" "$work/base.json" "$work/batched.json"
