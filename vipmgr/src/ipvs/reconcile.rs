//! Reconciliation: the IPVS table a caller wants vs the one the kernel holds →
//! the fewest changes that turn one into the other.
//!
//! [`plan`] is the pure diff; [`Ipvs::reconcile`] dumps the table, plans and
//! applies. Only the services in scope are looked at: those desired plus those
//! the caller names as managed (say, the services of the previous config, so
//! that a service taken out of the config leaves the kernel). Every other
//! service in the kernel — another tool's — is left alone. A service in scope
//! owns its real servers: one the desired state does not list is removed.
//!
//! What is already right costs nothing: the same desired state applied twice
//! makes no change request the second time, only the dump. A changed weight is
//! one `SetDest`; a changed scheduler one `SetService`. Nothing is ever flushed.
//!
//! The kernel may refuse one change (a scheduler it lacks, an address it does not
//! route); that becomes a [`Failure`] naming the service, the real server and the
//! field, and every other change still applies ([`Ipvs::apply`] handles each
//! request on its own). A refused service add skips that service's real servers
//! rather than reporting each of them as refused too.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::SocketAddr,
};

use serde::{Serialize, Serializer};

use super::{Change, Destination, Forward, Ipvs, Scheduler, Service, ServiceKey, TunnelType};
use crate::error::{Error, Result};

/// Up to this many services in scope are read one by one (`GetService`);
/// more, and the whole service list is dumped at once.
const GET_ONE_BY_ONE: usize = 8;

/// A virtual service with its real servers: what the caller wants, or what the
/// kernel holds (without counters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VirtualService {
    pub service: Service,
    pub destinations: Vec<Destination>,
}

impl VirtualService {
    pub fn new(service: Service, destinations: Vec<Destination>) -> Self {
        VirtualService {
            service,
            destinations,
        }
    }

    pub fn key(&self) -> ServiceKey {
        self.service.key
    }
}

/// The changes that turn `current` into `desired` for every service in scope
/// (the desired ones and `managed`), in the order they can be applied: service
/// removals, adds and edits first, then for each service its real servers'
/// removals, edits and adds. Services of `current` outside the scope are not
/// touched; a managed service that is not desired is removed (with its real
/// servers, in one change).
///
/// If `desired` lists a service or a real server twice, the last one wins.
pub fn plan(
    desired: &[VirtualService],
    current: &[VirtualService],
    managed: &BTreeSet<ServiceKey>,
) -> Vec<Change> {
    let desired: BTreeMap<ServiceKey, &VirtualService> =
        desired.iter().map(|v| (v.key(), v)).collect();
    let current: BTreeMap<ServiceKey, &VirtualService> =
        current.iter().map(|v| (v.key(), v)).collect();

    let mut service_changes = Vec::new();
    let mut destination_changes = Vec::new();
    for key in managed.iter().filter(|k| !desired.contains_key(k)) {
        if current.contains_key(key) {
            service_changes.push(Change::RemoveService(*key));
        }
    }
    for (key, want) in &desired {
        let have = current.get(key);
        match have {
            None => service_changes.push(Change::AddService(want.service.clone())),
            Some(have) if have.service != want.service => {
                service_changes.push(Change::EditService(want.service.clone()))
            }
            Some(_) => {}
        }
        let have: BTreeMap<SocketAddr, &Destination> = have
            .map(|h| h.destinations.iter().map(|d| (d.address, d)).collect())
            .unwrap_or_default();
        let want: BTreeMap<SocketAddr, &Destination> =
            want.destinations.iter().map(|d| (d.address, d)).collect();
        // Per service: removals, then edits, then adds (as an operator would).
        let mut edits = Vec::new();
        let mut adds = Vec::new();
        for address in have.keys().filter(|a| !want.contains_key(a)) {
            destination_changes.push(Change::RemoveDestination {
                service: *key,
                address: *address,
            });
        }
        for (address, destination) in &want {
            let destination = **destination;
            match have.get(address) {
                None => adds.push(Change::AddDestination {
                    service: *key,
                    destination,
                }),
                Some(had) if **had != destination => edits.push(Change::EditDestination {
                    service: *key,
                    destination,
                }),
                Some(_) => {}
            }
        }
        destination_changes.extend(edits);
        destination_changes.extend(adds);
    }
    service_changes.extend(destination_changes);
    service_changes
}

