//! The protocol thread: the socket, the timers and the channels around a
//! [`Machine`].
//!
//! Small and boring on purpose: every decision is the machine's. The driver opens
//! the socket (retrying every second while it cannot), checks every second that
//! the interface is still there and up, feeds packets, commands and timer expiries
//! to the machine, carries out its actions and publishes the status after each
//! event.

use std::io;
use std::time::{Duration, Instant, SystemTime};

use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};

use crate::error::Error;
use crate::role::{Command, PeerSeen, Status, Transition};
use crate::thread::{describe, wall_clock};
use crate::vrrp::VrrpConfig;
use crate::vrrp::machine::{Action, Event, Machine};
use crate::vrrp::socket::{Received, VrrpSocket, interface_info};

/// How often a failed socket is reopened and a working one's interface checked.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Runs on the protocol thread before anything else: enters the network namespace
/// and builds the runtime.
pub(crate) fn prepare(config: &VrrpConfig) -> Result<Runtime, Error> {
    crate::thread::runtime_in(config.netns.as_deref())
}

/// What woke the loop.
enum Wake {
    Command(Option<Command>),
    Timer,
    Received(Result<Received, Error>),
    Check,
}

struct Driver {
    config: VrrpConfig,
    machine: Machine,
    socket: Option<VrrpSocket>,
    transitions: mpsc::UnboundedSender<Transition>,
    status: watch::Sender<Status>,
    last_transition: Option<Transition>,
    check_at: Instant,
    /// Last socket problem logged, so a retry loop logs once.
    last_problem: Option<String>,
}

