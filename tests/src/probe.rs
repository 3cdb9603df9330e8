//! What the client sees: a UDP echo responder on the directors (`labecho`) and a prober in
//! the client that sends to VIP:7 every 10 ms and records who answered and when.
//!
//! Wire format: the probe sends its sequence number as decimal text; the responder answers
//! `<node name> <sequence number>`.
//!
//! The client-visible outage is the longest time the client went without any reply, minus
//! one probe interval (so an undisturbed run measures 0; the resolution is the interval).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use socket2::{Domain, Socket, Type};

use crate::lab::Lab;

/// The echo port.
pub const PORT: u16 = 7;
/// The usual probe interval.
pub const INTERVAL: Duration = Duration::from_millis(10);

/// Binds a UDP socket that may bind an address the node does not hold (yet): the
/// responder binds the VIP and answers from it whenever the node holds it.
pub fn bind_freebind(addr: SocketAddr) -> Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    match addr.ip() {
        IpAddr::V4(_) => socket.set_freebind_v4(true)?,
        IpAddr::V6(_) => {
            socket.set_only_v6(true)?;
            socket.set_freebind_v6(true)?;
        }
    }
    socket.set_reuse_address(true)?;
    socket
        .bind(&addr.into())
        .with_context(|| format!("binding {addr}"))?;
    Ok(socket.into())
}

/// Runs the echo responder until the process dies: one thread per bound address.
/// With no address, binds 0.0.0.0:7 and [::]:7.
pub fn serve_echo(name: &str, binds: &[SocketAddr]) -> Result<()> {
    let defaults = [
        SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), PORT),
        SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), PORT),
    ];
    let binds = if binds.is_empty() {
        &defaults[..]
    } else {
        binds
    };
    let mut threads = Vec::new();
    for &addr in binds {
        let socket = bind_freebind(addr)?;
        let name = name.to_string();
        threads.push(thread::spawn(move || -> Result<()> {
            let mut buf = [0u8; 512];
            loop {
                let (n, peer) = socket.recv_from(&mut buf)?;
                let mut reply = Vec::with_capacity(name.len() + 1 + n);
                reply.extend_from_slice(name.as_bytes());
                reply.push(b' ');
                reply.extend_from_slice(&buf[..n]);
                // A send can fail while the address moves away; keep serving.
                let _ = socket.send_to(&reply, peer);
            }
        }));
    }
    eprintln!("labecho {name}: serving on {binds:?}");
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("echo thread panicked"))??;
    }
    Ok(())
}

/// One probe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    pub seq: u64,
    /// Microseconds since the probe started.
    pub sent_us: u64,
    pub reply_us: Option<u64>,
    /// The node that answered.
    pub node: Option<String>,
}

