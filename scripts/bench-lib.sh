# Shell pieces the server benchmarks share (sourced by scripts/bench-server.sh
# and scripts/bench-soak.sh; not run on its own). They use $BIN (the chatglm
# binary) and set work, model, desc, server_pid and url.

# bench_setup MODEL HIDDEN LAYERS: makes the folder $work (removed at exit,
# after stopping $server_pid), builds $work/loadgen (plain Go, no cgo), and
# sets model and desc: MODEL (a GGUF file or a store name) when it is not
# empty, else a random ChatGLM3 GGUF with the real tokenizer and HIDDEN x
# LAYERS (loadgen -make-model).
bench_setup() {
	work=$(mktemp -d)
	server_pid=
	trap bench_cleanup EXIT
	CGO_ENABLED=0 go build -o "$work/loadgen" ./tools/loadgen
	model=$1
	desc=$1
	if [ -z "$model" ]; then
		model="$work/random-h$2-l$3.gguf"
		"$work/loadgen" -make-model "$model" -hidden "$2" -layers "$3"
		desc="random ChatGLM3 (hidden $2, $3 layers, real 65024-token vocabulary, f16; $(du -h "$model" | cut -f1))"
	fi
}

bench_cleanup() {
	if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
	rm -rf "$work"
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
