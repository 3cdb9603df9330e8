//! The IPVS side of the supervisor: the config's services as the kernel's IPVS
//! table, kept right through reloads, drains and role changes.
//!
//! [`desired_table`] turns the validated `[[service]]`s (and the operator's
//! drains) into the table the kernel should hold; `vipmgr`'s reconciler applies
//! only the difference, on both directors whatever their role, and never flushes,
//! so a restart of directord keeps the table and its connections. The
//! connection-sync daemon runs as master on the active director and as backup on
//! the standby (keepalived's `lvs_sync_daemon`).
//!
//! Netlink calls block, and a reconcile of a large table takes a while, so all
//! of it runs on a thread of its own that owns the [`Ipvs`] handle; the
//! supervisor talks to it through an [`IpvsHandle`]. When the kernel has no IPVS
//! the thread says so once and carries on: failover and VIPs do not depend on it.

use crate::error_chain as chain;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use checkers::Health;
use heartbeat::Role;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};
use vipmgr::ipvs::{
    Destination, DestinationEntry, Failure, Family, Forward, Ipvs, Persistence, Protocol,
    Scheduler, SchedulerFlags, Service, ServiceEntry, ServiceKey, Stats, SyncDaemon, SyncRole,
    Tunnel, VirtualService,
};

use crate::config::{self, IpvsSync, L4Protocol, OnFailure, ServiceTarget};
use crate::health::HealthMap;

/// The kernel's defaults for what `[ipvs]` leaves unset (`ip_vs_sync.c`).
const DEFAULT_SYNC_GROUP: IpAddr = IpAddr::V4(Ipv4Addr::new(224, 0, 0, 81));
const DEFAULT_SYNC_PORT: u16 = 8848;
const DEFAULT_SYNC_TTL: u8 = 1;

/// Real servers the operator drained: (service name, real server address).
pub type Drains = BTreeSet<(String, SocketAddr)>;

/// The IPVS key of a configured service.
pub fn service_key(s: &config::Service) -> ServiceKey {
    match s.target {
        ServiceTarget::Address(address) => ServiceKey::Inet {
            protocol: match s.protocol {
                L4Protocol::Tcp => Protocol::Tcp,
                L4Protocol::Udp => Protocol::Udp,
                L4Protocol::Sctp => Protocol::Sctp,
            },
            address,
        },
        ServiceTarget::Fwmark(mark) => ServiceKey::fwmark(
            match s.family() {
                config::Family::V4 => Family::Ipv4,
                config::Family::V6 => Family::Ipv6,
            },
            mark,
        ),
    }
}

fn scheduler_flags(names: &[String]) -> SchedulerFlags {
    names
        .iter()
        .fold(SchedulerFlags::NONE, |flags, name| match name.as_str() {
            "sh-fallback" | "mh-fallback" | "flag-1" => flags | SchedulerFlags::FLAG_1,
            "sh-port" | "mh-port" | "flag-2" => flags | SchedulerFlags::FLAG_2,
            "flag-3" => flags | SchedulerFlags::FLAG_3,
            _ => flags,
        })
}

fn forward(f: config::Forward) -> Forward {
    match f {
        config::Forward::Nat => Forward::Masquerade,
        config::Forward::Dr => Forward::Route,
        config::Forward::Tun => Forward::Tunnel(Tunnel::IPIP),
    }
}

/// The virtual service of one configured service. A drained real server, or a
/// down one of a `quiesce` service, has weight 0 (it keeps its connections);
/// a down one of a `remove` service is left out. With no real server up, the
/// sorry server (if any) takes the traffic.
pub fn virtual_service(
    s: &config::Service,
    drained: impl Fn(SocketAddr) -> bool,
    up: impl Fn(SocketAddr) -> bool,
) -> VirtualService {
    let key = service_key(s);
    let mut service = Service::new(key, Scheduler::from_name(&s.scheduler));
    service.scheduler_flags = scheduler_flags(&s.scheduler_flags);
    service.persistence = s.persistence.map(|d| Persistence {
        timeout_secs: u32::try_from(d.as_secs()).unwrap_or(u32::MAX),
        prefix_len: s
            .persistence_netmask
            .unwrap_or_else(|| key.family().max_prefix_len()),
    });
    let mut destinations = Vec::with_capacity(s.reals.len());
    let mut any_up = false;
    for real in &s.reals {
        let is_up = up(real.address);
        any_up |= is_up;
        let weight = if drained(real.address) || !is_up {
            if !is_up && s.on_failure == OnFailure::Remove {
                continue;
            }
            0
        } else {
            real.weight
        };
        destinations.push(Destination::new(real.address, forward(s.forward), weight));
    }
    if let (false, Some(sorry)) = (any_up, s.sorry_server)
        && !destinations.iter().any(|d| d.address == sorry)
    {
        destinations.push(Destination::new(sorry, forward(s.forward), 1));
    }
    VirtualService::new(service, destinations)
}

