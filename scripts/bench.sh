#!/usr/bin/env bash
# The benchmark suite (`make bench`, which builds bin/chatglm first). Writes
# one table, bench-results/<date>/bench.md and bench.json (the raw outputs of
# every step beside them, in raw/), and prints the markdown.
#
# On a synthetic full-size ChatGLM3-6B (real shapes, random weights):
#   - f16, q8_0, q4_0: load time, pp512 and tg tokens/s at 1 and 2 threads
#     (`chatglm bench`, llama-bench's method), peak RSS, and tg x bytes per
#     token against the memory bandwidth measured in the same run;
#   - generation at 2 threads under other load settings: q4_0 with
#     transparent huge pages, mmap and no mmap; q8_0 without mmap (what the
#     load settings cost or gain);
#   - conversion seconds and peak RSS against cp (scripts/bench-convert.sh);
#   - multi-turn chat TTFT, turn 10 / turn 1 (tools/benchttft, q4_0);
#   - download throughput against curl (scripts/bench-download.sh);
#   - server aggregate tokens/s, --parallel 4 against --parallel 1
#     (scripts/bench-server.sh);
#   - soak: serve --parallel 4 for SOAK_DURATION (default 5m) with 8
#     streaming clients, without and then with hostile clients: their p99
#     latency, failures, the server's RSS growth and liveness
#     (scripts/bench-soak.sh, whose header lists its SOAK_* variables);
#   - three replicas behind HAProxy: multi-turn TTFT with session affinity
#     against round robin, aggregate tokens/s against one replica
#     (scripts/bench-replicas.sh, BENCH_REPLICAS_* variables).
#
# Cached outside the repository in $CHATGLM_BENCH_DIR (default
# ~/.cache/chatglm-bench): the 12.5 GB checkpoint, and the GGUFs
# chatglm3-6b-{f16,q8_0,q4_0}.gguf (made once with chatglm convert and
# chatglm quantize; delete them to remake). Measurements are always redone.
#
# Sizes (2 shared cores: f16 generation is about 1 token/s, f16 pp512 about
# a minute per run), chosen so the suite takes well under an hour:
#   BENCH_THREADS   thread counts                    (default 1,2)
#   BENCH_PP        prompt length                    (512)
#   BENCH_TG_F16    tokens generated, f16            (16)
#   BENCH_TG_Q8_0   tokens generated, q8_0           (32)
#   BENCH_TG_Q4_0   tokens generated, q4_0           (128)
#   BENCH_REPS      repetitions per test             (2; plus one warm-up run)
#   BENCH_REPS_F16  repetitions of the f16 tests     (1)
#   BENCH_SKIP      steps to skip, comma-separated:
#                   convert,f16,q8_0,q4_0,variants,kernel,ttft,download,server,soak,
#                   replicas
#   BENCH_OUT       output folder                    (bench-results/<date>)
# The tg length is in the table (tg16, tg32, tg128); tokens/s of a short
# generation is slightly higher than tg128's (shorter KV to attend over),
# which is negligible next to the weights at these lengths.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${CHATGLM_BIN:-bin/chatglm}
export CHATGLM_BENCH_DIR=${CHATGLM_BENCH_DIR:-$HOME/.cache/chatglm-bench}
BENCH_DIR=$CHATGLM_BENCH_DIR
SRC=$BENCH_DIR/chatglm3-6b-synth
THREADS=${BENCH_THREADS:-1,2}
PP=${BENCH_PP:-512}
REPS=${BENCH_REPS:-2}
REPS_F16=${BENCH_REPS_F16:-1}
SKIP=,${BENCH_SKIP:-},
OUT=${BENCH_OUT:-bench-results/$(date -u +%Y%m%d-%H%M%S)}
RAW=$OUT/raw

skip() { [[ $SKIP == *",$1,"* ]]; }
log() { printf 'bench: %s\n' "$*" >&2; }
tg_for() {
	case $1 in
	f16) echo "${BENCH_TG_F16:-16}" ;;
	q8_0) echo "${BENCH_TG_Q8_0:-32}" ;;
	*) echo "${BENCH_TG_Q4_0:-128}" ;;
	esac
}

[ -x "$BIN" ] || { log "$BIN missing (run make build)"; exit 1; }
[ -x /usr/bin/time ] || { log "/usr/bin/time missing (apt-get install time)"; exit 1; }
eval "$(make -s env)"
mkdir -p "$RAW" "$BENCH_DIR"

if [ -f "$RAW/info.txt" ]; then
	# BENCH_OUT names an earlier run: note the partial re-run, keep the rest.
	echo "re-run $(date -u +%Y-%m-%dT%H:%M:%SZ): skipped ${BENCH_SKIP:-nothing}, load average $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RAW/info.txt"
else
	{
		echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
		echo "commit: $(git describe --always --dirty 2>/dev/null || echo unknown)"
		echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
		echo "memory: $(free -g | awk '/^Mem:/ {print $2}') GiB"
		echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
		echo "llama.cpp: $("$BIN" version | sed -n 's/^llama.cpp //p')"
		echo "ggml CPU features: $("$BIN" version | sed -n 's/^system: CPU : \(.*REPACK = 1\).*/\1/p')"
	} >"$RAW/info.txt"
fi
log "results in $OUT; cache in $BENCH_DIR (load average $(cut -d' ' -f1 /proc/loadavg))"

# The model steps need the synthetic checkpoint and its GGUFs; the kernel,
# download, server and soak steps do not (a run of those alone makes none).
models=0
for s in f16 q8_0 q4_0 variants ttft; do skip "$s" || models=1; done

