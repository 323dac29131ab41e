# The entry points: `make run` serves manifests/ on 127.0.0.1:8080, `make test` runs every test.
# Both install what they need first (scripts/setup.sh).

CARGO ?= cargo
LISTEN ?= 127.0.0.1:8080
# The orders functions' database and the notify function's receiver; override either.
export DATABASE_URL ?= mysql://root@127.0.0.1:3306/test
export NOTIFY_URL ?= http://127.0.0.1:9000/events
WASM_TARGET := wasm32-wasip1
# Every workspace member except the native ones is a function crate built for wasm.
NATIVE := --exclude dispatcher --exclude bench
# The functions are built with fat LTO and one codegen unit: the orders modules shrink from
# 2.5 to 2.1 MB, compile (deploy) 25% faster and use 20% less CPU per request (`make bench`,
# A/B). The native dispatcher keeps the plain release profile: LTO would make its link take
# minutes. bench/src/artifacts.rs and the Dockerfile use the same settings.
WASM_PROFILE := CARGO_PROFILE_RELEASE_LTO=true CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1

.PHONY: all setup database functions dispatcher run test cluster-test bench soak profile check fuzz fuzz-smoke clean

all: functions dispatcher

setup:
	@scripts/setup.sh

database:
	@scripts/mariadb.sh

functions: setup
	$(WASM_PROFILE) $(CARGO) build --release --target $(WASM_TARGET) --workspace $(NATIVE)

dispatcher:
	$(CARGO) build --release -p dispatcher

run: functions dispatcher database
	$(CARGO) run --release -p dispatcher -- serve --manifests manifests --listen $(LISTEN)

check: functions dispatcher
	$(CARGO) run --release -p dispatcher -- check --manifests manifests

test: functions database
	$(CARGO) test --release -p dispatcher

# Only the replicas-behind-HAProxy tests (dispatcher/tests/integration/cluster.rs).
cluster-test: functions database
	$(CARGO) test --release -p dispatcher --test integration cluster

bench: functions dispatcher database
	$(CARGO) run --release -p bench

# One dispatcher serving manifests/ under mixed load for SOAK_SECONDS (echo, the orders
# endpoints, an every-second schedule, a deploy and a rollback every 5 s); prints its RSS,
# descriptors and errors at the start and the end, and fails if any grew past its bound or
# anything failed (bench/src/sections/soak/). Not part of `make bench` or `make test`.
SOAK_SECONDS ?= 300
soak: functions dispatcher database
	SOAK_SECONDS=$(SOAK_SECONDS) $(CARGO) run --release -p bench -- soak

# Where the dispatcher's CPU goes under load: perf over wrk, top symbols (scripts/profile.sh).
profile: setup
	@scripts/profile.sh

# Each fuzz target (fuzz/fuzz_targets/) for FUZZ_SECONDS with cargo-fuzz, installed if
# missing; prints executions and crashes (scripts/fuzz.sh).
FUZZ_SECONDS ?= 60
fuzz:
	@FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

# A short run of each target. Not part of `make test`: the fuzz build is a second cold build
# of the dispatcher and wasmtime, with coverage instrumentation (18 minutes on 2 cores).
FUZZ_SMOKE_SECONDS ?= 15
fuzz-smoke:
	@FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS) scripts/fuzz.sh

clean:
	$(CARGO) clean
	rm -rf .dispatcher-cache fuzz/target
