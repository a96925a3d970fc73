#!/usr/bin/env bash
# Conversion benchmark: converts a full-size synthetic ChatGLM3-6B checkpoint
# (real shapes and 7-shard layout, random f16 values, ~12.5 GB, generated once
# and cached outside the repo) and compares the time with a plain cp of the
# same shard files on the same disk.
#
#   scripts/bench-convert.sh            (expects bin/chatglm; `make build` first)
#
# CHATGLM_BENCH_DIR chooses the cache folder (default ~/.cache/chatglm-bench);
# the temporary copy and the GGUF are written there too, then removed.
# Prints seconds, peak RSS and the ratio of convert throughput to cp throughput
# (the issue asks for peak RSS < 1 GiB and ratio >= 0.5).
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH_DIR=${CHATGLM_BENCH_DIR:-$HOME/.cache/chatglm-bench}
SRC=$BENCH_DIR/chatglm3-6b-synth
BIN=${CHATGLM_BIN:-bin/chatglm}
mkdir -p "$BENCH_DIR"

[ -x "$BIN" ] || { echo "bench-convert: $BIN missing (run make build)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench-convert: /usr/bin/time missing (apt-get install time)" >&2; exit 1; }

go run ./tools/synth -o "$SRC" >/dev/null

WORK=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
BYTES=$(cat "$SRC"/*.safetensors | wc -c)

# Both runs start from the same page-cache state: whatever of the 12.5 GB the
# machine's RAM holds after the previous step. Run the script twice to see
# the warm-cache numbers.
sync
t0=$(date +%s.%N)
cp "$SRC"/*.safetensors "$WORK"/
sync
t1=$(date +%s.%N)
rm -f "$WORK"/*.safetensors
CP_S=$(echo "$t1 - $t0" | bc -l)

sync
/usr/bin/time -v -o "$WORK/time.txt" "$BIN" convert "$SRC" -o "$WORK/model.gguf" --type f16 >"$WORK/convert.out" 2>"$WORK/convert.err"
CONV_S=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$WORK/time.txt")
RSS_KB=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")
OUT_BYTES=$(stat -c %s "$WORK/model.gguf")

CP_TP=$(echo "$BYTES / $CP_S / 1000000" | bc -l)
CONV_TP=$(echo "$BYTES / $CONV_S / 1000000" | bc -l)
printf 'input:        %d bytes in %s\n' "$BYTES" "$SRC"
printf 'cp (+sync):   %.1f s  (%.0f MB/s)\n' "$CP_S" "$CP_TP"
printf 'convert f16:  %.1f s  (%.0f MB/s), output %d bytes (includes fsync)\n' "$CONV_S" "$CONV_TP" "$OUT_BYTES"
printf 'peak RSS:     %.0f MiB\n' "$(echo "$RSS_KB / 1024" | bc -l)"
printf 'ratio:        %.2f (convert throughput / cp throughput)\n' "$(echo "$CONV_TP / $CP_TP" | bc -l)"