/// The whole desired table. A real server missing from `health` (its service has
/// no check) counts as up.
pub fn desired_table(
    services: &[config::Service],
    drains: &Drains,
    health: &HealthMap,
) -> Vec<VirtualService> {
    services
        .iter()
        .map(|s| service_table(s, drains, health))
        .collect()
}

fn service_table(s: &config::Service, drains: &Drains, health: &HealthMap) -> VirtualService {
    virtual_service(
        s,
        |a| drains.contains(&(s.name.clone(), a)),
        |a| is_up(health, &s.name, a),
    )
}

fn is_up(health: &HealthMap, service: &str, real: SocketAddr) -> bool {
    health.get(&(service.to_string(), real)) != Some(&Health::Down)
}

/// A change the kernel refused, in the config's words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureReport {
    /// The `[[service]]` name (or the IPVS service, for one no longer configured).
    pub service: String,
    pub real: Option<String>,
    /// The config key at fault (`scheduler`, `real.address`, ...).
    pub field: String,
    pub error: String,
}

impl fmt::Display for FailureReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "service {}", self.service)?;
        if let Some(real) = &self.real {
            write!(f, " real {real}")?;
        }
        write!(f, ": {}: {}", self.field, self.error)
    }
}

/// vipmgr's field name as the config key an operator edits.
fn config_field(field: &str, service: Option<&config::Service>, real: bool) -> String {
    let fwmark = service.is_some_and(|s| matches!(s.target, ServiceTarget::Fwmark(_)));
    match field {
        "persistence.netmask" => "persistence_netmask",
        "address" if real => "real.address",
        "address" | "service" if fwmark => "fwmark",
        "service" => "address",
        "weight" => "real.weight",
        "destination" => "real",
        other => other,
    }
    .to_string()
}

fn failure_report(f: &Failure, by_key: &BTreeMap<ServiceKey, &config::Service>) -> FailureReport {
    let service = by_key.get(&f.service).copied();
    FailureReport {
        service: service.map_or_else(|| f.service.to_string(), |s| s.name.clone()),
        real: f.destination.map(|d| d.to_string()),
        field: config_field(f.field, service, f.destination.is_some()),
        error: chain(&f.error),
    }
}

/// What one apply did, for the reload answer and the log.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplySummary {
    /// Changes the kernel accepted.
    pub changes: usize,
    pub failures: Vec<FailureReport>,
    /// Why nothing could be applied: the table could not be read.
    pub error: Option<String>,
    /// Why nothing was applied: this kernel has no IPVS. Not an error: a
    /// director without IPVS still runs its failover and VIPs.
    pub unavailable: Option<String>,
}

impl ApplySummary {
    /// Everything asked for was applied, or there is no IPVS to apply it to.
    pub fn is_clean(&self) -> bool {
        self.failures.is_empty() && self.error.is_none()
    }
}

impl fmt::Display for ApplySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(e) = &self.unavailable {
            return write!(f, "IPVS unavailable, services not programmed: {e}");
        }
        if let Some(e) = &self.error {
            return write!(f, "IPVS not programmed: {e}");
        }
        match self.changes {
            0 => write!(f, "IPVS table unchanged")?,
            1 => write!(f, "IPVS: 1 change")?,
            n => write!(f, "IPVS: {n} changes")?,
        }
        if !self.failures.is_empty() {
            write!(
                f,
                "; {} refused by the kernel (the rest applied):",
                self.failures.len()
            )?;
            for failure in &self.failures {
                write!(f, "\n  {failure}")?;
            }
        }
        Ok(())
    }
}

