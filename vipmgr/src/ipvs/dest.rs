//! Destinations (real servers): the `IPVS_CMD_ATTR_DEST` nest
//! (`IPVS_DEST_ATTR_*`) and the typed [`Destination`] it carries.
//!
//! A destination belongs to one service; requests about it carry the service's
//! key in an `IPVS_CMD_ATTR_SERVICE` nest beside this one.

use std::net::SocketAddr;

use serde::Serialize;

use super::{
    malformed,
    nla::{Attr, RawAttribute, Writer, parse},
    service::{Family, inet_addr, inet_addr_bytes},
    stats::{Stats, StatsAttribute, Width},
};
use crate::error::{Error, Result};

mod kind {
    pub const ADDR: u16 = 1;
    pub const PORT: u16 = 2;
    pub const FWD_METHOD: u16 = 3;
    pub const WEIGHT: u16 = 4;
    pub const U_THRESH: u16 = 5;
    pub const L_THRESH: u16 = 6;
    pub const ACTIVE_CONNS: u16 = 7;
    pub const INACT_CONNS: u16 = 8;
    pub const PERSIST_CONNS: u16 = 9;
    pub const STATS: u16 = 10;
    pub const ADDR_FAMILY: u16 = 11;
    pub const STATS64: u16 = 12;
    pub const TUN_TYPE: u16 = 13;
    pub const TUN_PORT: u16 = 14;
    pub const TUN_FLAGS: u16 = 15;
}

/// `IP_VS_CONN_F_*` forwarding methods.
mod fwd {
    pub const MASQ: u32 = 0;
    pub const LOCALNODE: u32 = 1;
    pub const TUNNEL: u32 = 2;
    pub const DROUTE: u32 = 3;
}

/// The kernel keeps weights in an `int` and refuses negative ones.
const MAX_WEIGHT: u32 = i32::MAX as u32;

/// One attribute of the destination nest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestAttribute {
    /// `union nf_inet_addr`: the kernel sends 16 bytes, IPv4 in the first 4.
    Address(Vec<u8>),
    Port(u16),
    /// `IP_VS_CONN_F_MASQ` (0), `_LOCALNODE` (1), `_TUNNEL` (2), `_DROUTE` (3).
    ForwardMethod(u32),
    Weight(u32),
    UpperThreshold(u32),
    LowerThreshold(u32),
    ActiveConnections(u32),
    InactiveConnections(u32),
    PersistentConnections(u32),
    Stats(Vec<StatsAttribute>),
    AddressFamily(u16),
    Stats64(Vec<StatsAttribute>),
    /// `IP_VS_CONN_F_TUNNEL_TYPE_*`.
    TunnelType(u8),
    TunnelPort(u16),
    /// `IP_VS_TUNNEL_ENCAP_FLAG_*`.
    TunnelFlags(u16),
    Other(RawAttribute),
}

impl DestAttribute {
    pub(crate) fn parse_nest(payload: &[u8]) -> Result<Vec<Self>> {
        parse(payload, "IPVS destination")?
            .iter()
            .map(Self::parse_one)
            .collect()
    }

