//! A failover pair on the lab: two directors (`d1`, `d2`), each running directord or
//! keepalived, plus the echo responder the client probes. Tests, the bench and the demo
//! drive failovers through this. A pair runs VRRP, or (directord only) the UDP 694
//! heartbeat ([`Pair::heartbeat`]).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::directord::{Directord, Heartbeat};
use crate::keepalived::Keepalived;
use crate::lab::{Lab, Proc, find_bin};
use crate::probe::{self, Probe};
use crate::vrrp::Setup;
use crate::wait;

/// Which VRRP implementation runs on a director.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    Directord,
    Keepalived,
}

impl std::fmt::Display for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Daemon::Directord => "directord",
            Daemon::Keepalived => "keepalived",
        })
    }
}

#[derive(Debug)]
enum Runner {
    Directord(Directord),
    Keepalived(Keepalived),
}

#[derive(Debug)]
pub struct Member {
    pub node: String,
    pub daemon: Daemon,
    pub priority: u8,
    runner: Option<Runner>,
    echo: Option<Proc>,
}

/// Two directors sharing one VIP.
#[derive(Debug)]
pub struct Pair<'a> {
    pub lab: &'a Lab,
    /// The VRRP setup; for a heartbeat pair only its VIP counts (IPv4), and its advert
    /// interval is the keepalive.
    pub setup: Setup,
    /// Some: both run directord with the UDP 694 heartbeat instead of VRRP.
    pub heartbeat: Option<Heartbeat>,
    pub members: Vec<Member>,
}

