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
BENCH     ?= .
STATICCHECK_VERSION := v0.7.0
STATICCHECK ?= $(shell command -v staticcheck 2>/dev/null || echo $$($(GO) env GOPATH)/bin/staticcheck)
PROMTOOL  ?= promtool
NFPM_VERSION := v2.48.0
NFPM      ?= GOFLAGS= $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)
# Debian version: 0.5.0, or 0.5.0+3.gabc123 between tags.
DEB_VERSION := $(shell echo $(VERSION) | sed -e 's/-/+/' -e 's/-/./g')

.PHONY: all build test unit integration fuzz bench demo lint clean promtool metrics-lint deb package-check staticcheck

all: build

# Static (no cgo): the binary runs on glibc and musl gateways alike. The
# race-enabled test builds keep cgo.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/ftpsalg ./cmd/ftpsalg

# Unit tests (with fuzz seed corpora), then the privileged network-namespace
# tests against the real kernel, vsftpd, curl and lftp. Needs root.
test: build lint promtool deb
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

# Benchmarks against the real kernel (root); results go to docs/benchmarks.md
# by hand, the load generator's pictures to docs/bench-load-*.svg. One package
# at a time (-p 1): they share two cores. BENCH=Load runs the load generator only.
bench: build
	$(GO) test -p 1 -run '^$$' -bench '$(BENCH)' -benchtime $(BENCHTIME) -count 1 -timeout 30m -v ./test/bench/ ./test/load/ | tee bin/bench.txt
	# In process: the proxy's memory per idle session, and its handshakes
	# with a CPU profile (where the time goes), printed after the figures.
	$(GO) test -run '^$$' -bench 'IdleSessionMemory' -benchtime 1x -count 1 ./alg/proxy/ | tee -a bin/bench.txt
	$(GO) test -run '^$$' -bench 'Handshake' -benchtime 3s -count 1 -cpuprofile bin/handshake.prof -o bin/proxy.test ./alg/proxy/ | tee -a bin/bench.txt
	$(GO) tool pprof -top -nodecount=25 bin/proxy.test bin/handshake.prof | tee -a bin/bench.txt

# The main job on a built-in lab (root): namespaces, an FTP server, a client,
# ftpsalg between them under a default-drop firewall.
demo: build
	$(GO) run ./test/demo --bin bin/ftpsalg

# staticcheck, pinned, installed when missing (a fresh machine that followed
# the README has Go and nothing else).
$(STATICCHECK):
	GOFLAGS= $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

staticcheck: $(STATICCHECK)

lint: $(STATICCHECK)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

# The alert rules and their unit tests, and promtool's lint of a full
# scrape of the daemon's registry (Debian package prometheus ships promtool).
promtool: metrics-lint
	$(PROMTOOL) check rules contrib/prometheus/alerts.yml
	cd contrib/prometheus && $(PROMTOOL) test rules alerts_test.yml

metrics-lint:
	@mkdir -p bin
	FTPSALG_METRICS_DUMP=$(CURDIR)/bin/metrics.txt $(GO) test -count=1 -run '^TestMetricsRegistry$$' ./cmd/ftpsalg
	$(PROMTOOL) check metrics < bin/metrics.txt

# The Debian package (nfpm, pinned): bin/ftpsalg_$(DEB_VERSION)_amd64.deb.
# test/pkg installs it and runs the installed binary in the lab.
deb: build
	@mkdir -p bin/pkg
	for m in ftpsalg.8 ftpsalg.yaml.5; do gzip -9n < cmd/ftpsalg/packaging/man/$$m > bin/pkg/$$m.gz; done
	gzip -9n < CHANGELOG.md > bin/pkg/changelog.gz
	DEB_VERSION=$(DEB_VERSION) $(NFPM) package --config cmd/ftpsalg/packaging/nfpm.yaml --packager deb --target bin/
	@ls -l bin/*.deb

clean:
	rm -rf bin
