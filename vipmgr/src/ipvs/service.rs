//! Virtual services: the `IPVS_CMD_ATTR_SERVICE` nest (`IPVS_SVC_ATTR_*`) and
//! the typed [`Service`] it carries.
//!
//! A service is keyed by protocol + address + port, or by firewall mark + address
//! family ([`ServiceKey`]). Its address travels as a 16-byte `nf_inet_addr` (an
//! IPv4 address in the first 4 bytes), its port big-endian, every other number in
//! host order.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    str::FromStr,
};

use serde::{Serialize, Serializer};

use super::{
    malformed,
    nla::{Attr, RawAttribute, Writer, parse},
    stats::{Stats, StatsAttribute, Width},
};
use crate::error::{Error, Result};

mod kind {
    pub const AF: u16 = 1;
    pub const PROTOCOL: u16 = 2;
    pub const ADDR: u16 = 3;
    pub const PORT: u16 = 4;
    pub const FWMARK: u16 = 5;
    pub const SCHED_NAME: u16 = 6;
    pub const FLAGS: u16 = 7;
    pub const TIMEOUT: u16 = 8;
    pub const NETMASK: u16 = 9;
    pub const STATS: u16 = 10;
    pub const PE_NAME: u16 = 11;
    pub const STATS64: u16 = 12;
}

/// `IP_VS_SVC_F_*`.
mod flag {
    pub const PERSISTENT: u32 = 0x0001;
    /// Set by the kernel on every service in its table; meaningless in requests.
    pub const HASHED: u32 = 0x0002;
    pub const ONEPACKET: u32 = 0x0004;
    pub const SCHED_SHIFT: u32 = 3;
    pub const SCHED_MASK: u32 = 0x0038;
}

/// `IP_VS_SCHEDNAME_MAXLEN` / `IP_VS_PENAME_MAXLEN`, the NUL included.
const NAME_MAXLEN: usize = 16;

/// `AF_INET` / `AF_INET6` as the kernel numbers them.
const AF_INET: u16 = libc::AF_INET as u16;
const AF_INET6: u16 = libc::AF_INET6 as u16;

/// One attribute of the service nest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAttribute {
    AddressFamily(u16),
    /// IP protocol number (`IPPROTO_*`).
    Protocol(u16),
    /// `union nf_inet_addr`: the kernel sends 16 bytes, IPv4 in the first 4.
    Address(Vec<u8>),
    Port(u16),
    Fwmark(u32),
    Scheduler(String),
    /// `struct ip_vs_flags`: the kernel sets `flags & mask` and keeps the rest.
    Flags {
        flags: u32,
        mask: u32,
    },
    /// Persistence timeout in seconds.
    Timeout(u32),
    /// Persistence granularity, as the bytes travel: an IPv4 netmask in network
    /// order, or for IPv6 a prefix length in host order.
    Netmask([u8; 4]),
    Stats(Vec<StatsAttribute>),
    PersistenceEngine(String),
    Stats64(Vec<StatsAttribute>),
    Other(RawAttribute),
}

impl ServiceAttribute {
    pub(crate) fn parse_nest(payload: &[u8]) -> Result<Vec<Self>> {
        parse(payload, "IPVS service")?
            .iter()
            .map(Self::parse_one)
            .collect()
    }

    fn parse_one(attr: &Attr<'_>) -> Result<Self> {
        const WHAT: &str = "IPVS service";
        Ok(match attr.kind {
            kind::AF => Self::AddressFamily(attr.u16(WHAT)?),
            kind::PROTOCOL => Self::Protocol(attr.u16(WHAT)?),
            kind::ADDR => Self::Address(attr.payload.to_vec()),
            kind::PORT => Self::Port(attr.be16(WHAT)?),
            kind::FWMARK => Self::Fwmark(attr.u32(WHAT)?),
            kind::SCHED_NAME => Self::Scheduler(attr.string(WHAT)?),
            kind::FLAGS => {
                let raw: [u8; 8] = attr.array(WHAT)?;
                let (flags, mask) = raw.split_at(4);
                Self::Flags {
                    flags: u32::from_ne_bytes(flags.try_into().unwrap_or_default()),
                    mask: u32::from_ne_bytes(mask.try_into().unwrap_or_default()),
                }
            }
            kind::TIMEOUT => Self::Timeout(attr.u32(WHAT)?),
            kind::NETMASK => Self::Netmask(attr.array(WHAT)?),
            kind::STATS => Self::Stats(StatsAttribute::parse_nest(attr.payload)?),
            kind::PE_NAME => Self::PersistenceEngine(attr.string(WHAT)?),
            kind::STATS64 => Self::Stats64(StatsAttribute::parse_nest(attr.payload)?),
            _ => Self::Other(attr.raw()),
        })
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) {
        match self {
            Self::AddressFamily(v) => w.u16(kind::AF, *v),
            Self::Protocol(v) => w.u16(kind::PROTOCOL, *v),
            Self::Address(bytes) => w.bytes(kind::ADDR, bytes),
            Self::Port(v) => w.be16(kind::PORT, *v),
            Self::Fwmark(v) => w.u32(kind::FWMARK, *v),
            Self::Scheduler(name) => w.string(kind::SCHED_NAME, name),
            Self::Flags { flags, mask } => {
                let mut raw = [0; 8];
                raw[..4].copy_from_slice(&flags.to_ne_bytes());
                raw[4..].copy_from_slice(&mask.to_ne_bytes());
                w.bytes(kind::FLAGS, &raw);
            }
            Self::Timeout(v) => w.u32(kind::TIMEOUT, *v),
            Self::Netmask(raw) => w.bytes(kind::NETMASK, raw),
            Self::Stats(attrs) => w.nested(kind::STATS, |w| {
                attrs.iter().for_each(|a| a.emit(w, Width::Legacy))
            }),
            Self::PersistenceEngine(name) => w.string(kind::PE_NAME, name),
            Self::Stats64(attrs) => w.nested(kind::STATS64, |w| {
                attrs.iter().for_each(|a| a.emit(w, Width::Wide))
            }),
            Self::Other(raw) => w.raw(raw),
        }
    }
}

