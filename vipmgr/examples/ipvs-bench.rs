//! IPVS reconcile benchmark (prints figures; not a timed test). Runs as root in a
//! kernel with IPVS, in a network namespace of its own — normally inside the
//! test VM through `tests/vm/bench-ipvs.sh`.
//!
//! 1. apply N services × M real servers to an empty table (one reconcile);
//! 2. change one weight and reconcile everything again (the dump of the whole
//!    table, then one edit), and the same change scoped to its service (what
//!    `directorctl drain` does);
//! 3. reconcile once more with nothing to change (a dump, no change request);
//! 4. empty the table and time `ipvsadm -R` restoring the same table;
//!
//! then prints the ratio of `ipvsadm -R` to the reconcile from empty.
//!
//! ```sh
//! ipvs-bench [--services 1000] [--reals 10]
//! ```

use std::{
    collections::BTreeSet,
    env,
    io::Write,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use nix::sched::{CloneFlags, unshare};
use vipmgr::ipvs::{Destination, Forward, Ipvs, Scheduler, Service, ServiceKey, VirtualService};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipvs-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn arg(name: &str, default: usize) -> Result<usize, String> {
    let args: Vec<String> = env::args().collect();
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} needs a number")),
    }
}

fn table(
    services: usize,
    reals: usize,
    weight_of: impl Fn(usize, usize) -> u32,
) -> Vec<VirtualService> {
    (0..services)
        .map(|s| {
            let vip = Ipv4Addr::new(10, 1, (s / 250) as u8, (s % 250 + 1) as u8);
            let key = ServiceKey::tcp(SocketAddr::V4(SocketAddrV4::new(vip, 80)));
            let destinations = (0..reals)
                .map(|r| {
                    let n = s * reals + r;
                    let real = Ipv4Addr::new(
                        10,
                        2 + (n / 62_500) as u8,
                        (n / 250 % 250) as u8,
                        (n % 250 + 1) as u8,
                    );
                    Destination::new(
                        SocketAddr::V4(SocketAddrV4::new(real, 8080)),
                        Forward::Masquerade,
                        weight_of(s, r),
                    )
                })
                .collect();
            VirtualService::new(
                Service::new(key, Scheduler::WeightedLeastConnection),
                destinations,
            )
        })
        .collect()
}

