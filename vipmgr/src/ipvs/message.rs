//! One IPVS generic netlink message: the 4-byte generic netlink header
//! (command, version, reserved) and the top-level attribute list
//! (`IPVS_CMD_ATTR_*`, or `IPVS_INFO_ATTR_*` in an info reply).
//!
//! The 16-byte `nlmsghdr` in front of it belongs to the socket layer
//! ([`super::genl`]).

use serde::Serialize;

use super::{
    daemon::DaemonAttribute,
    dest::DestAttribute,
    malformed,
    nla::{self, RawAttribute, Writer},
    service::ServiceAttribute,
};
use crate::error::Result;

/// `IPVS_GENL_VERSION`.
pub const IPVS_GENL_VERSION: u8 = 1;
const GENL_HEADER_LEN: usize = 4;

mod kind {
    pub const SERVICE: u16 = 1;
    pub const DEST: u16 = 2;
    pub const DAEMON: u16 = 3;
    pub const TIMEOUT_TCP: u16 = 4;
    pub const TIMEOUT_TCP_FIN: u16 = 5;
    pub const TIMEOUT_UDP: u16 = 6;
    /// `IPVS_INFO_ATTR_*`, in `IPVS_CMD_SET_INFO` (the reply to `GET_INFO`).
    pub const INFO_VERSION: u16 = 1;
    pub const INFO_CONN_TAB_SIZE: u16 = 2;
}

/// `IPVS_CMD_*`. Dumps and gets are answered with the matching `New*` / `Set*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    NewService,
    SetService,
    DelService,
    GetService,
    NewDest,
    SetDest,
    DelDest,
    GetDest,
    NewDaemon,
    DelDaemon,
    GetDaemon,
    SetConfig,
    GetConfig,
    SetInfo,
    GetInfo,
    Zero,
    Flush,
    Other(u8),
}

const COMMANDS: [(u8, Command); 17] = [
    (1, Command::NewService),
    (2, Command::SetService),
    (3, Command::DelService),
    (4, Command::GetService),
    (5, Command::NewDest),
    (6, Command::SetDest),
    (7, Command::DelDest),
    (8, Command::GetDest),
    (9, Command::NewDaemon),
    (10, Command::DelDaemon),
    (11, Command::GetDaemon),
    (12, Command::SetConfig),
    (13, Command::GetConfig),
    (14, Command::SetInfo),
    (15, Command::GetInfo),
    (16, Command::Zero),
    (17, Command::Flush),
];

impl Command {
    pub fn number(self) -> u8 {
        if let Command::Other(n) = self {
            return n;
        }
        COMMANDS
            .iter()
            .find(|(_, c)| *c == self)
            .map(|(n, _)| *n)
            .unwrap_or_default()
    }

    pub fn from_number(n: u8) -> Self {
        COMMANDS
            .iter()
            .find(|(number, _)| *number == n)
            .map(|(_, c)| *c)
            .unwrap_or(Command::Other(n))
    }

    /// The top level of these carries `IPVS_INFO_ATTR_*` instead.
    fn is_info(self) -> bool {
        matches!(self, Command::SetInfo | Command::GetInfo)
    }
}

/// One top-level attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpvsAttribute {
    Service(Vec<ServiceAttribute>),
    Destination(Vec<DestAttribute>),
    Daemon(Vec<DaemonAttribute>),
    /// Seconds; 0 in a set leaves the value as it is.
    TimeoutTcp(u32),
    TimeoutTcpFin(u32),
    TimeoutUdp(u32),
    /// `IPVS_INFO_ATTR_VERSION` (info replies only): `0x010201` is 1.2.1.
    Version(u32),
    /// `IPVS_INFO_ATTR_CONN_TAB_SIZE` (info replies only).
    ConnectionTableSize(u32),
    Other(RawAttribute),
}

/// A generic netlink message of the IPVS family, without its `nlmsghdr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsMessage {
    pub command: Command,
    pub version: u8,
    /// Whether nested attributes carry `NLA_F_NESTED`: vipmgr and libnl set it,
    /// the kernel's replies do not. Kept so that parse and emit are inverses.
    pub nested_flag: bool,
    pub attributes: Vec<IpvsAttribute>,
}

impl IpvsMessage {
    /// A request as vipmgr sends it.
    pub fn request(command: Command, attributes: Vec<IpvsAttribute>) -> Self {
        IpvsMessage {
            command,
            version: IPVS_GENL_VERSION,
            nested_flag: true,
            attributes,
        }
    }

