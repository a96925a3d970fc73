#!/usr/bin/env bash
# Download benchmark: `chatglm pull` against curl, same bytes, same local server.
#
# tools/benchhub serves N generated files (default 3 x 1 GiB, made once in
# $BENCH_CACHE) as a Hub repo on 127.0.0.1: the API, resolve redirects and a
# CDN with Range support. curl fetches the CDN URLs of all files in parallel;
# `chatglm pull --all` fetches the same repo through the Hub API (listing,
# ranged parallel GETs, sha256 verification, store install). Each tool runs
# RUNS times, alternating; the best time of each is compared.
#
# Env: CHATGLM_BIN (default bin/chatglm), BENCH_FILES (3), BENCH_FILE_MB (1024),
#      BENCH_RUNS (3), BENCH_CACHE (~/.cache/chatglm-bench/download), BENCH_CONNECTIONS (8).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${CHATGLM_BIN:-bin/chatglm}
FILES=${BENCH_FILES:-3}
MB=${BENCH_FILE_MB:-1024}
RUNS=${BENCH_RUNS:-3}
CONN=${BENCH_CONNECTIONS:-8}
CACHE=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chatglm-bench/download}
GO=${GO:-go}

if ! "$BIN" pull --help >/dev/null 2>&1; then
	echo "bench-download: $BIN has no pull command (run make build, or set CHATGLM_BIN)" >&2
	exit 1
fi
command -v curl >/dev/null || { echo "bench-download: curl not found" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/chatglm-bench-dl.XXXXXX")
server_pid=
cleanup() {
	[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

"$GO" build -o "$work/benchhub" ./tools/benchhub
mkfifo "$work/stdin"
echo "bench-download: preparing $FILES x $MB MiB in $CACHE (first run generates them)" >&2
"$work/benchhub" -cache "$CACHE" -files "$FILES" -size-mb "$MB" <"$work/stdin" >"$work/info" &
server_pid=$!
exec 9>"$work/stdin" # keeps the server's stdin open
for _ in $(seq 1 600); do
	grep -q '^ready' "$work/info" 2>/dev/null && break
	kill -0 "$server_pid" 2>/dev/null || { echo "bench-download: server died" >&2; exit 1; }
	sleep 0.5
done
grep -q '^ready' "$work/info" || { echo "bench-download: server not ready" >&2; exit 1; }
endpoint=$(awk '/^endpoint/ {print $2}' "$work/info")
total=$(( FILES * MB * 1024 * 1024 ))

# Warm the page cache for the source files so both tools see the same server.
cat "$CACHE"/*."${MB}MiB" >/dev/null

now() { date +%s.%N; }

run_curl() {
	rm -rf "$work/curl" && mkdir -p "$work/curl"
	local args=()
	while read -r _ url name; do
		args+=(-o "$work/curl/$name" "$url")
	done < <(grep '^url' "$work/info")
	local t0 t1
	t0=$(now)
	curl -sS --no-progress-meter --fail --parallel --parallel-max "$FILES" "${args[@]}"
	t1=$(now)
	echo "$t1 - $t0" | bc -l
}

run_pull() {
	rm -rf "$work/store"
	local t0 t1
	t0=$(now)
	"$BIN" pull bench/files --all --quiet --endpoint "$endpoint" --models-dir "$work/store" --connections "$CONN" >/dev/null
	t1=$(now)
	echo "$t1 - $t0" | bc -l
}

best_curl=
best_pull=
for r in $(seq 1 "$RUNS"); do
	c=$(run_curl)
	rm -rf "$work/curl"
	p=$(run_pull)
	rm -rf "$work/store"
	printf 'bench-download: run %d: curl %.2fs, chatglm pull %.2fs\n' "$r" "$c" "$p" >&2
	if [ -z "$best_curl" ] || (( $(echo "$c < $best_curl" | bc -l) )); then best_curl=$c; fi
	if [ -z "$best_pull" ] || (( $(echo "$p < $best_pull" | bc -l) )); then best_pull=$p; fi
done

mbps() { echo "$total / $1 / 1000000" | bc -l; }
curl_mbps=$(mbps "$best_curl")
pull_mbps=$(mbps "$best_pull")
ratio=$(echo "$pull_mbps / $curl_mbps" | bc -l)
printf 'download (%d x %d MiB = %.2f GB, best of %d):\n' "$FILES" "$MB" "$(echo "$total/1000000000" | bc -l)" "$RUNS"
printf '  curl          %7.2f s  %8.1f MB/s\n' "$best_curl" "$curl_mbps"
printf '  chatglm pull  %7.2f s  %8.1f MB/s  (sha256-verified, %d connections)\n' "$best_pull" "$pull_mbps" "$CONN"
printf '  ratio pull/curl %.2f (target >= 0.90)\n' "$ratio"
