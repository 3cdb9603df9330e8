#!/usr/bin/env bash
# IPVS reconcile benchmark inside the IPVS VM (prints figures; see
# vipmgr/examples/ipvs-bench.rs):
#   bash tests/vm/bench-ipvs.sh [--services 1000] [--reals 10]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p vipmgr --example ipvs-bench
exec bash tests/vm/ipvs-vm.sh --timeout 900 -- target/release/examples/ipvs-bench "$@"
