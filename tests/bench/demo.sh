#!/usr/bin/env bash
# The lab demo: builds, sets up two directors (directord), two real servers behind the
# VIP and a client in network namespaces, runs a failover drill with the client probing,
# and prints who held the VIP when and how long the client saw no answer at each step.
# Run as root. Extra arguments go to lab-demo, e.g. `--advert 1s` or
# `--daemon keepalived`.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ $(id -u) -ne 0 ]]; then
    echo "demo.sh: run as root (network namespaces)" >&2
    exit 1
fi
# A fresh machine: install what the lab needs.
if ! command -v ip >/dev/null || ! command -v nft >/dev/null || ! command -v python3 >/dev/null \
    || ! command -v keepalived >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends build-essential iproute2 nftables python3 keepalived >/dev/null
fi
cargo build -q -p directord -p directord-tests
exec target/debug/lab-demo "$@"
