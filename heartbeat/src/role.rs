//! What every failover protocol tells the supervisor, and what the supervisor tells it.
//!
//! Both protocols (VRRP, and later the UDP 694 heartbeat) are driven through the same
//! [`FailoverHandle`], so the supervisor does not care which one runs.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{mpsc, watch};

/// The role the supervisor acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Holds the VIPs.
    Active,
    /// Must not hold the VIPs.
    Standby,
    /// Cannot take part (interface down, socket error): must not hold the VIPs.
    Fault,
}

/// A role change, with why it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub role: Role,
    /// Protocol state name, e.g. "master", "backup", "fault", "initialize".
    pub state: String,
    /// Human reason, e.g. "master-down timer expired (no advert from 10.0.0.1 for 364ms)".
    pub reason: String,
    #[serde(with = "unix_millis")]
    pub at: SystemTime,
}

/// An operator's or the supervisor's order to the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Become active now and make the peer yield (advertise above the peer).
    Takeover,
    /// Hand over now and stay standby until `Takeover`.
    Standby,
    /// The protocol's interface lost its link (or came back).
    LinkDown,
    LinkUp,
    /// Clean stop: step down (VRRP: priority-0 advert), emit a last transition to
    /// `Standby`, then end the protocol thread.
    Shutdown,
    /// Whether this node's health checks are settled (each has finished a first
    /// round). `false` holds the node back: it does not take the VIPs from a live
    /// peer (VRRP: no preemption, no address-owner start; heartbeat: no
    /// auto-failback, and a ready peer is preferred when neither holds them). It
    /// still takes over when the peer dies or leaves, and it never hands over
    /// because of it: a node holding the VIPs keeps them. An operator `Takeover`
    /// overrides the hold. `true` does at once what the hold held back (VRRP:
    /// preempt a lower-priority master, after `preempt_delay` counted from now;
    /// heartbeat: auto-failback).
    ///
    /// The protocol does not clear readiness by itself: the supervisor sends
    /// `Ready(false)` whenever the checks start over (after a link loss, before
    /// `LinkUp`), and the initial value is the config's `ready`.
    Ready(bool),
}

/// Operator override in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Override {
    #[default]
    None,
    Takeover,
    Standby,
}

/// The last peer (current master, for VRRP; the other director, for the heartbeat)
/// this node heard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerSeen {
    pub address: IpAddr,
    pub priority: u8,
    #[serde(with = "millis")]
    pub advert_interval: Duration,
    #[serde(with = "unix_millis")]
    pub last_seen: SystemTime,
}

/// One heartbeat medium (link) as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkStatus {
    /// The medium as heartbeat's ha.cf would name it, e.g. "ucast eth1 192.0.2.12",
    /// "mcast eth0 239.0.0.94", "bcast eth2".
    pub medium: String,
    pub interface: String,
    /// The peer was heard on this medium within the dead time.
    pub up: bool,
    /// When the peer was last heard on this medium.
    #[serde(with = "unix_millis_opt", skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<SystemTime>,
}

/// Packet counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// VRRP adverts; heartbeat messages (one per message, whatever the number of
    /// media it went out on).
    pub adverts_sent: u64,
    /// VRRP adverts; authenticated heartbeat messages from the peer (one per
    /// datagram: a message arriving on two media counts twice).
    pub adverts_received: u64,
    /// VRRP priority-0 adverts; heartbeat shutdown notices ("t=shutdone st=dead").
    pub priority_zero_sent: u64,
    pub priority_zero_received: u64,
    pub became_active: u64,
    /// Dropped packets by reason ("checksum", "ttl", "version", "vrid", "length",
    /// "address-count", "interval-mismatch", "auth", "source", ...; the heartbeat
    /// adds "malformed", "replay", "generation").
    pub invalid: BTreeMap<String, u64>,
}

/// A snapshot of the protocol for `directorctl status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// "vrrp" or "heartbeat".
    pub protocol: String,
    pub role: Role,
    /// Protocol state name (VRRP: "initialize", "backup", "master", "fault";
    /// heartbeat: "init", "standby", "active", "fault", "stopped").
    pub state: String,
    /// Configured priority.
    pub priority: u8,
    /// Priority currently advertised (differs under an override).
    pub effective_priority: u8,
    pub r#override: Override,
    /// The health checks are settled ([`Command::Ready`]). False: holding, this
    /// node does not take the VIPs from a live peer.
    pub ready: bool,
    pub peer: Option<PeerSeen>,
    pub counters: Counters,
    pub last_transition: Option<Transition>,
    /// Per-medium state (the UDP 694 heartbeat; empty for VRRP).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<LinkStatus>,
}

/// The supervisor's side of a running failover protocol.
///
/// The protocol runs on its own thread with its own small runtime, so checker load
/// never delays an advert.
#[derive(Debug)]
pub struct FailoverHandle {
    pub commands: mpsc::UnboundedSender<Command>,
    pub transitions: mpsc::UnboundedReceiver<Transition>,
    pub status: watch::Receiver<Status>,
    pub thread: Option<std::thread::JoinHandle<()>>,
}

mod millis {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

mod unix_millis {
    use serde::Serializer;
    use std::time::{SystemTime, UNIX_EPOCH};
    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        s.serialize_u64(u64::try_from(ms).unwrap_or(u64::MAX))
    }
}

mod unix_millis_opt {
    use serde::Serializer;
    use std::time::SystemTime;
    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::unix_millis::serialize(t, s),
            None => s.serialize_none(),
        }
    }
}
