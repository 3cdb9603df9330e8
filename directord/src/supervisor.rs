//! The supervisor: joins the failover protocol, the VIPs, IPVS and the control
//! socket.
//!
//! It owns the desired state (which VIPs this node must hold, from its role) and
//! drives `vipmgr` to it; the IPVS table is programmed on both directors by the
//! IPVS thread ([`crate::ipvs`]), which it tells about configs, roles and drains.
//! Everyone else talks to it through a [`SupervisorHandle`].

use crate::error_chain as chain;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use heartbeat::{Command, FailoverHandle, Role, Transition};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{self, Config, Protocol, VrrpVersion};
use crate::control::{Request, Response};
use crate::events::{Event, Events};
use crate::health::{CheckStatus, Health};
use crate::ipvs::{IpvsHandle, IpvsStatus};

type Reply = oneshot::Sender<Response>;

/// A request's answer: ready now, or to come from the IPVS thread (awaited off
/// the supervisor's loop, so a long reconcile never delays a role change).
enum Answer {
    Now(Response),
    Later(Pin<Box<dyn Future<Output = Response> + Send>>),
}

/// Cloneable access to the running supervisor.
#[derive(Debug, Clone)]
pub struct SupervisorHandle {
    tx: mpsc::Sender<(Request, Reply)>,
}

impl SupervisorHandle {
    /// Asks the supervisor and waits for its answer.
    pub async fn request(&self, request: Request) -> Response {
        let (reply, answer) = oneshot::channel();
        if self.tx.send((request, reply)).await.is_err() {
            return Response::error("directord is shutting down");
        }
        answer
            .await
            .unwrap_or_else(|_| Response::error("directord is shutting down"))
    }
}

/// What `directorctl status --json` prints.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub node: String,
    #[serde(flatten)]
    pub failover: heartbeat::Status,
    pub interface: String,
    /// VRRP only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub router_id: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_millis")]
    pub advert_interval: Option<Duration>,
    /// Heartbeat only.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_millis")]
    pub keepalive: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_millis")]
    pub deadtime: Option<Duration>,
    pub vips: Vec<VipStatus>,
    /// The IPVS table per service, the sync daemon, refused changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipvs: Option<IpvsStatus>,
    /// Every checked real server: health, last result, reason, latency.
    pub checks: Vec<CheckStatus>,
    pub config: String,
    pub pid: u32,
    /// When this process started (unix ms): an in-place restart keeps the pid.
    pub started: u64,
}

#[derive(Debug, Serialize)]
pub struct VipStatus {
    pub address: String,
    pub interface: String,
    pub held: bool,
}

fn opt_millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        None => s.serialize_none(),
    }
}

/// Starts the configured failover protocol on its own thread. `ready`: whether the
/// health checks are settled (false: the node does not preempt a live peer until
/// told [`Command::Ready`]).
pub fn spawn_failover(
    config: &Config,
    resume_active: bool,
    ready: bool,
) -> anyhow::Result<FailoverHandle> {
    match &config.failover.protocol {
        Protocol::Vrrp(v) => {
            let mut vrrp = vrrp_config(config, v);
            vrrp.resume_master = resume_active;
            vrrp.ready = ready;
            Ok(heartbeat::vrrp::spawn(vrrp)?)
        }
        Protocol::Heartbeat(h) => {
            let mut hb = heartbeat_config(config, h)?;
            hb.ready = ready;
            Ok(heartbeat::linuxha::spawn(hb)?)
        }
    }
}

