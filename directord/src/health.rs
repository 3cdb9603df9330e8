//! Health checks: the config's checks as runner jobs, and the health that the IPVS
//! table follows.
//!
//! The checkers' runner (one task per service × real server) reports every round;
//! [`Health`] keeps what the table needs — which real servers are down — and the
//! readiness the failover protocol waits for before it preempts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use checkers::runner::{self, CheckResult, Job, JobStatus, Key, Outcome, Report, RunnerHandle};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::config::Config;
use crate::error_chain as chain;

/// The health of each checked real server, by (service name, address). A real server
/// of a service without a check is not in it: it counts as up.
pub type HealthMap = BTreeMap<(String, SocketAddr), checkers::Health>;

/// A real server's health changed: (service, real server), the new health, and
/// the check's reason when down.
pub type Change = ((String, SocketAddr), checkers::Health, Option<String>);

/// One job per (service with a check, real server).
pub fn jobs(config: &Config) -> Vec<Job> {
    let mut jobs = Vec::new();
    for s in &config.services {
        let Some(check) = &s.check else { continue };
        let check = Arc::new(check.clone());
        for r in &s.reals {
            jobs.push(Job {
                key: Key {
                    service: s.name.clone(),
                    real: r.address,
                },
                check: Arc::clone(&check),
            });
        }
    }
    jobs
}

/// The runner and what the supervisor knows of its results.
#[derive(Debug)]
pub struct Health {
    runner: RunnerHandle,
    pub reports: mpsc::UnboundedReceiver<Report>,
    pub ready: watch::Receiver<bool>,
    /// Until a job has its first result its health is the check's `initial`, except
    /// right after an in-place restart of the active director: the kernel's table
    /// is kept as it was, so a job without a result counts as up.
    resumed: bool,
    /// The health the IPVS table was last given, so that a result that differs from
    /// it reaches the table even when the runner saw no change (a resumed job's
    /// first round).
    told: HealthMap,
}

impl Health {
    /// Starts the runner on a thread of its own with a single-threaded runtime: the
    /// checks' load stays off the supervisor's runtime, and one thread measured
    /// cheaper than two at 10,000 checks a second (see the checkers' scale bench).
    pub fn spawn(resumed: bool) -> std::io::Result<Health> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("checks".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
        let (runner, reports) = {
            let _on_checks = handle.enter();
            runner::spawn(runner::RunnerConfig::default())
        };
        let ready = runner.ready();
        Ok(Health {
            runner,
            reports,
            ready,
            resumed,
            told: HealthMap::new(),
        })
    }

    /// Gives the runner the config's checks and answers the health the IPVS table
    /// should start from (a kept job keeps its health).
    pub async fn configure(&mut self, config: &Config) -> HealthMap {
        for (key, e) in self.runner.set_jobs(jobs(config)).await {
            warn!(service = %key.service, real = %key.real, error = %chain(&e),
                "the check cannot run: the real server counts as down");
        }
        let map = self.health_map().await;
        self.resumed = false;
        self.told = map.clone();
        map
    }

    async fn health_map(&self) -> HealthMap {
        self.runner
            .snapshot()
            .await
            .into_iter()
            .map(|j| {
                let health = if self.resumed && j.last.is_none() {
                    checkers::Health::Up
                } else {
                    j.health
                };
                ((j.key.service, j.key.real), health)
            })
            .collect()
    }

    /// The director's link came back: the failures seen while it was down were
    /// this director's, so every check's next round decides afresh, and the node is
    /// not ready until they have all run.
    pub fn restart_epoch(&self) {
        self.runner.restart_epoch();
    }

