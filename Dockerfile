# Multi-stage build: the wasm functions and the native dispatcher, then a slim runtime image
# with the manifests. The manifests name their modules as ../target/wasm32-wasip1/release/*.wasm,
# so the modules sit at that path relative to /app/manifests.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm-14 wasi-libc \
 && rm -rf /var/lib/apt/lists/*
RUN rustup target add wasm32-wasip1
WORKDIR /src
COPY . .
# The functions with fat LTO and one codegen unit, as `make functions` builds them.
RUN CARGO_PROFILE_RELEASE_LTO=true CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
    cargo build --release --target wasm32-wasip1 --workspace --exclude dispatcher --exclude bench \
 && cargo build --release -p dispatcher

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 dispatcher \
 && mkdir -p /app/cache /app/target/wasm32-wasip1/release \
 && chown dispatcher /app/cache
COPY --from=build /src/target/release/dispatcher /usr/local/bin/dispatcher
COPY --from=build /src/target/wasm32-wasip1/release/*.wasm /app/target/wasm32-wasip1/release/
COPY manifests /app/manifests
ENV DISPATCHER_LISTEN=0.0.0.0:8080 \
    DISPATCHER_MANIFESTS=/app/manifests \
    DISPATCHER_CACHE_DIR=/app/cache
USER dispatcher
WORKDIR /app
EXPOSE 8080
CMD ["dispatcher", "serve"]
