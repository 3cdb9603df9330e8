//! How many real servers can one director check? Runs the real runner with an http
//! check for N real servers at 127.1.x.y:PORT, all answered by one real nginx
//! child (2 workers, listening on 0.0.0.0:PORT so every loopback address reaches
//! it; its CPU is not this process's), and prints what the checking process costs.
//!
//! ```text
//! cargo run --release -p checkers --example scale -- \
//!     --reals 1000 --interval 1s --duration 20s [--timeout 1s] [--threads 0]
//! ```
//!
//! Figures, over the measured window after one interval of warm-up:
//! - checks/s: Reports received per second;
//! - rounds per real per interval: 1.0 when every real is checked once an interval;
//! - max schedule lateness: per real, how far its round starts strayed from a
//!   fixed-rate grid (the spread of `start_k - k * interval`), the worst real;
//! - CPU seconds per 1,000 checks and cores used (getrusage RUSAGE_SELF user+sys
//!   of this process over the window), peak RSS (VmHWM).
//!
//! The runtime is directord's: the checks run on a current-thread runtime of their
//! own (`--threads 0`, the default; `--threads N` for a multi-thread runtime with N
//! workers, to compare).
//! The last line is tab-separated for `tests/bench/checkers-scale.sh`.
//!
//! Measured on an idle 2-core VM (interval 1 s, 20 s window; several runs):
//! 1,000 reals: 1,000 checks/s, 1.000 rounds per interval, lateness 4 ms,
//! 0.09 core, 6 MiB. 10,000 reals: 10,000 checks/s, 1.000 rounds per interval,
//! lateness 5-30 ms, 0.51-0.60 core (83-87 % of it kernel TCP work, which on
//! loopback includes the server side's SYN, accept and wake-up work for every
//! segment the checker sends), 21-29 MiB.

#[path = "../tests/nginx/mod.rs"]
mod nginx;
#[path = "../tests/support/mod.rs"]
mod support;

mod bench_support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bench_support::{arg, cpu_user_sys, parse_duration, raise_nofile, real_ip, status_mib};
use checkers::runner::{self, Job, Key, Outcome, RunnerConfig};
use nginx::Nginx;
use support::check::http_check;
use support::daemon::free_port;

fn main() {
    let reals: usize = arg("--reals").and_then(|v| v.parse().ok()).unwrap_or(1000);
    let duration = |name: &str, default: &str| {
        parse_duration(&arg(name).unwrap_or_else(|| default.into())).unwrap_or_else(|e| {
            eprintln!("{name}: {e}");
            std::process::exit(64)
        })
    };
    let interval = duration("--interval", "1s");
    let window = duration("--duration", "20s");
    let timeout = duration("--timeout", "1s");
    let threads: usize = arg("--threads").and_then(|v| v.parse().ok()).unwrap_or(0);
    let nofile = raise_nofile(1 << 20);

    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _nginx = Nginx::start(
        dir.path(),
        2,
        &format!(
            r#"
            server {{
                listen {port} default_server backlog=65535 reuseport;
                location = /health {{ return 200 "ok\n"; }}
            }}
            "#
        ),
        &[([127, 0, 0, 1], port).into()],
    );

    // directord's: a current-thread runtime; `--threads N`: multi-thread to compare.
    let rt = if threads == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .expect("runtime");
    let r = rt.block_on(run(reals, interval, window, timeout, port));

    println!(
        "{reals} reals, interval {interval:?}, timeout {timeout:?}, {threads} runtime threads, \
         RLIMIT_NOFILE {nofile}"
    );
    println!("  ready after            {:.2} s", r.ready_after);
    println!("  checks/s               {:.0}", r.checks_per_s);
    println!("  rounds/real/interval   {:.3}", r.rounds_per_interval);
    println!("  max schedule lateness  {:.1} ms", r.max_lateness_ms);
    println!(
        "  attempt latency        mean {:.2} ms, max {:.1} ms",
        r.mean_latency_ms, r.max_latency_ms
    );
    println!("  CPU s/1000 checks      {:.4}", r.cpu_per_1000);
    println!(
        "  cores used             {:.3} ({:.0}% of it in the kernel)",
        r.cores,
        r.kernel_share * 100.0
    );
    println!("  peak RSS               {:.1} MiB", r.peak_rss_mib);
    println!("  not up                 {}", r.not_up);
    for reason in &r.reasons {
        println!("    e.g. {reason}");
    }
    println!(
        "summary\t{reals}\t{:.0}\t{:.3}\t{:.1}\t{:.4}\t{:.3}\t{:.1}\t{}",
        r.checks_per_s,
        r.rounds_per_interval,
        r.max_lateness_ms,
        r.cpu_per_1000,
        r.cores,
        r.peak_rss_mib,
        r.not_up
    );
}

