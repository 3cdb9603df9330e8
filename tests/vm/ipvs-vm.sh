#!/usr/bin/env bash
# Runs one command inside a Debian 12 kernel that has IPVS, under qemu (TCG).
#
#   bash tests/vm/ipvs-vm.sh [OPTIONS] [--] COMMAND [ARG...]
#
# The guest mounts this machine's root file system read-only over 9p and chroots
# into it, so the work tree, target/ binaries, ipvsadm, ip, nft ... are all there.
# The command runs as root in the current directory with the caller's exported
# environment (minus TMPDIR & co.), stdin from /dev/null; its stdout and stderr are
# printed here afterwards (stdout, then stderr) and its exit status becomes this
# script's. In the guest /tmp, /run, /var/{lib,tmp,log,cache} are fresh tmpfs: the
# host's /tmp is not visible there. See tests/vm/README.md.
#
# Options:
#   --timeout SECS   kill the VM after SECS (default 900; exit 124)
#   --mem MB         guest memory (default 1024)
#   --smp N          guest CPUs (default 2)
#   --keep           keep the per-run directory (console log, output) and say where
#   --console        print the guest's kernel console log after the run
#   --prepare        only download/extract the kernel and build the initramfs
#   --print-boot-time  say on stderr how long the guest took to reach the command
#   -v, --verbose    say what the harness does
#
# Exit status: the command's; 124 on timeout; 125 when the harness itself failed.
#
# Environment:
#   DIRECTORD_VM_CACHE    cache directory (default /var/cache/directord-vm as root,
#                         else ${XDG_CACHE_HOME:-~/.cache}/directord-vm)
#   DIRECTORD_VM_KERNEL   apt package to use, e.g. linux-image-6.1.0-56-amd64
#                         (default: the newest linux-image-6.1.0-N-amd64 apt knows)
#   DIRECTORD_VM_NO_INSTALL=1  never call apt-get install (fail instead)
#   DIRECTORD_VM_ACCEL    qemu accelerator (default tcg; "kvm" where it works)
#
# Inside the guest DIRECTORD_IPVS_VM=1 is set and DIRECTORD_VM_RUN_DIR names a
# writable directory that is the same path on the host (kept with --keep).

set -euo pipefail

readonly HARNESS_FAILED=125
die() {
    echo "ipvs-vm: $*" >&2
    exit "$HARNESS_FAILED"
}
log() { [[ -n "${VERBOSE:-}" ]] && echo "ipvs-vm: $*" >&2 || true; }

timeout_secs=900
mem=1024
smp=2
keep=""
show_console=""
prepare_only=""
print_times=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --timeout) timeout_secs="${2:?--timeout needs seconds}"; shift 2 ;;
        --mem) mem="${2:?--mem needs MB}"; shift 2 ;;
        --smp) smp="${2:?--smp needs a count}"; shift 2 ;;
        --keep) keep=1; shift ;;
        --console) show_console=1; shift ;;
        --prepare) prepare_only=1; shift ;;
        --print-boot-time) print_times=1; shift ;;
        -v|--verbose) VERBOSE=1; shift ;;
        -h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        --) shift; break ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) break ;;
    esac