    fn parse_one(attr: &Attr<'_>) -> Result<Self> {
        const WHAT: &str = "IPVS destination";
        Ok(match attr.kind {
            kind::ADDR => Self::Address(attr.payload.to_vec()),
            kind::PORT => Self::Port(attr.be16(WHAT)?),
            kind::FWD_METHOD => Self::ForwardMethod(attr.u32(WHAT)?),
            kind::WEIGHT => Self::Weight(attr.u32(WHAT)?),
            kind::U_THRESH => Self::UpperThreshold(attr.u32(WHAT)?),
            kind::L_THRESH => Self::LowerThreshold(attr.u32(WHAT)?),
            kind::ACTIVE_CONNS => Self::ActiveConnections(attr.u32(WHAT)?),
            kind::INACT_CONNS => Self::InactiveConnections(attr.u32(WHAT)?),
            kind::PERSIST_CONNS => Self::PersistentConnections(attr.u32(WHAT)?),
            kind::STATS => Self::Stats(StatsAttribute::parse_nest(attr.payload)?),
            kind::ADDR_FAMILY => Self::AddressFamily(attr.u16(WHAT)?),
            kind::STATS64 => Self::Stats64(StatsAttribute::parse_nest(attr.payload)?),
            kind::TUN_TYPE => Self::TunnelType(attr.u8(WHAT)?),
            kind::TUN_PORT => Self::TunnelPort(attr.be16(WHAT)?),
            kind::TUN_FLAGS => Self::TunnelFlags(attr.u16(WHAT)?),
            _ => Self::Other(attr.raw()),
        })
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) {
        match self {
            Self::Address(bytes) => w.bytes(kind::ADDR, bytes),
            Self::Port(v) => w.be16(kind::PORT, *v),
            Self::ForwardMethod(v) => w.u32(kind::FWD_METHOD, *v),
            Self::Weight(v) => w.u32(kind::WEIGHT, *v),
            Self::UpperThreshold(v) => w.u32(kind::U_THRESH, *v),
            Self::LowerThreshold(v) => w.u32(kind::L_THRESH, *v),
            Self::ActiveConnections(v) => w.u32(kind::ACTIVE_CONNS, *v),
            Self::InactiveConnections(v) => w.u32(kind::INACT_CONNS, *v),
            Self::PersistentConnections(v) => w.u32(kind::PERSIST_CONNS, *v),
            Self::Stats(attrs) => w.nested(kind::STATS, |w| {
                attrs.iter().for_each(|a| a.emit(w, Width::Legacy))
            }),
            Self::AddressFamily(v) => w.u16(kind::ADDR_FAMILY, *v),
            Self::Stats64(attrs) => w.nested(kind::STATS64, |w| {
                attrs.iter().for_each(|a| a.emit(w, Width::Wide))
            }),
            Self::TunnelType(v) => w.u8(kind::TUN_TYPE, *v),
            Self::TunnelPort(v) => w.be16(kind::TUN_PORT, *v),
            Self::TunnelFlags(v) => w.u16(kind::TUN_FLAGS, *v),
            Self::Other(raw) => w.raw(raw),
        }
    }
}

/// The encapsulation of an LVS-TUN destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelType {
    /// IP-in-IP (the default; the real server needs an `ipip` tunnel device).
    Ipip,
    /// Generic UDP encapsulation, to [`Tunnel::port`].
    Gue,
    /// GRE.
    Gre,
    Other(u8),
}

impl TunnelType {
    fn number(self) -> u8 {
        match self {
            TunnelType::Ipip => 0,
            TunnelType::Gue => 1,
            TunnelType::Gre => 2,
            TunnelType::Other(n) => n,
        }
    }

    fn from_number(n: u8) -> Self {
        match n {
            0 => TunnelType::Ipip,
            1 => TunnelType::Gue,
            2 => TunnelType::Gre,
            n => TunnelType::Other(n),
        }
    }
}

/// Checksums on the outer header of GUE and GRE encapsulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TunnelChecksum {
    /// `--tun-nocsum` (the default).
    None,
    /// `--tun-csum`.
    Checksum,
    /// `--tun-remcsum` (GUE only).
    Remote,
    Other(u16),
}

impl TunnelChecksum {
    fn number(self) -> u16 {
        match self {
            TunnelChecksum::None => 0,
            TunnelChecksum::Checksum => 1,
            TunnelChecksum::Remote => 2,
            TunnelChecksum::Other(n) => n,
        }
    }

    fn from_number(n: u16) -> Self {
        match n {
            0 => TunnelChecksum::None,
            1 => TunnelChecksum::Checksum,
            2 => TunnelChecksum::Remote,
            n => TunnelChecksum::Other(n),
        }
    }
}

/// LVS-TUN parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Tunnel {
    pub kind: TunnelType,
    /// Destination UDP port (GUE); 0 otherwise.
    pub port: u16,
    pub checksum: TunnelChecksum,
}

