# ftpsalg — see README.md. Everything CI runs is `make test`.
GO        ?= go
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
FUZZTIME  ?= 20s
BENCHTIME ?= 1x
STATICCHECK ?= $(shell command -v staticcheck 2>/dev/null || echo $(HOME)/go/bin/staticcheck)

.PHONY: all build test unit integration fuzz bench demo lint clean

all: build

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/ftpsalg ./cmd/ftpsalg

# Unit tests (with fuzz seed corpora), then the privileged network-namespace
# tests against the real kernel, vsftpd, curl and lftp. Needs root.
test: build lint
	$(GO) test -race -count=1 -timeout 14m ./...

# Unit tests only: -short skips the kernel tests of ./nft and ./alg/route
# (and any test that needs root), each with a message.
unit:
	$(GO) test -race -count=1 -short ./alg/... ./nft/... ./metrics/... ./conntrack/... ./cmd/...

integration: build
	$(GO) test -race -count=1 -timeout 14m -v ./test/... 

# Each fuzz target for FUZZTIME.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

# Benchmarks against the real kernel (root); results go to docs/benchmarks.md by hand.
bench: build
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) -count 1 -timeout 30m -v ./test/bench/ | tee bin/bench.txt

# The main job on a built-in lab (root): namespaces, an FTP server, a client,
# ftpsalg between them under a default-drop firewall.
demo: build
	$(GO) run ./test/demo --bin bin/ftpsalg

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

clean:
	rm -rf bin
