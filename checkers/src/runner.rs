//! Runs every (check, real server) pair on its schedule and turns verdicts into
//! health with rise/fall hysteresis.
//!
//! Contract (directord relies on it):
//! - One task per [`Job`]. Rounds start at a fixed rate, `interval` apart, the first
//!   one at a random offset within the first interval (start spread). A round is one
//!   attempt plus up to `retry` further attempts, `retry_delay` apart, after failures;
//!   the round succeeds when any attempt does.
//! - Until its first round a job has the check's `initial` health; the first round's
//!   result decides the health directly. After that, `fall` consecutive failed rounds
//!   take an up real server down and `rise` consecutive good rounds bring a down one
//!   up. A checker [`crate::Error`] counts as a failed round and is reported as an
//!   error, not as a reason from the real server.
//! - At most `max_concurrent` attempts run at once over all jobs.
//! - Every round produces a [`Report`]; `changed` is true when the health flipped.
//! - Readiness: [`RunnerHandle::restart_epoch`] (called when the director's own link
//!   came back: the failures seen meanwhile were ours, not the real servers') makes
//!   the next round of every job decide its health directly again, like a first
//!   round. A job is settled in an epoch by its first good round there, or by `fall`
//!   failed rounds there (so one failure right after a link came back, before the
//!   network is whole again, does not settle a real server as down). The runner is
//!   ready when every job is settled since the start or the last epoch; it is not
//!   ready from `restart_epoch` until then. A runner with no jobs is ready.
//!   `set_jobs` adding a job makes it unready until that job is settled.

//!
//! Shape: the job tasks share one [`Mutex`]-guarded table of job state; a task
//! takes the lock only to record a finished round (and send its report), so there
//! is no central task for reports to queue through. The handle's methods take the
//! same lock. Jobs with equal checks share one prepared [`Prober`].

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher as _, Hash, Hasher as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::spec::{Check, Health, Protocol};
use crate::{Error, Probe, Verdict};

/// Names one job: a service and one of its real servers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Key {
    pub service: String,
    pub real: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub key: Key,
    pub check: Arc<Check>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Outcome {
    Up,
    Down {
        reason: String,
    },
    /// The checker could not run (see [`crate::Error`]); counts as a failure.
    Error {
        message: String,
    },
}

/// The result of one round (or of one `check_now` attempt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    pub at: SystemTime,
    /// From the start of the round's last attempt to its verdict.
    pub latency: Duration,
    /// Attempts made in the round (1 + retries used).
    pub attempts: u32,
    pub outcome: Outcome,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub key: Key,
    pub health: Health,
    pub changed: bool,
    pub result: CheckResult,
}

/// What `status` shows for one job.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub key: Key,
    pub health: Health,
    pub last: Option<CheckResult>,
    /// Consecutive rounds with the current run of results (good or bad).
    pub streak: u32,
}

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub max_concurrent: usize,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            max_concurrent: 4096,
        }
    }
}

/// The future of one attempt.
#[doc(hidden)]
pub type Attempt<'a> = Pin<Box<dyn Future<Output = Result<Verdict, Error>> + Send + 'a>>;

/// Makes one attempt of a prepared check against a real server: [`Probe`] in
/// production; tests give the runner a fake through [`spawn_with`].
#[doc(hidden)]
pub trait Prober: Send + Sync + 'static {
    fn attempt(&self, real: SocketAddr) -> Attempt<'_>;
}

impl Prober for Probe {
    fn attempt(&self, real: SocketAddr) -> Attempt<'_> {
        // Boxed: an idle job task then holds no protocol state, only while an
        // attempt runs.
        Box::pin(self.run(real))
    }
}

/// Prepares a check once for all the jobs that share it ([`Probe::new`] in
/// production).
#[doc(hidden)]
pub type Prepare = Arc<dyn Fn(&Check) -> Result<Arc<dyn Prober>, Error> + Send + Sync>;

/// Cloneable handle to the runner. Dropping every handle stops the runner.
#[derive(Clone)]
pub struct RunnerHandle {
    shared: Arc<Shared>,
    _stop: Arc<StopOnDrop>,
}

impl fmt::Debug for RunnerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunnerHandle").finish_non_exhaustive()
    }
}

