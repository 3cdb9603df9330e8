//! Failover drills: make the active director fail (or hand over), measure what the client
//! saw, and put the pair back. Shared by the benchmark and the demo.

use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::lab::{IFACE, Lab};
use crate::pair::Pair;
use crate::probe::{Outage, Probe};
use crate::wait;

/// How long the probe keeps running after the client is answered by the new active
/// director, so that a flap back would be seen.
pub const OBSERVE: Duration = Duration::from_millis(300);

/// What happens to the active director.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `kill -9` of the daemon and of the service it fronts: the director is gone.
    Crash,
    /// `ip link set eth0 down` on the active director.
    LinkDown,
    /// `directorctl takeover` on the standby.
    Takeover,
    /// `directorctl standby` on the active.
    Standby,
    /// SIGTERM of the active daemon: a clean stop.
    Terminate,
}

impl Event {
    pub fn describe(self) -> &'static str {
        match self {
            Event::Crash => "kill -9 of the active",
            Event::LinkDown => "link down on the active",
            Event::Takeover => "takeover on the standby",
            Event::Standby => "standby on the active",
            Event::Terminate => "SIGTERM of the active",
        }
    }
}

/// The result of one measured failover.
#[derive(Debug, Clone)]
pub struct Failover {
    pub from: String,
    pub to: String,
    pub outage: Outage,
    /// From the event until the client was answered by `to`.
    pub answered_after: Duration,
}

/// The one director that holds the VIP, or an error.
pub fn sole_holder(pair: &Pair) -> Result<String> {
    let holders = pair.holders()?;
    match holders.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!("expected one VIP holder, found {holders:?}"),
    }
}

/// Applies `event` to the pair, whose active director is `from`.
pub fn trigger(pair: &Pair, event: Event, from: &str) -> Result<()> {
    let to = pair.peer_of(from);
    match event {
        Event::Crash => pair.crash(from),
        Event::LinkDown => pair.lab.link_down(from),
        Event::Takeover => pair.directord(to)?.takeover(),
        Event::Standby => pair.directord(from)?.standby(),
        Event::Terminate => pair.terminate(from),
    }
}

/// Puts the pair back after `event` so that `from` is the only holder again: restart
/// or link up (it preempts), or the opposite planned move (`standby` on the node that
/// took over, `takeover` on the node that stood by).
pub fn restore(pair: &mut Pair, event: Event, from: &str) -> Result<()> {
    let deadline = pair.failover_deadline();
    let to = pair.peer_of(from).to_string();
    match event {
        Event::Crash | Event::Terminate => pair.start_node(from)?,
        Event::LinkDown => pair.lab.link_up(from)?,
        Event::Takeover => {
            // Wait until the move is complete before handing back.
            pair.wait_converged(&to, deadline)?;
            pair.directord(&to)?.standby()?
        }
        Event::Standby => pair.directord(from)?.takeover()?,
    }
    pair.wait_converged(from, deadline)?;
    Ok(())
}

/// One measured failover of the converged pair: probe, trigger, wait for the client to be
/// answered by the peer, measure, restore.
pub fn measure(pair: &mut Pair, event: Event) -> Result<Failover> {
    let from = sole_holder(pair)?;
    let to = pair.peer_of(&from).to_string();
    let probe = pair.probe()?;
    pair.wait_answered_by(&probe, &from, 0, Duration::from_secs(5))?;
    // A short undisturbed baseline.
    wait::until(Duration::from_secs(5), "a probe baseline", || {
        Ok(probe.snapshot().answered() >= 20)
    })?;
    // Fail at a random point of the advert cycle, as real failures do: right after the
    // restore the cycle is in step with this drill, which would bias the figures.
    thread::sleep(pair.interval().mul_f64(random_fraction()));
    let t0 = probe.now_us();
    let started = Instant::now();
    trigger(pair, event, &from)?;
    pair.wait_answered_by(&probe, &to, t0, pair.failover_deadline())?;
    let answered_after = started.elapsed();
    thread::sleep(OBSERVE);
    let report = probe.stop();
    let outage = report.outage_between(t0, report.end_us);
    restore(pair, event, &from)?;
    Ok(Failover {
        from,
        to,
        outage,
        answered_after,
    })
}

/// A change of VIP holders, seen by [`HolderWatch`].
#[derive(Debug, Clone)]
pub struct HolderChange {
    /// Microseconds on the clock given to [`HolderWatch::start`].
    pub at_us: u64,
    pub holders: Vec<String>,
}

/// Samples who holds the VIP every 50 ms on a thread, recording changes.
#[derive(Debug)]
pub struct HolderWatch {
    stop: Arc<AtomicBool>,
    changes: Arc<Mutex<Vec<HolderChange>>>,
    thread: JoinHandle<()>,
}

impl HolderWatch {
    /// Watches `nodes` of the lab; times are µs since `epoch` (use the probe's start).
    pub fn start(lab: &Lab, nodes: &[&str], vip: IpAddr, epoch: Instant) -> HolderWatch {
        let targets: Vec<(String, String)> = nodes
            .iter()
            .map(|n| (n.to_string(), lab.node(n).ns.clone()))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let changes = Arc::new(Mutex::new(Vec::<HolderChange>::new()));
        let (s, c) = (stop.clone(), changes.clone());
        let thread = thread::spawn(move || {
            let vip = vip.to_string();
            while !s.load(Ordering::SeqCst) {
                let holders: Vec<String> = targets
                    .iter()
                    .filter(|(_, ns)| {
                        Command::new("ip")
                            .args(["-n", ns, "-br", "addr", "show", "dev", IFACE])
                            .output()
                            .map(|o| {
                                String::from_utf8_lossy(&o.stdout)
                                    .split_whitespace()
                                    .any(|w| w.split('/').next() == Some(vip.as_str()))
                            })
                            .unwrap_or(false)
                    })
                    .map(|(n, _)| n.clone())
                    .collect();
                let at_us = epoch.elapsed().as_micros() as u64;
                let mut c = c.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if c.last().is_none_or(|last| last.holders != holders) {
                    c.push(HolderChange { at_us, holders });
                }
                drop(c);
                thread::sleep(Duration::from_millis(50));
            }
        });
        HolderWatch {
            stop,
            changes,
            thread,
        }
    }

    pub fn stop(self) -> Vec<HolderChange> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
        let c = self
            .changes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        c.clone()
    }
}

/// The probe's clock, for [`HolderWatch::start`].
pub fn probe_epoch(probe: &Probe) -> Instant {
    Instant::now() - Duration::from_micros(probe.now_us())
}

/// A number in [0, 1) that differs from call to call; good enough to pick a phase.
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}
