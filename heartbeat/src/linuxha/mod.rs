//! The UDP 694 heartbeat, in the tradition of Linux-HA heartbeat: authenticated
//! keepalives over one or more media (unicast, multicast, broadcast), and a
//! takeover when the peer is silent on all of them for the dead time.
//!
//! - [`message`]: heartbeat's message formats (classic `>>>`/`<<<` text, which
//!   directord sends, and the netstring format heartbeat 3 sends).
//! - [`authkeys`]: heartbeat's key file and its digests (sha1, md5, sha256; crc
//!   only when allowed as insecure).
//! - [`state`]: what survives a restart (generation number, node UUID).
//! - [`machine`]: the sans-IO protocol core.
//! - the driver (private): sockets and timers on a thread of its own, started by
//!   [`spawn`].
//!
//! A node of Debian's `heartbeat` 3.0.6 package can be the peer: directord answers
//! its node-list request (`reqnodes` with `repnodes`), acknowledges its messages
//! (`NS_ackmsg`), resends on request (`NS_rexmit`) and says goodbye so that it
//! takes over at once (`shutdone`, then a status `dead`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;
use crate::role::{Counters, FailoverHandle, LinkStatus, Override, Role, Status};

pub mod authkeys;
mod driver;
pub mod machine;
pub mod message;
mod socket;
pub mod state;

pub use authkeys::{AuthKeys, Key, Method};
pub use machine::{Action, Event, Machine, State};

/// heartbeat's UDP port.
pub const DEFAULT_PORT: u16 = 694;
/// Interval between keepalives.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(2);
/// Silence after which the peer is logged as late.
pub const DEFAULT_WARNTIME: Duration = Duration::from_secs(4);
/// Silence on every medium after which the peer is dead.
pub const DEFAULT_DEADTIME: Duration = Duration::from_secs(6);
/// How long a starting node waits for the peer before it takes over.
pub const DEFAULT_INITDEAD: Duration = Duration::from_secs(12);
/// Multicast TTL: stay on the link.
pub const DEFAULT_MULTICAST_TTL: u8 = 1;
/// Where the generation number and node UUID are kept.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/directord";

/// Longest timer accepted.
const MAX_TIMER: Duration = Duration::from_secs(24 * 3600);
/// Longest node name heartbeat handles.
const MAX_NODE_NAME: usize = 100;

/// One path the keepalives travel, bound to its own interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Medium {
    /// To the peer's address (heartbeat's `ucast`). Messages are accepted only from
    /// that address.
    Unicast { peer: IpAddr, interface: String },
    /// To a multicast group joined on the interface (heartbeat's `mcast`), with
    /// this TTL (hop limit); loopback off.
    Multicast {
        group: IpAddr,
        interface: String,
        ttl: u8,
    },
    /// To the interface's IPv4 broadcast address (heartbeat's `bcast`).
    Broadcast { interface: String },
}

impl Medium {
    pub fn interface(&self) -> &str {
        match self {
            Medium::Unicast { interface, .. }
            | Medium::Multicast { interface, .. }
            | Medium::Broadcast { interface } => interface,
        }
    }

    /// The medium as ha.cf would write it: "ucast eth1 192.0.2.12".
    pub fn describe(&self) -> String {
        match self {
            Medium::Unicast { peer, interface } => format!("ucast {interface} {peer}"),
            Medium::Multicast {
                group, interface, ..
            } => format!("mcast {interface} {group}"),
            Medium::Broadcast { interface } => format!("bcast {interface}"),
        }
    }
}

/// A two-node heartbeat cluster as seen from one node.
#[derive(Debug, Clone)]
pub struct HbConfig {
    /// This node's name (heartbeat: `uname -n`); sent as `src`.
    pub node: String,
    /// The other node's name; messages from any other `src` are dropped.
    pub peer: String,
    /// The node that should hold the VIPs when both run (heartbeat's first node of
    /// a haresources line). None: whoever holds them keeps them.
    pub preferred: Option<String>,
    /// With a preferred node: it takes the VIPs back when it returns. Without, or
    /// off: the node holding them keeps them.
    pub auto_failback: bool,
    pub keepalive: Duration,
    pub warntime: Duration,
    pub deadtime: Duration,
    pub initdead: Duration,
    pub port: u16,
    pub media: Vec<Medium>,
    pub keys: AuthKeys,
    /// Accept `crc` keys, which anyone can forge.
    pub allow_insecure_crc: bool,
    /// The generation number and node UUID live under `<state_dir>/heartbeat/`.
    pub state_dir: PathBuf,
    /// Network namespace (e.g. `/run/netns/lab1`) the protocol thread enters before
    /// opening sockets. None: the namespace of the calling thread.
    pub netns: Option<PathBuf>,
    /// Start with the health checks settled (see [`crate::role::Command::Ready`]).
    /// False: start holding, until `Ready(true)`: no auto-failback and no taking
    /// the VIPs from a live peer, which is also preferred while neither holds
    /// them; the node still takes over when the peer dies (deadtime, initdead) or
    /// leaves. True (the default): no hold.
    pub ready: bool,
}