/// Starts the runner on the current tokio runtime with no jobs.
pub fn spawn(config: RunnerConfig) -> (RunnerHandle, mpsc::UnboundedReceiver<Report>) {
    spawn_with(
        config,
        Arc::new(|check: &Check| Ok(Arc::new(Probe::new(check.clone())?) as Arc<dyn Prober>)),
    )
}

/// [`spawn`] with another way to prepare checks (tests: a fake prober under
/// synthetic time).
#[doc(hidden)]
pub fn spawn_with(
    config: RunnerConfig,
    prepare: Prepare,
) -> (RunnerHandle, mpsc::UnboundedReceiver<Report>) {
    let (reports, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        table: Mutex::new(Table {
            epoch: 0,
            unsettled: 0,
            next_id: 0,
            stopped: false,
            jobs: HashMap::new(),
        }),
        epoch: AtomicU64::new(0),
        permits: Semaphore::new(config.max_concurrent.clamp(1, Semaphore::MAX_PERMITS)),
        reports,
        ready: watch::Sender::new(true),
        prepare,
        runtime: tokio::runtime::Handle::current(),
        set_jobs: tokio::sync::Mutex::new(()),
    });
    let handle = RunnerHandle {
        _stop: Arc::new(StopOnDrop(Arc::clone(&shared))),
        shared,
    };
    (handle, rx)
}

impl RunnerHandle {
    /// Replaces the job set. A job whose key and check are unchanged keeps running
    /// with its state; a new or changed one starts at its `initial` health; a job not
    /// in the set stops. Errors are the jobs whose check could not be prepared
    /// ([`crate::Probe::new`]); those run as failing with that error.
    pub async fn set_jobs(&self, jobs: Vec<Job>) -> Vec<(Key, crate::Error)> {
        let shared = &self.shared;
        // One replacement at a time: the table may then change only by rounds
        // finishing between the two looks below.
        let _serial = shared.set_jobs.lock().await;

        // Which jobs stay as they are, and the probers already prepared.
        let mut probers = Probers::default();
        let kept: Vec<bool> = {
            let table = shared.lock();
            for slot in table.jobs.values() {
                if let Attempter::Ready(p) = &slot.attempter {
                    probers.insert(&slot.check, p);
                }
            }
            jobs.iter()
                .map(|j| {
                    // A job whose check could not be prepared tries again.
                    table.jobs.get(&j.key).is_some_and(|s| {
                        matches!(s.attempter, Attempter::Ready(_)) && *s.check == *j.check
                    })
                })
                .collect()
        };

        // Prepare the new checks without holding the table (a CA file may load).
        let mut errors = Vec::new();
        let mut attempters = Vec::with_capacity(jobs.len());
        for (job, &kept) in jobs.iter().zip(&kept) {
            if kept {
                attempters.push(None);
                continue;
            }
            let attempter = match probers.get(&job.check) {
                Some(p) => Attempter::Ready(p),
                None => match (shared.prepare)(&job.check) {
                    Ok(p) => {
                        probers.insert(&job.check, &p);
                        Attempter::Ready(p)
                    }
                    Err(e) => {
                        let message = error_chain(&e);
                        errors.push((job.key.clone(), e));
                        Attempter::Broken(message.into())
                    }
                },
            };
            attempters.push(Some(attempter));
        }

        let mut table = shared.lock();
        if table.stopped {
            return errors;
        }
        let mut old = std::mem::take(&mut table.jobs);
        let mut new = HashMap::with_capacity(jobs.len());
        for (job, attempter) in jobs.into_iter().zip(attempters) {
            let slot = match (old.remove(&job.key), attempter) {
                (Some(mut slot), None) => {
                    slot.check = job.check;
                    slot
                }
                (old_slot, attempter) => {
                    if let Some(old_slot) = old_slot {
                        old_slot.task.abort();
                    }
                    let attempter = match attempter {
                        Some(a) => a,
                        // Kept, but already taken by an earlier job of the same key:
                        // the list named the key twice; the last one wins.
                        None => match probers.get(&job.check) {
                            Some(p) => Attempter::Ready(p),
                            None => Attempter::Broken("the job set names this key twice".into()),
                        },
                    };
                    table.next_id += 1;
                    let id = table.next_id;
                    let task = shared.runtime.spawn(run_job(
                        Arc::clone(shared),
                        job.key.clone(),
                        id,
                        Arc::clone(&job.check),
                        attempter.clone(),
                    ));
                    Slot {
                        id,
                        hysteresis: Hysteresis::new(&job.check),
                        check: job.check,
                        attempter,
                        last: None,
                        task: task.abort_handle(),
                    }
                }
            };
            if let Some(replaced) = new.insert(job.key, slot) {
                replaced.task.abort();
            }
        }
        for slot in old.into_values() {
            slot.task.abort();
        }
        table.jobs = new;
        shared.recount(&mut table);
        errors
    }