# The synthetic checkpoint (12.5 GB, made once).
[ "$models" = 1 ] && go run ./tools/synth -o "$SRC" >/dev/null

# Conversion against cp. Run before the GGUFs fill the page cache.
if ! skip convert; then
	log "conversion vs cp (scripts/bench-convert.sh)"
	CHATGLM_BIN=$BIN scripts/bench-convert.sh | tee "$RAW/convert.txt" >&2 || log "bench-convert failed"
fi

# The GGUFs (made once).
F16=$BENCH_DIR/chatglm3-6b-f16.gguf
if [ "$models" = 1 ] && [ ! -f "$F16" ]; then
	log "converting the checkpoint to $F16 (once)"
	"$BIN" convert "$SRC" -o "$F16" --type f16 >&2
fi
for q in q8_0 q4_0; do
	f=$BENCH_DIR/chatglm3-6b-$q.gguf
	if [ "$models" = 1 ] && [ ! -f "$f" ]; then
		log "quantizing to $f (once)"
		"$BIN" quantize "$F16" "$f" "$q" >&2
	fi
done

# Model speed: each type in its own process, so GNU time's peak RSS is that
# model's. Generation tests also measure the memory bandwidth (per thread
# count) and report tg x bytes-per-token as a fraction of it.
for typ in f16 q8_0 q4_0; do
	skip "$typ" && continue
	model=$BENCH_DIR/chatglm3-6b-$typ.gguf
	reps=$REPS
	[ "$typ" = f16 ] && reps=$REPS_F16
	log "chatglm bench $typ: pp$PP, tg$(tg_for "$typ"), threads $THREADS, $reps repetition(s)"
	/usr/bin/time -v -o "$RAW/bench-$typ.time" \
		"$BIN" bench -m "$model" -p "$PP" -n "$(tg_for "$typ")" -t "$THREADS" -r "$reps" --mem-bw --json \
		>"$RAW/bench-$typ.json"
done

# What the load settings do to q4_0 generation at 2 threads (the target
# figure): mmap (llama-bench's default) against reading the file into memory,
# both with transparent huge pages for the buffers ggml allocates (--hugepages;
# ggml's repacked q4_0 weights live in such a buffer, so they get huge pages
# with mmap too).
if ! skip variants; then
	for mm in 1 0; do
		log "q4_0 tg$(tg_for q4_0) at 2 threads with transparent huge pages, mmap $mm"
		/usr/bin/time -v -o "$RAW/bench-q4_0-thp-mmap$mm.time" \
			"$BIN" bench -m "$BENCH_DIR/chatglm3-6b-q4_0.gguf" -p 0 -n "$(tg_for q4_0)" -t 2 -r "$REPS" --mmap "$mm" --hugepages --mem-bw --json \
			>"$RAW/bench-q4_0-thp-mmap$mm.json"
	done
	# q8_0 has no repacked layout: with mmap its weights are read from the
	# page cache, without it from the process's own memory.
	log "q8_0 tg$(tg_for q8_0) at 2 threads, mmap 0"
	/usr/bin/time -v -o "$RAW/bench-q8_0-mmap0.time" \
		"$BIN" bench -m "$BENCH_DIR/chatglm3-6b-q8_0.gguf" -p 0 -n "$(tg_for q8_0)" -t 2 -r "$REPS" --mmap 0 --mem-bw --json \
		>"$RAW/bench-q8_0-mmap0.json"
fi

# Multi-turn TTFT through the chat package and the engine (q4_0, 2 threads).
# The q4_0 matrix-vector kernel on its own (internal/measure/kernelbench): weights in
# cache, and a 302 MB matrix streamed from memory. Its rate from memory is
# the ceiling of q4_0 generation with this llama.cpp, below the bandwidth.
if ! skip kernel; then
	log "q4_0 mat-vec kernel alone, in cache and from memory"
	go run ./tools/kbench -type q4_0 -threads "$THREADS" -reps 5 >"$RAW/kernel.json"
fi

if ! skip ttft; then
	log "multi-turn TTFT (10 turns, q4_0)"
	go run ./tools/benchttft -m "$BENCH_DIR/chatglm3-6b-q4_0.gguf" -turns 10 -words 40 -reply 16 -ctx 4096 \
		>"$RAW/ttft.json" 2> >(grep '^benchttft:' >&2) || log "benchttft failed"
fi

if ! skip download; then
	log "download vs curl (scripts/bench-download.sh)"
	CHATGLM_BIN=$BIN scripts/bench-download.sh >"$RAW/download.txt" || log "bench-download failed"
fi

if ! skip server; then
	log "server load (scripts/bench-server.sh)"
	BIN=$BIN scripts/bench-server.sh >"$RAW/server.txt" || log "bench-server reported a miss or failed (see $RAW/server.txt)"
fi

if ! skip soak; then
	log "soak: well-behaved and hostile clients, ${SOAK_DURATION:-5m} per run (scripts/bench-soak.sh)"
	BIN=$BIN scripts/bench-soak.sh >"$RAW/soak.txt" || log "bench-soak reported a miss or failed (see $RAW/soak.txt)"
fi

if ! skip replicas; then
	log "replicas behind HAProxy (scripts/bench-replicas.sh)"
	BIN=$BIN scripts/bench-replicas.sh >"$RAW/replicas.txt" || log "bench-replicas failed (see $RAW/replicas.txt)"
fi

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RAW/info.txt"
go run ./tools/benchreport -dir "$OUT"
log "wrote $OUT/bench.md and $OUT/bench.json"