/// The same table as `ipvsadm -R` input.
fn restore_script(table: &[VirtualService]) -> String {
    let mut out = String::new();
    for v in table {
        let ServiceKey::Inet { address, .. } = v.key() else {
            continue;
        };
        out.push_str(&format!("-A -t {address} -s wlc\n"));
        for d in &v.destinations {
            out.push_str(&format!(
                "-a -t {address} -r {} -m -w {}\n",
                d.address, d.weight
            ));
        }
    }
    out
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn run() -> Result<(), String> {
    let services = arg("--services", 1000)?;
    let reals = arg("--reals", 10)?;
    unshare(CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("unshare(CLONE_NEWNET): {e} (run as root)"))?;
    // With `lo` down the kernel finds no route type for any address and refuses
    // every real server (EINVAL).
    let lo_up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .map_err(|e| format!("ip: {e}"))?;
    if !lo_up.success() {
        return Err("ip link set lo up failed".into());
    }
    let mut ipvs = Ipvs::open().map_err(|e| e.to_string())?;
    let rows = services * (1 + reals);
    println!(
        "IPVS reconcile benchmark: {services} services x {reals} real servers ({rows} table rows)"
    );

    let desired = table(services, reals, |_, r| 10 + r as u32);
    let keys: BTreeSet<ServiceKey> = desired.iter().map(VirtualService::key).collect();

    let start = Instant::now();
    let report = ipvs.reconcile(&desired, &keys).map_err(|e| e.to_string())?;
    let full = start.elapsed();
    if !report.is_clean() || report.applied.len() != rows {
        return Err(format!(
            "apply from empty: {} applied, {} failed; first: {}",
            report.applied.len(),
            report.failures.len(),
            report
                .failures
                .first()
                .map(|f| f.to_string())
                .unwrap_or_default()
        ));
    }
    println!(
        "apply from empty          {:>10}  ({} changes)",
        ms(full),
        report.applied.len()
    );

    let changed_service = services / 2;
    let desired = table(services, reals, |s, r| {
        if s == changed_service && r == 3 {
            99
        } else {
            10 + r as u32
        }
    });
    let start = Instant::now();
    let report = ipvs.reconcile(&desired, &keys).map_err(|e| e.to_string())?;
    let one_full = start.elapsed();
    if report.applied.len() != 1 || !report.is_clean() {
        return Err(format!("one weight: {} changes", report.applied.len()));
    }
    println!(
        "one weight, whole table   {:>10}  (1 change; dump of every service included)",
        ms(one_full)
    );

    // The same change scoped to its service, many times over (alternating
    // weights): the median and the worst.
    let mut changed = [desired[changed_service].clone()];
    let one_key: BTreeSet<ServiceKey> = [changed[0].key()].into();
    let mut times = Vec::new();
    for round in 0..21 {
        changed[0].destinations[3].weight = 90 + round % 2;
        let start = Instant::now();
        let report = ipvs
            .reconcile(&changed, &one_key)
            .map_err(|e| e.to_string())?;
        times.push(start.elapsed());
        if report.applied.len() != 1 {
            return Err(format!(
                "one weight, scoped: {} changes",
                report.applied.len()
            ));
        }
    }
    times.sort();
    println!(
        "one weight, its service   {:>10}  (1 change; what drain/enable do; median of {}, worst {})",
        ms(times[times.len() / 2]),
        times.len(),
        ms(times[times.len() - 1])
    );

    let mut desired = desired;
    desired[changed_service] = changed[0].clone();
    let start = Instant::now();
    let report = ipvs.reconcile(&desired, &keys).map_err(|e| e.to_string())?;
    let noop = start.elapsed();
    if !report.applied.is_empty() || !report.is_clean() {
        return Err(format!("no-op: {} changes", report.applied.len()));
    }
    println!("no-op reconcile           {:>10}  (0 changes)", ms(noop));

    let start = Instant::now();
    let listed = ipvs.services().map_err(|e| e.to_string())?.len();
    let list = start.elapsed();
    let start = Instant::now();
    ipvs.table(&keys).map_err(|e| e.to_string())?;
    let read = start.elapsed();
    println!(
        "  of which the dump        {:>10}  (listing the {listed} services alone: {})",
        ms(read),
        ms(list)
    );

    ipvs.flush().map_err(|e| e.to_string())?;
    let script = restore_script(&desired);
    let start = Instant::now();
    let mut child = Command::new("ipvsadm")
        .arg("-R")
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| format!("ipvsadm: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("ipvsadm stdin")?
        .write_all(script.as_bytes())
        .map_err(|e| e.to_string())?;
    let status = child.wait().map_err(|e| e.to_string())?;
    let restore = start.elapsed();
    if !status.success() {
        return Err(format!("ipvsadm -R: {status}"));
    }
    let restored = ipvs.table(&keys).map_err(|e| e.to_string())?;
    if restored != desired {
        return Err("ipvsadm -R did not restore the same table".into());
    }
    println!("ipvsadm -R, same table    {:>10}", ms(restore));
    println!(
        "ratio ipvsadm -R / apply from empty: {:.2}x",
        restore.as_secs_f64() / full.as_secs_f64()
    );
    // And the reconcile agrees that ipvsadm's table is the desired one.
    let report = ipvs.reconcile(&desired, &keys).map_err(|e| e.to_string())?;
    if !report.applied.is_empty() {
        return Err(format!(
            "after ipvsadm -R: {} changes",
            report.applied.len()
        ));
    }
    Ok(())
}
