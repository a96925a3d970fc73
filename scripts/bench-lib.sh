# Shell pieces the server benchmarks share (sourced by scripts/bench-server.sh
# and scripts/bench-soak.sh; not run on its own). They use $BIN (the chatglm
# binary) and set server_pid and url.

# tiny_model LOADGEN OUT HIDDEN LAYERS: writes a random ChatGLM3 GGUF with
# the real tokenizer to OUT (loadgen -make-model) and prints its description.
tiny_model() {
	# (set -e does not reach into the $(...) this is called from.)
	"$1" -make-model "$2" -hidden "$3" -layers "$4" || return 1
	echo "random ChatGLM3 (hidden $3, $4 layers, real 65024-token vocabulary, f16; $(du -h "$2" | cut -f1))"
}

# serve_start LOG ARGS...: starts `$BIN serve ARGS` in the background, its
# stderr in LOG, under `ulimit -v $SERVE_ULIMIT_KB` when that is set; sets
# server_pid, and url once /health answers 200. A server that exits or is not
# healthy within a minute ends the script.
serve_start() {
	local log=$1
	shift
	: >"$log" # before the background shell opens it, so the loop can read it
	(
		if [ -n "${SERVE_ULIMIT_KB:-}" ]; then ulimit -v "$SERVE_ULIMIT_KB"; fi
		exec "$BIN" serve "$@"
	) 2>"$log" &
	server_pid=$!
	url=
	for _ in $(seq 1 600); do
		url=$(sed -n 's/^chatglm: listening on \(http:[^ ]*\).*/\1/p' "$log")
		if [ -n "$url" ] && curl -fs "$url/health" >/dev/null 2>&1; then return 0; fi
		if ! kill -0 "$server_pid" 2>/dev/null; then cat "$log" >&2; echo "$(basename "$0"): serve exited" >&2; exit 1; fi
		sleep 0.1
	done
	cat "$log" >&2
	echo "$(basename "$0"): server not healthy" >&2
	exit 1
}
