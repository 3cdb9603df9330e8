//! The runner's schedule and hysteresis under synthetic time, with a fake prober
//! whose verdicts each test scripts.

mod support;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use checkers::runner::{
    self, Attempt, Job, Key, Outcome, Prepare, Prober, Report, RunnerConfig, RunnerHandle,
};
use checkers::spec::{Check, Health, Protocol};
use checkers::{Error, Verdict};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

const SECOND: Duration = Duration::from_secs(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn check(rise: u32, fall: u32, initial: Health) -> Check {
    Check {
        rise,
        fall,
        initial,
        ..support::check::check(Protocol::Ping, ms(500))
    }
}

fn key(n: u8) -> Key {
    Key {
        service: "www".into(),
        real: SocketAddr::from(([10, 0, 0, n], 80)),
    }
}

fn job(n: u8, check: &Arc<Check>) -> Job {
    Job {
        key: key(n),
        check: Arc::clone(check),
    }
}

/// A prober whose verdicts come from a per-real-server queue (up when empty), that
/// takes `delay` per attempt and records when each attempt started.
#[derive(Default)]
struct Fake {
    state: Mutex<FakeState>,
}

#[derive(Default)]
struct FakeState {
    queue: HashMap<SocketAddr, VecDeque<Result<Verdict, String>>>,
    delay: Duration,
    starts: Vec<(SocketAddr, Instant)>,
    running: usize,
    max_running: usize,
}

impl Fake {
    fn with_delay(delay: Duration) -> Arc<Fake> {
        let fake = Arc::new(Fake::default());
        fake.state.lock().expect("lock").delay = delay;
        fake
    }

    /// Queues results for real server `n`: '+' up, '-' down, 'e' checker error.
    fn script(&self, n: u8, results: &str) {
        let mut s = self.state.lock().expect("lock");
        let q = s.queue.entry(key(n).real).or_default();
        for c in results.chars() {
            q.push_back(match c {
                '+' => Ok(Verdict::Up),
                '-' => Ok(Verdict::Down(format!("scripted down {n}"))),
                _ => Err(format!("scripted error {n}")),
            });
        }
    }

    fn starts(&self, n: u8) -> Vec<Instant> {
        let s = self.state.lock().expect("lock");
        s.starts
            .iter()
            .filter(|(r, _)| *r == key(n).real)
            .map(|(_, t)| *t)
            .collect()
    }

    fn max_running(&self) -> usize {
        self.state.lock().expect("lock").max_running
    }
}

impl Prober for Fake {
    fn attempt(&self, real: SocketAddr) -> Attempt<'_> {
        Box::pin(async move {
            let delay = {
                let mut s = self.state.lock().expect("lock");
                s.starts.push((real, Instant::now()));
                s.running += 1;
                s.max_running = s.max_running.max(s.running);
                s.delay
            };
            tokio::time::sleep(delay).await;
            let mut s = self.state.lock().expect("lock");
            s.running -= 1;
            match s.queue.get_mut(&real).and_then(|q| q.pop_front()) {
                None | Some(Ok(Verdict::Up)) => Ok(Verdict::Up),
                Some(Ok(down)) => Ok(down),
                Some(Err(message)) => Err(Error::Option { message }),
            }
        })
    }
}

/// A runner over `fake`; the counter tells how often a check was prepared. A check
/// with `rise == 99` cannot be prepared.
fn start(
    fake: &Arc<Fake>,
    max_concurrent: usize,
) -> (RunnerHandle, UnboundedReceiver<Report>, Arc<AtomicUsize>) {
    let prepared = Arc::new(AtomicUsize::new(0));
    let (fake, count) = (Arc::clone(fake), Arc::clone(&prepared));
    let prepare: Prepare = Arc::new(move |c: &Check| {
        count.fetch_add(1, Ordering::SeqCst);
        if c.rise == 99 {
            return Err(Error::Option {
                message: "unpreparable".into(),
            });
        }
        Ok(Arc::clone(&fake) as Arc<dyn Prober>)
    });
    let (handle, rx) = runner::spawn_with(RunnerConfig { max_concurrent }, prepare);
    (handle, rx, prepared)
}

