# Small on purpose: see README.md, "Development".

GO       ?= go
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git describe --always --dirty --abbrev=40 --match=no-tag-is-named-this 2>/dev/null)
# The build date --version shows: the commit's time for a clean tree, so that
# the same commit builds the same bytes (reproducible), else now.
ifeq ($(origin SOURCE_DATE_EPOCH),undefined)
SOURCE_DATE_EPOCH := $(shell git diff --quiet HEAD 2>/dev/null && git log -1 --format=%ct 2>/dev/null || date +%s)
endif
DATE     := $(shell date -u -d @$(SOURCE_DATE_EPOCH) +%Y-%m-%dT%H:%M:%SZ)
FUZZTIME ?= 60s
BUILDINFO := github.com/tunnelhq/tunnel/internal/buildinfo
LDFLAGS  := -s -w -X $(BUILDINFO).version=$(VERSION) -X $(BUILDINFO).commit=$(COMMIT) -X $(BUILDINFO).date=$(DATE)
BUILD    := CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)"

.PHONY: build test bench bench-peers bench-tools run demo fuzz lint certs cross dist dist-check image clean

## build: bin/tunneld and bin/tunnel, static and stripped
build:
	@mkdir -p bin
	$(BUILD) -o bin/ ./cmd/tunneld ./cmd/tunnel

## test: every test, with the race detector, including e2e/ (builds and runs the binaries)
test:
	$(GO) test -race -count=1 ./...

## bench: direct vs bare TLS+yamux pipe vs tunnel on loopback, then a three-node cluster, ~12 min; writes bench/results/
## (results.md, results.json, PNG plots; see BENCHMARKS.md). BENCHFLAGS=-smoke for a quick check.
## Load from wrk and curl, as users measure (installed with apt-get if missing).
bench: build bench-tools
	@command -v gnuplot >/dev/null || { apt-get update && apt-get install -y --no-install-recommends gnuplot-nox; }
	$(GO) run ./bench -bin bin -out bench/results $(BENCHFLAGS)

## bench-peers: chisel and frp (built at pinned versions into bench/.peers/) beside direct, the pipe and
## tunnel, the same wrk and curl load; writes bench/results/peers.md and peers.json. BENCHFLAGS=-smoke.
bench-peers: build bench-tools
	scripts/build-peers.sh bench/.peers
	$(GO) run ./bench -bin bin -peers bench/.peers -phases peers -out bench/results $(BENCHFLAGS)

bench-tools:
	@command -v wrk >/dev/null && command -v curl >/dev/null || { apt-get update && apt-get install -y --no-install-recommends wrk curl; }

## run: tunneld --dev on 127.0.0.1:8443 (dev CA in certs/)
run: build
	bin/tunneld --dev

## demo: tunneld --dev + a built-in page + tunnel, at https://demo.localhost:8443 until Ctrl-C
demo: build
	$(BUILD) -o bin/ ./cmd/demo-page
	scripts/demo.sh

## fuzz: each fuzz target under pkg/ for FUZZTIME (default 60s)
fuzz:
	GO="$(GO)" scripts/fuzz.sh $(FUZZTIME)

## lint: go vet and staticcheck (a go.mod tool)
lint:
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

## certs: make (or keep) the dev CA and certificates in certs/
certs:
	$(GO) run ./cmd/tunneld certs --certs-dir certs

## cross: static binaries for linux amd64, arm64, armv6 and armv7 in dist/
cross:
	@mkdir -p dist
	@set -e; for target in amd64 arm64 arm/6 arm/7; do \
		arch=$${target%%/*}; arm=$${target#*/}; suffix=$$arch; \
		if [ "$$arch" = arm ]; then suffix=armv$$arm; else arm=; fi; \
		for cmd in tunneld tunnel; do \
			echo "dist/$$cmd-linux-$$suffix"; \
			GOOS=linux GOARCH=$$arch GOARM=$$arm $(BUILD) -o dist/$$cmd-linux-$$suffix ./cmd/$$cmd; \
		done; \
	done
	@ls -l dist/

## dist: a release in dist/ (VERSION=x.y.z required): per program and linux amd64, arm64, armv7 and
## armv6, a tarball and a Debian package; SHA256SUMS and an SPDX SBOM (scripts/dist.sh)
dist:
	GO="$(GO)" VERSION="$(VERSION)" LDFLAGS="$(LDFLAGS)" SOURCE_DATE_EPOCH="$(SOURCE_DATE_EPOCH)" scripts/dist.sh

## dist-check: install dist/'s packages for this machine, check them as a user would, purge them (root; scripts/dist-check.sh)
dist-check:
	scripts/dist-check.sh dist

## image: container images of tunneld and tunnel from dist/'s binaries, with podman (deploy/container)
image:
	scripts/image.sh dist

clean:
	rm -rf bin dist
