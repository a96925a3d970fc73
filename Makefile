# chatglm build. `make` builds bin/chatglm (and, on a machine with a CUDA
# toolkit and a visible GPU, bin/libggml-cuda.so for that GPU); `make cpu`
# builds the binary alone; `make test` runs vet and every test; `make bench`
# runs the benchmark suite; `make cuda` builds the CUDA backend whatever the
# machine has.
#
# The llama.cpp + ggml sources come from the pinned Go module
# github.com/ollama/ollama (see third_party/README.md). cgo compiles them with
# the flags below, which match what llama.cpp's own CMake build sets for a
# native CPU build: -O3 -march=native, OpenMP threads, CPU weight repacking
# and llamafile's sgemm (the latter is already on in the module). A plain
# `go build ./cmd/chatglm` works too (the headers are in third_party), but
# compiles ggml for a generic x86-64 CPU, several times slower; the binary
# says so.

GO            ?= go
LLAMA_MODULE  := github.com/ollama/ollama
# Downloads the module first on a machine that has never fetched it.
LLAMA_DIR     := $(shell $(GO) mod download $(LLAMA_MODULE) >/dev/null 2>&1; $(GO) list -m -f '{{.Dir}}' $(LLAMA_MODULE) 2>/dev/null)
# CPU target for the C/C++ parts; set e.g. CPU_ARCH=x86-64-v3 for a portable build.
CPU_ARCH      ?= native
OPT_FLAGS     := -O3 -DNDEBUG -march=$(CPU_ARCH) -fopenmp -DGGML_USE_OPENMP -DGGML_USE_CPU_REPACK
# GCC 12 reports a false -Wstringop-overflow in ggml-cpu's repack.cpp (an
# unrolled copy into a 72-byte block it cannot see the bound of); it is the
# only warning the pinned sources give, and says nothing about our code.
QUIET_FLAGS   := -Wno-stringop-overflow

export CGO_ENABLED  := 1
export CGO_CFLAGS   := $(OPT_FLAGS)
export CGO_CXXFLAGS := $(OPT_FLAGS) $(QUIET_FLAGS)
export CGO_LDFLAGS  := -fopenmp

# Pure-Go packages run under the race detector. Test binaries that link the
# binding (cgo, llama.cpp) run without it, except RACE_CGO_PKGS (the binding,
# the engine and its two adapters), which run under it as well: the first
# such run compiles llama.cpp once more for the race build (cached after).
TEST_DEPS = $(GO) list -test -f '{{.ImportPath}} {{join .Deps " "}}' ./...
CGO_PKGS  = $(shell $(TEST_DEPS) | awk '$$1 !~ /_test$$/ && $$2 !~ /^\[/ && / github.com\/ollama\/ollama\/llama\/llama.cpp\/src( |$$)/ {sub(/\.test$$/, "", $$1); print $$1}' | sort -u)
PURE_PKGS = $(filter-out $(CGO_PKGS),$(shell $(GO) list ./...))
RACE_CGO_PKGS = ./binding ./engine ./chat/backend ./server/enginebackend

BIN := bin/chatglm
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# -rdynamic exports ggml's symbols so bin/libggml-cuda.so can use them.
LDFLAGS := -X main.version=$(VERSION) -extldflags=-rdynamic

.PHONY: all cpu build cuda-auto test vet testdata bench cuda clean env mod plain fuzz

all: build cuda-auto

cpu: build

build: mod
	@echo "build: $(BIN), llama.cpp + ggml for CPU_ARCH=$(CPU_ARCH) (the first build compiles them: a few minutes)"
	@$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/chatglm
	@echo "build: done, $(BIN) ($$($(BIN) version | sed -n 's/^cpu build: //p'))"

mod:
	@test -n "$(LLAMA_DIR)" || { echo "cannot find or download $(LLAMA_MODULE)" >&2; exit 1; }

# The CUDA backend when this machine can use it: a toolkit and a visible GPU
# (a toolkit alone builds nothing: the compile takes half an hour on two
# cores for a GPU that is not there).
cuda-auto:
	@if ! command -v nvcc >/dev/null 2>&1; then \
		echo "cuda: no CUDA toolkit, so CPU only (for a GPU: third_party/cuda/install-toolkit.sh, then make cuda)"; \
	elif ! nvidia-smi -L >/dev/null 2>&1; then \
		echo "cuda: toolkit found but no GPU visible: skipped (make cuda CUDA_ARCHITECTURES=90 builds it anyway)"; \
	else \
		echo "cuda: GPU found, building bin/libggml-cuda.so for it (make cpu skips this)"; \
		$(MAKE) --no-print-directory cuda; \
	fi

vet: mod
	@echo "vet: go vet ./..."
	@$(GO) vet ./...

test: vet testdata
	@echo "test: pure-Go packages, with the race detector"
	$(GO) test -race -count=1 $(PURE_PKGS)
	@echo "test: packages that link llama.cpp"
	$(if $(strip $(CGO_PKGS)),$(GO) test -count=1 -timeout 30m $(CGO_PKGS))
	@echo "test: the binding, the engine and its adapters, with the race detector"
	$(GO) test -race -count=1 -timeout 30m $(RACE_CGO_PKGS)

# What a clean clone gives Go's own tools without this Makefile's
# environment: go build and go vet work, and the binary knows it is generic.
plain:
	@echo "plain: go build ./... and go vet ./... with no cgo flags"
	@env -u CGO_CFLAGS -u CGO_CXXFLAGS -u CGO_LDFLAGS -u CGO_CPPFLAGS $(GO) build ./...
	@env -u CGO_CFLAGS -u CGO_CXXFLAGS -u CGO_LDFLAGS -u CGO_CPPFLAGS $(GO) vet ./...
	@env -u CGO_CFLAGS -u CGO_CXXFLAGS -u CGO_LDFLAGS -u CGO_CPPFLAGS $(GO) run ./cmd/chatglm version | grep -q '^cpu build: ' \
		&& echo "plain: ok ($$(env -u CGO_CFLAGS -u CGO_CXXFLAGS -u CGO_LDFLAGS -u CGO_CPPFLAGS $(GO) run ./cmd/chatglm version | sed -n 's/^cpu build: //p'))"

# Every Go fuzz target in the repo (func FuzzXxx in any _test.go), FUZZTIME
# each (default 1m); CI runs FUZZTIME=10s. See scripts/fuzz.sh.
FUZZTIME ?= 1m
fuzz: mod
	FUZZTIME=$(FUZZTIME) GO=$(GO) ./scripts/fuzz.sh

# Fetch the tokenizer/config test files when the shared folder is absent.
testdata:
	@$(GO) run ./tools/fetchtestdata

bench: build
	./scripts/bench.sh

# CUDA backend (see third_party/cuda). CUDA_ARCHITECTURES: native when a GPU is
# visible, else 90 (H100/H200); any CMake list works, e.g. "80;90".
CUDA_ARCHITECTURES ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo native || echo 90)
cuda: build
	./third_party/cuda/build.sh "$(LLAMA_DIR)" "$(CUDA_ARCHITECTURES)" bin

# Print the cgo environment, for running go commands by hand: eval $$(make -s env)
env:
	@echo export CGO_CFLAGS=\"$(CGO_CFLAGS)\" CGO_CXXFLAGS=\"$(CGO_CXXFLAGS)\" CGO_LDFLAGS=\"$(CGO_LDFLAGS)\"

clean:
	rm -rf bin