struct Shared {
    start: Instant,
    samples: Mutex<Vec<Sample>>,
    stop_send: AtomicBool,
    stop_recv: AtomicBool,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

/// A running prober. `stop` returns the report.
pub struct Probe {
    shared: Arc<Shared>,
    interval: Duration,
    target: SocketAddr,
    started_unix_ms: u64,
    sender: JoinHandle<()>,
    receiver: JoinHandle<()>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("target", &self.target)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl Probe {
    /// Starts probing `target` from `node` of the lab.
    pub fn start_in(
        lab: &Lab,
        node: &str,
        target: SocketAddr,
        interval: Duration,
    ) -> Result<Probe> {
        let socket = lab
            .in_netns(node, move || {
                let any: SocketAddr = match target {
                    SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                    SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
                };
                Ok(UdpSocket::bind(any)?)
            })?
            .join()
            .map_err(|_| anyhow::anyhow!("netns thread panicked"))??;
        Probe::start(socket, target, interval)
    }

    /// Starts probing with a socket of the current namespace.
    pub fn start_here(target: SocketAddr, interval: Duration) -> Result<Probe> {
        let any: SocketAddr = match target {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        Probe::start(UdpSocket::bind(any)?, target, interval)
    }

    fn start(socket: UdpSocket, target: SocketAddr, interval: Duration) -> Result<Probe> {
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        let rx = socket.try_clone()?;
        let shared = Arc::new(Shared {
            start: Instant::now(),
            samples: Mutex::new(Vec::new()),
            stop_send: AtomicBool::new(false),
            stop_recv: AtomicBool::new(false),
        });
        let started_unix_ms = unix_ms();
        let s = shared.clone();
        let sender = thread::Builder::new()
            .name("probe-send".into())
            .spawn(move || {
                let mut seq = 0u64;
                while !s.stop_send.load(Ordering::SeqCst) {
                    // Scheduled from the start, so a late wake-up does not shift later probes.
                    let due = s.start + interval * seq as u32;
                    let now = Instant::now();
                    if due > now {
                        thread::sleep(due - now);
                    }
                    lock(&s.samples).push(Sample {
                        seq,
                        sent_us: s.now_us(),
                        reply_us: None,
                        node: None,
                    });
                    // While the VIP moves, sends may fail (no neighbour yet); that is a loss.
                    let _ = socket.send_to(seq.to_string().as_bytes(), target);
                    seq += 1;
                }
            })?;
        let s = shared.clone();
        let receiver = thread::Builder::new()
            .name("probe-recv".into())
            .spawn(move || {
                let mut buf = [0u8; 512];
                while !s.stop_recv.load(Ordering::SeqCst) {
                    let Ok((n, _)) = rx.recv_from(&mut buf) else {
                        continue;
                    };
                    let now = s.now_us();
                    let text = String::from_utf8_lossy(&buf[..n]);
                    let Some((node, seq)) = text.trim().rsplit_once(' ') else {
                        continue;
                    };
                    let Ok(seq) = seq.parse::<usize>() else {
                        continue;
                    };
                    let mut samples = lock(&s.samples);
                    if let Some(sample) = samples.get_mut(seq)
                        && sample.reply_us.is_none()
                    {
                        sample.reply_us = Some(now);
                        sample.node = Some(node.to_string());
                    }
                }
            })?;
        Ok(Probe {
            shared,
            interval,
            target,
            started_unix_ms,
            sender,
            receiver,
        })
    }

    /// Microseconds since the probe started: use it to mark events on the timeline.
    pub fn now_us(&self) -> u64 {
        self.shared.now_us()
    }

    /// The latest reply: (arrival µs, node).
    pub fn last_reply(&self) -> Option<(u64, String)> {
        let samples = lock(&self.shared.samples);
        samples
            .iter()
            .filter_map(|s| Some((s.reply_us?, s.node.clone()?)))
            .max_by_key(|(t, _)| *t)
    }

    /// The node that answered the latest reply that arrived after `since_us`.
    pub fn answered_since(&self, since_us: u64) -> Option<String> {
        self.last_reply()
            .filter(|(t, _)| *t > since_us)
            .map(|(_, node)| node)
    }

    /// A copy of what has been recorded so far.
    pub fn snapshot(&self) -> Report {
        Report {
            target: self.target.to_string(),
            interval_us: self.interval.as_micros() as u64,
            started_unix_ms: self.started_unix_ms,
            end_us: self.now_us(),
            samples: lock(&self.shared.samples).clone(),
        }
    }

    /// Stops sending, waits a little for late replies, and returns the report. Probes
    /// sent during the last 200 ms that got no answer are dropped from the report (their
    /// replies may still be in flight).
    pub fn stop(self) -> Report {
        self.shared.stop_send.store(true, Ordering::SeqCst);
        let end_us = self.now_us();
        let _ = self.sender.join();
        thread::sleep(Duration::from_millis(200));
        self.shared.stop_recv.store(true, Ordering::SeqCst);
        let _ = self.receiver.join();
        let samples = lock(&self.shared.samples).clone();
        Report {
            target: self.target.to_string(),
            interval_us: self.interval.as_micros() as u64,
            started_unix_ms: self.started_unix_ms,
            end_us,
            samples,
        }
    }
}

/// The record of a probe run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub target: String,
    pub interval_us: u64,
    pub started_unix_ms: u64,
    /// When sending stopped, µs since the start.
    pub end_us: u64,
    pub samples: Vec<Sample>,
}

/// The longest time without a reply in some window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Outage {
    /// Longest gap between replies minus one probe interval, in ms.
    pub ms: f64,
    /// The gap: last reply before, first reply after (µs since the probe started).
    pub from_us: u64,
    pub to_us: u64,
    /// Probes sent in the gap that got no answer.
    pub lost: usize,
    /// False when no reply came after the gap before the probe stopped.
    pub recovered: bool,
}

/// A stretch of consecutive replies from one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub node: String,
    pub first_us: u64,
    pub last_us: u64,
    pub replies: usize,
}

impl Report {
    fn arrivals(&self) -> Vec<(u64, &str)> {
        let mut a: Vec<(u64, &str)> = self
            .samples
            .iter()
            .filter_map(|s| Some((s.reply_us?, s.node.as_deref()?)))
            .collect();
        a.sort_by_key(|(t, _)| *t);
        a
    }

    pub fn sent(&self) -> usize {
        self.samples.len()
    }

    pub fn answered(&self) -> usize {
        self.samples.iter().filter(|s| s.reply_us.is_some()).count()
    }

    /// The outage over the whole run.
    pub fn outage(&self) -> Outage {
        self.outage_between(0, self.end_us)
    }