impl Tunnel {
    /// Plain IP-in-IP, ipvsadm's `-i`.
    pub const IPIP: Tunnel = Tunnel {
        kind: TunnelType::Ipip,
        port: 0,
        checksum: TunnelChecksum::None,
    };
}

/// How packets reach a real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Forward {
    /// LVS-NAT (`-m`): the director rewrites the destination address.
    Masquerade,
    /// LVS-DR (`-g`): the director rewrites the MAC only; the real server holds
    /// the VIP on a non-ARPing interface.
    Route,
    /// LVS-TUN (`-i`): the director encapsulates.
    Tunnel(Tunnel),
    /// The director itself serves (the kernel picks this for local addresses).
    Local,
    Other(u32),
}

impl Forward {
    fn method(self) -> u32 {
        match self {
            Forward::Masquerade => fwd::MASQ,
            Forward::Local => fwd::LOCALNODE,
            Forward::Tunnel(_) => fwd::TUNNEL,
            Forward::Route => fwd::DROUTE,
            Forward::Other(n) => n,
        }
    }
}

/// A real server as vipmgr programs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Destination {
    pub address: SocketAddr,
    pub forward: Forward,
    /// 0 takes no new connections (quiescent) but keeps the existing ones.
    pub weight: u32,
    /// Stop sending new connections above this many (0: no limit).
    pub upper_threshold: u32,
    /// Resume below this many; not above `upper_threshold` (the kernel refuses).
    pub lower_threshold: u32,
}

/// A real server as the kernel lists it, with its connections and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DestinationEntry {
    pub destination: Destination,
    pub active_connections: u32,
    pub inactive_connections: u32,
    /// Persistence templates pointing at this real server.
    pub persistent_connections: u32,
    pub stats: Stats,
}

