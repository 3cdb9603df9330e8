//! The runner at scale: N jobs (default 10,000) on a fixed interval (default 1 s),
//! on a 2-worker runtime as directord runs it, and the CPU and memory of the
//! checking process. The real servers are loopback addresses 127.1.x.y answered by
//! a child process (tcp: accepts and closes), so their work is not counted.
//!
//! ```text
//! cargo run --release -p checkers --example runner_bench -- \
//!     [--jobs 10000] [--interval 1s] [--seconds 20] [--check tcp|ping]
//! ```
//!
//! Prints rounds/s, the share of up reports, CPU cores used (user + system, after
//! the first interval) and peak RSS.

mod bench_support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench_support::{arg, cpu_seconds, parse_duration, real_ip, status_mib};
use checkers::runner::{self, Job, Key, Outcome, RunnerConfig};
use checkers::spec::{Check, Connect, Health, Protocol, Tcp};

fn main() {
    if let Some(port) = arg("--serve") {
        serve(port.parse().expect("--serve PORT"));
        return;
    }
    bench_support::raise_nofile(65536);
    let jobs: usize = arg("--jobs").and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let interval = arg("--interval").map_or(Duration::from_secs(1), |v| {
        parse_duration(&v).expect("--interval")
    });
    let seconds: u64 = arg("--seconds").and_then(|v| v.parse().ok()).unwrap_or(20);
    let kind = arg("--check").unwrap_or_else(|| "tcp".into());

    // Above the ephemeral port range (32768-60999), where checks take theirs.
    let port = 61_000 + (std::process::id() % 4000) as u16;
    let mut server = Command::new(std::env::current_exe().expect("exe"))
        .args(["--serve", &port.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .expect("server");
    std::thread::sleep(Duration::from_millis(300));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // On a worker, as directord's supervisor: reports then wake a task, not a thread.
    let bench = rt.spawn(async move {
        let protocol = match kind.as_str() {
            "ping" => Protocol::Ping,
            _ => Protocol::Tcp(Tcp::default()),
        };
        let check = Arc::new(Check {
            interval,
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 3,
            retry: 1,
            retry_delay: Duration::from_millis(100),
            initial: Health::Down,
            connect: Connect::default(),
            protocol,
        });
        let (handle, mut reports) = runner::spawn(RunnerConfig::default());
        let list = (0..jobs)
            .map(|i| Job {
                key: Key {
                    service: format!("svc{}", i / 100),
                    real: SocketAddr::new(real_ip(i), port),
                },
                check: Arc::clone(&check),
            })
            .collect();
        let errors = handle.set_jobs(list).await;
        assert!(errors.is_empty(), "{errors:?}");

        // Settle for one interval, then measure.
        let settle = tokio::time::sleep(interval);
        tokio::pin!(settle);
        loop {
            tokio::select! {
                _ = &mut settle => break,
                r = reports.recv() => { r.expect("reports"); }
            }
        }
        let (cpu0, t0) = (cpu_seconds(), Instant::now());
        let (mut rounds, mut up) = (0u64, 0u64);
        let mut first_down = None;
        let end = tokio::time::sleep(Duration::from_secs(seconds));
        tokio::pin!(end);
        loop {
            tokio::select! {
                _ = &mut end => break,
                r = reports.recv() => {
                    let r = r.expect("reports");
                    rounds += 1;
                    match r.result.outcome {
                        Outcome::Up => up += 1,
                        o => { first_down.get_or_insert(o); }
                    }
                }
            }
        }
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        println!(
            "{kind}: {jobs} jobs every {interval:?}: {:.0} rounds/s, {:.2}% up, {:.3} cores, peak RSS {:.1} MiB",
            rounds as f64 / wall,
            up as f64 * 100.0 / rounds.max(1) as f64,
            cpu / wall,
            status_mib("VmHWM:")
        );
        if let Some(o) = first_down {
            println!("first failure: {o:?}");
        }
    });
    rt.block_on(bench).expect("bench");
    let _ = server.kill();
    let _ = server.wait();
}

/// The real servers: accept on 0.0.0.0:port and close.
fn serve(port: u16) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket
            .bind(SocketAddr::from(([0, 0, 0, 0], port)))
            .expect("bind");
        let listener = socket.listen(4096).expect("listen");
        loop {
            if let Ok((s, _)) = listener.accept().await {
                drop(s);
            }
        }
    });
}
