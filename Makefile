# The entry points: `make run` serves manifests/ on 127.0.0.1:8080, `make test` runs every test.
# Both install what they need first (scripts/setup.sh).

CARGO ?= cargo
LISTEN ?= 127.0.0.1:8080
WASM_TARGET := wasm32-wasip1
# Every workspace member except the native ones is a function crate built for wasm.
NATIVE := --exclude dispatcher --exclude bench

.PHONY: all setup functions dispatcher run test bench check clean

all: functions dispatcher

setup:
	@scripts/setup.sh

functions: setup
	$(CARGO) build --release --target $(WASM_TARGET) --workspace $(NATIVE)

dispatcher:
	$(CARGO) build --release -p dispatcher

run: functions dispatcher
	$(CARGO) run --release -p dispatcher -- serve --manifests manifests --listen $(LISTEN)

check: functions dispatcher
	$(CARGO) run --release -p dispatcher -- check --manifests manifests

test: functions
	$(CARGO) test --release -p dispatcher

bench: functions dispatcher
	$(CARGO) run --release -p bench

clean:
	$(CARGO) clean
	rm -rf .dispatcher-cache
