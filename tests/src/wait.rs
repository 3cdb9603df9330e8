//! Waiting for a condition by polling it against a deadline: the lab never sleeps and
//! hopes.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// How often conditions are polled.
pub const POLL: Duration = Duration::from_millis(20);

/// Polls `check` until it returns true; fails after `timeout`, naming `what` and the
/// last error `check` returned, if any.
pub fn until(timeout: Duration, what: &str, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    value(timeout, what, || Ok(check()?.then_some(()))).map(drop)
}

/// Polls `check` until it returns `Some(value)`; returns the value and how long it took.
pub fn value<T>(
    timeout: Duration,
    what: &str,
    check: impl FnMut() -> Result<Option<T>>,
) -> Result<(T, Duration)> {
    value_every(POLL, timeout, what, check)
}

/// As [`value`], polling every `every` instead of [`POLL`]: for checks that fork
/// commands, where a slow machine (the emulated IPVS VM) would spend itself polling.
pub fn value_every<T>(
    every: Duration,
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<(T, Duration)> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut last_err = None;
    loop {
        match check() {
            Ok(Some(v)) => return Ok((v, start.elapsed())),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= deadline {
            match last_err {
                Some(e) => {
                    bail!("timed out after {timeout:?} waiting for {what} (last error: {e:#})")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        thread::sleep(every);
    }
}

/// Checks that `check` holds on every sample over `window`; fails on the first sample
/// where it does not, with the message `check` gives.
pub fn holds_for(
    window: Duration,
    mut check: impl FnMut() -> Result<Option<String>>,
) -> Result<usize> {
    let deadline = Instant::now() + window;
    let mut samples = 0;
    loop {
        if let Some(problem) = check()? {
            bail!("after {samples} good samples: {problem}");
        }
        samples += 1;
        if Instant::now() >= deadline {
            return Ok(samples);
        }
        thread::sleep(POLL);
    }
}
