//! IPVS, the kernel's layer-4 load balancer, over generic netlink (family
//! `"IPVS"`, `include/uapi/linux/ip_vs.h`).
//!
//! [`Ipvs`] is the handle: it creates, edits, removes and lists virtual services
//! ([`Service`]) and their real servers ([`Destination`]), sets the connection
//! [`Timeouts`], runs the connection-sync daemon ([`SyncDaemon`]), zeroes and
//! reads the counters ([`Stats`]). [`Ipvs::apply`] sends many changes pipelined,
//! several to a datagram; [`Ipvs::reconcile`] brings the services a caller
//! manages to a desired state ([`VirtualService`]) with the fewest changes,
//! leaving every other service alone ([`plan`] is the pure diff).
//!
//! The messages themselves are modelled one kernel object per module, as a
//! header plus a list of attributes whose enums keep unknown attributes
//! (`Other`): [`IpvsMessage`], [`ServiceAttribute`] (`service`),
//! [`DestAttribute`] (`dest`), [`DaemonAttribute`] (`daemon`),
//! [`StatsAttribute`] (`stats`). The typed values ([`Service`], ...) convert to and
//! from those lists.
//!
//! All calls block (one netlink round trip each): call them from a dedicated
//! thread or through `tokio::task::spawn_blocking`. IPVS is per network
//! namespace; the socket belongs to the namespace of the thread that called
//! [`Ipvs::open`].

mod daemon;
mod dest;
mod genl;
mod message;
mod nla;
mod reconcile;
mod service;
mod stats;

use std::{io, net::SocketAddr, process::Command as Process};

use neli::consts::nl::NlmF;

pub use daemon::{DaemonAttribute, SyncDaemon, SyncRole};
pub use dest::{
    DestAttribute, Destination, DestinationEntry, Forward, Tunnel, TunnelChecksum, TunnelType,
};
pub use message::{Command, IPVS_GENL_VERSION, Info, IpvsAttribute, IpvsMessage, Timeouts};
pub use nla::RawAttribute;
pub use reconcile::{Failure, Report, VirtualService, plan};
pub use service::{
    Family, Persistence, Protocol, Scheduler, SchedulerFlags, Service, ServiceAttribute,
    ServiceEntry, ServiceKey,
};
pub use stats::{Stats, StatsAttribute};

use crate::error::{Error, Result};
use genl::GenlSocket;

/// `IPVS_GENL_NAME`.
pub const IPVS_GENL_NAME: &str = "IPVS";

/// A malformed-message error.
pub(crate) fn malformed(what: &'static str, reason: impl Into<String>) -> Error {
    Error::ParseIpvs {
        what,
        reason: reason.into(),
    }
}

/// One change to the IPVS table, for [`Ipvs::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    AddService(Service),
    EditService(Service),
    RemoveService(ServiceKey),
    AddDestination {
        service: ServiceKey,
        destination: Destination,
    },
    EditDestination {
        service: ServiceKey,
        destination: Destination,
    },
    RemoveDestination {
        service: ServiceKey,
        address: SocketAddr,
    },
}

impl Change {
    /// The request, after checking what can be checked before the kernel sees it.
    pub fn message(&self) -> Result<IpvsMessage> {
        let service_nest = |svc: &Service| IpvsAttribute::Service(svc.to_attributes());
        let key_nest = |key: &ServiceKey| IpvsAttribute::Service(key.to_attributes());
        Ok(match self {
            Change::AddService(svc) => {
                svc.validate()?;
                IpvsMessage::request(Command::NewService, vec![service_nest(svc)])
            }
            Change::EditService(svc) => {
                svc.validate()?;
                IpvsMessage::request(Command::SetService, vec![service_nest(svc)])
            }
            Change::RemoveService(key) => {
                IpvsMessage::request(Command::DelService, vec![key_nest(key)])
            }
            Change::AddDestination {
                service,
                destination,
            } => {
                destination.validate(service)?;
                IpvsMessage::request(
                    Command::NewDest,
                    vec![
                        key_nest(service),
                        IpvsAttribute::Destination(destination.to_attributes()),
                    ],
                )
            }
            Change::EditDestination {
                service,
                destination,
            } => {
                destination.validate(service)?;
                IpvsMessage::request(
                    Command::SetDest,
                    vec![
                        key_nest(service),
                        IpvsAttribute::Destination(destination.to_attributes()),
                    ],
                )
            }
            Change::RemoveDestination { service, address } => IpvsMessage::request(
                Command::DelDest,
                vec![
                    key_nest(service),
                    IpvsAttribute::Destination(Destination::key_attributes(*address)),
                ],
            ),
        })
    }

