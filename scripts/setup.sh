#!/usr/bin/env bash
# Installs the system packages the harness and its tests use on a fresh Debian 12 machine
# (run as root), then builds the workspace in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
apt-get update
# libssl-dev: the ssh backend's libssh2 links OpenSSL; chromium: opening reports headless.
apt-get install -y kcat libfaketime openssh-server nftables iproute2 build-essential perl \
    zlib1g-dev pkg-config python3 procps psmisc libssl-dev chromium
cargo build --release --workspace