/// What a reconcile did.
#[derive(Debug, Default)]
pub struct Report {
    /// The changes the kernel accepted, in the order they were made.
    pub applied: Vec<Change>,
    /// The changes it refused (or that could not be sent), one per change.
    pub failures: Vec<Failure>,
    /// Real-server changes not attempted because their service could not be
    /// added (the service's failure says why).
    pub skipped: usize,
}

impl Report {
    /// Nothing was refused.
    pub fn is_clean(&self) -> bool {
        self.failures.is_empty()
    }
}

/// One refused change: which service, which real server (if any), and the field
/// most likely at fault, as vipmgr names it (`scheduler`, `scheduler_flags`,
/// `persistence`, `persistence.netmask`, `persistence_engine`, `protocol`,
/// `address`, `fwmark`, `weight`, `forward`, `lower_threshold`, or `service` /
/// `destination` when the kernel's answer points at nothing in particular).
#[derive(Debug, Serialize)]
pub struct Failure {
    pub service: ServiceKey,
    pub destination: Option<SocketAddr>,
    pub field: &'static str,
    /// The change that was refused.
    #[serde(skip)]
    pub change: Change,
    #[serde(serialize_with = "error_chain")]
    pub error: Error,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.service)?;
        if let Some(d) = self.destination {
            write!(f, " real server {d}")?;
        }
        write!(f, ": {}: {}", self.field, chain(&self.error))
    }
}

/// The error with its causes, "outer: inner".
fn chain(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // The kernel's refusal is already explained in the outer message.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn error_chain<S: Serializer>(error: &Error, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&chain(error))
}

/// The field the kernel most likely refused: it only says an errno, so this
/// reads it against the change (and, for an edit, what the change changes).
fn refused_field(change: &Change, current: Option<&Service>, error: &Error) -> &'static str {
    match error {
        Error::InvalidService { field, .. } | Error::InvalidDestination { field, .. } => {
            return field;
        }
        _ => {}
    }
    let errno = errno(error);
    match change {
        Change::AddService(svc) | Change::EditService(svc) => match errno {
            Some(libc::ENOENT) => {
                let scheduler_changed = current.is_none_or(|c| c.scheduler != svc.scheduler);
                let established =
                    !matches!(svc.scheduler, Scheduler::Other(_) | Scheduler::TwoChoices);
                if svc.persistence_engine.is_some() && (!scheduler_changed || established) {
                    "persistence_engine"
                } else {
                    "scheduler"
                }
            }
            Some(libc::EPROTONOSUPPORT) => "protocol",
            Some(libc::EAFNOSUPPORT) => "address",
            Some(libc::EINVAL) => {
                if svc.persistence.is_some()
                    && current.is_none_or(|c| c.persistence != svc.persistence)
                {
                    "persistence.netmask"
                } else if !svc.scheduler_flags.is_empty()
                    && current.is_none_or(|c| c.scheduler_flags != svc.scheduler_flags)
                {
                    "scheduler_flags"
                } else {
                    "address"
                }
            }
            _ => "service",
        },
        Change::AddDestination { destination, .. }
        | Change::EditDestination { destination, .. } => match errno {
            Some(libc::ERANGE) => "lower_threshold",
            Some(libc::EOPNOTSUPP) => "forward",
            Some(libc::EINVAL | libc::EAFNOSUPPORT) => match destination.forward {
                Forward::Tunnel(t) if t.kind != TunnelType::Ipip => "forward",
                _ => "address",
            },
            _ => "destination",
        },
        Change::RemoveService(_) => "service",
        Change::RemoveDestination { .. } => "destination",
    }
}