    /// Parses a generic netlink payload (genl header and attributes).
    pub fn parse(buf: &[u8]) -> Result<Self> {
        const WHAT: &str = "IPVS message";
        if buf.len() < GENL_HEADER_LEN {
            return Err(malformed(WHAT, format!("{} bytes, no header", buf.len())));
        }
        let command = Command::from_number(buf[0]);
        let version = buf[1];
        let attrs = nla::parse(&buf[GENL_HEADER_LEN..], WHAT)?;
        let mut nested_flag = false;
        let mut attributes = Vec::with_capacity(attrs.len());
        for attr in &attrs {
            let parsed = if command.is_info() {
                match attr.kind {
                    kind::INFO_VERSION => IpvsAttribute::Version(attr.u32(WHAT)?),
                    kind::INFO_CONN_TAB_SIZE => IpvsAttribute::ConnectionTableSize(attr.u32(WHAT)?),
                    _ => IpvsAttribute::Other(attr.raw()),
                }
            } else {
                match attr.kind {
                    kind::SERVICE => {
                        IpvsAttribute::Service(ServiceAttribute::parse_nest(attr.payload)?)
                    }
                    kind::DEST => {
                        IpvsAttribute::Destination(DestAttribute::parse_nest(attr.payload)?)
                    }
                    kind::DAEMON => {
                        IpvsAttribute::Daemon(DaemonAttribute::parse_nest(attr.payload)?)
                    }
                    kind::TIMEOUT_TCP => IpvsAttribute::TimeoutTcp(attr.u32(WHAT)?),
                    kind::TIMEOUT_TCP_FIN => IpvsAttribute::TimeoutTcpFin(attr.u32(WHAT)?),
                    kind::TIMEOUT_UDP => IpvsAttribute::TimeoutUdp(attr.u32(WHAT)?),
                    _ => IpvsAttribute::Other(attr.raw()),
                }
            };
            if matches!(
                parsed,
                IpvsAttribute::Service(_)
                    | IpvsAttribute::Destination(_)
                    | IpvsAttribute::Daemon(_)
            ) {
                nested_flag |= attr.nested_flag;
            }
            attributes.push(parsed);
        }
        Ok(IpvsMessage {
            command,
            version,
            nested_flag,
            attributes,
        })
    }

    /// Appends the generic netlink payload to `buf`.
    pub fn emit(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&[self.command.number(), self.version, 0, 0]);
        let mut w = Writer::new(buf, self.nested_flag);
        for attr in &self.attributes {
            match attr {
                IpvsAttribute::Service(attrs) => {
                    w.nested(kind::SERVICE, |w| attrs.iter().for_each(|a| a.emit(w)))
                }
                IpvsAttribute::Destination(attrs) => {
                    w.nested(kind::DEST, |w| attrs.iter().for_each(|a| a.emit(w)))
                }
                IpvsAttribute::Daemon(attrs) => {
                    w.nested(kind::DAEMON, |w| attrs.iter().for_each(|a| a.emit(w)))
                }
                IpvsAttribute::TimeoutTcp(v) => w.u32(kind::TIMEOUT_TCP, *v),
                IpvsAttribute::TimeoutTcpFin(v) => w.u32(kind::TIMEOUT_TCP_FIN, *v),
                IpvsAttribute::TimeoutUdp(v) => w.u32(kind::TIMEOUT_UDP, *v),
                IpvsAttribute::Version(v) => w.u32(kind::INFO_VERSION, *v),
                IpvsAttribute::ConnectionTableSize(v) => w.u32(kind::INFO_CONN_TAB_SIZE, *v),
                IpvsAttribute::Other(raw) => w.raw(raw),
            }
        }
    }

    /// The emitted payload as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        self.emit(&mut buf);
        buf
    }

    /// The first service nest.
    pub fn service(&self) -> Option<&[ServiceAttribute]> {
        self.attributes.iter().find_map(|a| match a {
            IpvsAttribute::Service(s) => Some(s.as_slice()),
            _ => None,
        })
    }

    /// The first destination nest.
    pub fn destination(&self) -> Option<&[DestAttribute]> {
        self.attributes.iter().find_map(|a| match a {
            IpvsAttribute::Destination(d) => Some(d.as_slice()),
            _ => None,
        })
    }

    /// The first daemon nest.
    pub fn daemon(&self) -> Option<&[DaemonAttribute]> {
        self.attributes.iter().find_map(|a| match a {
            IpvsAttribute::Daemon(d) => Some(d.as_slice()),
            _ => None,
        })
    }
}

/// Connection timeouts in seconds (`ipvsadm --set tcp tcpfin udp`). In a set,
/// 0 leaves that timeout as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Timeouts {
    /// Established TCP connections.
    pub tcp: u32,
    /// TCP connections after the client's FIN.
    pub tcp_fin: u32,
    pub udp: u32,
}

impl Timeouts {
    pub(crate) fn to_attributes(self) -> Vec<IpvsAttribute> {
        vec![
            IpvsAttribute::TimeoutTcp(self.tcp),
            IpvsAttribute::TimeoutTcpFin(self.tcp_fin),
            IpvsAttribute::TimeoutUdp(self.udp),
        ]
    }