/// A real server as the kernel holds it.
#[derive(Debug, Clone, Serialize)]
pub struct RealStatus {
    pub address: SocketAddr,
    pub configured_weight: u32,
    /// The weight in the kernel (`None`: not in the kernel's table).
    pub weight: Option<u32>,
    pub drained: bool,
    /// From the service's check (`None`: the service has no check).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    pub forward: &'static str,
    pub active_connections: u32,
    pub inactive_connections: u32,
    pub persistent_connections: u32,
    pub stats: Stats,
}

/// A service as the kernel holds it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    pub name: String,
    /// As ipvsadm names it: `TCP 192.0.2.100:80`, `FWM 7`.
    pub service: String,
    pub scheduler: String,
    /// Whether the kernel holds it.
    pub present: bool,
    pub stats: Stats,
    pub reals: Vec<RealStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SyncStatus {
    /// The daemon this director should run: master when active, else backup.
    pub role: SyncRole,
    pub interface: String,
    pub sync_id: u8,
    /// The daemons the kernel runs.
    pub running: Vec<SyncRole>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastApply {
    /// Unix time in milliseconds.
    pub at: u64,
    pub changes: usize,
    pub failures: usize,
}

/// `directorctl status`'s IPVS part.
#[derive(Debug, Clone, Serialize)]
pub struct IpvsStatus {
    /// `ok`, `unavailable` (this kernel has no IPVS) or `unused` (no service, no
    /// sync daemon).
    pub state: &'static str,
    pub error: Option<String>,
    pub sync: Option<SyncStatus>,
    pub services: Vec<ServiceStatus>,
    /// Changes the kernel refused at the last apply; they are retried at the next.
    pub failures: Vec<FailureReport>,
    pub last_apply: Option<LastApply>,
}

enum Job {
    Configure {
        services: Vec<config::Service>,
        sync: Option<IpvsSync>,
        health: HealthMap,
        reply: oneshot::Sender<ApplySummary>,
    },
    Role(Role),
    Health(Vec<((String, SocketAddr), Health)>),
    Drain {
        service: String,
        real: String,
        drain: bool,
        reply: oneshot::Sender<Result<(String, RealStatus), String>>,
    },
    Status(oneshot::Sender<IpvsStatus>),
    /// Answered once every job sent before it is done.
    Barrier(oneshot::Sender<()>),
}

/// The supervisor's side of the IPVS thread.
#[derive(Debug)]
pub struct IpvsHandle {
    tx: Option<mpsc::UnboundedSender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl IpvsHandle {
    /// Starts the thread; it opens IPVS when a config first needs it.
    pub fn spawn() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("ipvs".into())
            .spawn(move || Worker::default().run(rx))?;
        Ok(IpvsHandle {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    fn send(&self, job: Job) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(job);
        }
    }

    /// Takes a (new) config: reconciles its services against the kernel, with the
    /// previous config's services in scope so that removed ones go.
    pub fn configure(
        &self,
        services: Vec<config::Service>,
        sync: Option<IpvsSync>,
        health: HealthMap,
    ) -> oneshot::Receiver<ApplySummary> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Configure {
            services,
            sync,
            health,
            reply,
        });
        rx
    }

    /// Real servers changed health: their services are reconciled (down ones
    /// quiesced or removed, the sorry server in or out).
    pub fn health(&self, changes: Vec<((String, SocketAddr), Health)>) {
        if !changes.is_empty() {
            self.send(Job::Health(changes));
        }
    }

    /// The director's role changed: switch the sync daemon.
    pub fn role(&self, role: Role) {
        self.send(Job::Role(role));
    }

    /// Drains (weight 0) or enables (configured weight) one real server; answers
    /// the service's name and the real server as the kernel then holds it.
    pub fn drain(
        &self,
        service: String,
        real: String,
        drain: bool,
    ) -> oneshot::Receiver<Result<(String, RealStatus), String>> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Drain {
            service,
            real,
            drain,
            reply,
        });
        rx
    }

    /// Resolves when everything sent before (say health changes) is applied.
    pub fn barrier(&self) -> oneshot::Receiver<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Barrier(reply));
        rx
    }

    pub fn status(&self) -> oneshot::Receiver<IpvsStatus> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Status(reply));
        rx
    }

    /// Lets the thread end after the jobs already sent (the kernel's table
    /// stays); join the returned thread to wait for that.
    pub fn stop(&mut self) -> Option<JoinHandle<()>> {
        self.tx = None;
        self.thread.take()
    }
}

