# Tether build and test entry points. `make demo` and `make test` are the
# two commands the README starts with; CI runs `make test` through .ci/run.

GO          ?= go
STATICCHECK ?= $(shell $(GO) env GOPATH)/bin/staticcheck
# A count, not a duration: Go 1.26's fuzz coordinator can report a spurious
# "context deadline exceeded" when a duration runs out (golang/go#75804).
FUZZTIME    ?= 20000x
OUT         ?= $(or $(TMPDIR),/tmp)/tether-sample-out.pcap
SAMPLE      := dataplane/replay/testdata/sample

# Fuzz targets as package:Target; CI runs each briefly from its corpus.
FUZZ_TARGETS := \
	./appliance:FuzzConfig \
	./appliance:FuzzCmdline \
	./api/healthpb:FuzzDecode \
	./api/hostpb:FuzzAgentMessage \
	./api/hostpb:FuzzUnitMessage \
	./api/unit:FuzzText \
	./config:FuzzDecode \
	./ctlplane/health:FuzzReceive \
	./agent:FuzzAgentReceive \
	./dataplane:FuzzParse \
	./dataplane:FuzzPipeline \
	./dataplane:FuzzOffload \
	./nic/tun:FuzzCut \
	./dataplane/channel:FuzzDecode \
	./dataplane/header:FuzzTCPOptions \
	./config:FuzzParse \
	./nic/pcapio:FuzzReader \
	./tables/maglev:FuzzNew \
	./agent/tunnel:FuzzProgram \
	./ctlplane/l7/acceptor:FuzzHandle \
	./ctlplane/l7/request:FuzzRequest \
	./ctlplane/l7/rules:FuzzMatchURL \
	./agent/shim/wire:FuzzDecode \
	./agent/migrate:FuzzProxyHeader \
	./dataplane:FuzzL7SYN \
	./dataplane:FuzzL7HandshakeACK \
	./api/atompb:FuzzRequest \
	./api/atompb:FuzzReply \
	./ctlplane/atoms:FuzzApply \
	./ctlplane/control:FuzzRouteData \
	./ctlplane/hosts:FuzzSessionSeries \
	./agent/streams:FuzzSessionAgreement


.PHONY: all build deps demo bin bench-system bench-dam bench-health replay test lint unit fuzz bench generate proto check-generated vm vm-reproducible clean

all: build

build:
	$(GO) build ./...

# What make demo shells out to (iproute2, ethtool, procps), installed with
# apt-get when missing; .ci/run installs the test set from the same list.
deps:
	@bash scripts/deps.sh demo

# The main job: build the daemon and the demo, run Tether on a network of
# namespaces (AF_XDP port; DEMO_PORT=tun for the TUN port), push traffic
# through every VIP, print what happened, remove the network. Needs root.
# It builds only the two binaries it runs, saying so: a first build on a
# fresh machine downloads modules and compiles for a minute or two.
DEMO_PORT ?= afxdp
demo: deps
	@command -v $(GO) >/dev/null || { echo "make demo: no $(GO) on PATH: Go 1.26 is expected in /usr/local/go/bin (export PATH=/usr/local/go/bin:\$$PATH; sudo resets PATH)"; exit 1; }
	@echo "==> building bin/tetherd (the daemon), bin/tether-agent (the hosts' agent) and bin/tether-demo (the demo) with $$($(GO) env GOVERSION)"
	$(GO) build -o bin/tetherd ./cmd/tetherd
	$(GO) build -o bin/tether-agent ./cmd/tether-agent
	$(GO) build -o bin/tether-demo ./cmd/tether-demo
	./bin/tether-demo --tetherd ./bin/tetherd --agent ./bin/tether-agent --port $(DEMO_PORT)

bin:
	$(GO) build -o bin/tetherd ./cmd/tetherd
	$(GO) build -o bin/tetherctl ./cmd/tetherctl
	$(GO) build -o bin/tether-demo ./cmd/tether-demo
	$(GO) build -o bin/tether-agent ./cmd/tether-agent
	$(GO) build -o bin/lbbench ./bench/lbbench
	$(GO) build -o bin/healthbench ./bench/healthbench
	$(GO) build -o bin/dambench ./bench/dambench

# Whole-system benchmark: Tether (AF_XDP, TUN; nat, halfnat) against
# nftables DNAT and HAProxy at their defaults on the same namespace
# topology, with nginx backends and wrk; BENCH_RUNS runs, medians, a
# chart in BENCH_SVG. Needs root; installs nginx, wrk, haproxy and the
# rest with apt-get when missing. Results: bench/RESULTS.md.
BENCH_RUNS ?= 3
BENCH_SVG  ?= bench/system.svg
bench-system: bin
	@bash scripts/deps.sh bench
	./bin/lbbench --tetherd ./bin/tetherd --runs $(BENCH_RUNS) --svg $(BENCH_SVG)

# Several units sharing a nat VIP (issue 15): Tether's cluster against
# nftables NAT with conntrackd on the same topology, the window from a
# connection's first packet to its state at the other unit, and the
# takeover when a unit dies in the middle of paced downloads. Needs
# root; installs conntrackd and conntrack with apt-get when missing.
DAM_PROBES    ?= 200
DAM_TRANSFERS ?= 60
bench-dam: bin
	@bash scripts/deps.sh bench
	./bin/dambench --tetherd ./bin/tetherd --probes $(DAM_PROBES) --transfers $(DAM_TRANSFERS)

