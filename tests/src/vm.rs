//! The IPVS VM (DESIGN §7, layer 4) from a test binary: `tests/vm/ipvs-vm.sh` boots a
//! Debian kernel that has IPVS and runs one command in it (see tests/vm/README.md).
//!
//! The pattern: one ordinary `#[test]` on the host calls [`run_tests_inside`], which boots
//! the VM once and runs this same test binary inside it, filtered to the `vm_*` tests.
//! Those are `#[ignore]`d (the host kernel may have no IPVS) and start with
//! [`inside_or_skip`], so a plain `--ignored` run on the host says it skipped them.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Set by the harness inside the VM.
pub const INSIDE: &str = "DIRECTORD_IPVS_VM";

/// True inside the IPVS VM.
pub fn inside() -> bool {
    std::env::var_os(INSIDE).is_some()
}

/// The guest half: true inside the VM; otherwise says the test was skipped and why.
pub fn inside_or_skip(test: &str) -> bool {
    if inside() {
        return true;
    }
    let _ = writeln!(
        std::io::stderr(),
        "{test}: skipped: runs inside the IPVS VM (started by the test that boots it)"
    );
    false
}

/// The host half: boots the VM once and runs this test binary inside it with
/// `--ignored --test-threads=THREADS FILTER`. Returns at once inside the VM (the filtered
/// tests are the ones to run there) and, saying so, when not root. Panics with the guest's
/// output when the VM cannot run or a test inside fails.
pub fn run_tests_inside(test: &str, filter: &str, threads: usize, timeout: Duration) {
    if inside() {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        let _ = writeln!(
            std::io::stderr(),
            "{test}: skipped: needs root (qemu, apt, network namespaces)"
        );
        return;
    }
    let harness = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm/ipvs-vm.sh");
    let exe = std::env::current_exe().expect("path of this test binary");
    let started = Instant::now();
    let output = Command::new("bash")
        .arg(&harness)
        .arg("--timeout")
        .arg(timeout.as_secs().to_string())
        .arg("--")
        .arg(&exe)
        .arg("--ignored")
        .arg(format!("--test-threads={threads}"))
        .arg(filter)
        .output()
        .expect("run bash tests/vm/ipvs-vm.sh");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    match output.status.code() {
        Some(0) => {}
        Some(125) => panic!(
            "{test}: the IPVS VM could not run (tests/vm/ipvs-vm.sh exit 125): it needs \
             qemu-system-x86, busybox-static, kmod and apt access to \
             linux-image-6.1.0-*-amd64; see tests/vm/README.md. Its output:\n{stderr}"
        ),
        Some(124) => panic!("{test}: the IPVS VM timed out after {timeout:?}; output above"),
        other => panic!("{test}: tests failed inside the IPVS VM (exit {other:?}); output above"),
    }
    // The tests must have run, not just the VM booted.
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("test result: ok"))
        .unwrap_or_default();
    assert!(
        !summary.is_empty() && !summary.contains(" 0 passed"),
        "{test}: no {filter}* test ran inside the VM"
    );
    let _ = writeln!(
        std::io::stderr(),
        "{test}: inside the IPVS VM, {} (whole run {:.1}s)",
        summary.trim_start_matches("test result: "),
        elapsed.as_secs_f64()
    );
}
