#!/usr/bin/env bash
# Builds deploy/container/Containerfile with podman and runs the image: the
# model server answers /health/ready, a chat completion, and SIGTERM ends it
# with status 0. Not part of `make test` (a full llama.cpp build in a
# container takes minutes).
#
# Builds use chroot isolation (no OCI runtime needed). The image runs with
# `podman run` where the machine allows it; in a sandbox that forbids
# containers to set their resource limits (crun/runc: "setrlimit
# RLIMIT_NPROC: operation not permitted") the image's own root filesystem
# is mounted and its entrypoint run in it with chroot, as its user: the
# image's contents are tested, not podman's isolation.
#
# With no registry reachable, the base images are made here: Debian 12
# (minbase) from the apt mirror with debootstrap, imported into podman, and a
# build image with gcc, g++, make, git and this machine's Go. The host's Go
# module and build caches are mounted into the build (CPU_ARCH=native, the
# host's flags, so llama.cpp's objects come from the cache).
# Needs: podman, debootstrap (apt-get install podman debootstrap), root.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v podman >/dev/null || { echo "container test: podman is not installed" >&2; exit 1; }
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
work=$(mktemp -d)
cid=
cleanup() {
	[ -n "$cid" ] && podman rm -f "$cid" >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

if ! podman image exists localhost/chatglm-debian:bookworm; then
	echo "container test: debootstrap Debian 12 from $MIRROR" >&2
	debootstrap --variant=minbase --include=ca-certificates,libgomp1 bookworm "$work/rootfs" "$MIRROR" >&2
	tar -C "$work/rootfs" -c . | podman import - localhost/chatglm-debian:bookworm >/dev/null
fi
if ! podman image exists localhost/chatglm-gobuild:bookworm; then
	mkdir -p "$work/go-ctx"
	cp -a "$(go env GOROOT)" "$work/go-ctx/go"
	# This machine's CA bundle: it may hold the CA of a proxy in front of
	# the Go module proxy.
	cp /etc/ssl/certs/ca-certificates.crt "$work/go-ctx/"
	cat >"$work/go-ctx/Containerfile" <<'CF'
FROM localhost/chatglm-debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends gcc g++ make git && rm -rf /var/lib/apt/lists/*
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY go /usr/local/go
ENV PATH=/usr/local/go/bin:$PATH GOPATH=/go GOCACHE=/root/.cache/go-build
CF
	podman build --isolation chroot --network host -t localhost/chatglm-gobuild:bookworm "$work/go-ctx" >&2
fi

echo "container test: podman build -f deploy/container/Containerfile" >&2
podman build --isolation chroot --network host -f deploy/container/Containerfile \
	--build-arg GO_IMAGE=localhost/chatglm-gobuild:bookworm \
	--build-arg RUNTIME_IMAGE=localhost/chatglm-debian:bookworm \
	--build-arg CPU_ARCH=native \
	-v "$(go env GOMODCACHE):/go/pkg/mod" -v "$(go env GOCACHE):/root/.cache/go-build" \
	-t localhost/chatglm:cpu-test . >&2

# A tiny random ChatGLM3 model with the real tokenizer.
mkdir -p "$work/models"
CGO_ENABLED=0 go run ./tools/loadgen -make-model "$work/models/tiny.gguf" -hidden 64 -layers 2 >&2
chmod -R a+rX "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
args=(serve -m /models/tiny.gguf --host 127.0.0.1 --port "$port" --drain 1s)
image=localhost/chatglm:cpu-test
mnt= pid=
if cid=$(podman run -d --network host -v "$work/models:/models:ro" "$image" "${args[@]}" 2>"$work/run.err") &&
	sleep 2 && [ "$(podman inspect -f '{{.State.Running}}' "$cid")" = true ]; then
	how="podman run"
	logs() { podman logs "$cid" 2>&1; }
	stop() { podman stop -t 30 "$cid" >/dev/null; rc=$(podman inspect -f '{{.State.ExitCode}}' "$cid"); }
else
	echo "container test: podman run failed here ($(tr '\n' ' ' <"$work/run.err")$( [ -n "${cid:-}" ] && podman logs "$cid" 2>&1 | tail -1)); running the image's entrypoint chrooted into its root filesystem" >&2
	[ -n "${cid:-}" ] && podman rm -f "$cid" >/dev/null 2>&1
	cid=
	how="chroot into the image"
	mnt=$(podman image mount "$image")
	mount --bind "$work/models" "$mnt/tmp"
	entry=$(podman image inspect -f '{{index .Config.Entrypoint 0}}' "$image")
	user=$(podman image inspect -f '{{.Config.User}}' "$image")
	mapfile -t env < <(podman image inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$image" | sed '/^$/d')
	chroot --userspec="$user" "$mnt" /usr/bin/env -i "${env[@]}" "$entry" serve -m /tmp/tiny.gguf --host 127.0.0.1 --port "$port" --drain 1s >"$work/serve.log" 2>&1 &
	pid=$!
	logs() { cat "$work/serve.log"; }
	stop() { kill -TERM "$pid"; rc=0; wait "$pid" || rc=$?; }
	trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; umount "$mnt/tmp" 2>/dev/null; podman image unmount "$image" >/dev/null 2>&1; cleanup' EXIT
fi
url=http://127.0.0.1:$port
for _ in $(seq 1 300); do
	curl -fs "$url/health/ready" >/dev/null 2>&1 && break
	sleep 0.2
done
curl -fs "$url/health/ready" >/dev/null || { logs >&2; echo "container test: not ready" >&2; exit 1; }
curl -fs "$url/v1/chat/completions" -H 'Content-Type: application/json' \
	-d '{"messages":[{"role":"user","content":"你好"}],"max_tokens":8}' | grep -q '"finish_reason"' ||
	{ logs >&2; echo "container test: no chat completion" >&2; exit 1; }
stop # sets rc
logs | tail -3 >&2
[ "$rc" = 0 ] || { echo "container test: exit status $rc after SIGTERM" >&2; exit 1; }
echo "container test: image $image ($(podman image inspect -f '{{.Size}}' "$image") bytes) built; run with $how: ready, answered a chat completion, stopped with status 0 on SIGTERM"
