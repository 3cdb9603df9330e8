//! The connection-sync daemon: the `IPVS_CMD_ATTR_DAEMON` nest
//! (`IPVS_DAEMON_ATTR_*`) and the typed [`SyncDaemon`].
//!
//! A master multicasts the state of its connections; a backup receives it and
//! builds the same connection table, so that a standby that takes over keeps the
//! established connections. One kernel can run a master and a backup at once.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use super::{
    malformed,
    nla::{Attr, RawAttribute, Writer, parse},
};
use crate::error::{Error, Result};

mod kind {
    pub const STATE: u16 = 1;
    pub const MCAST_IFN: u16 = 2;
    pub const SYNC_ID: u16 = 3;
    pub const SYNC_MAXLEN: u16 = 4;
    pub const MCAST_GROUP: u16 = 5;
    pub const MCAST_GROUP6: u16 = 6;
    pub const MCAST_PORT: u16 = 7;
    pub const MCAST_TTL: u16 = 8;
}

/// `IP_VS_STATE_MASTER` / `IP_VS_STATE_BACKUP`.
const STATE_MASTER: u32 = 1;
const STATE_BACKUP: u32 = 2;

/// `IP_VS_IFNAME_MAXLEN`, the NUL included.
const IFNAME_MAXLEN: usize = 16;

/// One attribute of the daemon nest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonAttribute {
    /// `IP_VS_STATE_MASTER` (1) or `IP_VS_STATE_BACKUP` (2).
    State(u32),
    Interface(String),
    SyncId(u32),
    /// Largest sync message (UDP payload) in bytes.
    MaxLength(u16),
    Group(Ipv4Addr),
    Group6(Ipv6Addr),
    /// UDP port, host order (unlike service ports).
    Port(u16),
    Ttl(u8),
    Other(RawAttribute),
}

impl DaemonAttribute {
    pub(crate) fn parse_nest(payload: &[u8]) -> Result<Vec<Self>> {
        parse(payload, "IPVS sync daemon")?
            .iter()
            .map(Self::parse_one)
            .collect()
    }

    fn parse_one(attr: &Attr<'_>) -> Result<Self> {
        const WHAT: &str = "IPVS sync daemon";
        Ok(match attr.kind {
            kind::STATE => Self::State(attr.u32(WHAT)?),
            kind::MCAST_IFN => Self::Interface(attr.string(WHAT)?),
            kind::SYNC_ID => Self::SyncId(attr.u32(WHAT)?),
            kind::SYNC_MAXLEN => Self::MaxLength(attr.u16(WHAT)?),
            kind::MCAST_GROUP => Self::Group(Ipv4Addr::from(attr.array::<4>(WHAT)?)),
            kind::MCAST_GROUP6 => Self::Group6(Ipv6Addr::from(attr.array::<16>(WHAT)?)),
            kind::MCAST_PORT => Self::Port(attr.u16(WHAT)?),
            kind::MCAST_TTL => Self::Ttl(attr.u8(WHAT)?),
            _ => Self::Other(attr.raw()),
        })
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) {
        match self {
            Self::State(v) => w.u32(kind::STATE, *v),
            Self::Interface(name) => w.string(kind::MCAST_IFN, name),
            Self::SyncId(v) => w.u32(kind::SYNC_ID, *v),
            Self::MaxLength(v) => w.u16(kind::SYNC_MAXLEN, *v),
            Self::Group(a) => w.bytes(kind::MCAST_GROUP, &a.octets()),
            Self::Group6(a) => w.bytes(kind::MCAST_GROUP6, &a.octets()),
            Self::Port(v) => w.u16(kind::MCAST_PORT, *v),
            Self::Ttl(v) => w.u8(kind::MCAST_TTL, *v),
            Self::Other(raw) => w.raw(raw),
        }
    }
}

/// Which half of the sync protocol a daemon runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncRole {
    /// Sends this director's connections (runs on the active director).
    Master,
    /// Receives them (runs on the standby).
    Backup,
}

impl SyncRole {
    fn state(self) -> u32 {
        match self {
            SyncRole::Master => STATE_MASTER,
            SyncRole::Backup => STATE_BACKUP,
        }
    }

    pub(crate) fn attributes(self) -> Vec<DaemonAttribute> {
        vec![DaemonAttribute::State(self.state())]
    }
}

impl std::fmt::Display for SyncRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SyncRole::Master => "master",
            SyncRole::Backup => "backup",
        })
    }
}