    /// The longest reply gap that overlaps [from_us, to_us]. Leading and trailing
    /// silence count (from the start of the probe, until the end of the probe).
    pub fn outage_between(&self, from_us: u64, to_us: u64) -> Outage {
        let times: Vec<u64> = self.arrivals().iter().map(|(t, _)| *t).collect();
        let mut edges = Vec::with_capacity(times.len() + 2);
        edges.push((0, true));
        edges.extend(times.iter().map(|t| (*t, true)));
        edges.push((self.end_us.max(times.last().copied().unwrap_or(0)), false));
        let mut best: Option<(u64, u64, bool)> = None;
        for w in edges.windows(2) {
            let ((a, _), (b, b_is_reply)) = (w[0], w[1]);
            if b < from_us || a > to_us {
                continue;
            }
            if best.is_none_or(|(x, y, _)| b - a > y - x) {
                best = Some((a, b, b_is_reply));
            }
        }
        let (from, to, recovered) = best.unwrap_or((from_us, from_us, true));
        let lost = self
            .samples
            .iter()
            .filter(|s| s.reply_us.is_none() && s.sent_us >= from && s.sent_us < to)
            .count();
        let gap = to.saturating_sub(from).saturating_sub(self.interval_us);
        Outage {
            ms: gap as f64 / 1000.0,
            from_us: from,
            to_us: to,
            lost,
            recovered,
        }
    }

    /// Who answered when, in arrival order.
    pub fn timeline(&self) -> Vec<Segment> {
        let mut out: Vec<Segment> = Vec::new();
        for (t, node) in self.arrivals() {
            match out.last_mut() {
                Some(seg) if seg.node == node => {
                    seg.last_us = t;
                    seg.replies += 1;
                }
                _ => out.push(Segment {
                    node: node.to_string(),
                    first_us: t,
                    last_us: t,
                    replies: 1,
                }),
            }
        }
        out
    }

    /// The nodes that answered after `from_us`, in order of their first answer.
    pub fn answered_after(&self, from_us: u64) -> Vec<String> {
        self.answered_between(from_us, u64::MAX)
    }

    /// Who answered in [from_us, to_us], as a sequence of changes: the node that answered
    /// last before `from_us` first (when there is one), then each change of node.
    pub fn answered_between(&self, from_us: u64, to_us: u64) -> Vec<String> {
        let arrivals = self.arrivals();
        let mut out: Vec<String> = Vec::new();
        if let Some((_, before)) = arrivals.iter().rev().find(|(t, _)| *t < from_us) {
            out.push(before.to_string());
        }
        for (t, node) in arrivals {
            if t >= from_us && t <= to_us && out.last().is_none_or(|n| n != node) {
                out.push(node.to_string());
            }
        }
        out
    }

    /// A human-readable timeline.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "probe {}: {} sent, {} answered, outage {:.0} ms\n",
            self.target,
            self.sent(),
            self.answered(),
            self.outage().ms
        );
        for seg in self.timeline() {
            s.push_str(&format!(
                "  {:>9.3}s .. {:>9.3}s  {:<8} {} replies\n",
                seg.first_us as f64 / 1e6,
                seg.last_us as f64 / 1e6,
                seg.node,
                seg.replies
            ));
        }
        s
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(replies: &[(u64, Option<(u64, &str)>)]) -> Report {
        Report {
            target: "x".into(),
            interval_us: 10_000,
            started_unix_ms: 0,
            end_us: replies.last().map(|r| r.0 + 10_000).unwrap_or(0),
            samples: replies
                .iter()
                .enumerate()
                .map(|(i, (sent, r))| Sample {
                    seq: i as u64,
                    sent_us: *sent,
                    reply_us: r.map(|r| r.0),
                    node: r.map(|r| r.1.to_string()),
                })
                .collect(),
        }
    }

    #[test]
    fn outage_is_the_longest_reply_gap_minus_one_interval() {
        let r = report(&[
            (0, Some((100, "d1"))),
            (10_000, Some((10_100, "d1"))),
            (20_000, None),
            (30_000, None),
            (40_000, Some((40_200, "d2"))),
            (50_000, Some((50_100, "d2"))),
        ]);
        let o = r.outage();
        assert_eq!(o.from_us, 10_100);
        assert_eq!(o.to_us, 40_200);
        assert_eq!(o.lost, 2);
        assert!(o.recovered);
        assert!((o.ms - 20.1).abs() < 1e-9);
        let t = r.timeline();
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].node.as_str(), t[0].replies), ("d1", 2));
        assert_eq!((t[1].node.as_str(), t[1].replies), ("d2", 2));
        assert_eq!(r.answered_between(20_000, 60_000), vec!["d1", "d2"]);
    }

    #[test]
    fn trailing_silence_is_an_unrecovered_outage() {
        let r = report(&[(0, Some((100, "d1"))), (10_000, None), (20_000, None)]);
        let o = r.outage();
        assert!(!o.recovered);
        assert_eq!(o.lost, 2);
    }

    #[test]
    fn undisturbed_run_has_no_outage() {
        let r = report(&[
            (0, Some((100, "d1"))),
            (10_000, Some((10_100, "d1"))),
            (20_000, Some((20_100, "d1"))),
        ]);
        assert!(r.outage_between(5_000, 25_000).ms <= 0.2);
    }
}
