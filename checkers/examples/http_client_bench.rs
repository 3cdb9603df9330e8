//! reqwest or hyper for the http check? Checks N loopback real servers (all
//! answered by one real nginx child, 2 workers) with each client and prints, per
//! client: checks/s, CPU seconds per 1,000 checks and peak RSS of the checking
//! process. Each client runs in its own child process so that peak RSS and CPU are
//! its own.
//!
//! ```text
//! cargo run --release -p checkers --example http_client_bench -- \
//!     [--reals 1000] [--checks 20000] [--concurrency 100]
//! ```
//!
//! (a) reqwest 0.13: no pool (`pool_max_idle_per_host(0)`), `no_proxy`, no
//!     redirects, rustls (ring, preconfigured, resumption off), `Connection: close`.
//! (b) hyper 1 `client::conn::http1` as `checkers::http` does it, through the public
//!     `Probe::run`.
//!
//! The plain HTTP real servers listen on 0.0.0.0:PORT so that every 127.1.x.y
//! address reaches them; the HTTPS one on 127.0.0.1 only.

#[path = "../tests/nginx/mod.rs"]
mod nginx;
#[path = "../tests/support/mod.rs"]
mod support;

mod bench_support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bench_support::{arg, cpu_seconds, real_ip, status_mib};
use checkers::spec::Tls;
use checkers::{Probe, Verdict};
use nginx::Nginx;
use support::check::http_check;
use support::daemon::free_port;
use support::pki::Pki;

const TLS_NAME: &str = "bench.test";

fn main() {
    match arg("--client") {
        Some(client) => measure(&client),
        None => compare(),
    }
}