    /// Runs one attempt of the job's check now, outside its schedule; it does not
    /// count for rise/fall. `None`: no such job.
    pub async fn check_now(&self, key: &Key) -> Option<CheckResult> {
        let attempter = self.shared.lock().jobs.get(key)?.attempter.clone();
        let (outcome, latency) = attempt(&self.shared.permits, &attempter, key.real).await;
        Some(CheckResult {
            at: SystemTime::now(),
            latency,
            attempts: 1,
            outcome,
        })
    }

    /// The state of every job, ordered by key.
    pub async fn snapshot(&self) -> Vec<JobStatus> {
        let mut all: Vec<JobStatus> = {
            let table = self.shared.lock();
            table
                .jobs
                .iter()
                .map(|(key, slot)| JobStatus {
                    key: key.clone(),
                    health: slot.hysteresis.health,
                    last: slot.last.clone(),
                    streak: slot.hysteresis.streak,
                })
                .collect()
        };
        all.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        all
    }

    /// Starts a new readiness epoch (after the director's link came back).
    pub fn restart_epoch(&self) {
        let mut table = self.shared.lock();
        table.epoch += 1;
        self.shared.epoch.store(table.epoch, Ordering::Release);
        self.shared.recount(&mut table);
    }

    /// True once every job is settled since the last epoch.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.shared.ready.subscribe()
    }
}

/// What the job tasks and the handles share.
struct Shared {
    table: Mutex<Table>,
    /// `table.epoch`, readable without the lock when a round starts.
    epoch: AtomicU64,
    /// Bounds the attempts running at once over all jobs.
    permits: Semaphore,
    reports: mpsc::UnboundedSender<Report>,
    ready: watch::Sender<bool>,
    prepare: Prepare,
    runtime: tokio::runtime::Handle,
    set_jobs: tokio::sync::Mutex<()>,
}

struct Table {
    /// The readiness epoch: bumped by `restart_epoch`.
    epoch: u64,
    /// Jobs without a round in this epoch; ready when 0.
    unsettled: usize,
    /// Tells a job task apart from the one that replaced it under the same key.
    next_id: u64,
    stopped: bool,
    jobs: HashMap<Key, Slot>,
}

struct Slot {
    id: u64,
    check: Arc<Check>,
    attempter: Attempter,
    hysteresis: Hysteresis,
    last: Option<CheckResult>,
    task: AbortHandle,
}

/// How a job makes an attempt.
#[derive(Clone)]
enum Attempter {
    Ready(Arc<dyn Prober>),
    /// The check could not be prepared: every attempt fails with this message.
    Broken(Arc<str>),
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic elsewhere while holding the lock leaves the table consistent
        // enough to go on (each update is a few plain assignments).
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn recount(&self, table: &mut Table) {
        let epoch = table.epoch;
        table.unsettled = table
            .jobs
            .values()
            .filter(|s| !s.hysteresis.settled_in(epoch))
            .count();
        let ready = table.unsettled == 0;
        self.ready
            .send_if_modified(|r| std::mem::replace(r, ready) != ready);
    }

    /// Records a finished round of job `id` (started in `epoch`) and reports it.
    /// False when the job is gone: its task stops.
    fn finish_round(&self, key: &Key, id: u64, epoch: u64, result: CheckResult) -> bool {
        // Allocate and send outside the lock: it is taken by every round of every
        // job.
        let good = matches!(result.outcome, Outcome::Up);
        let last = Some(result.clone());
        let (health, changed) = {
            let mut guard = self.lock();
            let table = &mut *guard;
            let Some(slot) = table.jobs.get_mut(key).filter(|s| s.id == id) else {
                return false;
            };
            let step = slot.hysteresis.round(good, epoch);
            slot.last = last;
            if step.settled && epoch == table.epoch {
                table.unsettled = table.unsettled.saturating_sub(1);
                if table.unsettled == 0 {
                    self.ready.send_replace(true);
                }
            }
            (slot.hysteresis.health, step.changed)
        };
        if changed {
            tracing::debug!(service = %key.service, real = %key.real, ?health, "health changed");
        }
        // The receiver may be gone (directord shutting down); the rounds go on
        // until the handles are dropped.
        let _ = self.reports.send(Report {
            key: key.clone(),
            health,
            changed,
            result,
        });
        true
    }
}

