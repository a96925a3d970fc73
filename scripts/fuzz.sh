#!/usr/bin/env bash
# Runs every Go fuzz target in the repository (each `func FuzzXxx` in a
# _test.go file, whatever the package) for FUZZTIME each (default 1m).
# `make fuzz` runs it with the Makefile's cgo environment; CI runs a short
# pass with FUZZTIME=10s. A failing input is written by `go test` to the
# package's testdata/fuzz/FuzzXxx/ folder: commit it as a regression seed
# once the bug is fixed. Exit status: 1 if any target failed.
set -uo pipefail
cd "$(dirname "$0")/.."
FUZZTIME="${FUZZTIME:-1m}"
GO="${GO:-go}"
# Workers per target (go test's default is GOMAXPROCS).
FUZZ_PARALLEL="${FUZZ_PARALLEL:-$(nproc)}"

targets=()
while IFS= read -r file; do
	dir=$(dirname "$file")
	for name in $(grep -oE '^func Fuzz[A-Za-z0-9_]*\(' "$file" | sed -E 's/^func (Fuzz[A-Za-z0-9_]*)\(/\1/'); do
		targets+=("$dir $name")
	done
done < <(find . -name '*_test.go' -not -path './third_party/*' -not -path '*/node_modules/*' -not -path './.git/*' | sort)

if [ ${#targets[@]} -eq 0 ]; then
	echo "fuzz: no fuzz targets found" >&2
	exit 1
fi
echo "fuzz: ${#targets[@]} targets, $FUZZTIME each" >&2
failed=()
for t in "${targets[@]}"; do
	read -r dir name <<<"$t"
	echo "fuzz: $dir $name" >&2
	if ! "$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -parallel "$FUZZ_PARALLEL" "$dir"; then
		failed+=("$dir $name")
	fi
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz: ${#failed[@]} of ${#targets[@]} targets failed:" >&2
	printf '  %s\n' "${failed[@]}" >&2
	echo "fuzz: failing inputs are in each package's testdata/fuzz/<target>/" >&2
	exit 1
fi
echo "fuzz: all ${#targets[@]} targets passed" >&2
