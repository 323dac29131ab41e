# Multi-stage build: the wasm functions and the native dispatcher, then a slim runtime image
# (non-root) with the manifests and the modules compiled ahead of time. The manifests name
# their modules as ../target/wasm32-wasip1/release/*.wasm, so the modules sit at that path
# relative to /app/manifests.
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
RUN groupadd --system --gid 10001 dispatcher \
 && useradd --system --uid 10001 --gid 10001 dispatcher \
 && mkdir -p /app/cache /app/target/wasm32-wasip1/release \
 && chown dispatcher /app/cache
COPY --from=build /src/target/release/dispatcher /usr/local/bin/dispatcher
COPY --from=build /src/target/wasm32-wasip1/release/*.wasm /app/target/wasm32-wasip1/release/
COPY manifests /app/manifests
# Compile every shipped module now, so a new container (a pod on a fresh node) serves at
# once instead of compiling at start. `check` needs no database; the two URLs only satisfy
# the manifests' ${VAR}s. The result is read-only at run time (DISPATCHER_PRECOMPILED);
# whatever else gets compiled goes to the writable cache, /app/cache.
# A precompiled module is only used on a machine whose CPU features match the build
# machine's; anywhere else it is compiled again at start (into /app/cache).
RUN DATABASE_URL=mysql://unused@localhost/x NOTIFY_URL=http://unused \
    dispatcher check --manifests /app/manifests --cache-dir /app/precompiled \
 && chown -R root:root /app/precompiled \
 && chmod -R u=rwX,go=rX /app/precompiled
ENV DISPATCHER_LISTEN=0.0.0.0:8080 \
    DISPATCHER_MANIFESTS=/app/manifests \
    DISPATCHER_CACHE_DIR=/app/cache \
    DISPATCHER_PRECOMPILED=/app/precompiled
USER dispatcher
WORKDIR /app
EXPOSE 8080
CMD ["dispatcher", "serve"]