    /// What rounds changed, for the IPVS table. Takes the reports already queued
    /// with `first`, so a burst (a switch that lost every real server) becomes one
    /// table update. Reports for jobs the table does not know (a reload replaced
    /// them) are dropped.
    pub fn changes(&mut self, first: Report) -> Vec<Change> {
        let mut out = Vec::new();
        let mut next = Some(first);
        // Bounded, so a steady stream of reports cannot hold the supervisor here.
        let mut budget = 10_000;
        while let Some(r) = next.take().or_else(|| {
            budget -= 1;
            (budget > 0).then(|| self.reports.try_recv().ok()).flatten()
        }) {
            let key = (r.key.service.clone(), r.key.real);
            match self.told.get_mut(&key) {
                Some(told) if *told != r.health => {
                    *told = r.health;
                    log_change(&r);
                    out.push((key, r.health, reason(&r.result)));
                }
                _ => {}
            }
        }
        out
    }

    /// The health changes the table has not been given yet, from the runner's own
    /// state (a report may still be on its way when the runner turns ready).
    pub async fn catch_up(&mut self) -> Vec<Change> {
        let mut out = Vec::new();
        for j in self.runner.snapshot().await {
            let key = (j.key.service, j.key.real);
            if let Some(told) = self.told.get_mut(&key)
                && *told != j.health
            {
                *told = j.health;
                let why = j.last.as_ref().and_then(reason);
                out.push((key, j.health, why));
            }
        }
        out
    }

    /// `directorctl check`: one attempt now, not counted for rise/fall.
    pub async fn check_now(&self, service: &str, real: SocketAddr) -> Option<CheckResult> {
        self.runner
            .check_now(&Key {
                service: service.to_string(),
                real,
            })
            .await
    }

    pub async fn status(&self) -> Vec<CheckStatus> {
        self.runner
            .snapshot()
            .await
            .into_iter()
            .map(CheckStatus::from)
            .collect()
    }

    pub fn handle(&self) -> RunnerHandle {
        self.runner.clone()
    }
}

/// The reason a result gives for down (`None` for up).
fn reason(r: &CheckResult) -> Option<String> {
    match &r.outcome {
        Outcome::Up => None,
        Outcome::Down { reason } => Some(reason.clone()),
        Outcome::Error { message } => Some(format!("the check cannot run: {message}")),
    }
}

fn log_change(r: &Report) {
    let (service, real) = (&r.key.service, r.key.real);
    match (&r.health, &r.result.outcome) {
        (checkers::Health::Up, _) => {
            info!(%service, %real, latency_ms = millis(r.result.latency), "real server up")
        }
        (checkers::Health::Down, Outcome::Down { reason }) => {
            warn!(%service, %real, %reason, "real server down")
        }
        (checkers::Health::Down, Outcome::Error { message }) => {
            warn!(%service, %real, error = %message, "real server down: its check cannot run")
        }
        (checkers::Health::Down, Outcome::Up) => warn!(%service, %real, "real server down"),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One checked real server in `directorctl status`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckStatus {
    pub service: String,
    pub real: SocketAddr,
    pub health: checkers::Health,
    /// Rounds in a row with the current kind of result.
    pub streak: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<ResultStatus>,
}

/// A check result as shown to the operator.
#[derive(Debug, Clone, Serialize)]
pub struct ResultStatus {
    /// `up`, `down` or `error` (the checker could not run).
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub latency_ms: f64,
    pub attempts: u32,
    /// Unix time in milliseconds.
    pub at: u64,
}

impl From<&CheckResult> for ResultStatus {
    fn from(r: &CheckResult) -> Self {
        let (result, reason) = match &r.outcome {
            Outcome::Up => ("up", None),
            Outcome::Down { reason } => ("down", Some(reason.clone())),
            Outcome::Error { message } => ("error", Some(message.clone())),
        };
        ResultStatus {
            result,
            reason,
            latency_ms: (r.latency.as_secs_f64() * 1000.0 * 10.0).round() / 10.0,
            attempts: r.attempts,
            at: r
                .at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

impl From<JobStatus> for CheckStatus {
    fn from(j: JobStatus) -> Self {
        CheckStatus {
            service: j.key.service,
            real: j.key.real,
            health: j.health,
            streak: j.streak,
            last: j.last.as_ref().map(ResultStatus::from),
        }
    }
}