    /// The error for this change failing in the kernel.
    fn error(&self, source: io::Error) -> Error {
        match self {
            Change::AddService(svc) => Error::AddService {
                service: svc.key,
                source,
            },
            Change::EditService(svc) => Error::EditService {
                service: svc.key,
                source,
            },
            Change::RemoveService(key) => Error::RemoveService {
                service: *key,
                source,
            },
            Change::AddDestination {
                service,
                destination,
            } => Error::AddDestination {
                service: *service,
                destination: destination.address,
                source,
            },
            Change::EditDestination {
                service,
                destination,
            } => Error::EditDestination {
                service: *service,
                destination: destination.address,
                source,
            },
            Change::RemoveDestination { service, address } => Error::RemoveDestination {
                service: *service,
                destination: *address,
                source,
            },
        }
    }
}

/// An IPVS operation, for the wording of kernel refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    AddService,
    EditService,
    RemoveService,
    AddDestination,
    EditDestination,
    RemoveDestination,
    StartDaemon,
    StopDaemon,
}

/// What the kernel's errno means for that operation (as ipvsadm explains it),
/// as ": meaning" for an error message, or "" when it means nothing special.
pub(crate) fn refusal(op: Op, source: &io::Error) -> &'static str {
    let Some(errno) = source.raw_os_error() else {
        return "";
    };
    match (op, errno) {
        (_, libc::EPERM) => ": permission denied (needs CAP_NET_ADMIN)",
        (Op::AddService, libc::EEXIST) => ": the service already exists",
        (Op::AddService | Op::EditService, libc::ENOENT) => {
            ": no such scheduler or persistence engine in this kernel"
        }
        (Op::AddService, libc::EPROTONOSUPPORT) => ": IPVS does not support that protocol",
        (Op::AddService | Op::AddDestination, libc::EAFNOSUPPORT) => {
            ": address family not supported (IPv6 disabled, or a non-tunnel real server of \
             another family)"
        }
        (Op::EditService | Op::RemoveService, libc::ESRCH) => ": no such service",
        (Op::AddDestination | Op::EditDestination | Op::RemoveDestination, libc::ESRCH) => {
            ": the service does not exist"
        }
        (Op::AddDestination, libc::EEXIST) => ": the real server already exists",
        (Op::EditDestination | Op::RemoveDestination, libc::ENOENT) => ": no such real server",
        (Op::AddDestination | Op::EditDestination, libc::ERANGE) => {
            ": weight or thresholds out of range (lower above upper?)"
        }
        (Op::StartDaemon, libc::EEXIST) => ": that sync daemon is already running",
        (Op::StartDaemon, libc::ENODEV) => ": no such interface",
        (Op::StopDaemon, libc::ESRCH) => ": that sync daemon is not running",
        (_, libc::EINVAL) => ": the kernel refused the values (bad address, flags or sizes)",
        (_, libc::EOPNOTSUPP) => ": not supported with these settings",
        _ => "",
    }
}

/// A handle on the kernel's IPVS in one network namespace.
#[derive(Debug)]
pub struct Ipvs {
    socket: GenlSocket,
    family: u16,
}

