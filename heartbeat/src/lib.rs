//! Failover protocols for directord.
//!
//! - [`vrrp`]: VRRP v3 (RFC 5798) and v2 (RFC 3768), wire-compatible with keepalived.
//! - [`linuxha`]: the UDP 694 heartbeat of Linux-HA heartbeat, with a heartbeat 3
//!   node as a possible peer.
//!
//! Each protocol has a typed wire module, a sans-IO state machine and a thin socket
//! driver that runs on its own thread and talks to the supervisor through a
//! [`role::FailoverHandle`].

pub mod error;
pub mod linuxha;
pub mod role;
mod sys;
mod thread;
pub mod vrrp;

pub use error::{Error, PacketError};
pub use role::{Command, FailoverHandle, LinkStatus, Role, Status, Transition};
