# ftpsalg — see README.md. Everything CI runs is `make test`.
GO        ?= go
# Version: from a release tag (vX.Y.Z; between tags X.Y.Z-N-gHASH, -dirty
# with local changes), else the VERSION file (a tarball without .git).
VERSION   ?= $(shell v=$$(git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null) && echo $${v\#v} || cat VERSION)
COMMIT    ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
# Reproducible: the build date is SOURCE_DATE_EPOCH, by default the last
# commit's time.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || date +%s)
BUILD_DATE := $(shell date -u -d @$(SOURCE_DATE_EPOCH) +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.buildDate=$(BUILD_DATE)
FUZZTIME  ?= 20s
BENCHTIME ?= 1x
STATICCHECK ?= $(shell command -v staticcheck 2>/dev/null || echo $(HOME)/go/bin/staticcheck)

.PHONY: all build test unit integration fuzz bench demo lint clean

all: build

# Static (no cgo): the binary runs on glibc and musl gateways alike. The
# race-enabled test builds keep cgo.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/ftpsalg ./cmd/ftpsalg

# Unit tests (with fuzz seed corpora), then the privileged network-namespace
# tests against the real kernel, vsftpd, curl and lftp. Needs root.
test: build lint
	$(GO) test -race -count=1 -timeout 14m ./...

unit:
	$(GO) test -race -count=1 -short ./alg/... ./metrics/... ./conntrack/... ./cmd/...

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
