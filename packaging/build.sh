#!/usr/bin/env bash
# Builds the .deb and the .rpm of directord from one release build:
#   bash packaging/build.sh        ->  target/packages/directord_<ver>-1_amd64.deb
#                                      target/packages/directord-<ver>-1.x86_64.rpm
# Needs cargo-deb and cargo-generate-rpm (`cargo install --locked cargo-deb
# cargo-generate-rpm`) and binutils' strip. The built files both packages take are
# staged in target/release/packaging/ (a path both tools map to the real target dir):
# stripped binaries, gzipped man pages, shell completions.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

for tool in deb generate-rpm; do
    if ! cargo "$tool" --version >/dev/null 2>&1; then
        echo "packaging/build.sh: cargo-$tool is missing: cargo install --locked cargo-$tool" >&2
        exit 1
    fi
done
for prog in strip gzip; do
    command -v "$prog" >/dev/null || {
        echo "packaging/build.sh: $prog is missing (apt-get install binutils gzip)" >&2
        exit 1
    }
done

echo "== cargo build --release (directord, directorctl)"
cargo build --release --locked -p directord --bins
target=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
release="$target/release"

stage="$release/packaging"
rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/man" "$stage/completions"

# Stripped copies: the release profile keeps line tables for backtraces.
for bin in directord directorctl; do
    strip --strip-debug -o "$stage/bin/$bin" "$release/$bin"
done
# -n: no name or time stamp in the gzip header, so rebuilds are identical.
for page in packaging/man/*.[0-9]; do
    gzip -9n -c "$page" >"$stage/man/$(basename "$page").gz"
done
"$stage/bin/directorctl" completions bash >"$stage/completions/directorctl"
"$stage/bin/directorctl" completions zsh >"$stage/completions/_directorctl"
"$stage/bin/directorctl" completions fish >"$stage/completions/directorctl.fish"

out="$root/target/packages"
mkdir -p "$out"
echo "== cargo deb"
cargo deb -p directord --no-build --no-strip --output "$out"
echo "== cargo generate-rpm"
cargo generate-rpm -p directord --output "$out"
ls -l "$out"
