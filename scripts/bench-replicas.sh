#!/usr/bin/env bash
# Replicas behind a load balancer (make bench; not a unit test): three
# `chatglm serve` replicas of one model behind HAProxy (Debian's haproxy),
# on this machine, so the replicas share its cores.
#
#   1. Multi-turn time to first token: $BENCH_REPLICAS_CONVS conversations
#      of $BENCH_REPLICAS_TURNS turns at once, once with HAProxy hashing the
#      X-Session-Id header (each conversation stays on the replica that holds
#      its KV prefix) and once round robin (each turn lands on the next
#      replica), reported as the mean TTFT of turns 2..N and the share of
#      prompt tokens served from a cache (tools/benchreplicas).
#   2. Aggregate tokens/s: the same load (tools/loadgen) against one
#      replica directly and against the three behind HAProxy.
#
# The model is $BENCH_REPLICAS_MODEL, or a random ChatGLM3 with the real
# tokenizer (hidden $BENCH_REPLICAS_HIDDEN, default 512, 4 layers), as in
# scripts/bench-server.sh. Each replica gets --threads $BENCH_REPLICAS_THREADS
# (default 1: three replicas on two cores are already oversubscribed;
# OpenMP threads that outnumber the cores spin against each other) and
# --parallel $BENCH_REPLICAS_PARALLEL (4). Loopback only. Prints the
# comparison and one JSON line last.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-bin/chatglm}
CONVS=${BENCH_REPLICAS_CONVS:-6}
TURNS=${BENCH_REPLICAS_TURNS:-10}
THREADS=${BENCH_REPLICAS_THREADS:-1}
PARALLEL=${BENCH_REPLICAS_PARALLEL:-4}
HIDDEN=${BENCH_REPLICAS_HIDDEN:-512}
CLIENTS=${BENCH_REPLICAS_CLIENTS:-12}
REQUESTS=${BENCH_REPLICAS_REQUESTS:-120}
command -v haproxy >/dev/null || { echo "bench-replicas: haproxy is not installed (apt-get install haproxy)" >&2; exit 1; }
[ -x "$BIN" ] || make build

work=$(mktemp -d "${TMPDIR:-/tmp}/chatglm-bench-replicas.XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

CGO_ENABLED=0 go build -o "$work/loadgen" ./tools/loadgen
CGO_ENABLED=0 go build -o "$work/benchreplicas" ./tools/benchreplicas
model=${BENCH_REPLICAS_MODEL:-}
if [ -z "$model" ]; then
	model="$work/random-h$HIDDEN.gguf"
	"$work/loadgen" -make-model "$model" -hidden "$HIDDEN" -layers 4
	desc="random ChatGLM3 (hidden $HIDDEN, 4 layers, f16)"
else
	desc=$model
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

addrs=()
for i in 0 1 2; do
	log="$work/r$i.log"
	"$BIN" serve -m "$model" --host 127.0.0.1 --port 0 --parallel "$PARALLEL" --threads "$THREADS" \
		--ctx-size $((2048 * PARALLEL)) --queue -1 --log-level warn 2>"$log" &
	pids+=($!)
	addr=
	for _ in $(seq 1 600); do
		addr=$(sed -n 's|^chatglm: listening on http://\([^ ]*\).*|\1|p' "$log")
		if [ -n "$addr" ] && curl -fs "http://$addr/health/ready" >/dev/null 2>&1; then break; fi
		sleep 0.1
	done
	curl -fs "http://$addr/health/ready" >/dev/null || { cat "$log" >&2; echo "bench-replicas: replica $i not ready" >&2; exit 1; }
	addrs+=("$addr")
done

# start_haproxy BALANCE: HAProxy in front of the three, with BALANCE's
# algorithm; sets front.
haproxy_pid=
start_haproxy() {
	[ -n "$haproxy_pid" ] && { kill "$haproxy_pid"; wait "$haproxy_pid" 2>/dev/null || true; }
	local port cfg="$work/haproxy.cfg"
	port=$(free_port)
	{
		printf 'defaults\n    mode http\n    timeout connect 1s\n    timeout client 10m\n    timeout server 10m\n'
		printf 'frontend chat\n    bind 127.0.0.1:%s\n    default_backend chatglm\n' "$port"
		printf 'backend chatglm\n    %s\n    option httpchk GET /health/ready\n    default-server inter 1s fall 2 rise 1\n' "$1"
		for i in 0 1 2; do printf '    server r%d %s check\n' "$i" "${addrs[$i]}"; done
	} >"$cfg"
	haproxy -db -f "$cfg" >"$work/haproxy.log" 2>&1 &
	haproxy_pid=$!
	pids+=("$haproxy_pid")
	front=http://127.0.0.1:$port
	for _ in $(seq 1 100); do curl -fs "$front/health/ready" >/dev/null 2>&1 && return; sleep 0.1; done
	cat "$work/haproxy.log" >&2
	echo "bench-replicas: haproxy not answering" >&2
	exit 1
}

echo "bench-replicas: model $desc; 3 replicas x --parallel $PARALLEL --threads $THREADS on $(nproc) cores"
start_haproxy "balance roundrobin"
"$work/benchreplicas" -url "$front" -conversations "$CONVS" -turns "$TURNS" -label roundrobin >"$work/rr.json"
cat "$work/rr.json"
start_haproxy "balance hdr(X-Session-Id)
    hash-type consistent"
"$work/benchreplicas" -url "$front" -conversations "$CONVS" -turns "$TURNS" -session -label affinity >"$work/aff.json"
cat "$work/aff.json"

# Aggregate tokens/s: one replica, then the three (round robin).
"$work/loadgen" -url "http://${addrs[0]}" -clients "$CLIENTS" -requests "$REQUESTS" -max-tokens 32 -label "1 replica" >"$work/one.json"
cat "$work/one.json"
start_haproxy "balance roundrobin"
"$work/loadgen" -url "$front" -clients "$CLIENTS" -requests "$REQUESTS" -max-tokens 32 -label "3 replicas" >"$work/three.json"
cat "$work/three.json"
"$work/benchreplicas" -compare -model "$desc" "$work/aff.json" "$work/rr.json" "$work/one.json" "$work/three.json"