/// Builds the UDP 694 heartbeat's configuration; reads the key file.
pub fn heartbeat_config(
    config: &Config,
    h: &config::Heartbeat,
) -> anyhow::Result<heartbeat::linuxha::HbConfig> {
    use heartbeat::linuxha::Medium;
    let keys = heartbeat::linuxha::authkeys::AuthKeys::load(&h.auth_key_file)?;
    let media = h
        .media
        .iter()
        .map(|m| match m {
            config::Medium::Unicast { peer, interface } => Medium::Unicast {
                peer: *peer,
                interface: interface.clone(),
            },
            config::Medium::Multicast {
                group,
                interface,
                ttl,
            } => Medium::Multicast {
                group: *group,
                interface: interface.clone(),
                ttl: *ttl,
            },
            config::Medium::Broadcast { interface } => Medium::Broadcast {
                interface: interface.clone(),
            },
        })
        .collect();
    let mut hb = heartbeat::linuxha::HbConfig::new(&config.node.name, &h.peer, media, keys);
    hb.preferred = h.preferred.clone();
    hb.auto_failback = h.auto_failback;
    hb.keepalive = h.keepalive;
    hb.warntime = h.warntime;
    hb.deadtime = h.deadtime;
    hb.initdead = h.initdead;
    hb.port = h.port;
    hb.allow_insecure_crc = h.allow_insecure_crc;
    hb.state_dir = h.state_dir.clone();
    Ok(hb)
}

/// Builds VRRP's configuration from the validated config.
pub fn vrrp_config(config: &Config, v: &config::Vrrp) -> heartbeat::vrrp::VrrpConfig {
    heartbeat::vrrp::VrrpConfig {
        interface: config.failover.interface.clone(),
        version: match v.version {
            VrrpVersion::V2 => heartbeat::vrrp::Version::V2,
            VrrpVersion::V3 => heartbeat::vrrp::Version::V3,
        },
        vrid: v.router_id,
        priority: config.failover.priority,
        preempt: config.failover.preempt,
        preempt_delay: config.failover.preempt_delay,
        advert_interval: v.advert_interval,
        unicast_peers: v.unicast_peers.clone(),
        source_address: v.source_address,
        addresses: config.advertised_addresses(),
        family: match v.family {
            config::Family::V4 => heartbeat::vrrp::Family::V4,
            config::Family::V6 => heartbeat::vrrp::Family::V6,
        },
        netns: None,
        resume_master: false,
        ready: true,
    }
}

fn vips_of(config: &Config) -> Vec<vipmgr::Vip> {
    config
        .vips
        .iter()
        .map(|v| vipmgr::Vip {
            address: v.address,
            prefix_len: v.prefix_len,
            interface: v.interface.clone(),
            label: None,
        })
        .collect()
}

fn announce_of(config: &Config) -> vipmgr::AnnounceConfig {
    vipmgr::AnnounceConfig {
        count: config.announce.count,
        spacing: config.announce.spacing,
        refresh: config.announce.refresh,
    }
}

/// The supervisor task's state.
struct Supervisor {
    config: Config,
    failover: FailoverHandle,
    addresses: vipmgr::AddressManager,
    role: Role,
    /// Gratuitous ARP / NA bursts and refreshes while active.
    announcer: Option<JoinHandle<()>>,
    ipvs: IpvsHandle,
    health: Health,
    /// Role and health changes, for alerts.
    events: Events,
    /// Mail and notify scripts on role and health changes.
    alerts: crate::alert::AlertHandle,
    /// The readiness last told to the failover protocol.
    ready: bool,
    /// Counts the runner's turns to ready; a turn is told to the failover protocol
    /// only once the IPVS table holds its health (`ready_applied` brings it back).
    ready_turn: u64,
    ready_applied: (mpsc::Sender<u64>, mpsc::Receiver<u64>),
    /// `directorctl restart` was asked: end the loop after answering.
    restart: bool,
    started: std::time::SystemTime,
}

/// How the supervisor ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Stepped down (or lost its failover protocol): the process ends.
    Stopped,
    /// `directorctl restart`: re-exec in place, VIPs and IPVS table left as they
    /// are; `active` tells the new process to resume as master.
    Restart { active: bool },
}