/// The errno under a vipmgr error.
fn errno(error: &Error) -> Option<i32> {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return io.raw_os_error();
        }
        source = cause.source();
    }
    None
}

fn target(change: &Change) -> (ServiceKey, Option<SocketAddr>) {
    match change {
        Change::AddService(s) | Change::EditService(s) => (s.key, None),
        Change::RemoveService(k) => (*k, None),
        Change::AddDestination {
            service,
            destination,
        }
        | Change::EditDestination {
            service,
            destination,
        } => (*service, Some(destination.address)),
        Change::RemoveDestination { service, address } => (*service, Some(*address)),
    }
}

impl Ipvs {
    /// The services of `scope` that the kernel holds, each with its real servers
    /// (counters left out), sorted by key and by address. Services outside the
    /// scope are not read.
    pub fn table(&mut self, scope: &BTreeSet<ServiceKey>) -> Result<Vec<VirtualService>> {
        let services: Vec<Service> = if scope.len() <= GET_ONE_BY_ONE {
            let mut found = Vec::with_capacity(scope.len());
            for key in scope {
                if let Some(entry) = self.service(key)? {
                    found.push(entry.service);
                }
            }
            found
        } else {
            self.services()?
                .into_iter()
                .map(|e| e.service)
                .filter(|s| scope.contains(&s.key))
                .collect()
        };
        let mut table = services
            .into_iter()
            .map(|service| {
                let mut destinations: Vec<Destination> = self
                    .destinations(&service.key)?
                    .into_iter()
                    .map(|e| e.destination)
                    .collect();
                destinations.sort_by_key(|d| d.address);
                Ok(VirtualService {
                    service,
                    destinations,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        table.sort_by_key(VirtualService::key);
        Ok(table)
    }

    /// Brings the services in scope (those of `desired`, plus `managed`) to the
    /// desired state with the fewest changes; see the module documentation.
    /// Fails only when the table cannot be read; refused changes are in the
    /// report.
    pub fn reconcile(
        &mut self,
        desired: &[VirtualService],
        managed: &BTreeSet<ServiceKey>,
    ) -> Result<Report> {
        let mut scope = managed.clone();
        scope.extend(desired.iter().map(VirtualService::key));
        let current = self.table(&scope)?;
        let changes = plan(desired, &current, managed);
        Ok(self.apply_plan(changes, &current))
    }

    /// Applies a [`plan`] in two rounds: the services, then the real servers of
    /// those that exist.
    pub fn apply_plan(&mut self, changes: Vec<Change>, current: &[VirtualService]) -> Report {
        let mut report = Report::default();
        if changes.is_empty() {
            return report;
        }
        let current: BTreeMap<ServiceKey, &Service> =
            current.iter().map(|v| (v.key(), &v.service)).collect();
        let (services, destinations): (Vec<Change>, Vec<Change>) =
            changes.into_iter().partition(|c| {
                matches!(
                    c,
                    Change::AddService(_) | Change::EditService(_) | Change::RemoveService(_)
                )
            });
        let mut not_added = BTreeSet::new();
        let outcomes = self.apply(&services);
        for (change, outcome) in services.into_iter().zip(outcomes) {
            match outcome {
                Ok(()) => report.applied.push(change),
                Err(error) => {
                    if let Change::AddService(svc) = &change {
                        not_added.insert(svc.key);
                    }
                    let had = current.get(&target(&change).0).copied();
                    report.failures.push(failure(change, had, error));
                }
            }
        }
        let destinations: Vec<Change> = destinations
            .into_iter()
            .filter(|c| {
                let skip = not_added.contains(&target(c).0);
                report.skipped += usize::from(skip);
                !skip
            })
            .collect();
        let outcomes = self.apply(&destinations);
        for (change, outcome) in destinations.into_iter().zip(outcomes) {
            match outcome {
                Ok(()) => report.applied.push(change),
                Err(error) => report.failures.push(failure(change, None, error)),
            }
        }
        report
    }
}

fn failure(change: Change, current: Option<&Service>, error: Error) -> Failure {
    let (service, destination) = target(&change);
    Failure {
        service,
        destination,
        field: refused_field(&change, current, &error),
        change,
        error,
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::ipvs::{Family, Persistence, SchedulerFlags, Tunnel};

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn web() -> VirtualService {
        VirtualService::new(
            Service::new(
                ServiceKey::tcp(addr("192.0.2.100:80")),
                Scheduler::WeightedRoundRobin,
            ),
            vec![
                Destination::new(addr("10.0.1.11:80"), Forward::Masquerade, 100),
                Destination::new(addr("10.0.1.12:80"), Forward::Masquerade, 50),
            ],
        )
    }

    fn marked() -> VirtualService {
        let mut svc = Service::new(ServiceKey::fwmark(Family::Ipv4, 7), Scheduler::MaglevHash);
        svc.scheduler_flags = SchedulerFlags::MH_PORT;
        svc.persistence = Some(Persistence {
            timeout_secs: 300,
            prefix_len: 24,
        });
        VirtualService::new(
            svc,
            vec![Destination::new(addr("10.0.2.1:0"), Forward::Route, 1)],
        )
    }

    fn foreign() -> VirtualService {
        VirtualService::new(
            Service::new(
                ServiceKey::udp(addr("192.0.2.200:53")),
                Scheduler::RoundRobin,
            ),
            vec![Destination::new(addr("10.0.9.9:53"), Forward::Route, 1)],
        )
    }

    fn keys(v: &[VirtualService]) -> BTreeSet<ServiceKey> {
        v.iter().map(VirtualService::key).collect()
    }

    #[test]
    fn from_empty_adds_services_then_their_real_servers() {
        let desired = [web(), marked()];
        let changes = plan(&desired, &[], &keys(&desired));
        assert_eq!(changes.len(), 2 + 3);
        assert!(matches!(changes[0], Change::AddService(_)));
        assert!(matches!(changes[1], Change::AddService(_)));
        assert!(
            changes[2..]
                .iter()
                .all(|c| matches!(c, Change::AddDestination { .. }))
        );
    }

    #[test]
    fn the_same_state_twice_plans_nothing() {
        let desired = [web(), marked()];
        assert_eq!(plan(&desired, &desired, &keys(&desired)), []);
        // Order does not matter, on either side.
        let current = [marked(), web()];
        assert_eq!(plan(&desired, &current, &keys(&desired)), []);
    }

    #[test]
    fn a_changed_weight_is_one_edit() {
        let current = [web(), marked()];
        let mut desired = current.clone();
        desired[0].destinations[1].weight = 60;
        assert_eq!(
            plan(&desired, &current, &keys(&desired)),
            [Change::EditDestination {
                service: web().key(),
                destination: Destination::new(addr("10.0.1.12:80"), Forward::Masquerade, 60),
            }]
        );
    }

    #[test]
    fn a_changed_scheduler_or_persistence_is_one_service_edit() {
        let current = [web(), marked()];
        let mut desired = current.clone();
        desired[1].service.scheduler = Scheduler::SourceHash;
        desired[1].service.persistence = None;
        assert_eq!(
            plan(&desired, &current, &keys(&desired)),
            [Change::EditService(desired[1].service.clone())]
        );
    }

    #[test]
    fn real_servers_come_and_go_in_place() {
        let current = [web()];
        let mut desired = current.clone();
        desired[0].destinations.remove(0);
        desired[0].destinations.push(Destination::new(
            addr("10.0.1.13:80"),
            Forward::Masquerade,
            7,
        ));
        desired[0].destinations[0].forward = Forward::Route;
        let key = web().key();
        assert_eq!(
            plan(&desired, &current, &keys(&desired)),
            [
                Change::RemoveDestination {
                    service: key,
                    address: addr("10.0.1.11:80")
                },
                Change::EditDestination {
                    service: key,
                    destination: Destination::new(addr("10.0.1.12:80"), Forward::Route, 50),
                },
                Change::AddDestination {
                    service: key,
                    destination: Destination::new(addr("10.0.1.13:80"), Forward::Masquerade, 7),
                },
            ]
        );
    }

    #[test]
    fn services_outside_the_scope_are_left_alone() {
        // The kernel holds a service another tool made; the config does not name it.
        let current = [web(), foreign()];
        let desired = [web()];
        assert_eq!(plan(&desired, &current, &keys(&desired)), []);
        // Even with nothing desired at all.
        assert_eq!(plan(&[], &current, &BTreeSet::new()), []);
    }

    #[test]
    fn a_managed_service_no_longer_desired_is_removed_whole() {
        // The previous config had `marked`; the new one does not.
        let current = [web(), marked(), foreign()];
        let desired = [web()];
        let mut managed = keys(&desired);
        managed.insert(marked().key());
        assert_eq!(
            plan(&desired, &current, &managed),
            [Change::RemoveService(marked().key())]
        );
        // Already gone: nothing to do.
        assert_eq!(plan(&desired, &[web()], &managed), []);
    }

    #[test]
    fn a_moved_service_is_removed_and_added() {
        let current = [web()];
        let mut moved = web();
        moved.service.key = ServiceKey::tcp(addr("192.0.2.101:80"));
        let desired = [moved.clone()];
        let mut managed = keys(&desired);
        managed.insert(web().key());
        let changes = plan(&desired, &current, &managed);
        assert_eq!(changes[0], Change::RemoveService(web().key()));
        assert_eq!(changes[1], Change::AddService(moved.service.clone()));
        assert_eq!(changes.len(), 4);
    }

    #[test]
    fn tunnel_parameters_count_as_a_change() {
        let mut current = web();
        current.destinations[0].forward = Forward::Tunnel(Tunnel::IPIP);
        let mut desired = current.clone();
        desired.destinations[0].forward = Forward::Tunnel(Tunnel {
            kind: TunnelType::Gue,
            port: 6080,
            ..Tunnel::IPIP
        });
        assert_eq!(plan(&[desired], &[current], &keys(&[web()])).len(), 1);
    }

    fn refusal(errno: i32) -> io::Error {
        io::Error::from_raw_os_error(errno)
    }

    #[test]
    fn refusals_name_the_field() {
        let mut twos = web().service;
        twos.scheduler = Scheduler::TwoChoices;
        let err = Error::AddService {
            service: twos.key,
            source: refusal(libc::ENOENT),
        };
        let change = Change::AddService(twos.clone());
        assert_eq!(refused_field(&change, None, &err), "scheduler");

        let mut sip = web().service;
        sip.persistence_engine = Some("nosuch".into());
        let err = Error::EditService {
            service: sip.key,
            source: refusal(libc::ENOENT),
        };
        let current = web().service;
        assert_eq!(
            refused_field(&Change::EditService(sip), Some(&current), &err),
            "persistence_engine"
        );

        let dest = Destination::new(addr("224.0.0.1:80"), Forward::Masquerade, 1);
        let change = Change::AddDestination {
            service: web().key(),
            destination: dest,
        };
        let err = Error::AddDestination {
            service: web().key(),
            destination: dest.address,
            source: refusal(libc::EINVAL),
        };
        assert_eq!(refused_field(&change, None, &err), "address");
        let failure = failure(change, None, err);
        assert_eq!(failure.destination, Some(dest.address));
        assert_eq!(
            failure.to_string(),
            "TCP 192.0.2.100:80 real server 224.0.0.1:80: address: cannot add real server \
             224.0.0.1:80 to IPVS service TCP 192.0.2.100:80: the kernel refused the values \
             (bad address, flags or sizes): Invalid argument (os error 22)"
        );

        let err = Error::InvalidService {
            service: twos.key,
            field: "persistence.netmask",
            reason: "x".into(),
        };
        assert_eq!(
            refused_field(&Change::AddService(twos), None, &err),
            "persistence.netmask"
        );
    }
}