impl HbConfig {
    /// A configuration with the default timers, port and state directory.
    pub fn new(
        node: impl Into<String>,
        peer: impl Into<String>,
        media: Vec<Medium>,
        keys: AuthKeys,
    ) -> HbConfig {
        HbConfig {
            node: node.into(),
            peer: peer.into(),
            preferred: None,
            auto_failback: true,
            keepalive: DEFAULT_KEEPALIVE,
            warntime: DEFAULT_WARNTIME,
            deadtime: DEFAULT_DEADTIME,
            initdead: DEFAULT_INITDEAD,
            port: DEFAULT_PORT,
            media,
            keys,
            allow_insecure_crc: false,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            netns: None,
            ready: true,
        }
    }

    /// Checks everything that can be checked without touching the system, and
    /// lists every problem.
    pub fn validate(&self) -> Result<(), Error> {
        let mut problems = Vec::new();
        for (what, name) in [("node", &self.node), ("peer", &self.peer)] {
            if let Some(problem) = node_name_problem(name) {
                problems.push(format!("{what} name {name:?} {problem}"));
            }
        }
        if self.node == self.peer {
            problems.push(format!("node and peer are both {:?}", self.node));
        }
        if let Some(preferred) = &self.preferred
            && preferred != &self.node
            && preferred != &self.peer
        {
            problems.push(format!(
                "preferred node {preferred:?} is neither {:?} nor {:?}",
                self.node, self.peer
            ));
        }
        let timers = [
            ("keepalive", self.keepalive),
            ("warntime", self.warntime),
            ("deadtime", self.deadtime),
            ("initdead", self.initdead),
        ];
        for (what, d) in timers {
            if d.subsec_nanos() % 1_000_000 != 0 {
                problems.push(format!("{what} {d:?} is not whole milliseconds"));
            }
            if d > MAX_TIMER {
                problems.push(format!("{what} {d:?} is over a day"));
            }
        }
        if self.keepalive < Duration::from_millis(10) {
            problems.push(format!("keepalive {:?} is below 10ms", self.keepalive));
        }
        if self.deadtime <= self.keepalive {
            problems.push(format!(
                "deadtime {:?} must be longer than keepalive {:?}",
                self.deadtime, self.keepalive
            ));
        }
        if self.warntime < self.keepalive || self.warntime > self.deadtime {
            problems.push(format!(
                "warntime {:?} must be from keepalive {:?} to deadtime {:?}",
                self.warntime, self.keepalive, self.deadtime
            ));
        }
        if self.initdead < self.deadtime {
            problems.push(format!(
                "initdead {:?} must be at least deadtime {:?}",
                self.initdead, self.deadtime
            ));
        }
        if self.port == 0 {
            problems.push("port 0".into());
        }
        if self.media.is_empty() {
            problems.push("no media: give at least one unicast, multicast or broadcast".into());
        }
        for medium in &self.media {
            let which = medium.describe();
            let interface = medium.interface();
            if interface.is_empty() || interface.len() > 15 || interface.contains('/') {
                problems.push(format!("{which}: bad interface name {interface:?}"));
            }
            match medium {
                Medium::Unicast { peer, .. } => {
                    if peer.is_unspecified() || peer.is_multicast() {
                        problems.push(format!("{which}: {peer} is not a unicast address"));
                    }
                }
                Medium::Multicast { group, ttl, .. } => {
                    if !group.is_multicast() {
                        problems.push(format!("{which}: {group} is not a multicast group"));
                    }
                    if *ttl == 0 {
                        problems.push(format!("{which}: ttl 0 would not leave the host"));
                    }
                }
                Medium::Broadcast { .. } => {}
            }
        }
        for (i, a) in self.media.iter().enumerate() {
            if self.media[..i].contains(a) {
                problems.push(format!("{} given twice", a.describe()));
            }
        }
        if !self.allow_insecure_crc {
            for key in self.keys.keys().filter(|k| k.method == Method::Crc) {
                problems.push(format!(
                    "key {} uses crc, which anyone can forge; use sha256 or sha1 \
                     (or allow insecure crc explicitly)",
                    key.id
                ));
            }
        }
        if self.state_dir.as_os_str().is_empty() {
            problems.push("empty state_dir".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidHeartbeatConfig {
                reason: problems.join("; "),
            })
        }
    }
}