async fn next(rx: &mut UnboundedReceiver<Report>) -> Report {
    rx.recv().await.expect("a report")
}

/// Health after each of the next `n` reports (one job).
async fn healths(rx: &mut UnboundedReceiver<Report>, n: usize) -> String {
    let mut s = String::new();
    for _ in 0..n {
        s.push(match next(rx).await.health {
            Health::Up => 'U',
            Health::Down => 'D',
        });
    }
    s
}

#[tokio::test(start_paused = true)]
async fn initial_health_then_first_round_within_one_interval_decides() {
    let fake = Fake::with_delay(ms(10));
    let (runner, mut rx, _) = start(&fake, 16);
    assert!(*runner.ready().borrow(), "a runner with no jobs is ready");

    let c = Arc::new(check(3, 3, Health::Down));
    let t0 = Instant::now();
    assert!(runner.set_jobs(vec![job(1, &c)]).await.is_empty());
    let snap = runner.snapshot().await;
    assert_eq!(snap.len(), 1);
    assert_eq!(snap[0].health, Health::Down);
    assert!(snap[0].last.is_none());
    assert!(
        !*runner.ready().borrow(),
        "not ready before the job's first round"
    );

    let r = next(&mut rx).await;
    assert!(
        t0.elapsed() < SECOND + ms(10),
        "first round within the first interval"
    );
    assert_eq!(r.key, key(1));
    assert_eq!(
        (r.health, r.changed),
        (Health::Up, true),
        "first round decides, rise or not"
    );
    assert_eq!(r.result.outcome, Outcome::Up);
    assert_eq!(r.result.attempts, 1);
    assert_eq!(r.result.latency, ms(10));
    assert!(*runner.ready().borrow());
}

