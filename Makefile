# mxguard: build, test and try it.  Run "make help" for the targets.

# Go is expected at /usr/local/go; it need not be on the caller's PATH.
export PATH := /usr/local/go/bin:$(PATH)

GO       ?= go
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
BIN      := bin

# make demo DEMO_DIR=... DEMO_LISTEN=inet:127.0.0.1:PORT DEMO_SMTP=PORT KEEP=1
DEMO_DIR    ?= /tmp/mxguard-demo
DEMO_LISTEN ?= inet:127.0.0.1:8894
DEMO_SMTP   ?= 2525
KEEP        ?= 0

FUZZTIME ?= 60s

.DEFAULT_GOAL := help
.PHONY: help build deps test test-third-party demo fuzz bench clean

help:
	@echo "make targets:"
	@echo "  build   build $(BIN)/mxguard and $(BIN)/mxguard-demo"
	@echo "  deps    install missing build and test dependencies (gcc for cgo; root uses apt-get)"
	@echo "  test    deps, then go vet and go test -race over every package, including the"
	@echo "          end-to-end tests behind real Postfix and Sendmail (as root; e2e/README.md),"
	@echo "          and the patched go-msgauth in third_party/ (test-third-party)"
	@echo "  demo    build, run mxguard with examples/mxguard.toml behind a throwaway Postfix on"
	@echo "          loopback (as root), send mail through it with swaks and show the log"
	@echo "          (DEMO_DIR=$(DEMO_DIR) DEMO_LISTEN=$(DEMO_LISTEN) DEMO_SMTP=$(DEMO_SMTP); KEEP=1 leaves it running)"
	@echo "  fuzz    fuzz the milter session for FUZZTIME=$(FUZZTIME)"
	@echo "  bench   (as root, ~7 min) mxguard's msgs/s, latency, RSS, CPU beside opendkim, opendmarc, clamav-milter (scripts/bench.sh)"
	@echo "  clean   remove $(BIN)/ and the demo directory"

# Always rebuilt: go's own cache makes that cheap and never stale.
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/mxguard ./cmd/mxguard
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/mxguard-demo ./cmd/mxguard-demo

deps:
	@scripts/install-deps.sh

test: deps test-third-party
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m ./...

# The patched dependencies in third_party/ are modules of their own, which
# ./... does not reach. Their fuzz test runs briefly: it compares the patch
# with the upstream code it replaces.
test-third-party:
	cd third_party/go-msgauth && $(GO) vet ./... && $(GO) test -race -count=1 ./... && \
		$(GO) test -run '^$$' -fuzz FuzzBodyCanonicalizers -fuzztime 10s ./dkim && \
		$(GO) test -run '^$$' -fuzz FuzzHeaderFunctions -fuzztime 10s ./dkim

demo: build
	$(GO) build -o $(BIN)/mxguard-testdns ./cmd/mxguard-testdns
	@DEMO_DIR="$(DEMO_DIR)" DEMO_LISTEN="$(DEMO_LISTEN)" DEMO_SMTP="$(DEMO_SMTP)" KEEP="$(KEEP)" BIN="$(BIN)" scripts/demo.sh

fuzz:
	$(GO) test ./milter/ -run '^$$' -fuzz FuzzSession -fuzztime $(FUZZTIME)

# Not part of test: it installs the peers and takes minutes. Every BENCH_*
# variable (scripts/bench.sh) passes through.
bench: build
	$(GO) build -o $(BIN)/mxguard-bench ./cmd/mxguard-bench
	$(GO) build -o $(BIN)/mxguard-testdns ./cmd/mxguard-testdns
	@BIN="$(BIN)" scripts/bench.sh

# The demo directory goes only if demo.sh made it (it leaves a marker).
clean:
	rm -rf $(BIN)
	@if [ -e "$(DEMO_DIR)/.mxguard-demo" ]; then DEMO_DIR="$(DEMO_DIR)" scripts/demo.sh stop; echo rm -rf "$(DEMO_DIR)"; rm -rf "$(DEMO_DIR)"; fi
