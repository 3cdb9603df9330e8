//! vipmgr: the kernel side of directord, and the only crate that changes kernel
//! state.
//!
//! - [`address`]: VIP addresses on interfaces over rtnetlink, idempotent add and
//!   remove, and [`AddressManager::reconcile`] from a desired set.
//! - [`announce`]: gratuitous ARP and unsolicited Neighbour Advertisement after
//!   a takeover.
//! - [`link`]: whether an interface is up, and a watcher that follows it.
//! - [`ipvs`]: the kernel's IPVS table over generic netlink: services, real
//!   servers, timeouts, the connection-sync daemon, counters.
//!
//! Every socket is opened in the network namespace of the calling thread.

pub mod address;
pub mod announce;
pub mod error;
pub mod ipvs;
pub mod link;

mod netlink;
mod sys;

pub use address::{AddressManager, Changes, Vip};
pub use announce::{AnnounceConfig, MacAddr, announce, announce_once};
pub use error::{Error, Result};
pub use link::{LinkState, link_is_up, link_state, watch_link};
