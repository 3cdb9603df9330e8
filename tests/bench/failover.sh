#!/usr/bin/env bash
# The failover benchmark: builds (release) and prints the client-visible outage of
# directord and keepalived pairs side by side. Run as root. Extra arguments go to the
# bench, e.g. `bash tests/bench/failover.sh --runs 3 --advert 100ms`.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ $(id -u) -ne 0 ]]; then
    echo "failover.sh: run as root (network namespaces)" >&2
    exit 1
fi
command -v keepalived >/dev/null || echo "keepalived is missing (apt-get install -y keepalived): its column is skipped" >&2
cargo build --release -q -p directord -p directord-tests
exec target/release/failover-bench "$@"