impl Ipvs {
    /// Opens a generic netlink socket and looks up the `IPVS` family. When the
    /// family is missing, runs `modprobe ip_vs` once (as ipvsadm does) and
    /// looks again.
    pub fn open() -> Result<Self> {
        let mut socket = GenlSocket::open().map_err(|source| Error::OpenIpvs { source })?;
        let family = match socket.resolve_family(IPVS_GENL_NAME) {
            Ok(id) => id,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                load_ip_vs_module();
                socket
                    .resolve_family(IPVS_GENL_NAME)
                    .map_err(|source| Error::IpvsUnavailable { source })?
            }
            Err(source) => return Err(Error::OpenIpvs { source }),
        };
        Ok(Ipvs { socket, family })
    }

    /// The family id the kernel gave IPVS.
    pub fn family_id(&self) -> u16 {
        self.family
    }

    /// Sends one message as it is and returns the generic netlink payloads of
    /// the replies (parse them with [`IpvsMessage::parse`]); a kernel error is
    /// its errno. For what the typed methods do not cover.
    pub fn request(&mut self, message: &IpvsMessage, flags: NlmF) -> io::Result<Vec<Vec<u8>>> {
        self.socket
            .transact(self.family, flags, &message.to_bytes())
    }

    fn query(
        &mut self,
        message: IpvsMessage,
        flags: NlmF,
        error: impl FnOnce(io::Error) -> Error,
    ) -> Result<Vec<IpvsMessage>> {
        let replies = self.request(&message, flags).map_err(error)?;
        replies.iter().map(|r| IpvsMessage::parse(r)).collect()
    }

    /// IPVS's version and connection table size.
    pub fn info(&mut self) -> Result<Info> {
        let replies = self.query(
            IpvsMessage::request(Command::GetInfo, vec![]),
            NlmF::empty(),
            |source| Error::GetIpvsInfo { source },
        )?;
        let reply = replies
            .first()
            .ok_or_else(|| malformed("IPVS info", "no reply"))?;
        Info::from_attributes(&reply.attributes)
    }

    /// Every virtual service, with its counters.
    pub fn services(&mut self) -> Result<Vec<ServiceEntry>> {
        let replies = self.query(
            IpvsMessage::request(Command::GetService, vec![]),
            NlmF::DUMP,
            |source| Error::ListServices { source },
        )?;
        replies
            .iter()
            .filter_map(IpvsMessage::service)
            .map(Service::from_attributes)
            .collect()
    }

    /// One virtual service, or `None` when the kernel has no such service.
    pub fn service(&mut self, key: &ServiceKey) -> Result<Option<ServiceEntry>> {
        let request = IpvsMessage::request(
            Command::GetService,
            vec![IpvsAttribute::Service(key.to_attributes())],
        );
        match self.request(&request, NlmF::empty()) {
            Ok(replies) => replies
                .iter()
                .map(|r| IpvsMessage::parse(r))
                .collect::<Result<Vec<_>>>()?
                .iter()
                .find_map(IpvsMessage::service)
                .map(Service::from_attributes)
                .transpose(),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(None),
            Err(source) => Err(Error::GetService {
                service: *key,
                source,
            }),
        }
    }

    /// Applies one change; see [`Change`].
    pub fn change(&mut self, change: &Change) -> Result<()> {
        let message = change.message()?;
        self.request(&message, NlmF::ACK)
            .map(drop)
            .map_err(|source| change.error(source))
    }

    /// Adds a virtual service (`ipvsadm -A`).
    pub fn add_service(&mut self, service: &Service) -> Result<()> {
        self.change(&Change::AddService(service.clone()))
    }

    /// Changes a virtual service's scheduler, flags or persistence (`ipvsadm -E`).
    pub fn edit_service(&mut self, service: &Service) -> Result<()> {
        self.change(&Change::EditService(service.clone()))
    }

    /// Removes a virtual service and its real servers (`ipvsadm -D`).
    pub fn remove_service(&mut self, key: &ServiceKey) -> Result<()> {
        self.change(&Change::RemoveService(*key))
    }

    /// The real servers of a service, with their connections and counters (none
    /// when there is no such service).
    pub fn destinations(&mut self, service: &ServiceKey) -> Result<Vec<DestinationEntry>> {
        let replies = self.query(
            IpvsMessage::request(
                Command::GetDest,
                vec![IpvsAttribute::Service(service.to_attributes())],
            ),
            NlmF::DUMP,
            |source| Error::ListDestinations {
                service: *service,
                source,
            },
        )?;
        replies
            .iter()
            .filter_map(IpvsMessage::destination)
            .map(|attrs| Destination::from_attributes(attrs, service.family()))
            .collect()
    }

    /// Adds a real server to a service (`ipvsadm -a`).
    pub fn add_destination(
        &mut self,
        service: &ServiceKey,
        destination: &Destination,
    ) -> Result<()> {
        self.change(&Change::AddDestination {
            service: *service,
            destination: *destination,
        })
    }

    /// Changes a real server's forwarding, weight or thresholds (`ipvsadm -e`).
    pub fn edit_destination(
        &mut self,
        service: &ServiceKey,
        destination: &Destination,
    ) -> Result<()> {
        self.change(&Change::EditDestination {
            service: *service,
            destination: *destination,
        })
    }

    /// Removes a real server from a service (`ipvsadm -d`).
    pub fn remove_destination(&mut self, service: &ServiceKey, address: SocketAddr) -> Result<()> {
        self.change(&Change::RemoveDestination {
            service: *service,
            address,
        })
    }

    /// Applies many changes, pipelined: several requests go in one datagram and
    /// the kernel handles each on its own, so a refused change does not stop the
    /// others. Returns one outcome per change, in order.
    pub fn apply(&mut self, changes: &[Change]) -> Vec<Result<()>> {
        let mut outcomes: Vec<Option<Result<()>>> = Vec::with_capacity(changes.len());
        let mut payloads = Vec::with_capacity(changes.len());
        let mut sent = Vec::with_capacity(changes.len());
        for (index, change) in changes.iter().enumerate() {
            match change.message() {
                Ok(message) => {
                    payloads.push(message.to_bytes());
                    sent.push(index);
                    outcomes.push(None);
                }
                Err(e) => outcomes.push(Some(Err(e))),
            }
        }
        let results = self.socket.transact_many(self.family, &payloads);
        for (index, result) in sent.into_iter().zip(results) {
            outcomes[index] = Some(result.map_err(|source| changes[index].error(source)));
        }
        outcomes.into_iter().map(|o| o.unwrap_or(Ok(()))).collect()
    }

    /// The connection timeouts (`ipvsadm -L --timeout`).
    pub fn timeouts(&mut self) -> Result<Timeouts> {
        let replies = self.query(
            IpvsMessage::request(Command::GetConfig, vec![]),
            NlmF::empty(),
            |source| Error::GetTimeouts { source },
        )?;
        let reply = replies
            .first()
            .ok_or_else(|| malformed("IPVS config", "no reply"))?;
        Ok(Timeouts::from_attributes(&reply.attributes))
    }

    /// Sets the connection timeouts; a 0 leaves that one as it is
    /// (`ipvsadm --set`).
    pub fn set_timeouts(&mut self, timeouts: &Timeouts) -> Result<()> {
        let request = IpvsMessage::request(Command::SetConfig, timeouts.to_attributes());
        self.request(&request, NlmF::ACK)
            .map(drop)
            .map_err(|source| Error::SetTimeouts { source })
    }

    /// The running sync daemons (`ipvsadm -L --daemon`).
    pub fn sync_daemons(&mut self) -> Result<Vec<SyncDaemon>> {
        let replies = self.query(
            IpvsMessage::request(Command::GetDaemon, vec![]),
            NlmF::DUMP,
            |source| Error::ListSyncDaemons { source },
        )?;
        replies
            .iter()
            .filter_map(IpvsMessage::daemon)
            .map(SyncDaemon::from_attributes)
            .collect()
    }

    /// Starts a sync daemon (`ipvsadm --start-daemon`).
    pub fn start_sync_daemon(&mut self, daemon: &SyncDaemon) -> Result<()> {
        daemon.validate()?;
        let request = IpvsMessage::request(
            Command::NewDaemon,
            vec![IpvsAttribute::Daemon(daemon.to_attributes())],
        );
        self.request(&request, NlmF::ACK)
            .map(drop)
            .map_err(|source| Error::StartSyncDaemon {
                role: daemon.role,
                interface: daemon.interface.clone(),
                source,
            })
    }

    /// Stops the master or the backup sync daemon (`ipvsadm --stop-daemon`).
    pub fn stop_sync_daemon(&mut self, role: SyncRole) -> Result<()> {
        let request = IpvsMessage::request(
            Command::DelDaemon,
            vec![IpvsAttribute::Daemon(role.attributes())],
        );
        self.request(&request, NlmF::ACK)
            .map(drop)
            .map_err(|source| Error::StopSyncDaemon { role, source })
    }

    /// Zeroes the counters of one service, or of all (`ipvsadm -Z`).
    pub fn zero(&mut self, service: Option<&ServiceKey>) -> Result<()> {
        let attributes = service
            .map(|key| vec![IpvsAttribute::Service(key.to_attributes())])
            .unwrap_or_default();
        let request = IpvsMessage::request(Command::Zero, attributes);
        self.request(&request, NlmF::ACK)
            .map(drop)
            .map_err(|source| Error::ZeroStats {
                service: service.copied(),
                source,
            })
    }

    /// Removes every service and real server (`ipvsadm -C`). The reconciler never
    /// does this; it is for tests and for an operator's explicit reset.
    pub fn flush(&mut self) -> Result<()> {
        let request = IpvsMessage::request(Command::Flush, vec![]);
        self.request(&request, NlmF::ACK)
            .map(drop)
            .map_err(|source| Error::FlushIpvs { source })
    }
}

/// `modprobe ip_vs`, quietly; whether it worked shows in the second lookup.
fn load_ip_vs_module() {
    for modprobe in ["/sbin/modprobe", "/usr/sbin/modprobe", "modprobe"] {
        if let Ok(status) = Process::new(modprobe).args(["-q", "ip_vs"]).status() {
            tracing::debug!(%status, "modprobe ip_vs");
            return;
        }
    }
}

/// Bytes from a hex dump; whitespace and line breaks are ignored.
#[cfg(test)]
pub(crate) fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).expect("ascii");
            u8::from_str_radix(pair, 16).expect("hex digits")
        })
        .collect()
}