done
if [[ -z "$prepare_only" && $# -eq 0 ]]; then
    die "no command given (usage: ipvs-vm.sh [OPTIONS] [--] COMMAND [ARG...])"
fi

# ---------------------------------------------------------------------------
# Host tools
# ---------------------------------------------------------------------------

# command -> Debian package that provides it.
declare -A NEEDED=(
    [qemu-system-x86_64]=qemu-system-x86
    [/bin/busybox]=busybox-static
    [depmod]=kmod
    [modprobe]=kmod
    [ipvsadm]=ipvsadm
    [xz]=xz-utils
)
missing=()
for tool in "${!NEEDED[@]}"; do
    if [[ "$tool" == /* ]]; then
        [[ -x "$tool" ]] && continue
    else
        PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1 && continue
    fi
    missing+=("${NEEDED[$tool]}")
done
# busybox may be the dynamic one; the initramfs needs the static build.
if [[ -x /bin/busybox ]] && ldd /bin/busybox >/dev/null 2>&1; then
    missing+=(busybox-static)
fi
if [[ ${#missing[@]} -gt 0 ]]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    [[ -n "${DIRECTORD_VM_NO_INSTALL:-}" ]] && die "missing packages: ${missing[*]}"
    [[ $(id -u) -eq 0 ]] || die "missing packages ${missing[*]}; install them as root"
    echo "ipvs-vm: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
        apt-get update -qq >/dev/null || true
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
            die "apt-get install ${missing[*]} failed"
    fi
fi
export PATH="$PATH:/usr/sbin:/sbin"

# ---------------------------------------------------------------------------
# The kernel: download, extract, cache (keyed by package and version)
# ---------------------------------------------------------------------------

if [[ -n "${DIRECTORD_VM_CACHE:-}" ]]; then
    cache_root="$DIRECTORD_VM_CACHE"
elif [[ $(id -u) -eq 0 ]]; then
    cache_root=/var/cache/directord-vm
else
    cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/directord-vm"
fi
mkdir -p "$cache_root" || die "cannot create cache directory $cache_root"
cache_root=$(cd "$cache_root" && pwd -P)

# Newest "linux-image-6.1.0-N-amd64" (the plain flavour: not cloud, not rt).
newest_kernel_package() {
    apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' 2>/dev/null |
        awk '{print $1}' | sort -V | tail -n 1
}

package="${DIRECTORD_VM_KERNEL:-}"
if [[ -z "$package" ]]; then
    package=$(newest_kernel_package)
    if [[ -z "$package" ]]; then
        apt-get update -qq >/dev/null 2>&1 || true
        package=$(newest_kernel_package)
    fi
fi
version=""
if [[ -n "$package" ]]; then
    version=$(apt-cache show --no-all-versions "$package" 2>/dev/null |
        awk '/^Version:/ && !v {v = $2} END {print v}')  # reads it all: no SIGPIPE under pipefail
fi
if [[ -z "$package" || -z "$version" ]]; then
    # Offline or no apt lists: fall back to the newest kernel already cached.
    kdir=$(find "$cache_root" -mindepth 2 -maxdepth 2 -name ready -printf '%h\n' 2>/dev/null |
        sort -V | tail -n 1)
    [[ -n "$kdir" ]] || die "no linux-image-6.1.0-*-amd64 known to apt and none cached in $cache_root"
else
    kdir="$cache_root/${package}_${version//:/%}"
fi

# Serialise preparation between concurrent runs (cargo test runs tests in parallel).
exec 9>"$cache_root/.lock"
flock 9

if [[ ! -e "$kdir/ready" ]]; then
    echo "ipvs-vm: preparing $package $version in $kdir" >&2
    rm -rf "$kdir"
    mkdir -p "$kdir/download"
    (cd "$kdir/download" && apt-get download "$package=$version" >/dev/null 2>&1) ||
        (cd "$kdir/download" && apt-get update -qq >/dev/null 2>&1 &&
            apt-get download "$package=$version" >/dev/null 2>&1) ||
        die "apt-get download $package=$version failed"
    deb=$(find "$kdir/download" -name '*.deb' | head -n 1)
    mkdir -p "$kdir/root"
    dpkg-deb -x "$deb" "$kdir/root" || die "cannot unpack $deb"
    kver=$(ls "$kdir/root/lib/modules")
    [[ -n "$kver" && -d "$kdir/root/lib/modules/$kver" ]] || die "no modules in $deb"
    # Modules may come compressed in later packages; busybox insmod wants plain .ko.
    find "$kdir/root/lib/modules/$kver" -name '*.ko.xz' -exec xz -d {} + 2>/dev/null || true
    depmod -b "$kdir/root" "$kver" || die "depmod failed"
    mkdir -p "$kdir/lib"
    mv "$kdir/root/lib/modules" "$kdir/lib/modules"
    # Boot the uncompressed ELF through its PVH entry point: decompressing the
    # xz'd bzImage takes seconds under TCG.
    vmlinuz="$kdir/root/boot/vmlinuz-$kver"
    offset=$(LC_ALL=C grep -obUaP -m 1 '\xfd7zXZ\x00' "$vmlinuz" | cut -d: -f1 || true)
    if [[ -n "$offset" ]] &&
        tail -c +"$((offset + 1))" "$vmlinuz" >"$kdir/vmlinux.xz" &&
        xz -dc --single-stream "$kdir/vmlinux.xz" >"$kdir/vmlinux" 2>/dev/null &&
        [[ $(od -An -tx1 -N 4 "$kdir/vmlinux" | tr -d ' ') == 7f454c46 ]]; then
        log "extracted vmlinux for a PVH boot"
    else
        rm -f "$kdir/vmlinux"
    fi
    rm -f "$kdir/vmlinux.xz"
    cp "$vmlinuz" "$kdir/vmlinuz"
    cp "$kdir/root/boot/config-$kver" "$kdir/config"
    rm -rf "$kdir/root" "$kdir/download"
    echo "$kver" >"$kdir/kernel-release"
    touch "$kdir/ready"
fi
kver=$(cat "$kdir/kernel-release")
moddir="$kdir/lib/modules"

# ---------------------------------------------------------------------------
# The initramfs: busybox-static, the modules to preload, /init (cached by content)
# ---------------------------------------------------------------------------

# Loaded at boot, in this order (with their dependencies). Anything else is
# loaded on demand by the kernel through /sbin/modprobe (busybox) from $moddir.
BOOT_MODULES=(
    virtio_pci 9pnet_virtio 9p
    crc32c_generic # must precede libcrc32c (nf_conntrack's checksum)
    nf_conntrack nf_defrag_ipv4 nf_defrag_ipv6 nf_nat
    ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_lblc ip_vs_lblcr ip_vs_dh
    ip_vs_sh ip_vs_sed ip_vs_nq ip_vs_fo ip_vs_ovf ip_vs_mh ip_vs_twos ip_vs_ftp
    ipip veth bridge dummy
)

read -r -d '' INIT <<'INIT_EOF' || true
#!/bin/busybox sh
# PID 1 of the IPVS test VM (generated by tests/vm/ipvs-vm.sh).
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() {
    echo "ipvs-vm-init: $*" >&2
    [ -d /share/. ] && echo "ipvs-vm-init: $*" >>/share/harness-error
    echo 125 >/share/status 2>/dev/null
    sync
    poweroff -f
}
while read -r path args; do
    [ -n "$path" ] || continue
    insmod "/lib/modules/boot/$path" $args 2>/dev/null ||
        echo "ipvs-vm-init: insmod $path failed" >&2
done </lib/modules/boot/order
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=none run /share ||
    fail "cannot mount the run directory"
. /share/config || fail "cannot read the run configuration"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro hostroot /host ||
    fail "cannot mount the host root"
# The full module tree of this kernel, for modprobe (the kernel's and the chroot's).
mkdir -p /lib/modules/"$KVER"
mount --bind "/host$MODULE_DIR" /lib/modules/"$KVER" || fail "cannot bind $MODULE_DIR"
echo /sbin/modprobe >/proc/sys/kernel/modprobe
hostname ipvs-vm
ip link set lo up
for d in proc sys dev tmp run; do [ -d "/host/$d" ] || fail "host has no /$d"; done
# A second view of the host root, not covered by the tmpfs mounts below: the work
# tree (or the cargo target dir) may live under the host's /tmp, which the guest
# must still see.
mkdir -p /orig && mount --bind /host /orig
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs devtmpfs /host/dev
mkdir -p /host/dev/pts /host/dev/shm 2>/dev/null
mount -t devpts -o newinstance,ptmxmode=0666 devpts /host/dev/pts 2>/dev/null
mount -t tmpfs tmpfs /host/dev/shm 2>/dev/null
mount -t tmpfs -o mode=1777 tmpfs /host/tmp
mount -t tmpfs -o mode=0755 tmpfs /host/run
for d in /var/lib /var/tmp /var/log /var/cache; do
    [ -d "/host$d" ] && [ ! -L "/host$d" ] && mount -t tmpfs tmpfs "/host$d"
done
chmod 1777 /host/var/tmp 2>/dev/null
if [ -f /share/keep ]; then
    while read -r p; do
        case "$p" in
            /tmp/* | /run/* | /var/lib/* | /var/tmp/* | /var/log/* | /var/cache/*)
                if [ -d "/orig$p" ]; then
                    mkdir -p "/host$p" && mount --bind "/orig$p" "/host$p" ||
                        echo "ipvs-vm-init: cannot show $p" >&2
                fi
                ;;
        esac
    done </share/keep
fi
[ -d /host/lib/modules ] && mount --bind /lib/modules /host/lib/modules
mkdir -p "/host$RUN_DIR" && mount --bind /share "/host$RUN_DIR" ||
    fail "cannot bind the run directory to $RUN_DIR"
mount -t cgroup2 cgroup2 /host/sys/fs/cgroup 2>/dev/null
read -r up _ </proc/uptime
echo "$up" >/share/boot-seconds
chroot /host /bin/bash "$RUN_DIR/command.sh" </dev/null >/share/stdout 2>/share/stderr
echo $? >/share/status
sync
poweroff -f
INIT_EOF

# Modules this kernel does not have (ip_vs_twos is 6.3+) are skipped.
boot_mods=$(for m in "${BOOT_MODULES[@]}"; do
    modprobe -d "$kdir" -S "$kver" --show-depends "$m" 2>/dev/null || true
done | awk '$1 == "insmod" && !seen[$2]++ { $1 = ""; print substr($0, 2) }')
[[ -n "$boot_mods" ]] || die "no boot modules resolved for $kver"
busybox_sum=$(sha256sum /bin/busybox | cut -c1-16)
key=$(printf '%s\n%s\n%s\n' "$INIT" "$boot_mods" "$busybox_sum" | sha256sum | cut -c1-16)
initramfs="$kdir/initramfs-$key.cpio"
if [[ ! -e "$initramfs" ]]; then
    log "building $initramfs"
    stage=$(mktemp -d "$kdir/.stage.XXXXXX")
    mkdir -p "$stage"/{bin,sbin,proc,sys,dev,host,share,lib/modules/boot,etc}
    cp /bin/busybox "$stage/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [[ "$applet" == busybox ]] && continue
        ln -s busybox "$stage/bin/$applet"
    done
    for applet in modprobe insmod rmmod lsmod poweroff; do ln -sf ../bin/busybox "$stage/sbin/$applet"; done
    printf '%s\n' "$INIT" >"$stage/init"
    chmod 755 "$stage/init"
    : >"$stage/lib/modules/boot/order"
    while read -r path args; do
        rel=${path#"$moddir/$kver/"}
        mkdir -p "$stage/lib/modules/boot/$(dirname "$rel")"
        cp "$path" "$stage/lib/modules/boot/$rel"
        echo "$rel${args:+ $args}" >>"$stage/lib/modules/boot/order"
    done <<<"$boot_mods"
    (cd "$stage" && find . | LC_ALL=C sort | /bin/busybox cpio -o -H newc 2>/dev/null) >"$initramfs.tmp" ||
        die "cannot build the initramfs"
    mv "$initramfs.tmp" "$initramfs"
    rm -rf "$stage"
    find "$kdir" -maxdepth 1 -name 'initramfs-*.cpio' ! -name "${initramfs##*/}" -delete
fi
flock -u 9

if [[ -n "$prepare_only" ]]; then
    echo "ipvs-vm: ready: kernel $kver in $kdir"
    exit 0
fi

# ---------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------

run_dir=$(mktemp -d "${TMPDIR:-/tmp}/ipvs-vm.XXXXXX")
run_dir=$(cd "$run_dir" && pwd -P)
cleanup() {
    if [[ -n "$keep" ]]; then
        echo "ipvs-vm: run directory kept: $run_dir" >&2
    else
        rm -rf "$run_dir"
    fi
}
trap cleanup EXIT

{
    printf 'KVER=%q\n' "$kver"
    printf 'MODULE_DIR=%q\n' "$moddir/$kver"
    printf 'RUN_DIR=%q\n' "$run_dir"
} >"$run_dir/config"

# Host paths the command needs even where the guest has a fresh tmpfs (/tmp, ...):
# the working directory, its work tree, the cargo target dir, the command's own dir.
{
    pwd -P
    git -C "$PWD" rev-parse --show-toplevel 2>/dev/null || true
    if [[ -n "${CARGO_TARGET_DIR:-}" && -d "$CARGO_TARGET_DIR" ]]; then
        (cd "$CARGO_TARGET_DIR" && pwd -P)
    fi
    if [[ "${1:-}" == /* ]]; then
        dirname "$1"
    fi
} | LC_ALL=C sort -u >"$run_dir/keep"

{
    echo '# The command, run by bash inside the chroot (generated by ipvs-vm.sh).'
    while read -r name; do
        case "$name" in
            PWD | OLDPWD | SHLVL | _ | TMPDIR | TMP | TEMP | BASH_* | TERM | COLUMNS | LINES) continue ;;
        esac
        [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
        printf 'export %s=%q\n' "$name" "${!name}"
    done < <(compgen -e)
    printf 'export DIRECTORD_IPVS_VM=1 DIRECTORD_VM_RUN_DIR=%q TERM=dumb\n' "$run_dir"
    printf 'cd %q 2>/dev/null || cd /\n' "$PWD"
    printf 'exec'
    printf ' %q' "$@"
    printf '\n'
} >"$run_dir/command.sh"

if [[ -e "$kdir/vmlinux" ]]; then kernel="$kdir/vmlinux"; else kernel="$kdir/vmlinuz"; fi
accel="${DIRECTORD_VM_ACCEL:-tcg}"
if [[ "$accel" == tcg ]]; then accel="tcg,thread=multi"; fi
qemu=(
    qemu-system-x86_64
    -accel "$accel" -M pc -cpu max -smp "$smp" -m "$mem"
    -nodefaults -no-user-config -nographic -nic none -no-reboot
    -serial "file:$run_dir/console.log" -monitor none
    -kernel "$kernel" -initrd "$initramfs"
    -append "console=ttyS0 quiet panic=-1 rdinit=/init mitigations=off tsc=reliable no_timer_check i8042.nokbd i8042.noaux i8042.nopnp noreplace-smp printk.devkmsg=off"
    -fsdev "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap"
    -device "virtio-9p-pci,fsdev=root,mount_tag=hostroot"
    -fsdev "local,id=run,path=$run_dir,security_model=none,multidevs=remap"
    -device "virtio-9p-pci,fsdev=run,mount_tag=run"
)
log "${qemu[*]}"
started=$(date +%s%N)
qemu_status=0
timeout -k 5 "$timeout_secs" "${qemu[@]}" </dev/null >"$run_dir/qemu.log" 2>&1 || qemu_status=$?
finished=$(date +%s%N)

[[ -e "$run_dir/stdout" ]] && cat "$run_dir/stdout"
[[ -e "$run_dir/stderr" ]] && cat "$run_dir/stderr" >&2
if [[ -n "$show_console" ]]; then
    echo "---- guest console ----" >&2
    cat "$run_dir/console.log" >&2 || true
fi
if [[ -n "$print_times" && -e "$run_dir/boot-seconds" ]]; then
    awk -v total="$(((finished - started) / 1000000))" \
        -v boot="$(cat "$run_dir/boot-seconds")" \
        'BEGIN { printf "ipvs-vm: guest reached the command after %.1f s (guest clock); whole run %.1f s\n", boot, total / 1000 }' >&2
fi

if [[ $qemu_status -eq 124 ]]; then
    echo "ipvs-vm: timed out after ${timeout_secs}s; console tail:" >&2
    tail -n 20 "$run_dir/console.log" >&2 || true
    exit 124
fi
if [[ ! -s "$run_dir/status" ]]; then
    echo "ipvs-vm: the VM ended without a status (qemu exit $qemu_status)" >&2
    cat "$run_dir/qemu.log" >&2 || true
    echo "---- console tail ----" >&2
    tail -n 30 "$run_dir/console.log" >&2 || true
    exit "$HARNESS_FAILED"
fi
if [[ -s "$run_dir/harness-error" ]]; then
    cat "$run_dir/harness-error" >&2
fi
exit "$(cat "$run_dir/status")"