/// Starts the supervisor: the failover protocol on its own thread, the link watch,
/// and the task that owns the state. Returns the handle and the task to await.
///
/// `resume_active`: this process replaces an active directord restarted in place;
/// it keeps the VIPs and starts as master.
pub async fn start(
    config: Config,
    cancel: CancellationToken,
    resume_active: bool,
    events: Events,
) -> anyhow::Result<(SupervisorHandle, JoinHandle<Exit>)> {
    let mut addresses = vipmgr::AddressManager::new()?;
    let vips = vips_of(&config);
    if resume_active {
        info!("resuming as the active director after an in-place restart: VIPs kept");
    } else {
        // A standby never holds a VIP: a node starts as standby, so it drops any VIP
        // left behind by an earlier run (say a `kill -9` while active).
        match addresses.reconcile(&[], &vips) {
            Ok(changes) if !changes.is_empty() => {
                info!(?changes, "removed VIPs left from an earlier run")
            }
            Ok(_) => {}
            Err(e) => warn!(error = %chain(&e), "could not clear stale VIPs at start"),
        }
    }
    // Health checks start now; each real server starts at its check's `initial`
    // health (up, after an in-place restart of the active director).
    let mut health = Health::spawn(resume_active)?;
    let start_health = health.configure(&config).await;
    // IPVS on both directors, whatever the role: the table is programmed now (on
    // the IPVS thread, without a flush) and the sync daemon starts as backup.
    let ipvs = IpvsHandle::spawn()?;
    drop(ipvs.configure(
        config.services.clone(),
        config.ipvs.sync.clone(),
        start_health,
    ));
    ipvs.role(if resume_active {
        Role::Active
    } else {
        Role::Standby
    });
    // Ready before active: with checks to run, the node does not preempt its peer
    // until every check has had a first round.
    let ready = *health.ready.borrow_and_update();
    let failover = spawn_failover(&config, resume_active, ready)?;
    let link = match vipmgr::watch_link(&config.failover.interface) {
        Ok(rx) => Some(rx),
        Err(e) => {
            warn!(interface = %config.failover.interface, error = %chain(&e), "cannot watch link state");
            None
        }
    };
    let alerts = crate::alert::spawn(config.alerts.clone(), events.subscribe());
    let (tx, rx) = mpsc::channel(64);
    let sup = Supervisor {
        config,
        failover,
        addresses,
        role: Role::Standby,
        announcer: None,
        ipvs,
        health,
        events,
        alerts,
        ready,
        ready_turn: 0,
        ready_applied: mpsc::channel(4),
        restart: false,
        started: std::time::SystemTime::now(),
    };
    if let Some(rx) = &link {
        // The watch only reports changes: a link already down at start counts too.
        if *rx.borrow() != vipmgr::LinkState::Up {
            warn!(interface = %sup.config.failover.interface, "link is not up at start");
            let _ = sup.failover.commands.send(Command::LinkDown);
        }
    }
    let task = tokio::spawn(sup.run(rx, link, cancel));
    Ok((SupervisorHandle { tx }, task))
}

