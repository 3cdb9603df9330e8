//! `/etc/directord.toml`: loading and validation.
//!
//! The file is parsed once into spanned TOML, each section is deserialized on its own
//! (so a mistake in one `[[service]]` does not hide a mistake in another), then the
//! values are checked for meaning. Every problem is collected with its
//! `file:line:column` before anything is reported; the runtime only ever sees the
//! validated [`Config`].

pub mod alerts;
mod check;
mod diagnostic;
pub mod diff;
pub mod duration;
mod raw;
mod validate;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use alerts::{Alerts, Email, Metrics, SmtpTls};
pub use diagnostic::{Problem, Problems};

/// Default control socket path.
pub const DEFAULT_SOCKET: &str = "/run/directord/directord.sock";
/// Default path of the config file.
pub const DEFAULT_CONFIG: &str = "/etc/directord.toml";

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub path: PathBuf,
    pub node: Node,
    pub failover: Failover,
    pub announce: Announce,
    pub control: Control,
    pub ipvs: Ipvs,
    pub alerts: Alerts,
    pub metrics: Option<Metrics>,
    pub vips: Vec<Vip>,
    pub services: Vec<Service>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failover {
    pub interface: String,
    pub priority: u8,
    pub preempt: bool,
    pub preempt_delay: Duration,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "protocol", rename_all = "lowercase")]
pub enum Protocol {
    Vrrp(Vrrp),
    Heartbeat(Heartbeat),
}

/// The UDP 694 heartbeat, in the tradition of Linux-HA heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heartbeat {
    /// The peer's node name (its `[node] name`, or `uname -n` of a Linux-HA node).
    pub peer: String,
    pub auth_key_file: PathBuf,
    pub port: u16,
    pub keepalive: Duration,
    pub warntime: Duration,
    pub deadtime: Duration,
    pub initdead: Duration,
    /// The node that holds the VIPs when both are up (with `auto_failback`).
    pub preferred: Option<String>,
    pub auto_failback: bool,
    pub allow_insecure_crc: bool,
    pub state_dir: PathBuf,
    pub media: Vec<Medium>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Medium {
    Unicast {
        peer: IpAddr,
        interface: String,
    },
    Multicast {
        group: IpAddr,
        interface: String,
        ttl: u8,
    },
    Broadcast {
        interface: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum VrrpVersion {
    V2,
    V3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Family {
    V4,
    V6,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vrrp {
    pub version: VrrpVersion,
    pub router_id: u8,
    pub advert_interval: Duration,
    pub unicast_peers: Vec<IpAddr>,
    pub source_address: Option<IpAddr>,
    /// Address family of the adverts: that of the peers, else of the first VIP.
    pub family: Family,
}

/// Gratuitous ARP / unsolicited NA when this node becomes active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Announce {
    pub count: u32,
    pub spacing: Duration,
    pub refresh: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Control {
    pub socket: PathBuf,
    /// Group allowed on the socket besides root (if it exists on the system).
    pub group: String,
}

/// `[ipvs]`: how the kernel's IPVS is run besides the services.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ipvs {
    /// The connection-sync daemon: master on the active director, backup on the
    /// standby (keepalived's `lvs_sync_daemon`). `None`: directord runs none.
    pub sync: Option<IpvsSync>,
}

/// The connection-sync daemon's settings; unset ones take the kernel's
/// defaults (group 224.0.0.81, port 8848, TTL 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpvsSync {
    pub interface: String,
    /// Both directors must use the same id.
    pub sync_id: u8,
    pub group: Option<IpAddr>,
    pub port: Option<u16>,
    pub ttl: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vip {
    pub address: IpAddr,
    pub prefix_len: u8,
    pub interface: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    pub name: String,
    pub target: ServiceTarget,
    pub protocol: L4Protocol,
    pub scheduler: String,
    /// `sh-fallback`, `sh-port`, `mh-fallback`, `mh-port`, `flag-1..3`.
    pub scheduler_flags: Vec<String>,
    pub forward: Forward,
    pub persistence: Option<Duration>,
    /// Clients are grouped by this prefix of their address for persistence
    /// (`None`: per client, /32 or /128).
    pub persistence_netmask: Option<u8>,
    pub on_failure: OnFailure,
    pub sorry_server: Option<SocketAddr>,
    pub check: Option<Check>,
    pub reals: Vec<RealServer>,
}

impl Service {
    /// The address family: the service address's, or for a fwmark service that
    /// of its (first) real server.
    pub fn family(&self) -> Family {
        match self.target {
            ServiceTarget::Address(a) => family_of(&a.ip()),
            ServiceTarget::Fwmark(_) => self
                .reals
                .first()
                .map_or(Family::V4, |r| family_of(&r.address.ip())),
        }
    }

    /// Finds `real` of the service named `name` among `services`, or says what
    /// there is instead (for `directorctl drain`, `enable` and `check`).
    pub fn find<'a>(
        services: &'a [Service],
        name: &str,
        real: &str,
    ) -> Result<(&'a Service, &'a RealServer), String> {
        let Some(service) = services.iter().find(|s| s.name == name) else {
            let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
            return Err(format!(
                "no service named `{name}` (services: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ));
        };
        let Some(found) = service.real(real) else {
            let reals: Vec<String> = service
                .reals
                .iter()
                .map(|r| r.address.to_string())
                .collect();
            return Err(format!(
                "service `{name}` has no real server `{real}` (real servers: {})",
                reals.join(", ")
            ));
        };
        Ok((service, found))
    }

    /// Its real server at `address`, or, given a bare IP, the only one there.
    pub fn real(&self, address: &str) -> Option<&RealServer> {
        if let Ok(a) = address.parse::<SocketAddr>() {
            return self.reals.iter().find(|r| r.address == a);
        }
        let ip = address.parse::<IpAddr>().ok()?;
        let mut at_ip = self.reals.iter().filter(|r| r.address.ip() == ip);
        match (at_ip.next(), at_ip.next()) {
            (Some(r), None) => Some(r),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceTarget {
    Address(SocketAddr),
    Fwmark(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum L4Protocol {
    Tcp,
    Udp,
    Sctp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Forward {
    Nat,
    Dr,
    Tun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    Quiesce,
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RealServer {
    /// Address; the port may be 0 for fwmark services (keep the client's port).
    pub address: SocketAddr,
    pub weight: u32,
}

pub use checkers::spec::Check;

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, Problems> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Problems(vec![Problem {
                file: path.to_path_buf(),
                line: 1,
                column: 1,
                message: format!("cannot read the file: {e}"),
            }])
        })?;
        validate::validate(path, &text, true)
    }

    /// Validates a text as if read from `path`. Unlike [`Config::load`], files the
    /// config names (the heartbeat key file) are not looked at.
    pub fn parse(path: &Path, text: &str) -> Result<Config, Problems> {
        validate::validate(path, text, false)
    }

    /// The VIPs that VRRP lists in its adverts (those of the advert family).
    pub fn advertised_addresses(&self) -> Vec<IpAddr> {
        let Protocol::Vrrp(vrrp) = &self.failover.protocol else {
            return Vec::new();
        };
        self.vips
            .iter()
            .map(|v| v.address)
            .filter(|a| family_of(a) == vrrp.family)
            .collect()
    }
}

pub fn family_of(a: &IpAddr) -> Family {
    match a {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}
