#!/usr/bin/env bash
# The failover benchmark: builds (release) and prints the client-visible outage of
# directord and keepalived pairs side by side (VRRP), and of directord pairs running the
# UDP 694 heartbeat. Run as root. Extra arguments go to the bench, e.g.
# `bash tests/bench/failover.sh --runs 3 --advert 100ms` or `--protocol heartbeat`.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ $(id -u) -ne 0 ]]; then
    echo "failover.sh: run as root (network namespaces)" >&2
    exit 1
fi
if ! command -v keepalived >/dev/null || ! command -v ip >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends build-essential iproute2 nftables python3 keepalived >/dev/null
fi
cargo build --release -q -p directord -p directord-tests
exec target/release/failover-bench "$@"
