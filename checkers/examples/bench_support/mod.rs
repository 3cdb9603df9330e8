//! Shared by the checkers benchmarks: process CPU and memory figures, the file
//! descriptor limit, and loopback real-server addresses.
#![allow(dead_code)] // each example uses its own part

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// User + system CPU seconds of this process so far (getrusage RUSAGE_SELF).
pub fn cpu_seconds() -> f64 {
    let (user, sys) = cpu_user_sys();
    user + sys
}

/// User and system CPU seconds of this process so far, apart.
pub fn cpu_user_sys() -> (f64, f64) {
    // SAFETY: an all-zero rusage is a valid value; getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid out pointer.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage");
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(usage.ru_utime), secs(usage.ru_stime))
}

/// A field of /proc/self/status ("VmHWM:", "VmRSS:") in MiB.
pub fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (at least `want` if allowed).
pub fn raise_nofile(want: u64) -> u64 {
    // SAFETY: an all-zero rlimit is valid; getrlimit only writes into it.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: valid resource and out pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    let target = lim.rlim_max.max(want.min(lim.rlim_max));
    if lim.rlim_cur < target {
        lim.rlim_cur = target;
        // SAFETY: valid resource and pointer to an initialised rlimit.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    }
    lim.rlim_cur
}

/// The i-th loopback real server address: 127.1.0.1, 127.1.0.2, … (250 per /24,
/// skipping .0 and .255), all answered by a server listening on 0.0.0.0.
pub fn real_ip(i: usize) -> IpAddr {
    let block = i / 250;
    IpAddr::V4(Ipv4Addr::new(
        127,
        (1 + block / 256) as u8,
        (block % 256) as u8,
        (i % 250 + 1) as u8,
    ))
}

/// "1s", "250ms", "2m".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit in {s:?}")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// `--name value` from the command line.
pub fn arg(name: &str) -> Option<String> {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == name {
            return args.next();
        }
        if let Some(v) = a.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            return Some(v.to_string());
        }
    }
    None
}