/// Stops every job when the last handle goes.
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let mut table = self.0.lock();
        table.stopped = true;
        for (_, slot) in table.jobs.drain() {
            slot.task.abort();
        }
    }
}

/// One job: rounds at a fixed rate until the job is removed.
async fn run_job(shared: Arc<Shared>, key: Key, id: u64, check: Arc<Check>, attempter: Attempter) {
    // tokio's interval panics on a zero period; config validation forbids it.
    let interval = check.interval.max(Duration::from_millis(1));
    let mut ticks =
        tokio::time::interval_at(Instant::now() + start_offset(&key, interval), interval);
    // After a round that overran its interval, start the next one at once, then go
    // back to the original grid: no burst of missed rounds, no drift.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        let epoch = shared.epoch.load(Ordering::Acquire);
        let result = round(&shared.permits, &attempter, key.real, &check).await;
        if !shared.finish_round(&key, id, epoch, result) {
            return;
        }
    }
}

/// A random offset within the first interval, so that jobs configured together do
/// not all check at the same instant.
fn start_offset(key: &Key, interval: Duration) -> Duration {
    let nanos = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    // RandomState is randomly seeded: a cheap random number without a dependency.
    Duration::from_nanos(RandomState::new().hash_one(key) % nanos)
}

/// One round: an attempt and, after failures, up to `retry` more.
async fn round(
    permits: &Semaphore,
    attempter: &Attempter,
    real: SocketAddr,
    check: &Check,
) -> CheckResult {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (outcome, latency) = attempt(permits, attempter, real).await;
        if matches!(outcome, Outcome::Up) || attempts > check.retry {
            return CheckResult {
                at: SystemTime::now(),
                latency,
                attempts,
                outcome,
            };
        }
        tokio::time::sleep(check.retry_delay).await;
    }
}

/// One attempt within the concurrency bound; the latency counts from when it may
/// run.
async fn attempt(
    permits: &Semaphore,
    attempter: &Attempter,
    real: SocketAddr,
) -> (Outcome, Duration) {
    // The semaphore is never closed; should it be, the attempt runs unbounded.
    let _permit = permits.acquire().await.ok();
    let start = Instant::now();
    let outcome = match attempter {
        Attempter::Ready(p) => match p.attempt(real).await {
            Ok(Verdict::Up) => Outcome::Up,
            Ok(Verdict::Down(reason)) => Outcome::Down { reason },
            Err(e) => Outcome::Error {
                message: error_chain(&e),
            },
        },
        Attempter::Broken(message) => Outcome::Error {
            message: message.to_string(),
        },
    };
    (outcome, start.elapsed())
}

/// "cannot read the CA file /x: No such file or directory (os error 2)".
fn error_chain(e: &Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

type Prepared = (Arc<Check>, Arc<dyn Prober>);

/// The probers prepared so far, found by check: by pointer first (directord
/// shares one `Arc<Check>` among a service's real servers), then by value.
#[derive(Default)]
struct Probers {
    by_ptr: HashMap<usize, Arc<dyn Prober>>,
    /// By [`fingerprint`].
    by_value: HashMap<u64, Vec<Prepared>>,
}

impl Probers {
    fn get(&mut self, check: &Arc<Check>) -> Option<Arc<dyn Prober>> {
        if let Some(p) = self.by_ptr.get(&address(check)) {
            return Some(Arc::clone(p));
        }
        let found = self
            .by_value
            .get(&fingerprint(check))?
            .iter()
            .find(|(c, _)| **c == **check)
            .map(|(_, p)| Arc::clone(p))?;
        self.by_ptr.insert(address(check), Arc::clone(&found));
        Some(found)
    }

    fn insert(&mut self, check: &Arc<Check>, prober: &Arc<dyn Prober>) {
        if self.get(check).is_some() {
            return;
        }
        self.by_ptr.insert(address(check), Arc::clone(prober));
        self.by_value
            .entry(fingerprint(check))
            .or_default()
            .push((Arc::clone(check), Arc::clone(prober)));
    }
}

/// The check's address: the `Arc`s compared are all alive while [`Probers`] is.
fn address(check: &Arc<Check>) -> usize {
    Arc::as_ptr(check) as usize
}

/// A hash of the parts of a check that usually tell checks apart (`Check` holds
/// regexes, so it is not `Hash`); equal checks have equal fingerprints.
fn fingerprint(c: &Check) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    (
        c.interval,
        c.timeout,
        c.rise,
        c.fall,
        c.retry,
        c.retry_delay,
    )
        .hash(&mut h);
    (c.initial, &c.connect.ip, c.connect.port, &c.connect.bind).hash(&mut h);
    c.protocol.name().hash(&mut h);
    match &c.protocol {
        Protocol::Tcp(t) => t.send.hash(&mut h),
        Protocol::Http(x) => (&x.path, &x.host).hash(&mut h),
        Protocol::Dns(d) => d.name.hash(&mut h),
        Protocol::Smtp(s) => s.helo.hash(&mut h),
        Protocol::External(e) => e.argv.hash(&mut h),
        // The rest: the protocol name above is enough; equality decides.
        _ => {}
    }
    h.finish()
}