/// The protocol loop; returns after [`Command::Shutdown`] (or when the supervisor
/// drops its handle).
pub(crate) async fn run(
    config: VrrpConfig,
    mut commands: mpsc::UnboundedReceiver<Command>,
    transitions: mpsc::UnboundedSender<Transition>,
    status: watch::Sender<Status>,
) {
    let now = Instant::now();
    let mut driver = Driver {
        machine: Machine::new(&config),
        config,
        socket: None,
        transitions,
        status,
        last_transition: None,
        check_at: now,
        last_problem: None,
    };
    tracing::info!(
        interface = %driver.config.interface,
        vrid = driver.config.vrid,
        priority = driver.config.priority,
        version = ?driver.config.version,
        "VRRP starting"
    );
    driver.check(now);
    driver.publish();
    loop {
        let deadline = driver.machine.next_deadline();
        let check_at = tokio::time::Instant::from_std(driver.check_at);
        let wake = tokio::select! {
            biased;
            command = commands.recv() => Wake::Command(command),
            () = sleep_until(deadline) => Wake::Timer,
            received = recv(driver.socket.as_ref()) => Wake::Received(received),
            () = tokio::time::sleep_until(check_at) => Wake::Check,
        };
        let now = Instant::now();
        match wake {
            Wake::Command(command) => {
                let command = command.unwrap_or(Command::Shutdown);
                let stop = command == Command::Shutdown;
                driver.event(now, Event::Command(command));
                if stop {
                    driver.publish();
                    break;
                }
            }
            Wake::Timer => driver.event(now, Event::Timeout),
            Wake::Received(Ok(Received::Advert { src, repr })) => {
                driver.event(now, Event::Advert { src, repr });
            }
            Wake::Received(Ok(Received::Dropped(reason))) => {
                tracing::debug!(interface = %driver.config.interface, reason, "VRRP packet dropped");
                driver.event(now, Event::Dropped { reason });
            }
            Wake::Received(Ok(Received::Ignored)) => continue,
            Wake::Received(Err(e)) => driver.socket_down(now, &e),
            Wake::Check => driver.check(now),
        }
        driver.publish();
    }
    tracing::info!(interface = %driver.config.interface, vrid = driver.config.vrid, "VRRP stopped");
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

async fn recv(socket: Option<&VrrpSocket>) -> Result<Received, Error> {
    match socket {
        Some(socket) => socket.recv().await,
        None => std::future::pending().await,
    }
}

impl Driver {
    /// Feeds the machine and carries out its actions. The status is published
    /// before the transitions go out, so a supervisor that reads the status on a
    /// transition sees the new state.
    fn event(&mut self, now: Instant, event: Event) {
        let actions = self.machine.handle(now, event);
        let mut transitions = Vec::new();
        for action in actions {
            match action {
                Action::SendAdvert { priority } => self.send(priority),
                Action::Transition {
                    role,
                    state,
                    reason,
                } => {
                    tracing::info!(
                        interface = %self.config.interface,
                        vrid = self.config.vrid,
                        state = state.name(),
                        ?role,
                        %reason,
                        "VRRP transition"
                    );
                    let transition = Transition {
                        role,
                        state: state.name().to_owned(),
                        reason,
                        at: SystemTime::now(),
                    };
                    self.last_transition = Some(transition.clone());
                    transitions.push(transition);
                }
            }
        }
        if !transitions.is_empty() {
            self.publish();
            for transition in transitions {
                let _ = self.transitions.send(transition);
            }
        }
    }

    fn send(&mut self, priority: u8) {
        let Some(socket) = &self.socket else {
            return;
        };
        // A failed send is logged, not a fault: a transient ENOBUFS must not flap
        // the role. A vanished interface or address is caught by `check`.
        if let Err(e) = socket.send(&self.machine.advert(priority)) {
            tracing::warn!(interface = %self.config.interface, error = %describe(&e), "VRRP advert not sent");
        }
    }

    fn socket_down(&mut self, now: Instant, error: &Error) {
        self.socket = None;
        self.check_at = now + CHECK_INTERVAL;
        let reason = describe(error);
        if self.last_problem.as_deref() != Some(reason.as_str()) {
            tracing::warn!(interface = %self.config.interface, %reason, "VRRP socket down; retrying every second");
            self.last_problem = Some(reason.clone());
        }
        self.event(now, Event::SocketDown { reason });
    }

    /// Opens the socket if it is closed; otherwise checks that its interface and
    /// source address are still there.
    fn check(&mut self, now: Instant) {
        self.check_at = now + CHECK_INTERVAL;
        match &self.socket {
            None => match VrrpSocket::open(&self.config) {
                Ok(socket) => {
                    let local = socket.local;
                    tracing::info!(interface = %self.config.interface, %local, "VRRP socket open");
                    self.socket = Some(socket);
                    self.last_problem = None;
                    // The timers start now, not when the check began: opening the
                    // socket can take a while on a loaded machine, and adverts could
                    // not be heard before it was open (else the master-down timer
                    // would fire early and preempt a live peer).
                    self.event(Instant::now(), Event::SocketUp { local });
                }
                Err(e) => self.socket_down(now, &e),
            },
            Some(socket) => {
                let problem = match interface_info(&self.config.interface) {
                    Err(e) => Some(e),
                    Ok(info) if info.index != socket.ifindex() => Some(Error::FindInterface {
                        interface: self.config.interface.clone(),
                        source: io::Error::other("the interface was re-created"),
                    }),
                    Ok(info) if !info.up => Some(Error::InterfaceDown {
                        interface: self.config.interface.clone(),
                    }),
                    Ok(info)
                        if self.config.source_address.is_none()
                            && !info.addresses.contains(&socket.local) =>
                    {
                        Some(Error::FindSourceAddress {
                            interface: self.config.interface.clone(),
                            family: self.config.family.name(),
                        })
                    }
                    Ok(_) => None,
                };
                if let Some(e) = problem {
                    self.socket_down(now, &e);
                }
            }
        }
    }

    fn publish(&self) {
        let m = &self.machine;
        let status = Status {
            protocol: "vrrp".into(),
            role: m.state().role(),
            state: m.state().name().into(),
            priority: m.priority(),
            effective_priority: m.effective_priority(),
            r#override: m.override_mode(),
            ready: m.is_ready(),
            peer: m.peer().map(|p| PeerSeen {
                address: p.address,
                priority: p.priority,
                advert_interval: p.advert_interval,
                last_seen: wall_clock(p.last_seen),
            }),
            counters: m.counters().clone(),
            last_transition: self.last_transition.clone(),
            links: Vec::new(),
        };
        self.status.send_replace(status);
    }
}
