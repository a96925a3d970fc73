# chatglm build. `make` builds bin/chatglm, `make test` runs vet and every
# test, `make bench` runs the benchmark suite, `make cuda` builds the ggml
# CUDA backend as bin/libggml-cuda.so.
#
# The llama.cpp + ggml sources come from the pinned Go module
# github.com/ollama/ollama (see third_party/README.md). cgo compiles them with
# the flags below, which match what llama.cpp's own CMake build sets for a
# native CPU build: -O3 -march=native, OpenMP threads, CPU weight repacking
# and llamafile's sgemm (the latter is already on in the module).

GO            ?= go
LLAMA_MODULE  := github.com/ollama/ollama
# Downloads the module first on a machine that has never fetched it.
LLAMA_DIR     := $(shell $(GO) mod download $(LLAMA_MODULE) >/dev/null 2>&1; $(GO) list -m -f '{{.Dir}}' $(LLAMA_MODULE) 2>/dev/null)
# CPU target for the C/C++ parts; set e.g. CPU_ARCH=x86-64-v3 for a portable build.
CPU_ARCH      ?= native
OPT_FLAGS     := -O3 -DNDEBUG -march=$(CPU_ARCH) -fopenmp -DGGML_USE_OPENMP -DGGML_USE_CPU_REPACK

export CGO_ENABLED  := 1
export CGO_CPPFLAGS := -I$(LLAMA_DIR)/llama/llama.cpp/include -I$(LLAMA_DIR)/ml/backend/ggml/ggml/include
export CGO_CFLAGS   := $(OPT_FLAGS)
export CGO_CXXFLAGS := $(OPT_FLAGS)
export CGO_LDFLAGS  := -fopenmp

# Pure-Go packages run under the race detector. Test binaries that link the
# binding (cgo, llama.cpp) run without it, except RACE_CGO_PKGS (the binding,
# the engine and its two adapters), which run under it as well: the first
# such run compiles llama.cpp once more for the race build (cached after).
TEST_DEPS = $(GO) list -test -f '{{.ImportPath}} {{join .Deps " "}}' ./...
CGO_PKGS  = $(shell $(TEST_DEPS) | awk '$$1 !~ /_test$$/ && $$2 !~ /^\[/ && / github.com\/ollama\/ollama\/llama\/llama.cpp\/src( |$$)/ {sub(/\.test$$/, "", $$1); print $$1}' | sort -u)
# `./...` skips folders named testdata, so the test-data helpers are named.
TESTDATA_PKGS = ./internal/testdata ./internal/testdata/fetch
PURE_PKGS = $(filter-out $(CGO_PKGS),$(shell $(GO) list ./...)) $(TESTDATA_PKGS)
RACE_CGO_PKGS = ./binding ./engine ./chat/backend ./server/enginebackend

BIN := bin/chatglm
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# -rdynamic exports ggml's symbols so bin/libggml-cuda.so can use them.
LDFLAGS := -X main.version=$(VERSION) -extldflags=-rdynamic

.PHONY: all build test vet testdata bench cuda clean env mod

all: build

build: mod
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/chatglm

mod:
	@test -n "$(LLAMA_DIR)" || { echo "cannot find or download $(LLAMA_MODULE)" >&2; exit 1; }

vet: mod
	$(GO) vet ./... $(TESTDATA_PKGS)

test: vet testdata
	$(GO) test -race -count=1 $(PURE_PKGS)
	$(if $(strip $(CGO_PKGS)),$(GO) test -count=1 -timeout 30m $(CGO_PKGS))
	$(GO) test -race -count=1 -timeout 30m $(RACE_CGO_PKGS)

# Every Go fuzz target in the repo (func FuzzXxx in any _test.go), FUZZTIME
# each (default 1m); CI runs FUZZTIME=10s. See scripts/fuzz.sh.
.PHONY: fuzz
FUZZTIME ?= 1m
fuzz: mod
	FUZZTIME=$(FUZZTIME) GO=$(GO) ./scripts/fuzz.sh

# Fetch the tokenizer/config test files when the shared folder is absent.
testdata:
	@$(GO) run ./internal/testdata/fetch

bench: build
	./scripts/bench.sh

# CUDA backend (see third_party/cuda). CUDA_ARCHITECTURES: native when a GPU is
# visible, else 90 (H100/H200); any CMake list works, e.g. "80;90".
CUDA_ARCHITECTURES ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo native || echo 90)
cuda: build
	./third_party/cuda/build.sh "$(LLAMA_DIR)" "$(CUDA_ARCHITECTURES)" bin

# Print the cgo environment, for running go commands by hand: eval $$(make -s env)
env:
	@echo export CGO_CPPFLAGS=\"$(CGO_CPPFLAGS)\" CGO_CFLAGS=\"$(CGO_CFLAGS)\" CGO_CXXFLAGS=\"$(CGO_CXXFLAGS)\" CGO_LDFLAGS=\"$(CGO_LDFLAGS)\"

clean:
	rm -rf bin