/// The transport protocol of a service (`IPPROTO_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
    /// A number this crate does not name (IPVS also knows AH and ESP).
    Other(u16),
}

impl Protocol {
    pub fn number(self) -> u16 {
        match self {
            Protocol::Tcp => libc::IPPROTO_TCP as u16,
            Protocol::Udp => libc::IPPROTO_UDP as u16,
            Protocol::Sctp => libc::IPPROTO_SCTP as u16,
            Protocol::Other(n) => n,
        }
    }

    pub fn from_number(n: u16) -> Self {
        match i32::from(n) {
            libc::IPPROTO_TCP => Protocol::Tcp,
            libc::IPPROTO_UDP => Protocol::Udp,
            libc::IPPROTO_SCTP => Protocol::Sctp,
            _ => Protocol::Other(n),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Tcp => f.write_str("TCP"),
            Protocol::Udp => f.write_str("UDP"),
            Protocol::Sctp => f.write_str("SCTP"),
            Protocol::Other(n) => write!(f, "proto-{n}"),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An address family, for what has no address of its own (fwmark services).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    pub(crate) fn number(self) -> u16 {
        match self {
            Family::Ipv4 => AF_INET,
            Family::Ipv6 => AF_INET6,
        }
    }

    pub(crate) fn from_number(n: u16, what: &'static str) -> Result<Self> {
        match n {
            AF_INET => Ok(Family::Ipv4),
            AF_INET6 => Ok(Family::Ipv6),
            other => Err(malformed(what, format!("address family {other}"))),
        }
    }

    /// The longest prefix of this family (32 or 128).
    pub fn max_prefix_len(self) -> u8 {
        match self {
            Family::Ipv4 => 32,
            Family::Ipv6 => 128,
        }
    }
}

/// `nf_inet_addr` bytes: 16, an IPv4 address in the first 4 (as the kernel and
/// ipvsadm send it).
pub(crate) fn inet_addr_bytes(address: IpAddr) -> Vec<u8> {
    let mut bytes = vec![0; 16];
    match address {
        IpAddr::V4(v4) => bytes[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => bytes.copy_from_slice(&v6.octets()),
    }
    bytes
}

/// Reads `nf_inet_addr` bytes of a family (4 or 16 of them; longer is cut).
pub(crate) fn inet_addr(family: Family, bytes: &[u8], what: &'static str) -> Result<IpAddr> {
    match family {
        Family::Ipv4 => bytes
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        Family::Ipv6 => bytes
            .get(..16)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(|o| IpAddr::V6(Ipv6Addr::from(o))),
    }
    .ok_or_else(|| malformed(what, format!("{}-byte address", bytes.len())))
}

/// What identifies a virtual service in the kernel's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceKey {
    /// `ipvsadm -t|-u|--sctp-service ADDRESS:PORT`.
    Inet {
        protocol: Protocol,
        address: SocketAddr,
    },
    /// `ipvsadm -f MARK [-6]`: packets marked by netfilter.
    Fwmark { family: Family, mark: u32 },
}

impl ServiceKey {
    pub fn tcp(address: SocketAddr) -> Self {
        ServiceKey::Inet {
            protocol: Protocol::Tcp,
            address,
        }
    }

    pub fn udp(address: SocketAddr) -> Self {
        ServiceKey::Inet {
            protocol: Protocol::Udp,
            address,
        }
    }

    pub fn sctp(address: SocketAddr) -> Self {
        ServiceKey::Inet {
            protocol: Protocol::Sctp,
            address,
        }
    }

    pub fn fwmark(family: Family, mark: u32) -> Self {
        ServiceKey::Fwmark { family, mark }
    }

    pub fn family(&self) -> Family {
        match self {
            ServiceKey::Inet { address, .. } => Family::of(address.ip()),
            ServiceKey::Fwmark { family, .. } => *family,
        }
    }

    /// The attributes that name the service: what delete, get, a destination
    /// change and a zero need.
    pub(crate) fn to_attributes(self) -> Vec<ServiceAttribute> {
        let mut attrs = vec![ServiceAttribute::AddressFamily(self.family().number())];
        match self {
            ServiceKey::Inet { protocol, address } => {
                attrs.push(ServiceAttribute::Protocol(protocol.number()));
                attrs.push(ServiceAttribute::Address(inet_addr_bytes(address.ip())));
                attrs.push(ServiceAttribute::Port(address.port()));
            }
            ServiceKey::Fwmark { mark, .. } => attrs.push(ServiceAttribute::Fwmark(mark)),
        }
        attrs
    }

    /// Reads the key out of a service nest (a fwmark of 0 means "not a fwmark
    /// service").
    pub(crate) fn from_attributes(attrs: &[ServiceAttribute]) -> Result<Self> {
        const WHAT: &str = "IPVS service";
        let mut af = None;
        let mut protocol = None;
        let mut address = None;
        let mut port = None;
        let mut fwmark = None;
        for attr in attrs {
            match attr {
                ServiceAttribute::AddressFamily(v) => af = Some(*v),
                ServiceAttribute::Protocol(v) => protocol = Some(*v),
                ServiceAttribute::Address(v) => address = Some(v.as_slice()),
                ServiceAttribute::Port(v) => port = Some(*v),
                ServiceAttribute::Fwmark(v) if *v != 0 => fwmark = Some(*v),
                _ => {}
            }
        }
        let family = Family::from_number(
            af.ok_or_else(|| malformed(WHAT, "no address family"))?,
            WHAT,
        )?;
        if let Some(mark) = fwmark {
            return Ok(ServiceKey::Fwmark { family, mark });
        }
        match (protocol, address, port) {
            (Some(protocol), Some(address), Some(port)) => Ok(ServiceKey::Inet {
                protocol: Protocol::from_number(protocol),
                address: SocketAddr::new(inet_addr(family, address, WHAT)?, port),
            }),
            _ => Err(malformed(
                WHAT,
                "neither a fwmark nor protocol, address and port",
            )),
        }
    }
}

/// As ipvsadm lists it: `TCP 192.0.2.100:80`, `UDP [2001:db8::1]:53`, `FWM 7`,
/// `FWM 8 IPv6`.
impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Inet { protocol, address } => write!(f, "{protocol} {address}"),
            ServiceKey::Fwmark {
                family: Family::Ipv4,
                mark,
            } => write!(f, "FWM {mark}"),
            ServiceKey::Fwmark {
                family: Family::Ipv6,
                mark,
            } => write!(f, "FWM {mark} IPv6"),
        }
    }
}

