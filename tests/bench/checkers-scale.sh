#!/bin/sh
# How many real servers one director can check: runs checkers' `scale` example
# (the real runner, an http check per real server, one local nginx answering for
# every 127.1.x.y address) for 1,000 and 10,000 real servers and prints a table.
# Needs nginx (Debian: apt-get install nginx-light).
#
#   tests/bench/checkers-scale.sh [interval] [duration]     (default 1s 20s)
#
# NO_BUILD=1 uses the example binary already built.
#
# Targets: 10,000 real servers at 1 s sustained (rounds/real/interval 1.000),
# < 0.5 core, < 128 MiB peak RSS. The figures are only meaningful on an
# otherwise idle machine: the checking process shares the cores with nginx.
set -eu
interval=${1:-1s}
duration=${2:-20s}
cd "$(dirname "$0")/../.."
[ -n "${NO_BUILD:-}" ] || cargo build --quiet --release -p checkers --example scale
bin=target/release/examples/scale

rows=""
for reals in 1000 10000; do
    out=$("$bin" --reals "$reals" --interval "$interval" --duration "$duration")
    printf '%s\n\n' "$out" >&2
    rows="$rows$(printf '%s\n' "$out" | grep '^summary' | cut -f2-)
"
    # Let the loopback TIME_WAIT sockets of this run drain before the next.
    sleep 5
done

printf '\ninterval %s, measured for %s after one interval of warm-up\n' "$interval" "$duration"
printf '%8s %10s %14s %14s %12s %7s %10s %7s\n' \
    reals checks/s rounds/interval "max late ms" "CPU s/1k" cores "RSS MiB" "not up"
printf '%s' "$rows" | while IFS="$(printf '\t')" read -r reals cps rounds late cpu cores rss down; do
    printf '%8s %10s %14s %14s %12s %7s %10s %7s\n' \
        "$reals" "$cps" "$rounds" "$late" "$cpu" "$cores" "$rss" "$down"
done