impl Supervisor {
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<(Request, Reply)>,
        mut link: Option<tokio::sync::watch::Receiver<vipmgr::LinkState>>,
        cancel: CancellationToken,
    ) -> Exit {
        let mut requests_open = true;
        loop {
            tokio::select! {
                biased;
                t = self.failover.transitions.recv() => match t {
                    Some(t) => self.on_transition(t).await,
                    None => {
                        error!("failover protocol thread ended unexpectedly; releasing VIPs");
                        self.release().await;
                        self.stop_ipvs().await;
                        break;
                    }
                },
                _ = cancel.cancelled() => {
                    self.shutdown().await;
                    break;
                }
                changed = async {
                    match link.as_mut() {
                        Some(rx) => rx.changed().await.map(|_| *rx.borrow_and_update()),
                        None => std::future::pending().await,
                    }
                } => match changed {
                    Ok(state) => self.on_link(state),
                    Err(_) => link = None,
                },
                Some(report) = self.health.reports.recv() => {
                    let changes = self.health.changes(report);
                    self.apply_health(changes);
                }
                Ok(()) = self.health.ready.changed() => {
                    let ready = *self.health.ready.borrow_and_update();
                    self.on_ready(ready).await;
                }
                Some(turn) = self.ready_applied.1.recv() => {
                    if turn == self.ready_turn && *self.health.ready.borrow() {
                        self.tell_ready(true);
                    }
                }
                r = requests.recv(), if requests_open => match r {
                    Some((req, reply)) => {
                        match self.on_request(req).await {
                            Answer::Now(answer) => {
                                let _ = reply.send(answer);
                            }
                            Answer::Later(answer) => {
                                tokio::spawn(async move {
                                    let _ = reply.send(answer.await);
                                });
                            }
                        }
                        if self.restart {
                            // No step-down: the VIPs, the IPVS table and the peer's
                            // view stay as they are while the new process starts.
                            return Exit::Restart { active: self.role == Role::Active };
                        }
                    }
                    None => requests_open = false,
                },
            }
        }
        Exit::Stopped
    }

    fn on_link(&mut self, state: vipmgr::LinkState) {
        info!(interface = %self.config.failover.interface, ?state, "link state changed");
        if state == vipmgr::LinkState::Up {
            // The checks failed while the link was down because this director was
            // cut off: they start over, and the node holds back until they ran.
            self.health.restart_epoch();
            let ready = *self.health.ready.borrow_and_update();
            if !ready {
                self.ready_turn += 1;
                self.tell_ready(false);
            }
            let _ = self.failover.commands.send(Command::LinkUp);
        } else {
            let _ = self.failover.commands.send(Command::LinkDown);
        }
    }

    /// The runner turned ready (or not). Not ready is told at once; ready only
    /// after the IPVS table holds what the checks found, so a node that then
    /// preempts never takes the VIP with a stale table.
    async fn on_ready(&mut self, ready: bool) {
        self.ready_turn += 1;
        if !ready {
            self.tell_ready(false);
            return;
        }
        let changes = self.health.catch_up().await;
        self.apply_health(changes);
        let applied = self.ipvs.barrier();
        let (turn, back) = (self.ready_turn, self.ready_applied.0.clone());
        tokio::spawn(async move {
            if applied.await.is_ok() {
                let _ = back.send(turn).await;
            }
        });
    }

    /// Health changes go to the IPVS table and to the listeners (alerts).
    fn apply_health(&mut self, changes: Vec<crate::health::Change>) {
        let mut table = Vec::with_capacity(changes.len());
        for ((service, real), health, reason) in changes {
            self.events.publish(Event::Real {
                node: self.config.node.name.clone(),
                service: service.clone(),
                real,
                health,
                reason,
                at: std::time::SystemTime::now(),
            });
            table.push(((service, real), health));
        }
        self.ipvs.health(table);
    }

    /// Tells the failover protocol whether the checks are settled.
    fn tell_ready(&mut self, ready: bool) {
        if ready != self.ready {
            if ready {
                info!("health checks settled: ready to take over from the peer");
            } else {
                info!("health checks starting over: not preempting the peer until they ran");
            }
            self.ready = ready;
            let _ = self.failover.commands.send(Command::Ready(ready));
        }
    }

    async fn on_transition(&mut self, t: Transition) {
        info!(role = ?t.role, state = %t.state, reason = %t.reason, "role change");
        if t.role != self.role {
            self.events.publish(Event::Role {
                node: self.config.node.name.clone(),
                role: t.role,
                state: t.state.clone(),
                reason: t.reason.clone(),
                priority: self.failover.status.borrow().effective_priority,
                at: std::time::SystemTime::now(),
            });
        }
        let previous = self.role;
        self.role = t.role;
        match t.role {
            Role::Active => {
                if previous == Role::Active {
                    // A repeated Active (e.g. after a healed partition): hold the VIPs
                    // and announce them again so clients follow this node.
                    info!("announcing the VIPs again");
                }
                // The VIPs first: clients wait on them, the sync daemon does not.
                self.acquire().await;
                self.ipvs.role(t.role);
            }
            Role::Standby | Role::Fault => {
                self.release().await;
                self.ipvs.role(t.role);
            }
        }
    }

    /// Adds every VIP and announces them.
    async fn acquire(&mut self) {
        let vips = vips_of(&self.config);
        match self.addresses.reconcile(&vips, &vips) {
            Ok(changes) => info!(?changes, "VIPs held"),
            Err(e) => error!(error = %chain(&e), "could not add the VIPs"),
        }
        if let Some(a) = self.announcer.take() {
            a.abort();
        }
        let cfg = announce_of(&self.config);
        self.announcer = Some(tokio::spawn(async move {
            // One burst per VIP, all at once: every VIP's first announcement leaves
            // immediately.
            let mut bursts = tokio::task::JoinSet::new();
            for vip in vips.clone() {
                let cfg = cfg.clone();
                bursts.spawn(async move {
                    if let Err(e) = vipmgr::announce(&vip, &cfg).await {
                        warn!(vip = %vip, error = %chain(&e), "announcement failed");
                    }
                });
            }
            while bursts.join_next().await.is_some() {}
            if let Some(every) = cfg.refresh {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    for vip in &vips {
                        if let Err(e) = vipmgr::announce_once(vip) {
                            warn!(vip = %vip, error = %chain(&e), "refresh announcement failed");
                        }
                    }
                }
            }
        }));
    }

    /// Removes every VIP of this config.
    async fn release(&mut self) {
        if let Some(a) = self.announcer.take() {
            a.abort();
        }
        let vips = vips_of(&self.config);
        match self.addresses.reconcile(&[], &vips) {
            Ok(changes) if !changes.is_empty() => info!(?changes, "VIPs released"),
            Ok(_) => {}
            Err(e) => error!(error = %chain(&e), "could not remove the VIPs"),
        }
    }

    /// Clean stop: priority-0 advert, then the VIPs go.
    async fn shutdown(&mut self) {
        info!("stepping down");
        let _ = self.failover.commands.send(Command::Shutdown);
        let deadline = tokio::time::sleep(Duration::from_secs(2));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => { warn!("failover protocol did not confirm shutdown in 2s"); break; }
                t = self.failover.transitions.recv() => match t {
                    Some(t) if t.role == Role::Active => continue,
                    _ => break,
                },
            }
        }
        self.role = Role::Standby;
        self.release().await;
        self.stop_ipvs().await;
        if let Some(thread) = self.failover.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    /// The sync daemon goes back to backup (this node no longer holds the VIPs)
    /// and the IPVS thread ends. The table stays as it is.
    async fn stop_ipvs(&mut self) {
        self.ipvs.role(Role::Standby);
        if let Some(thread) = self.ipvs.stop() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    async fn on_request(&mut self, req: Request) -> Answer {
        match req {
            Request::Status => {
                let mut report = self.status();
                let ipvs = self.ipvs.status();
                let runner = self.health.handle();
                Answer::Later(Box::pin(async move {
                    report.checks = runner
                        .snapshot()
                        .await
                        .into_iter()
                        .map(CheckStatus::from)
                        .collect();
                    report.ipvs = ipvs.await.ok();
                    match serde_json::to_value(report) {
                        Ok(v) => Response::status(v),
                        Err(e) => Response::error(format!("cannot encode status: {e}")),
                    }
                }))
            }
            Request::Takeover => Answer::Now({
                if self.failover.commands.send(Command::Takeover).is_err() {
                    Response::error("the failover protocol is not running")
                } else {
                    Response::ok(format!("{}: taking over", self.config.node.name))
                }
            }),
            Request::Standby => Answer::Now({
                if self.failover.commands.send(Command::Standby).is_err() {
                    Response::error("the failover protocol is not running")
                } else {
                    Response::ok(format!(
                        "{}: handing over; staying standby until `directorctl takeover`",
                        self.config.node.name
                    ))
                }
            }),
            Request::Reload => {
                // SIGHUP and `directorctl reload` alike; applied or refused, the
                // daemon runs on (the old config if refused).
                crate::systemd::reloading();
                let answer = self.reload(false).await;
                crate::systemd::ready();
                answer
            }
            Request::ReloadDryRun => self.reload(true).await,
            Request::Restart => Answer::Now(self.restart()),
            Request::Drain { service, real } => self.drain(service, real, true),
            Request::Enable { service, real } => self.drain(service, real, false),
            Request::Check { service, real } => self.check_now(&service, &real),
        }
    }

    /// `directorctl check`: runs the real server's check once now.
    fn check_now(&self, service: &str, real: &str) -> Answer {
        let (s, r) = match config::Service::find(&self.config.services, service, real) {
            Ok(found) => found,
            Err(e) => return Answer::Now(Response::error(e)),
        };
        let Some(check) = &s.check else {
            return Answer::Now(Response::error(format!(
                "service `{service}` has no check: its real servers count as up"
            )));
        };
        let (name, address, kind) = (s.name.clone(), r.address, check.protocol.name());
        let runner = self.health.handle();
        Answer::Later(Box::pin(async move {
            let key = checkers::runner::Key {
                service: name.clone(),
                real: address,
            };
            let Some(result) = runner.check_now(&key).await else {
                return Response::error(format!("{name} {address}: its check is not running"));
            };
            let shown = crate::health::ResultStatus::from(&result);
            let message = format!(
                "{name} {address}: {kind} check {}{} in {} ms",
                shown.result.to_uppercase(),
                shown
                    .reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default(),
                shown.latency_ms,
            );
            let data = serde_json::to_value(&shown).unwrap_or_default();
            if matches!(result.outcome, checkers::runner::Outcome::Error { .. }) {
                Response::error(message)
            } else {
                Response::with_data(message, data)
            }
        }))
    }

    /// Drains or enables one real server (on the IPVS thread).
    fn drain(&mut self, service: String, real: String, drain: bool) -> Answer {
        let answer = self.ipvs.drain(service, real, drain);
        Answer::Later(Box::pin(async move {
            match answer.await {
                Ok(Ok((name, real))) => {
                    let message = format!(
                        "{name} {}: {}, weight {}{}; {} active connection(s), {} inactive",
                        real.address,
                        if drain { "drained" } else { "enabled" },
                        real.weight.map_or("?".to_string(), |w| w.to_string()),
                        if drain {
                            format!(" (configured {})", real.configured_weight)
                        } else {
                            String::new()
                        },
                        real.active_connections,
                        real.inactive_connections,
                    );
                    match serde_json::to_value(&real) {
                        Ok(data) => Response::with_data(message, data),
                        Err(_) => Response::ok(message),
                    }
                }
                Ok(Err(e)) => Response::error(e),
                Err(_) => Response::error("directord is shutting down"),
            }
        }))
    }

    /// Re-reads the file. An invalid file changes nothing. `dry_run`: only says
    /// what the file would change.
    async fn reload(&mut self, dry_run: bool) -> Answer {
        let path = self.config.path.clone();
        let new = match Config::load(&path) {
            Ok(c) => c,
            Err(problems) => {
                warn!(%problems, "reload refused: the running config stays");
                return Answer::Now(Response::error(format!(
                    "reload refused, the running config stays:\n{problems}"
                )));
            }
        };
        let changes = config::diff::describe(&self.config, &new);
        if dry_run {
            let message = if changes.is_empty() {
                format!("dry run: {} would change nothing", path.display())
            } else {
                format!(
                    "dry run: {} would change:\n  {}",
                    path.display(),
                    changes.join("\n  ")
                )
            };
            return Answer::Now(Response::with_data(
                message,
                serde_json::json!({ "changes": changes }),
            ));
        }
        let mut restart_needed = Vec::new();
        if new.metrics != self.config.metrics {
            restart_needed.push("[metrics]");
        }
        if new.node != self.config.node {
            restart_needed.push("[node]");
        }
        if new.failover != self.config.failover {
            restart_needed.push("[failover]");
        }
        if new.control != self.config.control {
            restart_needed.push("[control]");
        }
        let mut applied = Vec::new();
        let old_vips = vips_of(&self.config);
        let new_vips = vips_of(&new);
        if old_vips != new_vips {
            applied.push("[[vip]]");
        }
        if new.announce != self.config.announce {
            applied.push("[announce]");
        }
        if new.services != self.config.services {
            applied.push("[[service]]");
        }
        if new.ipvs != self.config.ipvs {
            applied.push("[ipvs]");
        }
        if new.alerts != self.config.alerts {
            applied.push("[alerts]");
        }
        if !restart_needed.is_empty() {
            let msg = format!(
                "reload refused: {} changed, which needs a restart of directord; nothing was applied",
                restart_needed.join(", ")
            );
            warn!("{msg}");
            return Answer::Now(Response::error(msg));
        }
        self.alerts.reconfigure(new.alerts.clone());
        // Keep the sections that need a restart as they run; take the rest.
        let mut managed = old_vips.clone();
        managed.extend(new_vips.iter().cloned());
        self.config.vips = new.vips;
        self.config.announce = new.announce;
        self.config.services = new.services;
        self.config.ipvs = new.ipvs;
        self.config.alerts = new.alerts;
        for change in &changes {
            info!(%change, "reload");
        }
        // The whole table is reconciled (so a change made behind directord's back
        // is undone too), but only what differs reaches the kernel.
        let health = self.health.configure(&self.config).await;
        let ipvs = self.ipvs.configure(
            self.config.services.clone(),
            self.config.ipvs.sync.clone(),
            health,
        );
        if self.role == Role::Active {
            match self.addresses.reconcile(&new_vips, &managed) {
                Ok(changes) => info!(?changes, "reload applied to the VIPs"),
                Err(e) => error!(error = %chain(&e), "reload: could not apply the VIPs"),
            }
            if old_vips != new_vips {
                self.acquire().await;
            }
        } else if let Err(e) = self.addresses.reconcile(&[], &managed) {
            error!(error = %chain(&e), "reload: could not clear the VIPs");
        }
        let msg = if applied.is_empty() {
            "reloaded: no change".to_string()
        } else {
            format!("reloaded: {} applied", applied.join(", "))
        };
        let uses_ipvs = !self.config.services.is_empty() || self.config.ipvs.sync.is_some();
        Answer::Later(Box::pin(async move {
            let Ok(summary) = ipvs.await else {
                return Response::error("directord is shutting down");
            };
            let msg = if uses_ipvs || !summary.is_clean() || summary.changes > 0 {
                format!("{msg}; {summary}")
            } else {
                msg
            };
            if summary.is_clean() {
                info!("{msg}");
                Response::ok(msg)
            } else {
                // The new config runs, but the kernel does not hold all of it.
                warn!("{msg}");
                Response::error(msg)
            }
        }))
    }

    /// Prepares an in-place restart (VRRP: the new process resumes as master
    /// before the peer's master-down timer can fire).
    fn restart(&mut self) -> Response {
        if let Protocol::Heartbeat(_) = self.config.failover.protocol {
            return Response::error(
                "in-place restart is available with VRRP only; with the heartbeat protocol use a normal restart (the peer takes over meanwhile)",
            );
        }
        if let Err(problems) = Config::load(&self.config.path) {
            return Response::error(format!(
                "restart refused: the config file is invalid, the running daemon stays:\n{problems}"
            ));
        }
        self.restart = true;
        info!(role = ?self.role, "restarting in place");
        Response::ok(format!(
            "{}: restarting in place as {}",
            self.config.node.name,
            match self.role {
                Role::Active => "active (VIPs and IPVS table kept)",
                Role::Standby | Role::Fault => "standby",
            }
        ))
    }

    fn status(&mut self) -> StatusReport {
        let vrrp = match &self.config.failover.protocol {
            Protocol::Vrrp(v) => Some(v),
            Protocol::Heartbeat(_) => None,
        };
        let hb = match &self.config.failover.protocol {
            Protocol::Heartbeat(h) => Some(h),
            Protocol::Vrrp(_) => None,
        };
        let vips = vips_of(&self.config)
            .into_iter()
            .map(|vip| VipStatus {
                held: self.addresses.is_held(&vip).unwrap_or(false),
                address: format!("{}/{}", vip.address, vip.prefix_len),
                interface: vip.interface,
            })
            .collect();
        StatusReport {
            node: self.config.node.name.clone(),
            failover: self.failover.status.borrow().clone(),
            interface: self.config.failover.interface.clone(),
            version: vrrp.map(|v| match v.version {
                VrrpVersion::V2 => 2,
                VrrpVersion::V3 => 3,
            }),
            router_id: vrrp.map(|v| v.router_id),
            advert_interval: vrrp.map(|v| v.advert_interval),
            keepalive: hb.map(|h| h.keepalive),
            deadtime: hb.map(|h| h.deadtime),
            vips,
            ipvs: None,
            checks: Vec::new(),
            config: self.config.path.display().to_string(),
            pid: std::process::id(),
            started: self
                .started
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
        }
    }
}