/// The IPVS thread's state.
#[derive(Default)]
struct Worker {
    ipvs: Option<Ipvs>,
    /// Why IPVS cannot be used (said once in the log).
    unavailable: Option<String>,
    services: Vec<config::Service>,
    sync: Option<IpvsSync>,
    /// Whether this process started a sync daemon (so disabling sync stops it).
    sync_started: bool,
    sync_error: Option<String>,
    role: Option<Role>,
    drains: Drains,
    health: HealthMap,
    /// Services of earlier configs that may still be in the kernel.
    managed: BTreeSet<ServiceKey>,
    /// A whole reconcile succeeded once: later configs may reconcile only what
    /// changed.
    reconciled_once: bool,
    failures: Vec<FailureReport>,
    last_apply: Option<LastApply>,
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Worker {
    fn run(mut self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        while let Some(job) = jobs.blocking_recv() {
            match job {
                Job::Configure {
                    services,
                    sync,
                    health,
                    reply,
                } => {
                    let summary = self.configure(services, sync, health);
                    let _ = reply.send(summary);
                }
                Job::Role(role) => {
                    self.role = Some(role);
                    self.sync_daemon();
                }
                Job::Health(changes) => self.health(changes),
                Job::Drain {
                    service,
                    real,
                    drain,
                    reply,
                } => {
                    let _ = reply.send(self.drain(&service, &real, drain));
                }
                Job::Status(reply) => {
                    let _ = reply.send(self.status());
                }
                Job::Barrier(reply) => {
                    let _ = reply.send(());
                }
            }
        }
    }

    /// Whether anything needs the kernel's IPVS.
    fn needed(&self) -> bool {
        !self.services.is_empty()
            || !self.managed.is_empty()
            || self.sync.is_some()
            || self.sync_started
    }

    /// The IPVS handle, opened on first use. Once IPVS proved unavailable it is
    /// only looked for again when `retry` (a new config).
    fn kernel(&mut self, retry: bool) -> Option<&mut Ipvs> {
        if self.ipvs.is_none() && (retry || self.unavailable.is_none()) {
            match Ipvs::open() {
                Ok(ipvs) => {
                    if self.unavailable.take().is_some() {
                        info!("IPVS is available now");
                    }
                    self.ipvs = Some(ipvs);
                }
                Err(e) => {
                    let why = chain(&e);
                    if self.unavailable.as_deref() != Some(why.as_str()) {
                        warn!(
                            error = %why,
                            "IPVS is unavailable: virtual services are not programmed; \
                             failover and VIPs run without them"
                        );
                    }
                    self.unavailable = Some(why);
                }
            }
        }
        self.ipvs.as_mut()
    }

    fn configure(
        &mut self,
        services: Vec<config::Service>,
        sync: Option<IpvsSync>,
        health: HealthMap,
    ) -> ApplySummary {
        let gone: Vec<(String, SocketAddr)> = self
            .drains
            .iter()
            .filter(|(name, real)| {
                !services
                    .iter()
                    .any(|s| &s.name == name && s.reals.iter().any(|r| r.address == *real))
            })
            .cloned()
            .collect();
        for drain in gone {
            info!(service = %drain.0, real = %drain.1, "drain dropped: the real server left the config");
            self.drains.remove(&drain);
        }
        let before = desired_table(&self.services, &self.drains, &self.health);
        self.services = services;
        self.sync = sync;
        self.health = health;
        // The first config, or one after a failure or an unreadable table, is
        // reconciled whole (that repairs drift); later reloads look only at the
        // services whose desired state changed, so a changed weight costs one
        // read of one service and one kernel call.
        let whole = !self.reconciled_once || !self.failures.is_empty() || self.ipvs.is_none();
        let summary = if whole {
            self.apply(None)
        } else {
            let after = desired_table(&self.services, &self.drains, &self.health);
            let old: BTreeMap<ServiceKey, &VirtualService> =
                before.iter().map(|v| (v.key(), v)).collect();
            let new: BTreeMap<ServiceKey, &VirtualService> =
                after.iter().map(|v| (v.key(), v)).collect();
            let changed: BTreeSet<ServiceKey> = old
                .keys()
                .chain(new.keys())
                .filter(|k| old.get(*k) != new.get(*k))
                .copied()
                .collect();
            self.apply(Some(changed))
        };
        self.sync_daemon();
        summary
    }

    /// Reconciles the configured services (and the ones earlier configs had);
    /// with `only`, just those services.
    fn apply(&mut self, only: Option<BTreeSet<ServiceKey>>) -> ApplySummary {
        if !self.needed() {
            return ApplySummary::default();
        }
        let mut desired = desired_table(&self.services, &self.drains, &self.health);
        let all_keys: BTreeSet<ServiceKey> = desired.iter().map(VirtualService::key).collect();
        let mut scope = self.managed.clone();
        scope.extend(all_keys.iter().copied());
        if let Some(only) = &only {
            if only.is_empty() {
                info!(services = self.services.len(), "IPVS: no service changed");
                self.last_apply = Some(LastApply {
                    at: unix_millis(),
                    changes: 0,
                    failures: 0,
                });
                return ApplySummary::default();
            }
            desired.retain(|v| only.contains(&v.key()));
            scope.retain(|k| only.contains(k));
        }
        let Some(ipvs) = self.kernel(true) else {
            return ApplySummary {
                unavailable: self.unavailable.clone(),
                ..ApplySummary::default()
            };
        };
        let report = match ipvs.reconcile(&desired, &scope) {
            Ok(report) => report,
            Err(e) => {
                let error = chain(&e);
                error!(%error, "cannot read the IPVS table; nothing applied");
                self.managed = scope;
                return ApplySummary {
                    error: Some(error),
                    ..ApplySummary::default()
                };
            }
        };
        self.reconciled_once = true;
        // What may still be ours: the configured services, and those a removal
        // of failed.
        self.managed = all_keys;
        self.managed.extend(
            report
                .failures
                .iter()
                .filter(|f| f.destination.is_none())
                .map(|f| f.service),
        );
        let by_key: BTreeMap<ServiceKey, &config::Service> =
            self.services.iter().map(|s| (service_key(s), s)).collect();
        let failures: Vec<FailureReport> = report
            .failures
            .iter()
            .map(|f| failure_report(f, &by_key))
            .collect();
        for failure in &failures {
            error!(
                service = %failure.service,
                real = failure.real.as_deref().unwrap_or("-"),
                field = %failure.field,
                error = %failure.error,
                "IPVS refused a change"
            );
        }
        match report.applied.len() {
            0 => info!(
                services = self.services.len(),
                "IPVS table already as configured"
            ),
            n => info!(
                changes = n,
                services = self.services.len(),
                "IPVS table updated"
            ),
        }
        self.last_apply = Some(LastApply {
            at: unix_millis(),
            changes: report.applied.len(),
            failures: failures.len(),
        });
        self.failures = failures.clone();
        ApplySummary {
            changes: report.applied.len(),
            failures,
            ..ApplySummary::default()
        }
    }

    /// Runs the sync daemon this role needs (master when active, else backup)
    /// and stops the other one; leaves daemons alone when directord never ran
    /// one and `[ipvs]` asks for none.
    fn sync_daemon(&mut self) {
        let Some(role) = self.role else { return };
        let wanted = self.sync.as_ref().map(|s| SyncDaemon {
            role: if role == Role::Active {
                SyncRole::Master
            } else {
                SyncRole::Backup
            },
            interface: s.interface.clone(),
            sync_id: s.sync_id,
            max_length: None,
            group: s.group,
            port: s.port,
            ttl: s.ttl,
        });
        if wanted.is_none() && !self.sync_started {
            return;
        }
        let Some(ipvs) = self.kernel(false) else {
            return;
        };
        let result = (|| -> vipmgr::Result<bool> {
            let running = ipvs.sync_daemons()?;
            for daemon in &running {
                if !wanted.as_ref().is_some_and(|w| same_daemon(daemon, w)) {
                    ipvs.stop_sync_daemon(daemon.role)?;
                    info!(role = %daemon.role, interface = %daemon.interface, "IPVS sync daemon stopped");
                }
            }
            if let Some(w) = &wanted
                && !running.iter().any(|d| same_daemon(d, w))
            {
                ipvs.start_sync_daemon(w)?;
                info!(role = %w.role, interface = %w.interface, sync_id = w.sync_id, "IPVS sync daemon started");
                return Ok(true);
            }
            Ok(false)
        })();
        match result {
            Ok(started) => {
                self.sync_started |= started;
                self.sync_error = None;
            }
            Err(e) => {
                let error = chain(&e);
                error!(%error, "cannot switch the IPVS sync daemon");
                self.sync_error = Some(error);
            }
        }
    }

    /// Applies health changes to the services they concern. Changes for real
    /// servers no longer configured (a report that crossed a reload) are ignored.
    fn health(&mut self, changes: Vec<((String, SocketAddr), Health)>) {
        let mut touched = BTreeSet::new();
        for (key, health) in changes {
            let Some(service) = self
                .services
                .iter()
                .find(|s| s.name == key.0 && s.reals.iter().any(|r| r.address == key.1))
            else {
                continue;
            };
            if self.health.insert(key, health) != Some(health) {
                touched.insert(service_key(service));
            }
        }
        if touched.is_empty() || !self.reconciled_once {
            return;
        }
        let summary = self.apply(Some(touched));
        if !summary.is_clean() {
            warn!(%summary, "IPVS: a health change was not fully applied");
        }
    }

    fn drain(
        &mut self,
        name: &str,
        real: &str,
        drain: bool,
    ) -> Result<(String, RealStatus), String> {
        let (service, found) = config::Service::find(&self.services, name, real)?;
        let (service, found) = (service.clone(), found.clone());
        let address = found.address;
        let entry = (service.name.clone(), address);
        let was_drained = self.drains.contains(&entry);
        if drain {
            self.drains.insert(entry.clone());
        } else {
            self.drains.remove(&entry);
        }
        let desired = [service_table(&service, &self.drains, &self.health)];
        let key = service_key(&service);
        let by_key = BTreeMap::from([(key, &service)]);
        let Some(ipvs) = self.kernel(false) else {
            // Keep the drain set as it was: nothing happened.
            if was_drained {
                self.drains.insert(entry);
            } else {
                self.drains.remove(&entry);
            }
            return Err(format!(
                "IPVS is unavailable: {}",
                self.unavailable.as_deref().unwrap_or("?")
            ));
        };
        let report = ipvs
            .reconcile(&desired, &BTreeSet::from([key]))
            .map_err(|e| chain(&e))?;
        let failures: Vec<FailureReport> = report
            .failures
            .iter()
            .map(|f| failure_report(f, &by_key))
            .collect();
        let status = ipvs
            .destinations(&key)
            .map_err(|e| chain(&e))?
            .into_iter()
            .find(|d| d.destination.address == address);
        self.failures.retain(|f| f.service != service.name);
        self.failures.extend(failures.iter().cloned());
        let verb = if drain { "drained" } else { "enabled" };
        if let Some(f) = failures.first() {
            return Err(format!("{name} {address} not {verb}: {f}"));
        }
        info!(service = %name, real = %address, "real server {verb}");
        let drained = self.drains.contains(&(service.name.clone(), address));
        Ok((
            service.name.clone(),
            real_status(&service, &found, drained, &self.health, status.as_ref()),
        ))
    }

    fn status(&mut self) -> IpvsStatus {
        let mut status = IpvsStatus {
            state: "unused",
            error: None,
            sync: None,
            services: Vec::new(),
            failures: self.failures.clone(),
            last_apply: self.last_apply.clone(),
        };
        if !self.needed() {
            return status;
        }
        let services = self.services.clone();
        let drains = self.drains.clone();
        let health = self.health.clone();
        let mut running = Vec::new();
        let mut kernel: BTreeMap<ServiceKey, (ServiceEntry, Vec<DestinationEntry>)> =
            BTreeMap::new();
        match self.kernel(false) {
            None => {
                status.state = "unavailable";
                status.error = self.unavailable.clone();
            }
            Some(ipvs) => {
                status.state = "ok";
                let read = (|| -> vipmgr::Result<()> {
                    let wanted: BTreeSet<ServiceKey> = services.iter().map(service_key).collect();
                    for entry in ipvs.services()? {
                        if wanted.contains(&entry.service.key) {
                            let dests = ipvs.destinations(&entry.service.key)?;
                            kernel.insert(entry.service.key, (entry, dests));
                        }
                    }
                    running = ipvs.sync_daemons()?.into_iter().map(|d| d.role).collect();
                    Ok(())
                })();
                if let Err(e) = read {
                    status.error = Some(chain(&e));
                }
            }
        }
        status.sync = match (&self.sync, self.role) {
            (Some(s), Some(role)) => Some(SyncStatus {
                role: if role == Role::Active {
                    SyncRole::Master
                } else {
                    SyncRole::Backup
                },
                interface: s.interface.clone(),
                sync_id: s.sync_id,
                running,
                error: self.sync_error.clone(),
            }),
            _ => None,
        };
        status.services = services
            .iter()
            .map(|s| {
                let key = service_key(s);
                let held = kernel.get(&key);
                ServiceStatus {
                    name: s.name.clone(),
                    service: key.to_string(),
                    scheduler: s.scheduler.clone(),
                    present: held.is_some(),
                    stats: held.map(|(e, _)| e.stats).unwrap_or_default(),
                    reals: s
                        .reals
                        .iter()
                        .map(|r| {
                            let entry = held.and_then(|(_, dests)| {
                                dests.iter().find(|d| d.destination.address == r.address)
                            });
                            let drained = drains.contains(&(s.name.clone(), r.address));
                            real_status(s, r, drained, &health, entry)
                        })
                        .collect(),
                }
            })
            .collect();
        status
    }
}

fn real_status(
    service: &config::Service,
    real: &config::RealServer,
    drained: bool,
    health: &HealthMap,
    entry: Option<&DestinationEntry>,
) -> RealStatus {
    RealStatus {
        address: real.address,
        configured_weight: real.weight,
        weight: entry.map(|e| e.destination.weight),
        drained,
        health: service.check.as_ref().map(|_| {
            if is_up(health, &service.name, real.address) {
                Health::Up
            } else {
                Health::Down
            }
        }),
        forward: match service.forward {
            config::Forward::Nat => "nat",
            config::Forward::Dr => "dr",
            config::Forward::Tun => "tun",
        },
        active_connections: entry.map_or(0, |e| e.active_connections),
        inactive_connections: entry.map_or(0, |e| e.inactive_connections),
        persistent_connections: entry.map_or(0, |e| e.persistent_connections),
        stats: entry.map(|e| e.stats).unwrap_or_default(),
    }
}

/// Whether a running daemon is the wanted one (unset settings are the kernel's
/// defaults).
fn same_daemon(running: &SyncDaemon, wanted: &SyncDaemon) -> bool {
    running.role == wanted.role
        && running.interface == wanted.interface
        && running.sync_id == wanted.sync_id
        && running.group.unwrap_or(DEFAULT_SYNC_GROUP) == wanted.group.unwrap_or(DEFAULT_SYNC_GROUP)
        && running.port.unwrap_or(DEFAULT_SYNC_PORT) == wanted.port.unwrap_or(DEFAULT_SYNC_PORT)
        && running.ttl.unwrap_or(DEFAULT_SYNC_TTL) == wanted.ttl.unwrap_or(DEFAULT_SYNC_TTL)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    const CONFIG: &str = r#"
[node]
name = "lvs1"

[failover]
protocol = "vrrp"
interface = "eth0"

[failover.vrrp]
router_id = 51

[[vip]]
address = "192.0.2.100/24"

[[service]]
name = "www"
address = "192.0.2.100:80"
scheduler = "wrr"
forward = "nat"
persistence = "300s"
persistence_netmask = "255.255.255.0"
sorry_server = "10.0.1.99:80"

[[service.real]]
address = "10.0.1.11:80"
weight = 100

[[service.real]]
address = "10.0.1.12:80"
weight = 50

[[service]]
name = "marked"
fwmark = 7
scheduler = "mh"
scheduler_flags = ["mh-fallback", "mh-port"]
forward = "tun"
on_failure = "remove"

[[service.real]]
address = "2001:db8::21"
"#;

    fn services() -> Vec<config::Service> {
        Config::parse(Path::new("t.toml"), CONFIG)
            .expect("valid")
            .services
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("address")
    }

    #[test]
    fn config_becomes_the_desired_table() {
        let table = desired_table(&services(), &Drains::new(), &HealthMap::new());
        let www = &table[0];
        assert_eq!(www.key(), ServiceKey::tcp(addr("192.0.2.100:80")));
        assert_eq!(www.service.scheduler, Scheduler::WeightedRoundRobin);
        assert_eq!(
            www.service.persistence,
            Some(Persistence {
                timeout_secs: 300,
                prefix_len: 24
            })
        );
        assert_eq!(
            www.destinations,
            [
                Destination::new(addr("10.0.1.11:80"), Forward::Masquerade, 100),
                Destination::new(addr("10.0.1.12:80"), Forward::Masquerade, 50),
            ]
        );
        // A fwmark service takes its real servers' family; port 0 keeps the
        // client's port.
        let marked = &table[1];
        assert_eq!(marked.key(), ServiceKey::fwmark(Family::Ipv6, 7));
        assert_eq!(
            marked.service.scheduler_flags,
            SchedulerFlags::MH_FALLBACK | SchedulerFlags::MH_PORT
        );
        assert_eq!(marked.service.persistence, None);
        assert_eq!(
            marked.destinations,
            [Destination::new(
                addr("[2001:db8::21]:0"),
                Forward::Tunnel(Tunnel::IPIP),
                1
            )]
        );
    }

    #[test]
    fn a_drained_real_server_has_weight_zero() {
        let drains = Drains::from([("www".to_string(), addr("10.0.1.12:80"))]);
        let table = desired_table(&services(), &drains, &HealthMap::new());
        assert_eq!(table[0].destinations[0].weight, 100);
        assert_eq!(table[0].destinations[1].weight, 0);
        // Another service's real server of that address is not drained.
        assert_eq!(table[1].destinations[0].weight, 1);
    }

    #[test]
    fn down_real_servers_quiesce_or_go_and_the_sorry_server_steps_in() {
        let services = services();
        let down = addr("10.0.1.11:80");
        let www = virtual_service(&services[0], |_| false, |a| a != down);
        assert_eq!(
            www.destinations[0].weight, 0,
            "quiesce keeps it at weight 0"
        );
        assert_eq!(www.destinations.len(), 2, "no sorry server while one is up");
        let www = virtual_service(&services[0], |_| false, |_| false);
        assert_eq!(
            www.destinations.last(),
            Some(&Destination::new(
                addr("10.0.1.99:80"),
                Forward::Masquerade,
                1
            ))
        );
        let marked = virtual_service(&services[1], |_| false, |_| false);
        assert!(marked.destinations.is_empty(), "on_failure = remove");
    }

    #[test]
    fn the_health_map_drives_the_table() {
        let services = services();
        let mut health = HealthMap::new();
        health.insert(("www".into(), addr("10.0.1.11:80")), Health::Down);
        health.insert(("www".into(), addr("10.0.1.12:80")), Health::Up);
        let table = desired_table(&services, &Drains::new(), &health);
        assert_eq!(table[0].destinations[0].weight, 0);
        assert_eq!(table[0].destinations[1].weight, 50);
        // Real servers missing from the map (no check) count as up.
        assert_eq!(table[1].destinations[0].weight, 1);
        health.insert(("www".into(), addr("10.0.1.12:80")), Health::Down);
        let table = desired_table(&services, &Drains::new(), &health);
        assert_eq!(
            table[0].destinations.last().map(|d| d.address),
            Some(addr("10.0.1.99:80")),
            "all down: the sorry server"
        );
    }

    #[test]
    fn kernel_fields_are_named_as_config_keys() {
        let services = services();
        assert_eq!(
            config_field("scheduler", Some(&services[0]), false),
            "scheduler"
        );
        assert_eq!(
            config_field("persistence.netmask", Some(&services[0]), false),
            "persistence_netmask"
        );
        assert_eq!(
            config_field("address", Some(&services[0]), true),
            "real.address"
        );
        assert_eq!(config_field("address", Some(&services[1]), false), "fwmark");
        assert_eq!(config_field("weight", None, true), "real.weight");
    }

    #[test]
    fn the_summary_reads_as_one_answer() {
        let summary = ApplySummary {
            changes: 3,
            failures: vec![FailureReport {
                service: "tls".into(),
                real: None,
                field: "scheduler".into(),
                error: "cannot add IPVS service TCP 192.0.2.100:443: no such scheduler".into(),
            }],
            ..ApplySummary::default()
        };
        assert!(!summary.is_clean());
        assert_eq!(
            summary.to_string(),
            "IPVS: 3 changes; 1 refused by the kernel (the rest applied):\n  service tls: \
             scheduler: cannot add IPVS service TCP 192.0.2.100:443: no such scheduler"
        );
        assert_eq!(ApplySummary::default().to_string(), "IPVS table unchanged");
    }
}