/// Why `name` cannot be a node name on the wire, if it cannot.
fn node_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_NODE_NAME {
        Some("is longer than 100 bytes")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'=' && b != b'(')
    {
        Some("holds a space, `=`, `(` or a non-printing character")
    } else {
        None
    }
}

/// The status before the protocol thread has done anything.
fn initial_status(config: &HbConfig) -> Status {
    Status {
        protocol: "heartbeat".into(),
        role: Role::Standby,
        state: State::Init.name().into(),
        priority: 0,
        effective_priority: 0,
        r#override: Override::None,
        ready: config.ready,
        peer: None,
        counters: Counters::default(),
        last_transition: None,
        links: config
            .media
            .iter()
            .map(|m| LinkStatus {
                medium: m.describe(),
                interface: m.interface().to_owned(),
                up: false,
                last_seen: None,
            })
            .collect(),
    }
}

/// Starts the heartbeat on a thread of its own (with a current-thread tokio
/// runtime, so failover timing never waits on the daemon's runtime).
///
/// Returns once the thread runs, has entered `config.netns` and has read and bumped
/// the generation number in `config.state_dir`. Socket problems after that are not
/// errors: the medium is retried every second, and with no medium at all the node
/// reports Fault.
pub fn spawn(config: HbConfig) -> Result<FailoverHandle, Error> {
    config.validate()?;
    // Linux keeps 15 bytes of a thread name.
    let name: String = format!("hb-{}", config.node).chars().take(15).collect();
    let for_prepare = config.clone();
    crate::thread::spawn(
        name,
        initial_status(&config),
        move || driver::prepare(&for_prepare),
        move |prepared, ends| {
            driver::run(
                prepared,
                config,
                ends.commands,
                ends.transitions,
                ends.status,
            );
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn base() -> HbConfig {
        HbConfig::new(
            "lvs1",
            "lvs2",
            vec![
                Medium::Unicast {
                    peer: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
                    interface: "eth1".into(),
                },
                Medium::Multicast {
                    group: IpAddr::V4(Ipv4Addr::new(239, 0, 0, 94)),
                    interface: "eth0".into(),
                    ttl: DEFAULT_MULTICAST_TTL,
                },
            ],
            AuthKeys::single(1, Method::Sha256, "secret"),
        )
    }

    fn reason(c: &HbConfig) -> String {
        match c.validate() {
            Err(Error::InvalidHeartbeatConfig { reason }) => reason,
            other => panic!("expected invalid config, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = base();
        assert!(c.validate().is_ok(), "{:?}", c.validate());
        assert_eq!(c.keepalive, Duration::from_secs(2));
        assert_eq!(c.warntime, Duration::from_secs(4));
        assert_eq!(c.deadtime, Duration::from_secs(6));
        assert_eq!(c.initdead, Duration::from_secs(12));
        assert_eq!(c.port, 694);
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/directord"));
        assert_eq!(c.media[0].describe(), "ucast eth1 192.0.2.2");
        assert_eq!(c.media[1].describe(), "mcast eth0 239.0.0.94");
        assert_eq!(
            Medium::Broadcast {
                interface: "eth2".into()
            }
            .describe(),
            "bcast eth2"
        );
    }

    #[test]
    fn validates_and_lists_every_problem() {
        let mut c = base();
        c.peer = "lvs1".into();
        c.keepalive = Duration::from_millis(1500);
        c.deadtime = Duration::from_secs(1);
        assert!(reason(&c).contains("node and peer are both"));
        assert!(reason(&c).contains("deadtime 1s must be longer than keepalive 1.5s"));

        let mut c = base();
        c.node = "has space".into();
        assert!(reason(&c).contains("node name \"has space\""));
        c.node = String::new();
        assert!(reason(&c).contains("is empty"));

        let mut c = base();
        c.preferred = Some("lvs3".into());
        assert!(reason(&c).contains("preferred node \"lvs3\""));
        c.preferred = Some("lvs2".into());
        assert!(c.validate().is_ok());

        let mut c = base();
        c.warntime = Duration::from_secs(7);
        assert!(reason(&c).contains("warntime"));
        c.warntime = Duration::from_secs(1);
        assert!(reason(&c).contains("warntime"));

        let mut c = base();
        c.initdead = Duration::from_secs(5);
        assert!(reason(&c).contains("initdead 5s must be at least deadtime 6s"));

        let mut c = base();
        c.keepalive = Duration::from_micros(100_500);
        assert!(reason(&c).contains("not whole milliseconds"));
        c.initdead = Duration::from_secs(90_000);
        assert!(reason(&c).contains("initdead 90000s is over a day"));

        // Sub-second timers are fine.
        let mut c = base();
        c.keepalive = Duration::from_millis(100);
        c.warntime = Duration::from_millis(200);
        c.deadtime = Duration::from_millis(300);
        c.initdead = Duration::from_millis(300);
        assert!(c.validate().is_ok());

        let mut c = base();
        c.media.clear();
        assert!(reason(&c).contains("no media"));

        let mut c = base();
        c.media.push(c.media[0].clone());
        assert!(reason(&c).contains("given twice"));
        c.media = vec![
            Medium::Multicast {
                group: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                interface: "eth0".into(),
                ttl: 0,
            },
            Medium::Unicast {
                peer: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                interface: "an-interface-name-too-long".into(),
            },
        ];
        let r = reason(&c);
        assert!(r.contains("not a multicast group"), "{r}");
        assert!(r.contains("ttl 0"), "{r}");
        assert!(r.contains("not a unicast address"), "{r}");
        assert!(r.contains("bad interface name"), "{r}");

        let mut c = base();
        c.keys = AuthKeys::single(3, Method::Crc, "");
        assert!(reason(&c).contains("key 3 uses crc"));
        c.allow_insecure_crc = true;
        assert!(c.validate().is_ok());
    }

    #[test]
    fn spawn_rejects_invalid_config() {
        let mut c = base();
        c.media.clear();
        assert!(matches!(
            spawn(c),
            Err(Error::InvalidHeartbeatConfig { .. })
        ));
    }

    #[test]
    fn spawn_reports_missing_netns() {
        let mut c = base();
        c.netns = Some(PathBuf::from("/nonexistent/netns/directord-test"));
        match spawn(c) {
            Err(Error::EnterNetns { path, .. }) => {
                assert_eq!(path, PathBuf::from("/nonexistent/netns/directord-test"));
            }
            other => panic!("expected EnterNetns, got {other:?}"),
        }
    }

    #[test]
    fn missing_interfaces_are_fault_not_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = base();
        c.media = vec![Medium::Broadcast {
            interface: "nosuchif0".into(),
        }];
        c.state_dir = dir.path().to_owned();
        let mut handle = spawn(c).expect("spawn");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let t = handle.transitions.recv().await.expect("transition");
            assert_eq!(t.role, Role::Fault);
            assert_eq!(t.state, "fault");
            assert!(t.reason.contains("nosuchif0"), "{}", t.reason);
            let status = handle.status.borrow().clone();
            assert_eq!(status.role, Role::Fault);
            assert_eq!(status.protocol, "heartbeat");
            assert_eq!(status.links.len(), 1);
            assert!(!status.links[0].up);
            handle
                .commands
                .send(crate::role::Command::Shutdown)
                .expect("send");
            let t = handle.transitions.recv().await.expect("transition");
            assert_eq!((t.role, t.state.as_str()), (Role::Standby, "stopped"));
            assert_eq!(t.reason, "shutdown");
        });
        if let Some(thread) = handle.thread.take() {
            thread.join().expect("thread");
        }
        // The generation is on disk.
        let state = dir.path().join("heartbeat");
        assert!(state.join("generation-lvs1").exists());
        assert!(state.join("uuid-lvs1").exists());
    }
}
