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
for tool in ip nft python3; do
    command -v "$tool" >/dev/null || { echo "demo.sh: $tool is missing (see tests/run.sh)" >&2; exit 1; }
done
cargo build -q -p directord -p directord-tests
exec target/debug/lab-demo "$@"
