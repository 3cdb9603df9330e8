//! The crate's error type.

use std::io;

use crate::address::{Changes, Vip};

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while changing or reading kernel state.
///
/// Kernel failures keep the errno in their `io::Error` source
/// (`source.raw_os_error()`), so a caller can tell e.g. `EPERM` from `ENODEV`.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The route netlink socket could not be opened.
    #[error("cannot open a route netlink socket")]
    OpenNetlink {
        #[source]
        source: io::Error,
    },

    /// Looking an interface up failed (not "it does not exist": that is `LinkNotFound`).
    #[error("cannot look up interface {interface}")]
    LookupLink {
        interface: String,
        #[source]
        source: io::Error,
    },

    /// There is no interface of that name in this network namespace.
    #[error("no interface named {interface}")]
    LinkNotFound { interface: String },

    /// Dumping an interface's addresses failed.
    #[error("cannot list the addresses of {interface}")]
    ListAddresses {
        interface: String,
        #[source]
        source: io::Error,
    },

    /// The VIP cannot be put on an interface as given.
    #[error("invalid VIP {vip}: {reason}")]
    InvalidVip { vip: Vip, reason: &'static str },

    /// Adding the VIP failed.
    #[error("cannot add VIP {vip}")]
    AddVip {
        vip: Vip,
        #[source]
        source: io::Error,
    },

    /// Removing the VIP failed.
    #[error("cannot remove VIP {vip}")]
    RemoveVip {
        vip: Vip,
        #[source]
        source: io::Error,
    },

    /// Checking whether the VIP is held failed.
    #[error("cannot check whether VIP {vip} is held")]
    CheckVip {
        vip: Vip,
        #[source]
        source: io::Error,
    },

    /// Sending a gratuitous ARP or unsolicited neighbour advertisement failed.
    #[error("cannot announce VIP {vip}")]
    AnnounceVip {
        vip: Vip,
        #[source]
        source: io::Error,
    },

    /// Some steps of a reconcile failed; the others were applied (`applied`).
    /// The next reconcile with the same lists retries only what is still missing.
    #[error(
        "cannot reconcile VIPs: {} change(s) failed ({} added, {} removed); first: {}",
        .failed.len(),
        .applied.added.len(),
        .applied.removed.len(),
        first_failure(.failed)
    )]
    Reconcile {
        applied: Changes,
        failed: Vec<Error>,
    },

    /// A frame could not be written (the buffer is too short).
    #[error("cannot build {protocol} frame: {reason}")]
    EmitFrame {
        protocol: &'static str,
        reason: &'static str,
    },

    /// A captured frame is not the announcement it should be.
    #[error("malformed {protocol} frame: {reason}")]
    ParseFrame {
        protocol: &'static str,
        reason: &'static str,
    },

    /// Setting up the link watcher failed.
    #[error("cannot watch interface {interface}")]
    WatchLink {
        interface: String,
        #[source]
        source: io::Error,
    },
}

/// The first failure with its causes, for `Reconcile`'s one-line message.
fn first_failure(failed: &[Error]) -> String {
    let Some(first) = failed.first() else {
        return String::new();
    };
    let mut text = first.to_string();
    let mut source = std::error::Error::source(first);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