#[tokio::test(start_paused = true)]
async fn initial_up_and_first_round_down_flips_at_once() {
    let fake = Fake::with_delay(Duration::ZERO);
    let (runner, mut rx, _) = start(&fake, 16);
    fake.script(1, "-");
    runner
        .set_jobs(vec![job(1, &Arc::new(check(3, 3, Health::Up)))])
        .await;
    let r = next(&mut rx).await;
    assert_eq!((r.health, r.changed), (Health::Down, true));
    assert_eq!(
        r.result.outcome,
        Outcome::Down {
            reason: "scripted down 1".into()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn rise_good_rounds_in_a_row_bring_it_up() {
    let fake = Fake::with_delay(Duration::ZERO);
    let (runner, mut rx, _) = start(&fake, 16);
    fake.script(1, "--++-+++");
    runner
        .set_jobs(vec![job(1, &Arc::new(check(3, 2, Health::Up)))])
        .await;
    assert_eq!(healths(&mut rx, 9).await, "DDDDDDDUU");
    let s = runner.snapshot().await;
    assert_eq!(s[0].streak, 4);
}

#[tokio::test(start_paused = true)]
async fn fall_bad_rounds_in_a_row_take_it_down() {
    let fake = Fake::with_delay(Duration::ZERO);
    let (runner, mut rx, _) = start(&fake, 16);
    fake.script(1, "+--+---");
    runner
        .set_jobs(vec![job(1, &Arc::new(check(2, 3, Health::Down)))])
        .await;
    let mut changed = Vec::new();
    let mut h = String::new();
    for _ in 0..7 {
        let r = next(&mut rx).await;
        h.push(if r.health == Health::Up { 'U' } else { 'D' });
        changed.push(r.changed);
    }
    assert_eq!(h, "UUUUUUD");
    assert_eq!(changed, [true, false, false, false, false, false, true]);
}

#[tokio::test(start_paused = true)]
async fn retry_within_a_round_after_retry_delay() {
    let fake = Fake::with_delay(ms(20));
    let (runner, mut rx, _) = start(&fake, 16);
    let mut c = check(1, 1, Health::Down);
    c.retry = 2;
    c.retry_delay = ms(100);
    // Round 1: two failures then success; round 2: all three attempts fail.
    fake.script(1, "--+---");
    runner.set_jobs(vec![job(1, &Arc::new(c))]).await;

    let r = next(&mut rx).await;
    assert_eq!(r.result.outcome, Outcome::Up);
    assert_eq!(r.result.attempts, 3);
    assert_eq!(r.result.latency, ms(20), "latency of the last attempt only");
    let starts = fake.starts(1);
    assert_eq!(starts.len(), 3);
    assert_eq!(starts[1] - starts[0], ms(120), "attempt, then retry_delay");
    assert_eq!(starts[2] - starts[1], ms(120));

    let r = next(&mut rx).await;
    assert_eq!(r.result.attempts, 3);
    assert!(matches!(r.result.outcome, Outcome::Down { .. }));
    assert_eq!(r.health, Health::Down);
    let starts = fake.starts(1);
    assert_eq!(
        starts[3] - starts[0],
        SECOND,
        "rounds keep their rate despite retries"
    );
}

#[tokio::test(start_paused = true)]
async fn checker_errors_count_as_failures_and_say_so() {
    let fake = Fake::with_delay(Duration::ZERO);
    let (runner, mut rx, _) = start(&fake, 16);
    fake.script(1, "+ee");
    runner
        .set_jobs(vec![job(1, &Arc::new(check(1, 2, Health::Down)))])
        .await;
    assert_eq!(next(&mut rx).await.health, Health::Up);
    assert_eq!(next(&mut rx).await.health, Health::Up);
    let r = next(&mut rx).await;
    assert_eq!((r.health, r.changed), (Health::Down, true));
    assert_eq!(
        r.result.outcome,
        Outcome::Error {
            message: "bad check option: scripted error 1".into()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_check_that_cannot_be_prepared_runs_as_failing() {
    let fake = Fake::with_delay(Duration::ZERO);
    let (runner, mut rx, prepared) = start(&fake, 16);
    let bad = Arc::new(check(99, 1, Health::Up));
    let errors = runner.set_jobs(vec![job(1, &bad), job(2, &bad)]).await;
    let keys: Vec<_> = errors.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(keys, [key(1), key(2)]);
    assert_eq!(errors[0].1.to_string(), "bad check option: unpreparable");
    for _ in 0..2 {
        let r = next(&mut rx).await;
        assert_eq!(r.health, Health::Down);
        assert_eq!(
            r.result.outcome,
            Outcome::Error {
                message: "bad check option: unpreparable".into()
            }
        );
    }
    // The same job set again: the broken checks are tried again, and reported.
    let before = prepared.load(Ordering::SeqCst);
    assert_eq!(
        runner
            .set_jobs(vec![job(1, &bad), job(2, &bad)])
            .await
            .len(),
        2
    );
    assert_eq!(prepared.load(Ordering::SeqCst), before + 2);
}

#[tokio::test(start_paused = true)]
async fn restart_epoch_decides_afresh_and_gates_readiness() {
    let fake = Fake::with_delay(ms(300));
    let (runner, mut rx, _) = start(&fake, 16);
    let mut ready = runner.ready();
    let c = Arc::new(check(5, 5, Health::Down));
    runner.set_jobs(vec![job(1, &c), job(2, &c)]).await;
    assert!(!*ready.borrow_and_update());
    ready.wait_for(|r| *r).await.expect("ready");
    // Both have had their first round (up).
    let mut up = 0;
    while let Ok(r) = rx.try_recv() {
        assert_eq!(r.health, Health::Up);
        up += 1;
    }
    assert_eq!(up, 2);

    // Job 1 now fails; with fall 5 it stays up for a while.
    fake.script(1, "------");
    let r = next(&mut rx).await;
    let r = if r.key == key(1) {
        r
    } else {
        next(&mut rx).await
    };
    assert_eq!((r.key.clone(), r.health), (key(1), Health::Up));

    // Wait until an attempt of job 1 is under way, then restart the epoch: that
    // round started in the old epoch, so it neither decides nor makes us ready.
    let started = fake.starts(1).len();
    while fake.starts(1).len() == started {
        tokio::time::sleep(ms(10)).await;
    }
    runner.restart_epoch();
    assert!(
        !*runner.ready().borrow(),
        "not ready right after restart_epoch"
    );
    let mut seen = Vec::new();
    loop {
        let r = next(&mut rx).await;
        if r.key == key(1) {
            seen.push((r.health, r.changed, *runner.ready().borrow()));
            if seen.len() == 2 {
                break;
            }
        }
    }
    // In-flight round: hysteresis still (up, fall not reached). Next round: the
    // first of the new epoch, decides directly.
    assert_eq!(seen[0].0, Health::Up);
    assert!(!seen[0].1);
    assert_eq!((seen[1].0, seen[1].1), (Health::Down, true));
    ready.wait_for(|r| *r).await.expect("ready again");
}

#[tokio::test(start_paused = true)]
async fn adding_a_job_makes_the_runner_unready_until_its_first_round() {
    let fake = Fake::with_delay(Duration::ZERO);
    let (runner, mut rx, _) = start(&fake, 16);
    let c = Arc::new(check(1, 1, Health::Up));
    runner.set_jobs(vec![job(1, &c)]).await;
    next(&mut rx).await;
    assert!(*runner.ready().borrow());
    runner.set_jobs(vec![job(1, &c), job(2, &c)]).await;
    assert!(!*runner.ready().borrow());
    loop {
        if next(&mut rx).await.key == key(2) {
            break;
        }
    }
    assert!(*runner.ready().borrow());
    // Removing every job: ready.
    runner.set_jobs(vec![]).await;
    runner.restart_epoch();
    assert!(*runner.ready().borrow(), "no jobs: ready");
}

#[tokio::test(start_paused = true)]
async fn at_most_max_concurrent_attempts_run_at_once() {
    let fake = Fake::with_delay(ms(200));
    let (runner, mut rx, _) = start(&fake, 3);
    let c = Arc::new(check(1, 1, Health::Down));
    runner
        .set_jobs((1..=20).map(|n| job(n, &c)).collect())
        .await;
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 20 {
        seen.insert(next(&mut rx).await.key);
    }
    assert_eq!(fake.max_running(), 3);
}

#[tokio::test(start_paused = true)]
async fn set_jobs_keeps_replaces_and_removes() {
    let fake = Fake::with_delay(Duration::ZERO);
    let (runner, mut rx, prepared) = start(&fake, 16);
    let c = Arc::new(check(2, 2, Health::Down));
    runner.set_jobs(vec![job(1, &c), job(2, &c)]).await;
    assert_eq!(
        prepared.load(Ordering::SeqCst),
        1,
        "one prober for equal checks"
    );
    // Two rounds each.
    for _ in 0..4 {
        next(&mut rx).await;
    }
    let s = runner.snapshot().await;
    assert_eq!((s[0].key.clone(), s[0].streak), (key(1), 2));

    // Job 1: same key, an equal check in a new Arc: kept with its state.
    // Job 2: changed check: starts over at its initial health. Job 3: new.
    let same = Arc::new(check(2, 2, Health::Down));
    let changed = Arc::new(check(3, 2, Health::Down));
    let errors = runner
        .set_jobs(vec![job(3, &changed), job(1, &same), job(2, &changed)])
        .await;
    assert!(errors.is_empty());
    assert_eq!(
        prepared.load(Ordering::SeqCst),
        2,
        "kept job not prepared again"
    );
    let s = runner.snapshot().await;
    let keys: Vec<_> = s.iter().map(|j| j.key.clone()).collect();
    assert_eq!(keys, [key(1), key(2), key(3)], "ordered by key");
    assert_eq!((s[0].health, s[0].streak), (Health::Up, 2));
    assert!(s[0].last.is_some());
    assert_eq!((s[1].health, s[1].streak), (Health::Down, 0));
    assert!(s[1].last.is_none());
    assert!(s[2].last.is_none());

    // Remove 2 and 3: only job 1 reports from now on.
    runner.set_jobs(vec![job(1, &same)]).await;
    while rx.try_recv().is_ok() {}
    for _ in 0..5 {
        assert_eq!(next(&mut rx).await.key, key(1));
    }
    assert_eq!(runner.snapshot().await.len(), 1);
    assert_eq!(runner.snapshot().await[0].streak, 7);
}

#[tokio::test(start_paused = true)]
async fn check_now_does_not_count() {
    let fake = Fake::with_delay(ms(5));
    let (runner, mut rx, _) = start(&fake, 16);
    runner
        .set_jobs(vec![job(1, &Arc::new(check(1, 1, Health::Down)))])
        .await;
    let r = next(&mut rx).await;
    assert_eq!(r.health, Health::Up);

    fake.script(1, "-");
    let now = runner.check_now(&key(1)).await.expect("job exists");
    assert_eq!(
        now.outcome,
        Outcome::Down {
            reason: "scripted down 1".into()
        }
    );
    assert_eq!((now.attempts, now.latency), (1, ms(5)));
    let s = runner.snapshot().await;
    assert_eq!(
        (s[0].health, s[0].streak),
        (Health::Up, 1),
        "fall 1, yet still up"
    );
    assert_eq!(s[0].last.as_ref().map(|l| &l.outcome), Some(&Outcome::Up));
    assert!(rx.try_recv().is_err(), "no report for check_now");
    let r = next(&mut rx).await;
    assert_eq!((r.health, r.changed), (Health::Up, false));

    assert!(runner.check_now(&key(9)).await.is_none());
}

#[tokio::test(start_paused = true)]
async fn rounds_keep_a_fixed_rate_when_a_check_takes_most_of_the_interval() {
    let fake = Fake::with_delay(ms(900));
    let (runner, mut rx, _) = start(&fake, 16);
    runner
        .set_jobs(vec![job(1, &Arc::new(check(1, 1, Health::Up)))])
        .await;
    for _ in 0..10 {
        next(&mut rx).await;
    }
    let starts = fake.starts(1);
    for w in starts.windows(2) {
        assert_eq!(w[1] - w[0], SECOND);
    }
}

#[tokio::test(start_paused = true)]
async fn a_round_longer_than_the_interval_does_not_bunch_rounds_up() {
    let fake = Fake::with_delay(ms(1500));
    let (runner, mut rx, _) = start(&fake, 16);
    runner
        .set_jobs(vec![job(1, &Arc::new(check(1, 1, Health::Up)))])
        .await;
    for _ in 0..6 {
        next(&mut rx).await;
    }
    let starts = fake.starts(1);
    for w in starts.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap >= ms(1500) && gap <= ms(2000), "gap {gap:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_stops_the_runner() {
    let fake = Fake::with_delay(Duration::ZERO);
    let (runner, mut rx, _) = start(&fake, 16);
    let c = Arc::new(check(1, 1, Health::Up));
    runner.set_jobs(vec![job(1, &c), job(2, &c)]).await;
    next(&mut rx).await;
    let clone = runner.clone();
    drop(runner);
    next(&mut rx).await;
    drop(clone);
    while rx.recv().await.is_some() {}
}

/// directord spawns tasks that call the handle: its futures must be `Send`.
#[test]
fn handle_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let (runner, _rx) = runner::spawn(RunnerConfig::default());
    send(&runner.set_jobs(Vec::new()));
    send(&runner.check_now(&key(1)));
    send(&runner.snapshot());
    send(&runner);
}