/// What a round did to a job's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Step {
    /// The health flipped.
    changed: bool,
    /// This was the job's first round in the round's epoch.
    settled: bool,
}

/// Rise/fall hysteresis over round results, with readiness epochs. Sans-IO: the
/// runner feeds it each round's result and the epoch the round started in.
#[derive(Debug, Clone)]
struct Hysteresis {
    rise: u32,
    fall: u32,
    health: Health,
    /// Consecutive rounds with the same result as the last one.
    streak: u32,
    last_good: Option<bool>,
    /// The epoch the job is settled in (see the module doc).
    settled: Option<u64>,
    /// Failed rounds in the epoch being decided: (epoch, count).
    deciding: (u64, u32),
}

impl Hysteresis {
    fn new(check: &Check) -> Hysteresis {
        Hysteresis {
            rise: check.rise,
            fall: check.fall,
            health: check.initial,
            streak: 0,
            last_good: None,
            settled: None,
            deciding: (0, 0),
        }
    }

    fn settled_in(&self, epoch: u64) -> bool {
        self.settled == Some(epoch)
    }

    fn round(&mut self, good: bool, epoch: u64) -> Step {
        let before = self.health;
        self.streak = if self.last_good == Some(good) {
            self.streak.saturating_add(1)
        } else {
            1
        };
        self.last_good = Some(good);
        let deciding = !self.settled_in(epoch);
        let mut settled = false;
        if deciding {
            // Until settled (at the job's start, or since the epoch) each round
            // decides directly; a good one settles, and so do `fall` failed ones.
            if self.deciding.0 != epoch {
                self.deciding = (epoch, 0);
            }
            if !good {
                self.deciding.1 += 1;
            }
            settled = good || self.deciding.1 >= self.fall;
            if settled {
                self.settled = Some(epoch);
            }
            self.streak = if good { 1 } else { self.deciding.1 };
            self.health = if good { Health::Up } else { Health::Down };
        } else if good && self.health == Health::Down && self.streak >= self.rise {
            self.health = Health::Up;
        } else if !good && self.health == Health::Up && self.streak >= self.fall {
            self.health = Health::Down;
        }
        Step {
            changed: self.health != before,
            settled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Connect;

    fn check(rise: u32, fall: u32, initial: Health) -> Check {
        Check {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise,
            fall,
            retry: 0,
            retry_delay: Duration::ZERO,
            initial,
            connect: Connect::default(),
            protocol: Protocol::Ping,
        }
    }

    /// Feeds rounds (all in epoch 0) and returns the health after each.
    fn run(h: &mut Hysteresis, rounds: &str) -> String {
        rounds
            .chars()
            .map(|c| {
                h.round(c == '+', 0);
                match h.health {
                    Health::Up => 'U',
                    Health::Down => 'D',
                }
            })
            .collect()
    }

    #[test]
    fn initial_health_holds_until_the_first_round() {
        let h = Hysteresis::new(&check(2, 3, Health::Down));
        assert_eq!(h.health, Health::Down);
        assert_eq!(h.streak, 0);
        assert!(!h.settled_in(0));
        let h = Hysteresis::new(&check(2, 3, Health::Up));
        assert_eq!(h.health, Health::Up);
    }

    #[test]
    fn first_round_decides_directly() {
        let mut h = Hysteresis::new(&check(5, 5, Health::Down));
        assert_eq!(
            h.round(true, 0),
            Step {
                changed: true,
                settled: true
            }
        );
        assert_eq!(h.health, Health::Up);

        let mut h = Hysteresis::new(&check(5, 1, Health::Up));
        assert_eq!(
            h.round(false, 0),
            Step {
                changed: true,
                settled: true
            }
        );
        assert_eq!(h.health, Health::Down);

        // A failed first round decides the health but settles the job only after
        // `fall` of them; a good round in between settles it.
        let mut h = Hysteresis::new(&check(5, 3, Health::Up));
        assert_eq!(
            h.round(false, 0),
            Step {
                changed: true,
                settled: false
            }
        );
        assert_eq!(h.health, Health::Down);
        assert!(!h.round(false, 0).settled);
        assert!(h.round(false, 0).settled);
        let mut h = Hysteresis::new(&check(5, 3, Health::Down));
        assert!(!h.round(false, 0).settled);
        assert_eq!(
            h.round(true, 0),
            Step {
                changed: true,
                settled: true
            }
        );

        let mut h = Hysteresis::new(&check(5, 5, Health::Up));
        assert_eq!(
            h.round(true, 0),
            Step {
                changed: false,
                settled: true
            }
        );
    }

    #[test]
    fn fall_consecutive_failures_take_it_down() {
        let mut h = Hysteresis::new(&check(2, 3, Health::Down));
        // First round up, then failures: down at the third in a row; a good round
        // in between starts the count again.
        assert_eq!(run(&mut h, "+--+---"), "UUUUUUD");
        assert_eq!(h.streak, 3);
    }

    #[test]
    fn rise_consecutive_successes_bring_it_up() {
        let mut h = Hysteresis::new(&check(2, 1, Health::Up));
        assert_eq!(run(&mut h, "-+-++"), "DDDDU");
        assert_eq!(h.streak, 2);
    }

    #[test]
    fn rise_and_fall_of_one_follow_every_round() {
        let mut h = Hysteresis::new(&check(1, 1, Health::Down));
        assert_eq!(run(&mut h, "+-+-"), "UDUD");
    }

    #[test]
    fn a_new_epoch_decides_directly_again() {
        let mut h = Hysteresis::new(&check(3, 3, Health::Up));
        assert_eq!(run(&mut h, "+--"), "UUU");
        // Epoch 1: the next round decides at once, whatever the streak; failures
        // settle the job only after `fall` of them in the epoch.
        let step = h.round(false, 1);
        assert_eq!(
            step,
            Step {
                changed: true,
                settled: false
            }
        );
        assert_eq!(h.streak, 1);
        assert!(!h.round(false, 1).settled);
        assert!(h.round(false, 1).settled);
        assert!(h.settled_in(1));
        // Then hysteresis again within epoch 1.
        assert!(!h.round(true, 1).settled);
        assert_eq!(h.health, Health::Down);
        h.round(true, 1);
        assert_eq!(h.health, Health::Down);
        assert!(h.round(true, 1).changed);
        assert_eq!(h.health, Health::Up);
    }

    #[test]
    fn streak_saturates() {
        let mut h = Hysteresis::new(&check(1, 1, Health::Up));
        h.streak = u32::MAX;
        h.last_good = Some(true);
        h.settled = Some(0);
        h.round(true, 0);
        assert_eq!(h.streak, u32::MAX);
    }

    #[test]
    fn start_offset_is_within_the_interval() {
        let key = Key {
            service: "www".into(),
            real: "10.0.0.1:80".parse().expect("addr"),
        };
        for _ in 0..1000 {
            assert!(start_offset(&key, Duration::from_millis(7)) < Duration::from_millis(7));
        }
        assert_eq!(start_offset(&key, Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn equal_checks_share_a_prober() {
        struct Nop;
        impl Prober for Nop {
            fn attempt(&self, _: SocketAddr) -> Attempt<'_> {
                Box::pin(async { Ok(Verdict::Up) })
            }
        }
        let a = Arc::new(check(1, 1, Health::Up));
        let b = Arc::new(check(1, 1, Health::Up));
        let c = Arc::new(check(2, 1, Health::Up));
        let mut probers = Probers::default();
        let p: Arc<dyn Prober> = Arc::new(Nop);
        probers.insert(&a, &p);
        let found = probers.get(&b).expect("equal check found");
        assert!(Arc::ptr_eq(&found, &p));
        assert!(probers.get(&c).is_none());
    }
}