impl<'a> Pair<'a> {
    /// `members`: (node, daemon, priority) for `d1` and `d2`.
    pub fn new(lab: &'a Lab, setup: Setup, members: [(&str, Daemon, u8); 2]) -> Pair<'a> {
        Pair {
            lab,
            setup,
            heartbeat: None,
            members: members
                .iter()
                .map(|(node, daemon, priority)| Member {
                    node: node.to_string(),
                    daemon: *daemon,
                    priority: *priority,
                    runner: None,
                    echo: None,
                })
                .collect(),
        }
    }

    /// The usual pair: d1 at 150, d2 at 100, same daemon on both.
    pub fn usual(lab: &'a Lab, setup: Setup, daemon: Daemon) -> Pair<'a> {
        Pair::new(lab, setup, [("d1", daemon, 150), ("d2", daemon, 100)])
    }

    /// d1 and d2 running directord with the UDP 694 heartbeat (the lab needs the second
    /// link: [`Lab::pair_two_links`]).
    pub fn heartbeat(lab: &'a Lab, hb: Heartbeat) -> Pair<'a> {
        let mut pair = Pair::usual(lab, Setup::v3(hb.keepalive), Daemon::Directord);
        pair.heartbeat = Some(hb);
        pair
    }

    /// A generous deadline for one failover of this pair's protocol.
    pub fn failover_deadline(&self) -> Duration {
        match &self.heartbeat {
            Some(hb) => hb.failover_deadline(),
            None => self.setup.failover_deadline(),
        }
    }

    /// The protocol's period: the VRRP advert interval, or the heartbeat keepalive.
    pub fn interval(&self) -> Duration {
        match &self.heartbeat {
            Some(hb) => hb.keepalive,
            None => self.setup.advert,
        }
    }

    /// Starts echo and daemon on both directors.
    pub fn start(&mut self) -> Result<()> {
        for i in 0..self.members.len() {
            let node = self.members[i].node.clone();
            self.start_node(&node)?;
        }
        Ok(())
    }

    fn member(&self, node: &str) -> Result<&Member> {
        self.members
            .iter()
            .find(|m| m.node == node)
            .with_context(|| format!("{node} is not a member of the pair"))
    }

    fn member_mut(&mut self, node: &str) -> Result<&mut Member> {
        self.members
            .iter_mut()
            .find(|m| m.node == node)
            .with_context(|| format!("{node} is not a member of the pair"))
    }

    pub fn nodes(&self) -> Vec<&str> {
        self.members.iter().map(|m| m.node.as_str()).collect()
    }

    pub fn peer_of(&self, node: &str) -> &str {
        self.members
            .iter()
            .map(|m| m.node.as_str())
            .find(|n| *n != node)
            .expect("a pair has two members")
    }

    pub fn daemon(&self, node: &str) -> Result<Daemon> {
        Ok(self.member(node)?.daemon)
    }

    /// Starts (or restarts) the echo responder and the daemon on `node`.
    pub fn start_node(&mut self, node: &str) -> Result<()> {
        let lab = self.lab;
        let setup = self.setup.clone();
        let heartbeat = self.heartbeat.clone();
        let peer = self.peer_of(node).to_string();
        let member = self.member_mut(node)?;
        if member.echo.as_ref().is_none_or(|p| !lab.is_running(p)) {
            let bind = SocketAddr::new(setup.vip(), probe::PORT).to_string();
            member.echo = Some(lab.spawn(
                node,
                "labecho",
                find_bin("labecho")?,
                &["--name", node, "--bind", &bind],
                &[],
            )?);
        }
        match &mut member.runner {
            None => {
                member.runner = Some(match (member.daemon, &heartbeat) {
                    (Daemon::Directord, Some(hb)) => {
                        Runner::Directord(Directord::start_heartbeat(lab, node, &peer, hb)?)
                    }
                    (Daemon::Directord, None) => Runner::Directord(Directord::start(
                        lab,
                        node,
                        Some(&peer),
                        &setup,
                        member.priority,
                    )?),
                    (Daemon::Keepalived, _) => Runner::Keepalived(Keepalived::start(
                        lab,
                        node,
                        Some(&peer),
                        &setup,
                        member.priority,
                    )?),
                })
            }
            Some(Runner::Directord(d)) => d.restart(lab)?,
            Some(Runner::Keepalived(k)) => k.restart(lab)?,
        }
        Ok(())
    }

    /// The directord on `node`.
    pub fn directord(&self, node: &str) -> Result<&Directord> {
        match &self.member(node)?.runner {
            Some(Runner::Directord(d)) => Ok(d),
            _ => bail!("{node} does not run directord"),
        }
    }

    /// The daemon's process on `node`.
    pub fn daemon_proc(&self, node: &str) -> Result<&Proc> {
        match &self.member(node)?.runner {
            Some(Runner::Directord(d)) => d.proc(),
            Some(Runner::Keepalived(k)) => k.proc(),
            None => None,
        }
        .with_context(|| format!("no daemon started on {node}"))
    }

    /// `kill -9` of the daemon only: the VIP stays configured on the node.
    pub fn kill9(&self, node: &str) -> Result<()> {
        self.lab.kill9(self.daemon_proc(node)?)
    }

    /// The director fails: `kill -9` of the daemon and of the service it fronts (the echo
    /// responder), so the client gets no answer from it until the peer takes over.
    pub fn crash(&self, node: &str) -> Result<()> {
        let m = self.member(node)?;
        // Both at once, echo first: the client must not be answered after the daemon died.
        if let Some(echo) = &m.echo {
            self.lab.kill9(echo)?;
        }
        self.kill9(node)
    }

    /// SIGTERM of the daemon: a clean step-down.
    pub fn terminate(&self, node: &str) -> Result<()> {
        match &self.member(node)?.runner {
            Some(Runner::Directord(d)) => d.terminate(self.lab),
            Some(Runner::Keepalived(k)) => k.terminate(self.lab),
            None => bail!("no daemon started on {node}"),
        }
    }

    /// Which directors hold the VIP now.
    pub fn holders(&self) -> Result<Vec<String>> {
        self.lab.holders(&self.nodes(), self.setup.vip())
    }

    /// Waits until `node` holds the VIP (the other may still hold a stale copy).
    pub fn wait_holds(&self, node: &str, timeout: Duration) -> Result<Duration> {
        let vip = self.setup.vip();
        wait::value(timeout, &format!("{node} to hold {vip}"), || {
            Ok(self.lab.holds(node, vip)?.then_some(()))
        })
        .map(|(_, t)| t)
    }

    /// Waits until `node` no longer holds the VIP.
    pub fn wait_released(&self, node: &str, timeout: Duration) -> Result<Duration> {
        let vip = self.setup.vip();
        wait::value(timeout, &format!("{node} to release {vip}"), || {
            Ok((!self.lab.holds(node, vip)?).then_some(()))
        })
        .map(|(_, t)| t)
    }

    /// Waits until `node` is the only holder of the VIP and, where directord runs, the
    /// roles say so (active there, standby on the peer).
    pub fn wait_converged(&self, node: &str, timeout: Duration) -> Result<Duration> {
        let what = format!("{node} to be the only holder of {}", self.setup.vip());
        let mut last = String::new();
        let r = wait::value(timeout, &what, || {
            let holders = self.holders()?;
            last = format!("holders {holders:?}");
            if holders != [node] {
                return Ok(None);
            }
            for m in &self.members {
                if let Some(Runner::Directord(d)) = &m.runner {
                    let want = if m.node == node { "active" } else { "standby" };
                    let role = d.role()?;
                    last = format!("holders {holders:?}, {} role {role}", m.node);
                    if role != want {
                        return Ok(None);
                    }
                }
            }
            Ok(Some(()))
        });
        r.map(|(_, t)| t)
            .with_context(|| format!("last seen: {last}"))
    }

    /// Samples both directors over `window`: exactly one, and always `node`, holds the
    /// VIP. Returns the number of samples.
    pub fn assert_sole_holder_for(&self, node: &str, window: Duration) -> Result<usize> {
        wait::holds_for(window, || {
            let holders = self.holders()?;
            Ok((holders != [node])
                .then(|| format!("VIP held by {holders:?}, expected only {node}")))
        })
    }

    /// Starts a probe from the client to VIP:7 and waits until it is answered.
    pub fn probe(&self) -> Result<Probe> {
        let target = SocketAddr::new(self.setup.vip(), probe::PORT);
        let p = Probe::start_in(self.lab, "client", target, probe::INTERVAL)?;
        wait::until(Duration::from_secs(10), "the probe to be answered", || {
            Ok(p.last_reply().is_some())
        })?;
        Ok(p)
    }

    /// Waits until replies to the probe after `since_us` come from `node`.
    pub fn wait_answered_by(
        &self,
        probe: &Probe,
        node: &str,
        since_us: u64,
        timeout: Duration,
    ) -> Result<()> {
        let mut last = None;
        wait::until(
            timeout,
            &format!("the client to be answered by {node}"),
            || {
                last = probe.answered_since(since_us);
                Ok(last.as_deref() == Some(node))
            },
        )
        .with_context(|| format!("last answer from {last:?}"))
    }

    /// The client's neighbour entry for the VIP is the MAC of `node`.
    pub fn wait_client_neighbour(&self, node: &str, timeout: Duration) -> Result<()> {
        let mac = self.lab.mac(node)?;
        let vip = self.setup.vip();
        let mut last = None;
        wait::until(
            timeout,
            &format!("client's neighbour entry for {vip} to be {node} ({mac})"),
            || {
                last = self.lab.neighbour("client", vip)?;
                Ok(last.as_ref().and_then(|n| n.mac.as_deref()) == Some(mac.as_str()))
            },
        )
        .with_context(|| format!("last entry {last:?}"))
    }

    /// Neither side dropped the other's packets as invalid: the `invalid` counters of
    /// every running directord are all zero and keepalived logged no complaint about
    /// received adverts.
    pub fn assert_no_invalid_packets(&self) -> Result<()> {
        for m in &self.members {
            match &m.runner {
                Some(Runner::Directord(d)) => {
                    if d.proc().is_none_or(|p| !self.lab.is_running(p)) {
                        continue;
                    }
                    let status = d.status()?;
                    let invalid = &status["counters"]["invalid"];
                    let total: u64 = invalid
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter_map(|(_, n)| n.as_u64())
                        .sum();
                    if total > 0 {
                        bail!(
                            "directord on {} dropped packets as invalid: {invalid}",
                            m.node
                        );
                    }
                }
                Some(Runner::Keepalived(k)) => {
                    let Some(proc) = k.proc() else { continue };
                    let log = std::fs::read_to_string(&proc.log).unwrap_or_default();
                    let complaints: Vec<&str> = log
                        .lines()
                        .filter(|l| {
                            let l = l.to_ascii_lowercase();
                            KEEPALIVED_COMPLAINTS.iter().any(|c| l.contains(c))
                        })
                        .collect();
                    if !complaints.is_empty() {
                        bail!(
                            "keepalived on {} complained:\n{}",
                            m.node,
                            complaints.join("\n")
                        );
                    }
                }
                None => {}
            }
        }
        Ok(())
    }
}

/// What keepalived logs when a received advert is wrong.
const KEEPALIVED_COMPLAINTS: &[&str] = &[
    "bogus",
    "invalid",
    "mismatch",
    "checksum",
    "ttl",
    "wrong",
    "discarding packet",
    "unknown",
];