impl Serialize for ServiceKey {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A scheduling algorithm (`ip_vs_<name>.ko`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheduler {
    /// Round robin.
    RoundRobin,
    /// Weighted round robin.
    WeightedRoundRobin,
    /// Least connections.
    LeastConnection,
    /// Weighted least connections (ipvsadm's default).
    WeightedLeastConnection,
    /// Locality-based least connections.
    LocalityLeastConnection,
    /// Locality-based least connections with replication.
    LocalityLeastConnectionReplication,
    /// Destination hashing.
    DestinationHash,
    /// Source hashing (flags: [`SchedulerFlags::SH_FALLBACK`], [`SchedulerFlags::SH_PORT`]).
    SourceHash,
    /// Shortest expected delay.
    ShortestExpectedDelay,
    /// Never queue.
    NeverQueue,
    /// Weighted failover.
    WeightedFailover,
    /// Weighted overflow.
    WeightedOverflow,
    /// Maglev hashing (flags: [`SchedulerFlags::MH_FALLBACK`], [`SchedulerFlags::MH_PORT`]).
    MaglevHash,
    /// Weighted random twos choice (Linux 6.3+).
    TwoChoices,
    /// Any other name, as the kernel spells it.
    Other(String),
}

const SCHEDULER_NAMES: [(&str, Scheduler); 14] = [
    ("rr", Scheduler::RoundRobin),
    ("wrr", Scheduler::WeightedRoundRobin),
    ("lc", Scheduler::LeastConnection),
    ("wlc", Scheduler::WeightedLeastConnection),
    ("lblc", Scheduler::LocalityLeastConnection),
    ("lblcr", Scheduler::LocalityLeastConnectionReplication),
    ("dh", Scheduler::DestinationHash),
    ("sh", Scheduler::SourceHash),
    ("sed", Scheduler::ShortestExpectedDelay),
    ("nq", Scheduler::NeverQueue),
    ("fo", Scheduler::WeightedFailover),
    ("ovf", Scheduler::WeightedOverflow),
    ("mh", Scheduler::MaglevHash),
    ("twos", Scheduler::TwoChoices),
];

impl Scheduler {
    /// The kernel's name (`rr`, `wlc`, `mh`, ...).
    pub fn name(&self) -> &str {
        if let Scheduler::Other(name) = self {
            return name;
        }
        SCHEDULER_NAMES
            .iter()
            .find(|(_, s)| s == self)
            .map(|(name, _)| *name)
            .unwrap_or_default()
    }

    /// The scheduler of that kernel name; unknown names become `Other`.
    pub fn from_name(name: &str) -> Self {
        SCHEDULER_NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| Scheduler::Other(name.to_owned()))
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scheduler {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(Scheduler::from_name(s))
    }
}

impl Serialize for Scheduler {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// The three scheduler-specific flags (`IP_VS_SVC_F_SCHED1..3`, ipvsadm's
/// `-b flag-1,flag-2,flag-3`); `sh` and `mh` give the first two a meaning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SchedulerFlags(u8);

impl SchedulerFlags {
    pub const NONE: Self = SchedulerFlags(0);
    pub const FLAG_1: Self = SchedulerFlags(1);
    pub const FLAG_2: Self = SchedulerFlags(2);
    pub const FLAG_3: Self = SchedulerFlags(4);
    /// `sh-fallback`: pick another real server when the hashed one is unavailable.
    pub const SH_FALLBACK: Self = Self::FLAG_1;
    /// `sh-port`: hash the source port too.
    pub const SH_PORT: Self = Self::FLAG_2;
    /// `mh-fallback`: as `sh-fallback`, for the maglev scheduler.
    pub const MH_FALLBACK: Self = Self::FLAG_1;
    /// `mh-port`: as `sh-port`, for the maglev scheduler.
    pub const MH_PORT: Self = Self::FLAG_2;

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn to_service_flags(self) -> u32 {
        u32::from(self.0) << flag::SCHED_SHIFT
    }

    fn from_service_flags(flags: u32) -> Self {
        SchedulerFlags(((flags & flag::SCHED_MASK) >> flag::SCHED_SHIFT) as u8)
    }
}

impl std::ops::BitOr for SchedulerFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        SchedulerFlags(self.0 | rhs.0)
    }
}

/// Persistence: connections from one client (network) go to the same real
/// server for `timeout_secs` after the last one ends (`ipvsadm -p T -M MASK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Persistence {
    pub timeout_secs: u32,
    /// Clients are grouped by this prefix of their address: 32 (IPv4) or 128
    /// (IPv6) means per client, 24 per /24 network.
    pub prefix_len: u8,
}