impl Destination {
    /// A destination with no thresholds.
    pub fn new(address: SocketAddr, forward: Forward, weight: u32) -> Self {
        Destination {
            address,
            forward,
            weight,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }

    /// Checks what the kernel would refuse without saying which field was wrong.
    pub fn validate(&self, service: &super::ServiceKey) -> Result<()> {
        let invalid = |field, reason: String| {
            Err(Error::InvalidDestination {
                service: *service,
                destination: self.address,
                field,
                reason,
            })
        };
        if self.weight > MAX_WEIGHT {
            return invalid("weight", format!("{} is above {MAX_WEIGHT}", self.weight));
        }
        if self.lower_threshold > self.upper_threshold {
            return invalid(
                "lower_threshold",
                format!(
                    "{} is above the upper threshold {}",
                    self.lower_threshold, self.upper_threshold
                ),
            );
        }
        if Family::of(self.address.ip()) != service.family()
            && !matches!(self.forward, Forward::Tunnel(_))
        {
            return invalid(
                "address",
                "only a tunnel destination may have another address family than its service".into(),
            );
        }
        Ok(())
    }

    /// The full destination nest for a create or an edit, in ipvsadm's order.
    pub(crate) fn to_attributes(self) -> Vec<DestAttribute> {
        let tunnel = match self.forward {
            Forward::Tunnel(t) => t,
            _ => Tunnel::IPIP,
        };
        vec![
            DestAttribute::AddressFamily(Family::of(self.address.ip()).number()),
            DestAttribute::Address(inet_addr_bytes(self.address.ip())),
            DestAttribute::Port(self.address.port()),
            DestAttribute::ForwardMethod(self.forward.method()),
            DestAttribute::Weight(self.weight),
            DestAttribute::TunnelType(tunnel.kind.number()),
            DestAttribute::TunnelPort(tunnel.port),
            DestAttribute::TunnelFlags(tunnel.checksum.number()),
            DestAttribute::UpperThreshold(self.upper_threshold),
            DestAttribute::LowerThreshold(self.lower_threshold),
        ]
    }

    /// Only what names the destination, for a delete.
    pub(crate) fn key_attributes(address: SocketAddr) -> Vec<DestAttribute> {
        vec![
            DestAttribute::AddressFamily(Family::of(address.ip()).number()),
            DestAttribute::Address(inet_addr_bytes(address.ip())),
            DestAttribute::Port(address.port()),
        ]
    }

    /// Reads a destination nest as the kernel dumps it; `service_family` stands
    /// in for `IPVS_DEST_ATTR_ADDR_FAMILY` on kernels that do not send it.
    pub(crate) fn from_attributes(
        attrs: &[DestAttribute],
        service_family: Family,
    ) -> Result<DestinationEntry> {
        const WHAT: &str = "IPVS destination";
        let mut family = service_family;
        let mut address = None;
        let mut port = None;
        let mut method = None;
        let mut weight = None;
        let (mut upper, mut lower) = (0, 0);
        let (mut active, mut inactive, mut persistent) = (0, 0, 0);
        let mut tunnel = Tunnel::IPIP;
        let mut legacy_stats = None;
        let mut stats64 = None;
        for attr in attrs {
            match attr {
                DestAttribute::AddressFamily(af) => family = Family::from_number(*af, WHAT)?,
                DestAttribute::Address(bytes) => address = Some(bytes.as_slice()),
                DestAttribute::Port(p) => port = Some(*p),
                DestAttribute::ForwardMethod(m) => method = Some(*m),
                DestAttribute::Weight(w) => weight = Some(*w),
                DestAttribute::UpperThreshold(v) => upper = *v,
                DestAttribute::LowerThreshold(v) => lower = *v,
                DestAttribute::ActiveConnections(v) => active = *v,
                DestAttribute::InactiveConnections(v) => inactive = *v,
                DestAttribute::PersistentConnections(v) => persistent = *v,
                DestAttribute::TunnelType(t) => tunnel.kind = TunnelType::from_number(*t),
                DestAttribute::TunnelPort(p) => tunnel.port = *p,
                DestAttribute::TunnelFlags(f) => tunnel.checksum = TunnelChecksum::from_number(*f),
                DestAttribute::Stats(s) => legacy_stats = Some(s.as_slice()),
                DestAttribute::Stats64(s) => stats64 = Some(s.as_slice()),
                DestAttribute::Other(_) => {}
            }
        }
        let address = inet_addr(
            family,
            address.ok_or_else(|| malformed(WHAT, "no address"))?,
            WHAT,
        )?;
        let address = SocketAddr::new(address, port.ok_or_else(|| malformed(WHAT, "no port"))?);
        let forward = match method.ok_or_else(|| malformed(WHAT, "no forwarding method"))? {
            fwd::MASQ => Forward::Masquerade,
            fwd::LOCALNODE => Forward::Local,
            fwd::TUNNEL => Forward::Tunnel(tunnel),
            fwd::DROUTE => Forward::Route,
            other => Forward::Other(other),
        };
        Ok(DestinationEntry {
            destination: Destination {
                address,
                forward,
                weight: weight.ok_or_else(|| malformed(WHAT, "no weight"))?,
                upper_threshold: upper,
                lower_threshold: lower,
            },
            active_connections: active,
            inactive_connections: inactive,
            persistent_connections: persistent,
            stats: Stats::pick(legacy_stats, stats64),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ipvs::{Change, Command, IpvsMessage, ServiceKey, hex};

    // Captured inside the IPVS VM (kernel 6.1.0-56-amd64, ipvsadm 1.31) by
    // tests/vm/capture-ipvs-netlink.sh; see tests/vm/ipvs-capture.txt.

    /// `ipvsadm -a -t 192.0.2.100:80 -r 10.0.1.11:8080 -m -w 100 -x 1000 -y 10`.
    /// ipvsadm puts a whole service in the key nest (scheduler "", flags 0, ...);
    /// vipmgr puts only the key, so only the destination nest is compared.
    const ADD_MASQ: &str = "05010000540001800600010002000000060002000600000014000300c0000264\
        000000000000000000000000060004000050000005000600000000000c000700\
        00000000ffffffff080008000000000008000900ffffffff6000028006000b00\
        02000000140001000a00010b000000000000000000000000060002001f900000\
        0800030000000000080004006400000005000d000000000006000e0000000000\
        06000f000000000008000500e8030000080006000a000000";
    /// `ipvsadm -a -t 192.0.2.100:80 -r 10.0.1.14 -i --tun-type gue --tun-port 6080 --tun-csum`.
    const ADD_GUE: &str = "05010000540001800600010002000000060002000600000014000300c0000264\
        000000000000000000000000060004000050000005000600000000000c000700\
        00000000ffffffff080008000000000008000900ffffffff6000028006000b00\
        02000000140001000a00010e0000000000000000000000000600020000500000\
        0800030002000000080004000100000005000d000100000006000e0017c00000\
        06000f000100000008000500000000000800060000000000";
    /// `ipvsadm -a -t 192.0.2.100:80 -r 10.0.1.13 -i -w 2`.
    const ADD_IPIP: &str = "05010000540001800600010002000000060002000600000014000300c0000264\
        000000000000000000000000060004000050000005000600000000000c000700\
        00000000ffffffff080008000000000008000900ffffffff6000028006000b00\
        02000000140001000a00010d0000000000000000000000000600020000500000\
        0800030002000000080004000200000005000d000000000006000e0000000000\
        06000f000000000008000500000000000800060000000000";
    /// `ipvsadm -a -u [2001:db8::100]:53 -r [2001:db8::21]:53 -m -w 5`.
    const ADD_MASQ6: &str = "0501000054000180060001000a00000006000200110000001400030020010db8\
        000000000000000000000100060004000035000005000600000000000c000700\
        00000000ffffffff080008000000000008000900800000006000028006000b00\
        0a0000001400010020010db80000000000000000000000210600020000350000\
        0800030000000000080004000500000005000d000000000006000e0000000000\
        06000f000000000008000500000000000800060000000000";
    /// `ipvsadm -e -t 192.0.2.100:80 -r 10.0.1.12 -g -w 7`.
    const EDIT_ROUTE: &str = "06010000540001800600010002000000060002000600000014000300c0000264\
        000000000000000000000000060004000050000005000600000000000c000700\
        00000000ffffffff080008000000000008000900ffffffff6000028006000b00\
        02000000140001000a00010c0000000000000000000000000600020000500000\
        0800030003000000080004000700000005000d000000000006000e0000000000\
        06000f000000000008000500000000000800060000000000";
    /// `ipvsadm -d -t 192.0.2.100:80 -r 10.0.1.13`.
    const DEL: &str = "07010000540001800600010002000000060002000600000014000300c0000264\
        000000000000000000000000060004000050000005000600000000000c000700\
        00000000ffffffff080008000000000008000900ffffffff6000028006000b00\
        02000000140001000a00010d0000000000000000000000000600020000500000\
        0800030003000000080004000100000005000d000000000006000e0000000000\
        06000f000000000008000500000000000800060000000000";
    /// `ipvsadm -Ln --stats`: the request for the real servers of TCP 192.0.2.100:80
    /// (only the key, as vipmgr sends it too) ...
    const DUMP_REQUEST: &str = "08010000300001800600010002000000060002000600000014000300c0000264\
        0000000000000000000000000600040000500000";
    /// ... and one part of the kernel's answer: the GUE real server.
    const DUMPED_GUE: &str = "0501000050010200140001000a00010e00000000000000000000000006000200\
        005000000800030002000000080004000100000005000d000100000006000e00\
        17c0000006000f00010000000800050000000000080006000000000008000700\
        000000000800080000000000080009000000000006000b00020000005c000a00\
        0800010000000000080002000000000008000300000000000c00040000000000\
        000000000c000500000000000000000008000600000000000800070000000000\
        0800080000000000080009000000000008000a00000000007c000c000c000100\
        00000000000000000c00020000000000000000000c0003000000000000000000\
        0c00040000000000000000000c00050000000000000000000c00060000000000\
        000000000c00070000000000000000000c00080000000000000000000c000900\
        00000000000000000c000a000000000000000000";
    /// The real server of UDP 10.0.0.1:53 (persistent) after five datagrams.
    const DUMPED_WITH_TRAFFIC: &str = "0501000050010200140001000a00000200000000000000000000000006000200\
        003500000800030000000000080004000300000005000d000000000006000e00\
        0000000006000f00000000000800050000000000080006000000000008000700\
        000000000800080005000000080009000100000006000b00020000005c000a00\
        0800010005000000080002000500000008000300000000000c000400b4000000\
        000000000c000500000000000000000008000600010000000800070001000000\
        0800080000000000080009001600000008000a00000000007c000c000c000100\
        05000000000000000c00020005000000000000000c0003000000000000000000\
        0c000400b4000000000000000c00050000000000000000000c00060001000000\
        000000000c00070001000000000000000c00080000000000000000000c000900\
        16000000000000000c000a000000000000000000";

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn web() -> ServiceKey {
        ServiceKey::tcp(addr("192.0.2.100:80"))
    }

    fn gue() -> Destination {
        Destination::new(
            addr("10.0.1.14:80"),
            Forward::Tunnel(Tunnel {
                kind: TunnelType::Gue,
                port: 6080,
                checksum: TunnelChecksum::Checksum,
            }),
            1,
        )
    }

    #[test]
    fn add_destination_matches_ipvsadm() {
        let masq = Destination {
            upper_threshold: 1000,
            lower_threshold: 10,
            ..Destination::new(addr("10.0.1.11:8080"), Forward::Masquerade, 100)
        };
        let ipip = Destination::new(addr("10.0.1.13:80"), Forward::Tunnel(Tunnel::IPIP), 2);
        let v6_key = ServiceKey::udp(addr("[2001:db8::100]:53"));
        let masq6 = Destination::new(addr("[2001:db8::21]:53"), Forward::Masquerade, 5);
        for (raw, key, dest) in [
            (ADD_MASQ, web(), masq),
            (ADD_GUE, web(), gue()),
            (ADD_IPIP, web(), ipip),
            (ADD_MASQ6, v6_key, masq6),
        ] {
            let theirs = IpvsMessage::parse(&hex(raw)).unwrap();
            assert_eq!(theirs.to_bytes(), hex(raw), "emit(parse(raw)) == raw");
            assert_eq!(theirs.command, Command::NewDest);
            assert_eq!(
                ServiceKey::from_attributes(theirs.service().unwrap()).unwrap(),
                key
            );
            let ours = Change::AddDestination {
                service: key,
                destination: dest,
            }
            .message()
            .unwrap();
            assert_eq!(ours.destination(), theirs.destination(), "{}", dest.address);
            let parsed = Destination::from_attributes(theirs.destination().unwrap(), key.family());
            assert_eq!(parsed.unwrap().destination, dest);
        }
    }

    #[test]
    fn edit_and_delete() {
        let theirs = IpvsMessage::parse(&hex(EDIT_ROUTE)).unwrap();
        assert_eq!(theirs.command, Command::SetDest);
        let route = Destination::new(addr("10.0.1.12:80"), Forward::Route, 7);
        let ours = Change::EditDestination {
            service: web(),
            destination: route,
        }
        .message()
        .unwrap();
        assert_eq!(ours.destination(), theirs.destination());

        let theirs = IpvsMessage::parse(&hex(DEL)).unwrap();
        assert_eq!(theirs.command, Command::DelDest);
        let ours = Change::RemoveDestination {
            service: web(),
            address: addr("10.0.1.13:80"),
        }
        .message()
        .unwrap();
        // vipmgr names the real server only; ipvsadm sends all of it.
        assert_eq!(
            ours.destination().unwrap(),
            &theirs.destination().unwrap()[..3]
        );
    }

    #[test]
    fn dump_request_is_what_ipvsadm_sends() {
        let ours = IpvsMessage::request(
            Command::GetDest,
            vec![crate::ipvs::IpvsAttribute::Service(web().to_attributes())],
        );
        assert_eq!(ours.to_bytes(), hex(DUMP_REQUEST));
    }

    #[test]
    fn kernel_dump_parts() {
        let msg = IpvsMessage::parse(&hex(DUMPED_GUE)).unwrap();
        assert_eq!(msg.to_bytes(), hex(DUMPED_GUE));
        let entry = Destination::from_attributes(msg.destination().unwrap(), Family::Ipv4).unwrap();
        assert_eq!(entry.destination, gue());
        assert_eq!(entry.active_connections, 0);

        let msg = IpvsMessage::parse(&hex(DUMPED_WITH_TRAFFIC)).unwrap();
        assert_eq!(msg.to_bytes(), hex(DUMPED_WITH_TRAFFIC));
        let entry = Destination::from_attributes(msg.destination().unwrap(), Family::Ipv4).unwrap();
        assert_eq!(
            entry.destination,
            Destination::new(addr("10.0.0.2:53"), Forward::Masquerade, 3)
        );
        assert_eq!(
            (
                entry.active_connections,
                entry.inactive_connections,
                entry.persistent_connections
            ),
            (0, 5, 1)
        );
        assert_eq!(entry.stats.connections, 5);
        assert_eq!(entry.stats.in_bytes, 180);
        assert_eq!(entry.stats.in_byte_rate, 22);
    }

    #[test]
    fn validate_names_the_field() {
        let bad = Destination {
            lower_threshold: 10,
            ..Destination::new(addr("10.0.1.11:80"), Forward::Route, 1)
        };
        match bad.validate(&web()) {
            Err(Error::InvalidDestination { field, .. }) => assert_eq!(field, "lower_threshold"),
            other => panic!("{other:?}"),
        }
        let v6_route = Destination::new(addr("[2001:db8::1]:80"), Forward::Route, 1);
        match v6_route.validate(&web()) {
            Err(Error::InvalidDestination { field, .. }) => assert_eq!(field, "address"),
            other => panic!("{other:?}"),
        }
        let heavy = Destination::new(addr("10.0.1.11:80"), Forward::Route, u32::MAX);
        assert!(heavy.validate(&web()).is_err());
    }

    fn any_destination() -> impl Strategy<Value = Destination> {
        let ip = prop_oneof![
            any::<[u8; 4]>().prop_map(std::net::IpAddr::from),
            any::<[u8; 16]>().prop_map(std::net::IpAddr::from),
        ];
        let tunnel = (0u8..4, any::<u16>(), 0u16..4).prop_map(|(k, port, c)| Tunnel {
            kind: TunnelType::from_number(k),
            port,
            checksum: TunnelChecksum::from_number(c),
        });
        let forward = prop_oneof![
            Just(Forward::Masquerade),
            Just(Forward::Route),
            Just(Forward::Local),
            tunnel.prop_map(Forward::Tunnel),
        ];
        (
            ip,
            any::<u16>(),
            forward,
            0..=MAX_WEIGHT,
            any::<u32>(),
            any::<u32>(),
        )
            .prop_map(|(ip, port, forward, weight, a, b)| Destination {
                address: SocketAddr::new(ip, port),
                forward,
                weight,
                upper_threshold: a.max(b),
                lower_threshold: a.min(b),
            })
    }

    proptest! {
        #[test]
        fn destination_round_trips(dest in any_destination()) {
            let key = ServiceKey::fwmark(Family::of(dest.address.ip()), 1);
            let raw = Change::AddDestination { service: key, destination: dest }
                .message()
                .unwrap()
                .to_bytes();
            let msg = IpvsMessage::parse(&raw).unwrap();
            prop_assert_eq!(msg.to_bytes(), raw);
            let parsed = Destination::from_attributes(msg.destination().unwrap(), key.family());
            prop_assert_eq!(parsed.unwrap().destination, dest);
        }
    }
}
