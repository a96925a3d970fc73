#!/usr/bin/env bash
# Installs what `make cuda` needs on Debian 12: cmake and nvidia-cuda-toolkit
# (CUDA 11.8) from the non-free component, which this script enables.
# Elsewhere, install any CUDA toolkit >= 11.8 and cmake >= 3.18 by hand.
set -euo pipefail
if command -v nvcc >/dev/null && command -v cmake >/dev/null; then
	exit 0
fi
src=/etc/apt/sources.list.d/debian.sources
if [ -f "$src" ] && ! grep -q 'non-free' "$src"; then
	sed -i 's/^Components: main$/Components: main contrib non-free non-free-firmware/' "$src"
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends cmake nvidia-cuda-toolkit