/// A virtual service as vipmgr programs it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Service {
    pub key: ServiceKey,
    pub scheduler: Scheduler,
    pub scheduler_flags: SchedulerFlags,
    pub persistence: Option<Persistence>,
    /// One-packet scheduling (`-o`): every UDP datagram is scheduled on its own.
    pub one_packet: bool,
    /// A persistence engine other than the default (`--pe sip`).
    pub persistence_engine: Option<String>,
}

/// A service as the kernel lists it, with its counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceEntry {
    pub service: Service,
    pub stats: Stats,
}

impl Service {
    /// A service with no persistence, no flags, the default persistence engine.
    pub fn new(key: ServiceKey, scheduler: Scheduler) -> Self {
        Service {
            key,
            scheduler,
            scheduler_flags: SchedulerFlags::NONE,
            persistence: None,
            one_packet: false,
            persistence_engine: None,
        }
    }

    /// Checks what the kernel would refuse without saying which field was wrong.
    pub fn validate(&self) -> Result<()> {
        let invalid = |field, reason: String| {
            Err(Error::InvalidService {
                service: self.key,
                field,
                reason,
            })
        };
        let name = self.scheduler.name();
        if name.is_empty() || name.len() >= NAME_MAXLEN || name.contains('\0') {
            return invalid(
                "scheduler",
                format!("{name:?} is not a scheduler name (1 to 15 bytes)"),
            );
        }
        if let Some(pe) = &self.persistence_engine
            && (pe.is_empty() || pe.len() >= NAME_MAXLEN || pe.contains('\0'))
        {
            return invalid(
                "persistence_engine",
                format!("{pe:?} is not an engine name (1 to 15 bytes)"),
            );
        }
        if let Some(p) = self.persistence {
            let max = self.key.family().max_prefix_len();
            if p.prefix_len > max || (self.key.family() == Family::Ipv6 && p.prefix_len == 0) {
                return invalid(
                    "persistence.netmask",
                    format!("prefix length {} is outside 1..={max}", p.prefix_len),
                );
            }
        }
        if let ServiceKey::Fwmark { mark: 0, .. } = self.key {
            return invalid(
                "fwmark",
                "a fwmark service needs a mark other than 0".into(),
            );
        }
        Ok(())
    }