    pub(crate) fn from_attributes(attrs: &[IpvsAttribute]) -> Self {
        let mut t = Timeouts::default();
        for attr in attrs {
            match attr {
                IpvsAttribute::TimeoutTcp(v) => t.tcp = *v,
                IpvsAttribute::TimeoutTcpFin(v) => t.tcp_fin = *v,
                IpvsAttribute::TimeoutUdp(v) => t.udp = *v,
                _ => {}
            }
        }
        t
    }
}

/// What `IPVS_CMD_GET_INFO` says about the kernel's IPVS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Info {
    /// (major, minor, patch): (1, 2, 1) on every kernel since 2.6.
    pub version: (u8, u8, u8),
    /// Buckets of the connection hash table (`ip_vs_conn_tab_bits`).
    pub connection_table_size: u32,
}

impl Info {
    pub(crate) fn from_attributes(attrs: &[IpvsAttribute]) -> Result<Self> {
        let mut version = None;
        let mut size = None;
        for attr in attrs {
            match attr {
                IpvsAttribute::Version(v) => version = Some(*v),
                IpvsAttribute::ConnectionTableSize(v) => size = Some(*v),
                _ => {}
            }
        }
        let v = version.ok_or_else(|| malformed("IPVS info", "no version"))?;
        Ok(Info {
            version: ((v >> 16) as u8, (v >> 8) as u8, v as u8),
            connection_table_size: size.ok_or_else(|| malformed("IPVS info", "no table size"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ipvs::hex;

    // Captured inside the IPVS VM (kernel 6.1.0-56-amd64, ipvsadm 1.31) by
    // tests/vm/capture-ipvs-netlink.sh; see tests/vm/ipvs-capture.txt.

    /// The kernel's answer to `IPVS_CMD_GET_INFO` (`0f010000`), which ipvsadm sends
    /// first every time: version 1.2.1, 4096 connection buckets.
    const INFO_REPLY: &str = "0e01000008000100010201000800020000100000";
    /// `ipvsadm --set 900 120 300`; the kernel answers `ipvsadm -L --timeout`
    /// (`0d010000`) with the same bytes.
    const SET_TIMEOUTS: &str = "0c01000008000400840300000800050078000000080006002c010000";

    #[test]
    fn info_reply() {
        let msg = IpvsMessage::parse(&hex(INFO_REPLY)).unwrap();
        assert_eq!(msg.command, Command::SetInfo);
        assert_eq!(
            msg.attributes,
            [
                IpvsAttribute::Version(0x01_02_01),
                IpvsAttribute::ConnectionTableSize(4096)
            ]
        );
        assert_eq!(msg.to_bytes(), hex(INFO_REPLY));
        assert_eq!(
            Info::from_attributes(&msg.attributes).unwrap(),
            Info {
                version: (1, 2, 1),
                connection_table_size: 4096
            }
        );
    }

    #[test]
    fn timeouts() {
        let timeouts = Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300,
        };
        let ours = IpvsMessage::request(Command::SetConfig, timeouts.to_attributes());
        assert_eq!(ours.to_bytes(), hex(SET_TIMEOUTS));
        let reply = IpvsMessage::parse(&hex(SET_TIMEOUTS)).unwrap();
        assert_eq!(Timeouts::from_attributes(&reply.attributes), timeouts);
    }

    #[test]
    fn bare_requests() {
        for (command, raw) in [
            (Command::GetInfo, "0f010000"),
            (Command::GetConfig, "0d010000"),
            (Command::GetService, "04010000"),
            (Command::GetDaemon, "0b010000"),
            (Command::Flush, "11010000"),
        ] {
            assert_eq!(IpvsMessage::request(command, vec![]).to_bytes(), hex(raw));
        }
        for n in 0..=255 {
            assert_eq!(Command::from_number(n).number(), n);
        }
    }

    #[test]
    fn truncated_is_an_error() {
        assert!(IpvsMessage::parse(&[1, 1]).is_err());
        // A service nest that claims more bytes than there are.
        assert!(IpvsMessage::parse(&hex("0101000054000180060001000200")).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(msg) = IpvsMessage::parse(&raw) {
                // What parses re-parses to the same value.
                prop_assert_eq!(IpvsMessage::parse(&msg.to_bytes()).unwrap(), msg);
            }
        }

        #[test]
        fn attribute_soup_never_panics(
            cmd in any::<u8>(),
            attrs in proptest::collection::vec(
                (0u16..20, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..40)),
                0..8,
            ),
        ) {
            // Well-framed attributes with arbitrary payloads, nested or not.
            let mut raw = vec![cmd, 1, 0, 0];
            let mut w = nla::Writer::new(&mut raw, false);
            for (kind, nested, payload) in &attrs {
                if *nested {
                    w.nested(*kind, |w| w.bytes(*kind, payload));
                } else {
                    w.bytes(*kind, payload);
                }
            }
            let _ = IpvsMessage::parse(&raw);
        }
    }
}
