//! The crate's error type.

use std::{io, net::SocketAddr};

use crate::{
    address::{Changes, Vip},
    ipvs::{Op, ServiceKey, SyncRole, refusal},
};

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

    /// The generic netlink socket for IPVS could not be opened or the `IPVS`
    /// family could not be looked up.
    #[error("cannot open IPVS over generic netlink")]
    OpenIpvs {
        #[source]
        source: io::Error,
    },

    /// The kernel has no IPVS: the `IPVS` generic netlink family is not
    /// registered, even after `modprobe ip_vs`.
    #[error("this kernel has no IPVS (is the ip_vs module available?)")]
    IpvsUnavailable {
        #[source]
        source: io::Error,
    },

    /// A service cannot be programmed as given; `field` names what is wrong.
    #[error("invalid IPVS service {service}: {field}: {reason}")]
    InvalidService {
        service: ServiceKey,
        field: &'static str,
        reason: String,
    },

    /// A destination cannot be programmed as given; `field` names what is wrong.
    #[error("invalid real server {destination} of IPVS service {service}: {field}: {reason}")]
    InvalidDestination {
        service: ServiceKey,
        destination: SocketAddr,
        field: &'static str,
        reason: String,
    },

    /// A sync daemon cannot be started as given; `field` names what is wrong.
    #[error("invalid IPVS {role} sync daemon: {field}: {reason}")]
    InvalidSyncDaemon {
        role: SyncRole,
        field: &'static str,
        reason: String,
    },

    /// Reading IPVS's version and table size failed.
    #[error("cannot read IPVS info")]
    GetIpvsInfo {
        #[source]
        source: io::Error,
    },

    /// Dumping the virtual services failed.
    #[error("cannot list IPVS services")]
    ListServices {
        #[source]
        source: io::Error,
    },

    /// Reading one virtual service failed.
    #[error("cannot read IPVS service {service}")]
    GetService {
        service: ServiceKey,
        #[source]
        source: io::Error,
    },

    /// The kernel refused to add the service.
    #[error("cannot add IPVS service {service}{}", refusal(Op::AddService, source))]
    AddService {
        service: ServiceKey,
        #[source]
        source: io::Error,
    },

    /// The kernel refused to change the service.
    #[error(
        "cannot edit IPVS service {service}{}",
        refusal(Op::EditService, source)
    )]
    EditService {
        service: ServiceKey,
        #[source]
        source: io::Error,
    },

    /// The kernel refused to remove the service.
    #[error(
        "cannot remove IPVS service {service}{}",
        refusal(Op::RemoveService, source)
    )]
    RemoveService {
        service: ServiceKey,
        #[source]
        source: io::Error,
    },

    /// Dumping the real servers of a service failed.
    #[error("cannot list the real servers of IPVS service {service}")]
    ListDestinations {
        service: ServiceKey,
        #[source]
        source: io::Error,
    },

    /// The kernel refused to add the real server.
    #[error(
        "cannot add real server {destination} to IPVS service {service}{}",
        refusal(Op::AddDestination, source)
    )]
    AddDestination {
        service: ServiceKey,
        destination: SocketAddr,
        #[source]
        source: io::Error,
    },

    /// The kernel refused to change the real server.
    #[error(
        "cannot edit real server {destination} of IPVS service {service}{}",
        refusal(Op::EditDestination, source)
    )]
    EditDestination {
        service: ServiceKey,
        destination: SocketAddr,
        #[source]
        source: io::Error,
    },

    /// The kernel refused to remove the real server.
    #[error(
        "cannot remove real server {destination} from IPVS service {service}{}",
        refusal(Op::RemoveDestination, source)
    )]
    RemoveDestination {
        service: ServiceKey,
        destination: SocketAddr,
        #[source]
        source: io::Error,
    },

    /// Reading the connection timeouts failed.
    #[error("cannot read the IPVS timeouts")]
    GetTimeouts {
        #[source]
        source: io::Error,
    },

    /// Setting the connection timeouts failed.
    #[error("cannot set the IPVS timeouts")]
    SetTimeouts {
        #[source]
        source: io::Error,
    },

    /// Listing the sync daemons failed.
    #[error("cannot list the IPVS sync daemons")]
    ListSyncDaemons {
        #[source]
        source: io::Error,
    },

    /// The kernel refused to start the sync daemon.
    #[error(
        "cannot start the IPVS {role} sync daemon on {interface}{}",
        refusal(Op::StartDaemon, source)
    )]
    StartSyncDaemon {
        role: SyncRole,
        interface: String,
        #[source]
        source: io::Error,
    },

    /// The kernel refused to stop the sync daemon.
    #[error(
        "cannot stop the IPVS {role} sync daemon{}",
        refusal(Op::StopDaemon, source)
    )]
    StopSyncDaemon {
        role: SyncRole,
        #[source]
        source: io::Error,
    },

    /// Zeroing the counters (of one service, or all) failed.
    #[error("cannot zero the IPVS counters{}", .service.map(|s| format!(" of {s}")).unwrap_or_default())]
    ZeroStats {
        service: Option<ServiceKey>,
        #[source]
        source: io::Error,
    },

    /// Emptying the IPVS table failed.
    #[error("cannot flush the IPVS table")]
    FlushIpvs {
        #[source]
        source: io::Error,
    },

    /// The kernel sent an IPVS message vipmgr cannot read.
    #[error("malformed {what}: {reason}")]
    ParseIpvs { what: &'static str, reason: String },
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
