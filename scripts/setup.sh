#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian machine with rustup:
# the wasm32-wasip1 target, Debian's clang, wasi-libc and llvm-ar-14 (for C code in
# function crates), wrk (for `make bench`), HAProxy (the replicas-behind-a-load-balancer
# tests), kubectl with kustomize (Debian's kubernetes-client, unless a kubectl is on PATH),
# Chromium and chromedriver (the dashboard's browser test), and from PyPI kubernetes-validate
# (the Kubernetes manifests' schema check), selenium (drives the browser) and prometheus_client
# (parses the metrics scrape in the tests). Skips whatever is already there.
set -euo pipefail

if ! rustup target list --installed | grep -qx wasm32-wasip1; then
  echo "setup: adding the wasm32-wasip1 target"
  rustup target add wasm32-wasip1
fi

packages=(clang llvm-14 wasi-libc wrk mariadb-client haproxy chromium chromium-driver)
command -v kubectl >/dev/null 2>&1 || packages+=(kubernetes-client)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Pinned, so that the schemas the manifests are checked against (and the test tools) do not
# move under us.
for pinned in kubernetes-validate==1.37.0 selenium==4.51.0 prometheus_client==0.23.1; do
  name=${pinned%%==*}
  version=${pinned##*==}
  # Read whole first: `grep -q` would stop early and break pip's pipe (a failure, with pipefail).
  shown=$(python3 -m pip show "$name" 2>/dev/null || true)
  if ! grep -qx "Version: $version" <<<"$shown"; then
    echo "setup: installing $pinned"
    python3 -m pip install -q --disable-pip-version-check "$pinned"
  fi
done