# Reaction to backend failures with default health settings: Tether
# (tether-agent checks and pushes) beside HAProxy (check inter 2s fall 3
# rise 2) on the same topology. Needs root and haproxy. Results:
# bench/RESULTS.md.
HEALTH_REPS ?= 5
bench-health: bin
	./bin/healthbench --tetherd ./bin/tetherd --tetherctl ./bin/tetherctl --agent ./bin/tether-agent --reps $(HEALTH_REPS)

# Replay the bundled sample capture through the forwarder and print what
# happened per VIP, backend and drop reason (no root needed).
replay:
	$(GO) run ./cmd/tetherd replay --config $(SAMPLE)/config.yaml $(SAMPLE)/in.pcap $(OUT)
	@echo "forwarded frames written to $(OUT)"

test: lint check-generated vm-reproducible unit fuzz

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

# TETHER_VM_IMAGE makes the boot test (vm/boot_test.go) run the image
# make vm built instead of skipping; TETHER_VM_ACCEL=kvm|tcg forces its
# qemu accelerator. The -timeout applies to each package's test binary.
# The slowest ones on the 2-core CI machine, run side by side: e2e about
# 11 min under -race on a slowed machine (its system tests run one after
# another), vm about 3 min (a 20 s KVM probe, then TCG). 25m leaves e2e
# twice its time. Each of vm's waits also ends 30 s before this deadline
# (t.Deadline), so a stuck boot fails its own test, with qemu stopped and
# namespaces deleted, instead of panicking the binary and leaving them
# behind as the default 10m did.
#
# GORACE: a program built with -race sleeps a second before it exits
# (atexit_sleep_ms, so that racing goroutines get reported). The system
# tests start the test binary itself for their roles (servers, clients,
# load), hundreds of times a run, and waited out that second each time:
# 7 of e2e's 18 minutes (2026-12-02). A race found still fails the run.
UNIT_TIMEOUT ?= 25m
unit:
	GORACE="atexit_sleep_ms=0 $$GORACE" TETHER_VM_IMAGE=$(CURDIR)/vm/out $(GO) test -race -count=1 -timeout $(UNIT_TIMEOUT) ./...

# The appliance: vm/out/vmlinuz and vm/out/initramfs.img from Debian's
# kernel and busybox and the project's static binaries. docs/appliance.md.
vm:
	bash vm/build.sh

# make vm twice must give the same bytes: build again elsewhere, compare.
vm-reproducible: vm
	@tmp=$$(mktemp -d) && VM_OUT=$$tmp bash vm/build.sh >/dev/null && \
	for f in vmlinuz initramfs.img; do cmp vm/out/$$f $$tmp/$$f || { echo "vm/out/$$f differs between two builds"; rm -rf $$tmp; exit 1; }; done; \
	rm -rf $$tmp; echo "make vm is reproducible: two builds are byte-identical"

# A worker that dies before it fuzzed anything ("fuzzing process
# terminated without fuzzing", seen once on CI with a corpus that passes
# every time here) says nothing about the code: that one case is tried
# again, once. Any other failure, a crashing input included, fails.
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		if ! out=$$($(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg 2>&1); then \
			echo "$$out"; \
			echo "$$out" | grep -q 'fuzzing process terminated without fuzzing' || exit 1; \
			echo "fuzz $$pkg $$name: the worker died before fuzzing; once more"; \
			$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; \
		else echo "$$out"; fi; \
	done

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

generate:
	$(GO) generate ./...

# Protocol Buffers: the generated code is committed; this regenerates it
# (needs protoc from Debian's protobuf-compiler, protoc-gen-go and, for
# the host stream's gRPC service, protoc-gen-go-grpc; both pinned).
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
proto:
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	cd api/healthpb && PATH="$$($(GO) env GOPATH)/bin:$$PATH" protoc --go_out=. --go_opt=paths=source_relative health.proto
	cd api/hostpb && PATH="$$($(GO) env GOPATH)/bin:$$PATH" protoc --go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative host.proto
	cd api/atompb && PATH="$$($(GO) env GOPATH)/bin:$$PATH" protoc --go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative atom.proto

# Generated code must match its generator.
check-generated: proto
	@$(GO) generate ./tables/flow/ && git diff --exit-code -- tables/flow/table6_gen.go \
		|| { echo "tables/flow/table6_gen.go is stale: run make generate"; exit 1; }
	@git diff --exit-code -- api/healthpb/health.pb.go \
		|| { echo "api/healthpb/health.pb.go is stale: run make proto and commit it"; exit 1; }
	@git diff --exit-code -- api/hostpb/host.pb.go api/hostpb/host_grpc.pb.go \
		|| { echo "api/hostpb's generated code is stale: run make proto and commit it"; exit 1; }
	@git diff --exit-code -- api/atompb/atom.pb.go api/atompb/atom_grpc.pb.go \
		|| { echo "api/atompb's generated code is stale: run make proto and commit it"; exit 1; }

clean:
	rm -rf $(OUT) bin vm/out