/// A connection-sync daemon (`ipvsadm --start-daemon`). `None` fields take the
/// kernel's defaults when starting (group 224.0.0.81, port 8848, TTL 1, the
/// interface MTU for the length); a listed daemon has them all filled in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct SyncDaemon {
    pub role: SyncRole,
    /// The interface the sync messages go out of (master) or come in on (backup).
    pub interface: String,
    /// Master and backup must agree; 0 on a backup accepts every id.
    pub sync_id: u8,
    pub max_length: Option<u16>,
    /// An IPv4 or IPv6 multicast group.
    pub group: Option<IpAddr>,
    pub port: Option<u16>,
    pub ttl: Option<u8>,
}

impl SyncDaemon {
    /// A daemon with the kernel's defaults for everything but the essentials.
    pub fn new(role: SyncRole, interface: impl Into<String>, sync_id: u8) -> Self {
        SyncDaemon {
            role,
            interface: interface.into(),
            sync_id,
            max_length: None,
            group: None,
            port: None,
            ttl: None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let invalid = |field, reason: String| {
            Err(Error::InvalidSyncDaemon {
                role: self.role,
                field,
                reason,
            })
        };
        if self.interface.is_empty()
            || self.interface.len() >= IFNAME_MAXLEN
            || self.interface.contains('\0')
        {
            return invalid(
                "interface",
                format!("{:?} is not an interface name", self.interface),
            );
        }
        if let Some(group) = self.group
            && !group.is_multicast()
        {
            return invalid("group", format!("{group} is not a multicast address"));
        }
        if self.ttl == Some(0) {
            return invalid("ttl", "must be at least 1".into());
        }
        Ok(())
    }

    /// The daemon nest for a start, in ipvsadm's order.
    pub(crate) fn to_attributes(&self) -> Vec<DaemonAttribute> {
        let mut attrs = vec![
            DaemonAttribute::State(self.role.state()),
            DaemonAttribute::Interface(self.interface.clone()),
            DaemonAttribute::SyncId(u32::from(self.sync_id)),
        ];
        attrs.extend(self.max_length.map(DaemonAttribute::MaxLength));
        attrs.extend(self.port.map(DaemonAttribute::Port));
        attrs.extend(self.ttl.map(DaemonAttribute::Ttl));
        attrs.extend(self.group.map(|group| match group {
            IpAddr::V4(v4) => DaemonAttribute::Group(v4),
            IpAddr::V6(v6) => DaemonAttribute::Group6(v6),
        }));
        attrs
    }

    /// Reads a daemon nest as the kernel lists it.
    pub(crate) fn from_attributes(attrs: &[DaemonAttribute]) -> Result<Self> {
        const WHAT: &str = "IPVS sync daemon";
        let mut state = None;
        let mut daemon = SyncDaemon::new(SyncRole::Master, String::new(), 0);
        for attr in attrs {
            match attr {
                DaemonAttribute::State(s) => state = Some(*s),
                DaemonAttribute::Interface(name) => daemon.interface = name.clone(),
                DaemonAttribute::SyncId(id) => {
                    daemon.sync_id = u8::try_from(*id)
                        .map_err(|_| malformed(WHAT, format!("sync id {id} above 255")))?;
                }
                DaemonAttribute::MaxLength(v) => daemon.max_length = Some(*v),
                DaemonAttribute::Group(g) => daemon.group = Some(IpAddr::V4(*g)),
                DaemonAttribute::Group6(g) => daemon.group = Some(IpAddr::V6(*g)),
                DaemonAttribute::Port(p) => daemon.port = Some(*p),
                DaemonAttribute::Ttl(t) => daemon.ttl = Some(*t),
                DaemonAttribute::Other(_) => {}
            }
        }
        daemon.role = match state {
            Some(STATE_MASTER) => SyncRole::Master,
            Some(STATE_BACKUP) => SyncRole::Backup,
            Some(other) => return Err(malformed(WHAT, format!("state {other}"))),
            None => return Err(malformed(WHAT, "no state")),
        };
        Ok(daemon)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipvs::{Command, IpvsAttribute, IpvsMessage, hex};

    // Captured inside the IPVS VM (kernel 6.1.0-56-amd64, ipvsadm 1.31) by
    // tests/vm/capture-ipvs-netlink.sh; see tests/vm/ipvs-capture.txt.

    /// `ipvsadm --start-daemon master --mcast-interface lo --syncid 7`.
    const START_MASTER: &str = "090100001c0003800800010001000000070002006c6f00000800030007000000";
    /// `ipvsadm --start-daemon backup --mcast-interface lo --syncid 9
    /// --mcast-group ff02::81 --mcast-port 8850 --mcast-ttl 2 --sync-maxlen 1400`.
    const START_BACKUP: &str = "09010000480003800800010002000000070002006c6f00000800030009000000\
        06000400780500000600070092220000050008000200000014000600ff020000\
        000000000000000000000081";
    /// The kernel's answer to `ipvsadm -L --daemon`: the master, with the kernel's
    /// defaults filled in (1472 bytes, port 8848, TTL 1, 224.0.0.81) ...
    const DUMPED_MASTER: &str = "090100003c0003000800010001000000070002006c6f00000800030007000000\
        06000400c00500000600070090220000050008000100000008000500e0000051";
    /// ... and the backup.
    const DUMPED_BACKUP: &str = "09010000480003000800010002000000070002006c6f00000800030009000000\
        06000400780500000600070092220000050008000200000014000600ff020000\
        000000000000000000000081";
    /// `ipvsadm --stop-daemon master`: ipvsadm adds an empty interface and id 0.
    const STOP_MASTER: &str = "0a0100001c000380080001000100000005000200000000000800030000000000";

    fn backup() -> SyncDaemon {
        SyncDaemon {
            max_length: Some(1400),
            group: Some("ff02::81".parse().unwrap()),
            port: Some(8850),
            ttl: Some(2),
            ..SyncDaemon::new(SyncRole::Backup, "lo", 9)
        }
    }

    fn start(daemon: &SyncDaemon) -> IpvsMessage {
        IpvsMessage::request(
            Command::NewDaemon,
            vec![IpvsAttribute::Daemon(daemon.to_attributes())],
        )
    }

    #[test]
    fn start_matches_ipvsadm() {
        let master = SyncDaemon::new(SyncRole::Master, "lo", 7);
        assert_eq!(start(&master).to_bytes(), hex(START_MASTER));
        assert_eq!(start(&backup()).to_bytes(), hex(START_BACKUP));
        let parsed = IpvsMessage::parse(&hex(START_BACKUP)).unwrap();
        assert_eq!(parsed, start(&backup()));
        assert_eq!(
            SyncDaemon::from_attributes(parsed.daemon().unwrap()).unwrap(),
            backup()
        );
    }

    #[test]
    fn kernel_lists_both_daemons() {
        let master = IpvsMessage::parse(&hex(DUMPED_MASTER)).unwrap();
        assert_eq!(master.to_bytes(), hex(DUMPED_MASTER));
        assert_eq!(
            SyncDaemon::from_attributes(master.daemon().unwrap()).unwrap(),
            SyncDaemon {
                max_length: Some(1472),
                group: Some("224.0.0.81".parse().unwrap()),
                port: Some(8848),
                ttl: Some(1),
                ..SyncDaemon::new(SyncRole::Master, "lo", 7)
            }
        );
        let backup_msg = IpvsMessage::parse(&hex(DUMPED_BACKUP)).unwrap();
        assert_eq!(backup_msg.to_bytes(), hex(DUMPED_BACKUP));
        assert_eq!(
            SyncDaemon::from_attributes(backup_msg.daemon().unwrap()).unwrap(),
            backup()
        );
    }

    #[test]
    fn stop_sends_the_state() {
        let theirs = IpvsMessage::parse(&hex(STOP_MASTER)).unwrap();
        assert_eq!(theirs.command, Command::DelDaemon);
        assert_eq!(
            theirs.daemon().unwrap()[0],
            DaemonAttribute::State(STATE_MASTER)
        );
        let ours = IpvsMessage::request(
            Command::DelDaemon,
            vec![IpvsAttribute::Daemon(SyncRole::Master.attributes())],
        );
        assert_eq!(ours.to_bytes(), hex("0a0100000c0003800800010001000000"));
    }

    #[test]
    fn validate_names_the_field() {
        let mut d = SyncDaemon::new(SyncRole::Master, "", 1);
        assert!(matches!(
            d.validate(),
            Err(Error::InvalidSyncDaemon {
                field: "interface",
                ..
            })
        ));
        d.interface = "eth0".into();
        d.group = Some("192.0.2.1".parse().unwrap());
        assert!(matches!(
            d.validate(),
            Err(Error::InvalidSyncDaemon { field: "group", .. })
        ));
    }
}