    /// The full service nest for a create or an edit, in ipvsadm's order.
    pub(crate) fn to_attributes(&self) -> Vec<ServiceAttribute> {
        let mut attrs = self.key.to_attributes();
        attrs.push(ServiceAttribute::Scheduler(
            self.scheduler.name().to_owned(),
        ));
        if let Some(pe) = &self.persistence_engine {
            attrs.push(ServiceAttribute::PersistenceEngine(pe.clone()));
        }
        let mut flags = self.scheduler_flags.to_service_flags();
        if self.persistence.is_some() {
            flags |= flag::PERSISTENT;
        }
        if self.one_packet {
            flags |= flag::ONEPACKET;
        }
        attrs.push(ServiceAttribute::Flags {
            flags,
            mask: u32::MAX,
        });
        let family = self.key.family();
        let (timeout, prefix_len) = match self.persistence {
            Some(p) => (p.timeout_secs, p.prefix_len),
            None => (0, family.max_prefix_len()),
        };
        attrs.push(ServiceAttribute::Timeout(timeout));
        attrs.push(ServiceAttribute::Netmask(netmask_bytes(family, prefix_len)));
        attrs
    }

    /// Reads a service nest as the kernel dumps it.
    pub(crate) fn from_attributes(attrs: &[ServiceAttribute]) -> Result<ServiceEntry> {
        const WHAT: &str = "IPVS service";
        let key = ServiceKey::from_attributes(attrs)?;
        let mut scheduler = None;
        let mut flags = None;
        let mut timeout = None;
        let mut netmask = None;
        let mut persistence_engine = None;
        let mut legacy_stats = None;
        let mut stats64 = None;
        for attr in attrs {
            match attr {
                ServiceAttribute::Scheduler(name) => scheduler = Some(Scheduler::from_name(name)),
                ServiceAttribute::Flags { flags: f, .. } => flags = Some(*f),
                ServiceAttribute::Timeout(t) => timeout = Some(*t),
                ServiceAttribute::Netmask(raw) => netmask = Some(*raw),
                ServiceAttribute::PersistenceEngine(pe) => persistence_engine = Some(pe.clone()),
                ServiceAttribute::Stats(s) => legacy_stats = Some(s.as_slice()),
                ServiceAttribute::Stats64(s) => stats64 = Some(s.as_slice()),
                _ => {}
            }
        }
        let missing = |field| malformed(WHAT, format!("{key}: no {field}"));
        let scheduler = scheduler.ok_or_else(|| missing("scheduler"))?;
        let flags = flags.ok_or_else(|| missing("flags"))? & !flag::HASHED;
        let persistence = if flags & flag::PERSISTENT != 0 {
            Some(Persistence {
                timeout_secs: timeout.ok_or_else(|| missing("timeout"))?,
                prefix_len: prefix_len(key.family(), netmask.ok_or_else(|| missing("netmask"))?),
            })
        } else {
            None
        };
        Ok(ServiceEntry {
            service: Service {
                key,
                scheduler,
                scheduler_flags: SchedulerFlags::from_service_flags(flags),
                persistence,
                one_packet: flags & flag::ONEPACKET != 0,
                persistence_engine,
            },
            stats: Stats::pick(legacy_stats, stats64),
        })
    }
}

/// `IPVS_SVC_ATTR_NETMASK` for a prefix: the IPv4 mask in network order, or the
/// IPv6 prefix length as a host-order u32 (what ipvsadm sends and the kernel
/// keeps).
fn netmask_bytes(family: Family, prefix_len: u8) -> [u8; 4] {
    match family {
        Family::Ipv4 => {
            let bits = u32::from(prefix_len.min(32));
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            mask.to_be_bytes()
        }
        Family::Ipv6 => u32::from(prefix_len).to_ne_bytes(),
    }
}

