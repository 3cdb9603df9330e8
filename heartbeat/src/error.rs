//! Errors of the heartbeat crate.

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::vrrp::packet::AuthType;

/// What went wrong starting or running a failover protocol.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot work (caught before anything is opened).
    #[error("invalid VRRP configuration: {reason}")]
    InvalidConfig { reason: String },

    /// The protocol thread could not be created.
    #[error("cannot start protocol thread {name}")]
    SpawnThread {
        name: String,
        #[source]
        source: io::Error,
    },

    /// The protocol thread could not enter the configured network namespace.
    #[error("cannot enter network namespace {}", path.display())]
    EnterNetns {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The protocol thread's runtime could not be built.
    #[error("cannot build the protocol runtime")]
    BuildRuntime {
        #[source]
        source: io::Error,
    },

    /// The protocol thread ended before it reported that it had started.
    #[error("protocol thread {name} ended during startup")]
    ThreadStartup { name: String },

    /// The interface does not exist (yet).
    #[error("interface {interface} not found")]
    FindInterface {
        interface: String,
        #[source]
        source: io::Error,
    },

    /// The interface exists but is down.
    #[error("interface {interface} is down")]
    InterfaceDown { interface: String },

    /// No address to send adverts from.
    #[error("no usable {family} source address on {interface}")]
    FindSourceAddress {
        interface: String,
        family: &'static str,
    },

    /// Opening or setting up the raw VRRP socket failed.
    #[error("cannot set up VRRP socket on {interface}: {step}")]
    OpenSocket {
        interface: String,
        step: &'static str,
        #[source]
        source: io::Error,
    },

    /// Sending an advert failed.
    #[error("cannot send VRRP advert to {destination}")]
    SendAdvert {
        destination: IpAddr,
        #[source]
        source: io::Error,
    },

    /// Receiving from the raw socket failed.
    #[error("cannot receive on VRRP socket on {interface}")]
    Receive {
        interface: String,
        #[source]
        source: io::Error,
    },

    /// The UDP 694 heartbeat configuration cannot work (caught before anything is
    /// opened).
    #[error("invalid heartbeat configuration: {reason}")]
    InvalidHeartbeatConfig { reason: String },

    /// The heartbeat key file (heartbeat's authkeys format) cannot be read.
    #[error("cannot read heartbeat key file {}", path.display())]
    ReadAuthKeys {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The heartbeat key file can be read or written by other users.
    #[error(
        "heartbeat key file {} has mode {mode:04o}: it must not be readable or writable \
         by group or others (chmod 600 {})",
        path.display(),
        path.display()
    )]
    AuthKeysPermissions { path: PathBuf, mode: u32 },

    /// The heartbeat key file is not in heartbeat's authkeys format.
    #[error("{}:{line}: {reason}", path.display())]
    ParseAuthKeys {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    /// The heartbeat state (generation number, node UUID) cannot be kept on disk.
    #[error("cannot {step} heartbeat state {}", path.display())]
    StateDir {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: io::Error,
    },

    /// Opening or setting up the UDP socket of one heartbeat medium failed.
    #[error("cannot set up heartbeat medium {medium}: {step}")]
    OpenMedium {
        medium: String,
        step: &'static str,
        #[source]
        source: io::Error,
    },

    /// Receiving on one heartbeat medium failed.
    #[error("cannot receive on heartbeat medium {medium}")]
    ReceiveMedium {
        medium: String,
        #[source]
        source: io::Error,
    },
}

/// Why a received VRRP packet was dropped by [`crate::vrrp::packet::Repr::parse`].
///
/// Each variant maps to a counter reason (see [`PacketError::reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// Shorter than the fixed VRRP header.
    #[error("packet of {len} bytes is shorter than the VRRP header")]
    Truncated { len: usize },
    /// Version other than 2 or 3.
    #[error("unsupported VRRP version {0}")]
    Version(u8),
    /// Type other than 1 (advertisement).
    #[error("unsupported VRRP message type {0}")]
    Type(u8),
    /// Address family of the IP header does not fit (v2 over IPv6, mixed src/dst).
    #[error("VRRP version {version} cannot be carried between {src} and {dst}")]
    Family {
        version: u8,
        src: IpAddr,
        dst: IpAddr,
    },
    /// The address count does not match the packet length.
    #[error("{count} addresses do not fit a packet of {len} bytes")]
    AddressCount { count: u8, len: usize },
    /// VRRPv2 authentication other than none.
    #[error("unsupported VRRPv2 authentication {0:?}")]
    Auth(AuthType),
    /// Advertisement interval of zero.
    #[error("advertisement interval of zero")]
    Interval,
    /// Bad checksum.
    #[error("bad checksum {0:#06x}")]
    Checksum(u16),
}

impl PacketError {
    /// The counter reason, as shown in [`crate::role::Counters::invalid`].
    pub fn reason(&self) -> &'static str {
        match self {
            PacketError::Truncated { .. } => "length",
            PacketError::Version(_) => "version",
            PacketError::Type(_) => "type",
            PacketError::Family { .. } => "family",
            PacketError::AddressCount { .. } => "address-count",
            PacketError::Auth(_) => "auth",
            PacketError::Interval => "interval",
            PacketError::Checksum(_) => "checksum",
        }
    }
}
