#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian 12 machine (as root), then runs every
# test layer: unit, crate integration, network-namespace labs, keepalived interop.
#   bash tests/run.sh            # everything
#   bash tests/run.sh --no-install
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" != "--no-install" ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "tests/run.sh: run as root (namespaces, raw sockets, apt)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # postfix asks how to deliver mail: the tests run their own instance.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    # slapd: no system directory; the LDAP tests build their own.
    echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
    apt-get update -qq
    # Real servers for the health checkers' tests: nginx (HTTP/HTTPS), unbound (DNS),
    # postfix (SMTP), vsftpd (FTP), dovecot (IMAP, POP), inn2 (NNTP), slapd (LDAP),
    # mariadb, postgresql, freeradius (RADIUS), kamailio (SIP); openssl makes their
    # certificates.
    apt-get install -y -qq --no-install-recommends \
        build-essential pkg-config ca-certificates openssl \
        iproute2 iputils-ping iputils-arping tcpdump nftables procps psmisc systemd \
        keepalived heartbeat python3 \
        nginx-light unbound postfix \
        vsftpd dovecot-imapd dovecot-pop3d slapd ldap-utils \
        rpm \
        mariadb-server mariadb-client postgresql freeradius kamailio >/dev/null
    # inn2's set-up fails on a host without a domain name: give its (unused) system
    # config one and finish the set-up; the NNTP tests run their own nnrpd.
    if ! dpkg-query -W -f='${Status}' inn2 2>/dev/null | grep -q "ok installed"; then
        apt-get install -y -qq --no-install-recommends inn2 >/dev/null 2>&1 || true
        if [[ -f /etc/news/inn.conf ]]; then
            sed -i 's/^#* *domain:.*/domain: lab.test/' /etc/news/inn.conf
        fi
        dpkg --configure -a >/dev/null 2>&1 || dpkg --configure -a >/dev/null
        dpkg-query -W -f='${Status}' inn2 | grep -q "ok installed"
    fi
    # The packages enable services; the tests start their own instances.
    systemctl disable --now keepalived heartbeat nginx unbound postfix vsftpd dovecot \
        inn2 slapd mariadb postgresql freeradius kamailio >/dev/null 2>&1 || true
    command -v cargo >/dev/null || { echo "cargo is missing (install Rust with rustup)" >&2; exit 1; }
    for c in clippy rustfmt; do
        if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
            rustup component add "$c"
        fi
    done
    # The packaging test builds the .deb and the .rpm (rpm above inspects the .rpm).
    command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
    command -v cargo-generate-rpm >/dev/null || cargo install --locked cargo-generate-rpm
fi

export CARGO_TERM_COLOR=never
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -q -- -D warnings
echo "== cargo build"
cargo build --workspace --all-targets -q
echo "== cargo test"
# The lab tests start real daemons in network namespaces; two at a time keeps a
# 2-core machine's timers honest.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --no-fail-fast -- --test-threads=2 2>&1 | tee "$log"
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6; s += $8 }
     END { printf "summary: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