struct Figures {
    ready_after: f64,
    checks_per_s: f64,
    rounds_per_interval: f64,
    max_lateness_ms: f64,
    mean_latency_ms: f64,
    max_latency_ms: f64,
    cpu_per_1000: f64,
    cores: f64,
    /// System time over user + system.
    kernel_share: f64,
    peak_rss_mib: f64,
    not_up: u64,
    reasons: Vec<String>,
}

/// What the report collector has seen since the window opened.
#[derive(Default)]
struct Seen {
    reports: u64,
    not_up: u64,
    reasons: Vec<String>,
    latency_sum: Duration,
    latency_max: Duration,
    /// Per real: rounds, and the range of (start - k * interval) in seconds.
    grid: HashMap<SocketAddr, (u64, f64, f64)>,
}

async fn run(
    reals: usize,
    interval: Duration,
    window: Duration,
    timeout: Duration,
    port: u16,
) -> Figures {
    let check = Arc::new(http_check(|h, c| {
        h.path = "/health".into();
        c.interval = interval;
        c.timeout = timeout;
    }));
    let jobs: Vec<Job> = (0..reals)
        .map(|i| Job {
            key: Key {
                service: "bench".into(),
                real: SocketAddr::new(real_ip(i), port),
            },
            check: check.clone(),
        })
        .collect();
    let (handle, mut reports) = runner::spawn(RunnerConfig::default());
    let started = Instant::now();
    let errors = handle.set_jobs(jobs).await;
    assert!(errors.is_empty(), "jobs not prepared: {errors:?}");

    let seen = Arc::new(Mutex::new(Seen::default()));
    let origin = SystemTime::now();
    let collector = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(report) = reports.recv().await {
                let r = report.result;
                let start = r.at - r.latency;
                let start = start
                    .duration_since(origin)
                    .unwrap_or_default()
                    .as_secs_f64();
                let mut s = seen.lock().expect("lock");
                s.reports += 1;
                s.latency_sum += r.latency;
                s.latency_max = s.latency_max.max(r.latency);
                if r.outcome != Outcome::Up {
                    s.not_up += 1;
                    if s.reasons.len() < 5 {
                        s.reasons
                            .push(format!("{}: {:?}", report.key.real, r.outcome));
                    }
                }
                let slot = s
                    .grid
                    .entry(report.key.real)
                    .or_insert((0, f64::MAX, f64::MIN));
                let offset = start - slot.0 as f64 * interval.as_secs_f64();
                slot.0 += 1;
                slot.1 = slot.1.min(offset);
                slot.2 = slot.2.max(offset);
            }
        })
    };

    let mut ready = handle.ready();
    let _ = ready.wait_for(|r| *r).await;
    let ready_after = started.elapsed().as_secs_f64();
    // Warm-up: every job has had its first round (start spread over one interval).
    tokio::time::sleep(interval.saturating_sub(started.elapsed()) + interval).await;

    *seen.lock().expect("lock") = Seen::default();
    let (user0, sys0) = cpu_user_sys();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let (user1, sys1) = cpu_user_sys();
    let (user, sys) = (user1 - user0, sys1 - sys0);
    let cpu = user + sys;
    let wall = t0.elapsed().as_secs_f64();
    let s = std::mem::take(&mut *seen.lock().expect("lock"));
    drop(handle);
    collector.abort();

    let max_lateness = s
        .grid
        .values()
        .map(|(_, lo, hi)| hi - lo)
        .fold(0.0f64, f64::max);
    Figures {
        ready_after,
        checks_per_s: s.reports as f64 / wall,
        rounds_per_interval: s.reports as f64 / reals as f64 / (wall / interval.as_secs_f64()),
        max_lateness_ms: max_lateness * 1000.0,
        mean_latency_ms: s.latency_sum.as_secs_f64() * 1000.0 / s.reports.max(1) as f64,
        max_latency_ms: s.latency_max.as_secs_f64() * 1000.0,
        cpu_per_1000: cpu / s.reports.max(1) as f64 * 1000.0,
        cores: cpu / wall,
        kernel_share: sys / cpu.max(f64::MIN_POSITIVE),
        peak_rss_mib: status_mib("VmHWM:"),
        not_up: s.not_up,
        reasons: s.reasons,
    }
}
