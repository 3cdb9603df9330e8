//! `directord`: the supervisor daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use directord::config::{self, Config};
use directord::control::server::ControlSocket;
use directord::supervisor::Exit;
use directord::systemd;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Exit status for an invalid config (EX_CONFIG).
const EX_CONFIG: u8 = 78;

#[derive(Debug, Parser)]
#[command(
    name = "directord",
    version,
    about = "High-availability load-balancer director"
)]
struct Args {
    /// Config file to run with.
    #[arg(long, short = 'c', value_name = "PATH", default_value = config::DEFAULT_CONFIG)]
    config: PathBuf,
    /// Validate PATH and exit: 0 when valid, 78 when not (every problem listed).
    #[arg(long, value_name = "PATH", conflicts_with = "config")]
    check_config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(path) = args.check_config {
        return match Config::load(&path) {
            Ok(c) => {
                println!(
                    "{}: valid ({} VIP(s), {} service(s))",
                    path.display(),
                    c.vips.len(),
                    c.services.len()
                );
                ExitCode::SUCCESS
            }
            Err(problems) => {
                eprintln!("{problems}");
                eprintln!("{}: {} problem(s)", path.display(), problems.0.len());
                ExitCode::from(EX_CONFIG)
            }
        };
    }
    init_tracing();
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(problems) => {
            eprintln!("{problems}");
            error!(config = %args.config.display(), "invalid config, not starting");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("directord")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    info!(node = %config.node.name, config = %config.path.display(), "directord starting");
    let cancel = CancellationToken::new();
    let socket = ControlSocket::bind(&config.control.socket, &config.control.group)?;
    // metrics: bound before the start, so a taken port fails it.
    let metrics = match &config.metrics {
        Some(m) => Some(directord::metrics::Endpoint::bind(m.listen)?),
        None => None,
    };
    let resume_active = std::env::var(RESUME).is_ok_and(|v| v == "active");
    // Role and real-server changes, for the alerts.
    let events = directord::events::Events::new();
    let (handle, supervisor) =
        directord::supervisor::start(config, cancel.clone(), resume_active, events.clone())
            .await
            .context("cannot start")?;
    let server = tokio::spawn(socket.serve(handle.clone(), cancel.clone()));
    // metrics
    if let Some(endpoint) = metrics {
        tokio::spawn(endpoint.serve(handle.clone(), cancel.clone()));
    }
    // Before READY=1: a SIGHUP or SIGTERM right after it must find its handler.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    // Config loaded, control socket bound, supervisor running: ready for systemd.
    systemd::ready();
    let keeper = tokio::spawn(systemd::keep(
        handle.clone(),
        events.subscribe(),
        cancel.clone(),
    ));

    let mut supervisor = supervisor;
    loop {
        tokio::select! {
            _ = term.recv() => {
                info!("SIGTERM: stepping down");
                systemd::stopping();
                break;
            }
            _ = int.recv() => {
                info!("SIGINT: stepping down");
                systemd::stopping();
                break;
            }
            _ = hup.recv() => {
                // The supervisor tells systemd RELOADING=1 / READY=1 around it.
                let r = handle.request(directord::control::Request::Reload).await;
                match (r.ok, r.message, r.error) {
                    (true, Some(m), _) => info!("SIGHUP: {m}"),
                    (_, _, Some(e)) => warn!("SIGHUP: {e}"),
                    _ => {}
                }
            }
            r = &mut supervisor => {
                let exit = r.context("supervisor task failed")?;
                if let Exit::Restart { active } = exit {
                    // Let the connection that asked read its answer, then re-exec.
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    return Err(restart_in_place(active));
                }
                cancel.cancel();
                let _ = server.await;
                let _ = keeper.await;
                anyhow::bail!("the supervisor stopped on its own (failover protocol gone)");
            }
        }
    }
    cancel.cancel();
    let exit = supervisor.await.context("supervisor task failed")?;
    let _ = server.await;
    let _ = keeper.await;
    if let Exit::Restart { active } = exit {
        return Err(restart_in_place(active));
    }
    info!("directord stopped");
    Ok(())
}

/// Logs: to the journal in its native protocol (every field kept, as `F_NAME=`)
/// when stderr is the journal, else text to stderr. `RUST_LOG` filters; `info` by
/// default.
fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    if systemd::stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(journal) => {
                tracing_subscriber::registry()
                    .with(filter())
                    .with(journal.with_syslog_identifier("directord".to_string()))
                    .init();
                return;
            }
            Err(e) => eprintln!("cannot log to the journal ({e}); logging to stderr"),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        // Colours for a person at a terminal, plain text for a file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Environment variable that tells a re-executed directord it was active.
const RESUME: &str = "DIRECTORD_RESUME";

/// Replaces this process with a fresh run of the (possibly upgraded) binary, same
/// arguments; returns only if exec failed. The pid, the VIPs and the IPVS table
/// stay; the control socket is bound again by the new process. `NOTIFY_SOCKET` and
/// `WATCHDOG_*` stay in the environment: the new process (same pid, so systemd's
/// `NotifyAccess=main` accepts it) says `READY=1` again and keeps the watchdog.
fn restart_in_place(active: bool) -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(p) => {
            // After a package upgrade the running file is gone: run the new one.
            let text = p.to_string_lossy();
            match text.strip_suffix(" (deleted)") {
                Some(path) => PathBuf::from(path),
                None => p,
            }
        }
        Err(e) => return anyhow::anyhow!("cannot find the directord binary to restart: {e}"),
    };
    info!(exe = %exe.display(), active, "re-executing");
    let err = std::process::Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .env(RESUME, if active { "active" } else { "standby" })
        .exec();
    anyhow::anyhow!("cannot re-execute {}: {err}", exe.display())
}