/// Starts nginx and runs every (client, scheme) in a child process.
fn compare() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let leaf = pki.leaf("bench", &[TLS_NAME], false);
    let plain = free_port();
    let tls = free_port();
    let http = format!(
        r#"
        server {{
            listen {plain} default_server backlog=4096;
            location = /health {{ return 200 "ok\n"; }}
        }}
        server {{
            listen 127.0.0.1:{tls} ssl backlog=4096;
            ssl_certificate {cert};
            ssl_certificate_key {key};
            location = /health {{ return 200 "ok\n"; }}
        }}
        "#,
        cert = leaf.cert_pem.display(),
        key = leaf.key_pem.display(),
    );
    let _nginx = Nginx::start(
        dir.path(),
        2,
        &http,
        &[([127, 0, 0, 1], plain).into(), ([127, 0, 0, 1], tls).into()],
    );
    let reals = arg("--reals").unwrap_or_else(|| "1000".into());
    let checks = arg("--checks").unwrap_or_else(|| "20000".into());
    let concurrency = arg("--concurrency").unwrap_or_else(|| "100".into());
    let exe = std::env::current_exe().expect("current exe");
    println!(
        "{reals} reals, {checks} checks per run, {concurrency} at once, one tokio current-thread runtime"
    );
    println!(
        "{:<8} {:<6} {:>10} {:>16} {:>14} {:>9}",
        "client", "scheme", "checks/s", "CPU s/1k checks", "peak RSS MiB", "failures"
    );
    for scheme in ["http", "https"] {
        for client in ["reqwest", "hyper"] {
            let port = if scheme == "http" { plain } else { tls };
            let out = Command::new(&exe)
                .args(["--client", client, "--scheme", scheme])
                .args(["--port", &port.to_string()])
                .args(["--reals", &reals, "--checks", &checks])
                .args(["--concurrency", &concurrency])
                .arg("--ca")
                .arg(pki.ca_file())
                .output()
                .expect("run a measurement");
            if !out.status.success() {
                eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            }
            print!("{}", String::from_utf8_lossy(&out.stdout));
            // Let TIME_WAIT from this run not weigh on the next one's ports.
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}

/// One client, one scheme: prints one table row.
fn measure(client: &str) {
    bench_support::raise_nofile(65536);
    let scheme = arg("--scheme").unwrap_or_else(|| "http".into());
    let port: u16 = arg("--port").and_then(|p| p.parse().ok()).expect("--port");
    let reals: usize = arg("--reals").and_then(|v| v.parse().ok()).unwrap_or(1000);
    let checks: usize = arg("--checks")
        .and_then(|v| v.parse().ok())
        .unwrap_or(20000);
    let concurrency: usize = arg("--concurrency")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let ca = arg("--ca").expect("--ca");
    let https = scheme == "https";
    let targets: Vec<SocketAddr> = (0..reals)
        .map(|i| {
            if https {
                // One TLS real server: the certificate names bench.test only.
                ([127, 0, 0, 1], port).into()
            } else {
                SocketAddr::new(real_ip(i), port)
            }
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let checker: Arc<dyn Checker> = match client {
        "reqwest" => Arc::new(Reqwest::new(https, &ca)),
        _ => Arc::new(Hyper::new(https, &ca)),
    };
    let targets = Arc::new(targets);
    // Warm-up: first connections, lazy initialisation.
    rt.block_on(run(&checker, &targets, 200.min(checks), concurrency));
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let failures = rt.block_on(run(&checker, &targets, checks, concurrency));
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    println!(
        "{:<8} {:<6} {:>10.0} {:>16.3} {:>14.1} {:>9}",
        client,
        scheme,
        checks as f64 / wall,
        cpu / checks as f64 * 1000.0,
        status_mib("VmHWM:"),
        failures
    );
}

/// Runs `checks` checks over `targets`, `concurrency` at a time; returns how many
/// were not Up (printing the first reason).
async fn run(
    checker: &Arc<dyn Checker>,
    targets: &Arc<Vec<SocketAddr>>,
    checks: usize,
    concurrency: usize,
) -> usize {
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (checker, targets) = (checker.clone(), targets.clone());
        let (next, failed) = (next.clone(), failed.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= checks {
                    return;
                }
                if let Err(reason) = checker.check(targets[i % targets.len()]).await
                    && failed.fetch_add(1, Ordering::Relaxed) == 0
                {
                    eprintln!("first failure: {reason}");
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    failed.load(Ordering::Relaxed)
}

type Check<'a> = std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

trait Checker: Send + Sync {
    fn check(&self, real: SocketAddr) -> Check<'_>;
}

struct Hyper {
    probe: Probe,
}

impl Hyper {
    fn new(https: bool, ca: &str) -> Hyper {
        let check = http_check(|h, _| {
            h.path = "/health".into();
            if https {
                h.tls = Some(Tls {
                    ca_file: Some(ca.into()),
                    server_name: Some(TLS_NAME.into()),
                    ..Tls::default()
                });
            }
        });
        Hyper {
            probe: Probe::new(check).expect("probe"),
        }
    }
}

impl Checker for Hyper {
    fn check(&self, real: SocketAddr) -> Check<'_> {
        Box::pin(async move {
            match self.probe.run(real).await {
                Ok(Verdict::Up) => Ok(()),
                Ok(Verdict::Down(reason)) => Err(reason),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

struct Reqwest {
    client: reqwest::Client,
    https: bool,
}

impl Reqwest {
    fn new(https: bool, ca: &str) -> Reqwest {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(ca).expect("CA file");
        use rustls::pki_types::pem::PemObject;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.expect("PEM")).expect("CA");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.resumption = rustls::client::Resumption::disabled();
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .user_agent("directord-check/0.1.0")
            .tls_backend_preconfigured(tls)
            .resolve(TLS_NAME, ([127, 0, 0, 1], 0).into())
            .build()
            .expect("reqwest client");
        Reqwest { client, https }
    }
}

impl Checker for Reqwest {
    fn check(&self, real: SocketAddr) -> Check<'_> {
        Box::pin(async move {
            let url = if self.https {
                format!("https://{TLS_NAME}:{}/health", real.port())
            } else {
                format!("http://{real}/health")
            };
            let response = self
                .client
                .get(url)
                .header("connection", "close")
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(format!("status {}", response.status()))
            }
        })
    }
}