/// The inverse of [`netmask_bytes`]; a non-contiguous IPv4 mask (which only
/// another tool could have set) reads as its leading ones.
fn prefix_len(family: Family, raw: [u8; 4]) -> u8 {
    match family {
        Family::Ipv4 => u32::from_be_bytes(raw).leading_ones() as u8,
        Family::Ipv6 => u32::from_ne_bytes(raw).min(128) as u8,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ipvs::{Change, Command, IpvsMessage, hex};

    // Captured inside the IPVS VM (Debian 12 kernel 6.1.0-56-amd64, ipvsadm 1.31
    // with libnl) by tests/vm/capture-ipvs-netlink.sh, which straces ipvsadm;
    // tests/vm/ipvs-capture.txt holds the whole run. Each constant is one
    // generic netlink payload (genl header + attributes), nlmsghdr stripped.

    /// `ipvsadm -A -t 192.0.2.100:80 -s wlc` (request).
    const ADD_TCP_WLC: &str = "01010000540001800600010002000000060002000600000014000300c0000264\
        000000000000000000000000060004000050000008000600776c63000c000700\
        00000000ffffffff080008000000000008000900ffffffff";
    /// `ipvsadm -A -u [2001:db8::100]:53 -s mh -b mh-fallback,mh-port -p 600 -M 64`.
    const ADD_UDP6_MH: &str = "0101000054000180060001000a00000006000200110000001400030020010db8\
        0000000000000000000001000600040000350000070006006d6800000c000700\
        19000000ffffffff08000800580200000800090040000000";
    /// `ipvsadm -A --sctp-service 192.0.2.100:3868 -s sh -b sh-port`.
    const ADD_SCTP_SH: &str = "01010000540001800600010002000000060002008400000014000300c0000264\
        000000000000000000000000060004000f1c000007000600736800000c000700\
        10000000ffffffff080008000000000008000900ffffffff";
    /// `ipvsadm -A -f 7 -s wrr -p 300 -M 255.255.255.0`.
    const ADD_FWM_WRR: &str = "0101000038000180060001000200000008000500070000000800060077727200\
        0c00070001000000ffffffff080008002c01000008000900ffffff00";
    /// `ipvsadm -A -f 8 -6 -s lc`.
    const ADD_FWM6_LC: &str = "0101000038000180060001000a0000000800050008000000070006006c630000\
        0c00070000000000ffffffff08000800000000000800090080000000";
    /// `ipvsadm -A -u 192.0.2.100:53 -s rr -o`.
    const ADD_UDP_OPS: &str = "01010000540001800600010002000000060002001100000014000300c0000264\
        000000000000000000000000060004000035000007000600727200000c000700\
        04000000ffffffff080008000000000008000900ffffffff";
    /// `ipvsadm -E -t 192.0.2.100:80 -s rr -p 60`.
    const EDIT_TCP_RR: &str = "02010000540001800600010002000000060002000600000014000300c0000264\
        000000000000000000000000060004000050000007000600727200000c000700\
        01000000ffffffff080008003c00000008000900ffffffff";
    /// `ipvsadm -D -f 7`: ipvsadm sends a whole (empty) service; vipmgr only the key.
    const DEL_FWM: &str = "0301000038000180060001000200000008000500070000000500060000000000\
        0c00070000000000ffffffff080008000000000008000900ffffffff";
    /// The kernel's reply to `ipvsadm -Ln --stats --exact -u 10.0.0.1:53` after five
    /// datagrams went through (`IPVS_CMD_GET_SERVICE`, answered `NEW_SERVICE`).
    const GOT_UDP_WITH_TRAFFIC: &str = "010100002c01010006000100020000000600020011000000140003000a000001\
        000000000000000000000000060004000035000007000600727200000c000700\
        03000000ffffffff080008003c00000008000900ffffffff5c000a0008000100\
        05000000080002000500000008000300000000000c000400b400000000000000\
        0c00050000000000000000000800060001000000080007000100000008000800\
        00000000080009001600000008000a00000000007c000c000c00010005000000\
        000000000c00020005000000000000000c00030000000000000000000c000400\
        b4000000000000000c00050000000000000000000c0006000100000000000000\
        0c00070001000000000000000c00080000000000000000000c00090016000000\
        000000000c000a000000000000000000";
    /// One part of the kernel's service dump (`ipvsadm -Ln --stats`): the mh service.
    const DUMPED_UDP6_MH: &str = "010100002c010100060001000a00000006000200110000001400030020010db8\
        0000000000000000000001000600040000350000070006006d6800000c000700\
        1b000000ffffffff080008005802000008000900400000005c000a0008000100\
        00000000080002000000000008000300000000000c0004000000000000000000\
        0c00050000000000000000000800060000000000080007000000000008000800\
        00000000080009000000000008000a00000000007c000c000c00010000000000\
        000000000c00020000000000000000000c00030000000000000000000c000400\
        00000000000000000c00050000000000000000000c0006000000000000000000\
        0c00070000000000000000000c00080000000000000000000c00090000000000\
        000000000c000a000000000000000000";
    /// Another part of it: the IPv6 fwmark service.
    const DUMPED_FWM6_LC: &str = "0101000010010100060001000a0000000800050008000000070006006c630000\
        0c00070002000000ffffffff080008000000000008000900800000005c000a00\
        0800010000000000080002000000000008000300000000000c00040000000000\
        000000000c000500000000000000000008000600000000000800070000000000\
        0800080000000000080009000000000008000a00000000007c000c000c000100\
        00000000000000000c00020000000000000000000c0003000000000000000000\
        0c00040000000000000000000c00050000000000000000000c00060000000000\
        000000000c00070000000000000000000c00080000000000000000000c000900\
        00000000000000000c000a000000000000000000";

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn with(key: ServiceKey, scheduler: Scheduler, f: impl FnOnce(&mut Service)) -> Service {
        let mut svc = Service::new(key, scheduler);
        f(&mut svc);
        svc
    }

    fn ipvsadm_requests() -> Vec<(&'static str, Service)> {
        vec![
            (
                ADD_TCP_WLC,
                Service::new(
                    ServiceKey::tcp(addr("192.0.2.100:80")),
                    Scheduler::WeightedLeastConnection,
                ),
            ),
            (
                ADD_UDP6_MH,
                with(
                    ServiceKey::udp(addr("[2001:db8::100]:53")),
                    Scheduler::MaglevHash,
                    |s| {
                        s.scheduler_flags = SchedulerFlags::MH_FALLBACK | SchedulerFlags::MH_PORT;
                        s.persistence = Some(Persistence {
                            timeout_secs: 600,
                            prefix_len: 64,
                        });
                    },
                ),
            ),
            (
                ADD_SCTP_SH,
                with(
                    ServiceKey::sctp(addr("192.0.2.100:3868")),
                    Scheduler::SourceHash,
                    |s| s.scheduler_flags = SchedulerFlags::SH_PORT,
                ),
            ),
            (
                ADD_FWM_WRR,
                with(
                    ServiceKey::fwmark(Family::Ipv4, 7),
                    Scheduler::WeightedRoundRobin,
                    |s| {
                        s.persistence = Some(Persistence {
                            timeout_secs: 300,
                            prefix_len: 24,
                        })
                    },
                ),
            ),
            (
                ADD_FWM6_LC,
                Service::new(
                    ServiceKey::fwmark(Family::Ipv6, 8),
                    Scheduler::LeastConnection,
                ),
            ),
            (
                ADD_UDP_OPS,
                with(
                    ServiceKey::udp(addr("192.0.2.100:53")),
                    Scheduler::RoundRobin,
                    |s| s.one_packet = true,
                ),
            ),
        ]
    }

    #[test]
    fn add_service_emits_what_ipvsadm_sends() {
        for (raw, service) in ipvsadm_requests() {
            let raw = hex(raw);
            let ours = Change::AddService(service.clone()).message().unwrap();
            assert_eq!(ours.to_bytes(), raw, "{}", service.key);
            let theirs = IpvsMessage::parse(&raw).unwrap();
            assert_eq!(theirs, ours);
            assert_eq!(theirs.command, Command::NewService);
            let parsed = Service::from_attributes(theirs.service().unwrap()).unwrap();
            assert_eq!(parsed.service, service);
        }
    }

    #[test]
    fn edit_service_emits_what_ipvsadm_sends() {
        let service = with(
            ServiceKey::tcp(addr("192.0.2.100:80")),
            Scheduler::RoundRobin,
            |s| {
                s.persistence = Some(Persistence {
                    timeout_secs: 60,
                    prefix_len: 32,
                })
            },
        );
        let ours = Change::EditService(service).message().unwrap();
        assert_eq!(ours.to_bytes(), hex(EDIT_TCP_RR));
    }

    #[test]
    fn delete_reads_the_key_of_a_full_ipvsadm_request() {
        let theirs = IpvsMessage::parse(&hex(DEL_FWM)).unwrap();
        assert_eq!(theirs.command, Command::DelService);
        let key = ServiceKey::from_attributes(theirs.service().unwrap()).unwrap();
        assert_eq!(key, ServiceKey::fwmark(Family::Ipv4, 7));
        // vipmgr sends only the key.
        let ours = Change::RemoveService(key).message().unwrap();
        assert_eq!(
            ours.to_bytes(),
            hex("030100001400018006000100020000000800050007000000")
        );
    }

    #[test]
    fn kernel_reply_with_counters() {
        let raw = hex(GOT_UDP_WITH_TRAFFIC);
        let msg = IpvsMessage::parse(&raw).unwrap();
        assert_eq!(msg.command, Command::NewService);
        assert!(!msg.nested_flag, "the kernel does not flag nests");
        assert_eq!(msg.to_bytes(), raw, "emit(parse(raw)) == raw");
        let entry = Service::from_attributes(msg.service().unwrap()).unwrap();
        assert_eq!(
            entry.service,
            with(
                ServiceKey::udp(addr("10.0.0.1:53")),
                Scheduler::RoundRobin,
                |s| {
                    s.persistence = Some(Persistence {
                        timeout_secs: 60,
                        prefix_len: 32,
                    })
                }
            )
        );
        assert_eq!(
            entry.stats,
            Stats {
                connections: 5,
                in_packets: 5,
                out_packets: 0,
                in_bytes: 180,
                out_bytes: 0,
                connection_rate: 1,
                in_packet_rate: 1,
                out_packet_rate: 0,
                in_byte_rate: 22,
                out_byte_rate: 0,
            }
        );
    }

    #[test]
    fn kernel_dump_parts() {
        let mh = IpvsMessage::parse(&hex(DUMPED_UDP6_MH)).unwrap();
        assert_eq!(mh.to_bytes(), hex(DUMPED_UDP6_MH));
        // The kernel adds IP_VS_SVC_F_HASHED (0x2) to the flags it was given (0x19).
        assert!(mh.service().unwrap().contains(&ServiceAttribute::Flags {
            flags: 0x1b,
            mask: u32::MAX
        }));
        let (_, expected) = ipvsadm_requests().swap_remove(1);
        assert_eq!(
            Service::from_attributes(mh.service().unwrap())
                .unwrap()
                .service,
            expected
        );

        let fwm6 = IpvsMessage::parse(&hex(DUMPED_FWM6_LC)).unwrap();
        assert_eq!(fwm6.to_bytes(), hex(DUMPED_FWM6_LC));
        let entry = Service::from_attributes(fwm6.service().unwrap()).unwrap();
        assert_eq!(
            entry.service,
            Service::new(
                ServiceKey::fwmark(Family::Ipv6, 8),
                Scheduler::LeastConnection
            )
        );
        assert_eq!(entry.stats, Stats::default());
    }

    #[test]
    fn unknown_attributes_survive() {
        let mut msg = IpvsMessage::parse(&hex(ADD_TCP_WLC)).unwrap();
        if let Some(crate::ipvs::IpvsAttribute::Service(attrs)) = msg.attributes.first_mut() {
            attrs.push(ServiceAttribute::Other(RawAttribute {
                kind: 99,
                payload: vec![1, 2, 3],
            }));
        }
        let raw = msg.to_bytes();
        assert_eq!(IpvsMessage::parse(&raw).unwrap(), msg);
    }

    #[test]
    fn netmask_round_trips() {
        for p in 0..=32 {
            assert_eq!(prefix_len(Family::Ipv4, netmask_bytes(Family::Ipv4, p)), p);
        }
        for p in 1..=128 {
            assert_eq!(prefix_len(Family::Ipv6, netmask_bytes(Family::Ipv6, p)), p);
        }
        assert_eq!(netmask_bytes(Family::Ipv4, 24), [255, 255, 255, 0]);
        assert_eq!(netmask_bytes(Family::Ipv4, 0), [0, 0, 0, 0]);
    }

    #[test]
    fn scheduler_names() {
        for (name, sched) in SCHEDULER_NAMES {
            assert_eq!(sched.name(), name);
            assert_eq!(Scheduler::from_name(name), sched);
        }
        assert_eq!(
            Scheduler::from_name("hypothetical"),
            Scheduler::Other("hypothetical".into())
        );
    }

    #[test]
    fn key_display() {
        assert_eq!(
            ServiceKey::tcp(addr("192.0.2.100:80")).to_string(),
            "TCP 192.0.2.100:80"
        );
        assert_eq!(
            ServiceKey::udp(addr("[2001:db8::1]:53")).to_string(),
            "UDP [2001:db8::1]:53"
        );
        assert_eq!(
            ServiceKey::fwmark(Family::Ipv6, 8).to_string(),
            "FWM 8 IPv6"
        );
    }

    #[test]
    fn validate_names_the_field() {
        let mut svc = Service::new(
            ServiceKey::tcp(addr("192.0.2.100:80")),
            Scheduler::Other("a-name-far-too-long".into()),
        );
        match svc.validate() {
            Err(Error::InvalidService { field, .. }) => assert_eq!(field, "scheduler"),
            other => panic!("{other:?}"),
        }
        svc.scheduler = Scheduler::RoundRobin;
        svc.persistence = Some(Persistence {
            timeout_secs: 300,
            prefix_len: 33,
        });
        match svc.validate() {
            Err(Error::InvalidService { field, .. }) => assert_eq!(field, "persistence.netmask"),
            other => panic!("{other:?}"),
        }
    }

    pub(crate) fn any_key() -> impl Strategy<Value = ServiceKey> {
        let ip = prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from),
        ];
        prop_oneof![
            (
                prop_oneof![
                    Just(Protocol::Tcp),
                    Just(Protocol::Udp),
                    Just(Protocol::Sctp)
                ],
                ip,
                any::<u16>()
            )
                .prop_map(|(protocol, ip, port)| ServiceKey::Inet {
                    protocol,
                    address: SocketAddr::new(ip, port)
                }),
            (
                prop_oneof![Just(Family::Ipv4), Just(Family::Ipv6)],
                1..u32::MAX
            )
                .prop_map(|(family, mark)| ServiceKey::Fwmark { family, mark }),
        ]
    }

    fn any_service() -> impl Strategy<Value = Service> {
        (
            any_key(),
            prop_oneof![
                (0..SCHEDULER_NAMES.len()).prop_map(|i| SCHEDULER_NAMES[i].1.clone()),
                "[a-z]{1,15}".prop_map(|n| Scheduler::from_name(&n)),
            ],
            0u8..8,
            proptest::option::of((any::<u32>(), 1u8..=128)),
            any::<bool>(),
            proptest::option::of("[a-z]{1,15}"),
        )
            .prop_map(|(key, scheduler, flags, persistence, one_packet, pe)| {
                let max = key.family().max_prefix_len();
                Service {
                    key,
                    scheduler,
                    scheduler_flags: SchedulerFlags(flags),
                    persistence: persistence.map(|(timeout_secs, p)| Persistence {
                        timeout_secs,
                        prefix_len: p.min(max),
                    }),
                    one_packet,
                    persistence_engine: pe,
                }
            })
    }

    proptest! {
        #[test]
        fn service_round_trips(service in any_service()) {
            let raw = Change::AddService(service.clone()).message().unwrap().to_bytes();
            let msg = IpvsMessage::parse(&raw).unwrap();
            prop_assert_eq!(msg.to_bytes(), raw);
            let parsed = Service::from_attributes(msg.service().unwrap()).unwrap();
            prop_assert_eq!(parsed.service, service);
        }
    }
}
