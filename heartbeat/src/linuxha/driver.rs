//! The protocol thread: the sockets, the timers and the channels around a
//! [`Machine`].
//!
//! Small and boring on purpose: every decision is the machine's. The driver opens
//! one socket per medium (retrying every second while it cannot, and checking every
//! second that a working one's interface is still there), feeds datagrams, commands
//! and timer expiries to the machine, carries out its actions and publishes the
//! status after each event.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::error::Error;
use crate::linuxha::HbConfig;
use crate::linuxha::machine::{Action, Event, Machine};
use crate::linuxha::socket::{self, MediumSocket};
use crate::linuxha::state::{BootState, StateStore};
use crate::role::{Command, LinkStatus, PeerSeen, Status, Transition};
use crate::thread::{describe, wall_clock};

/// How often a failed socket is reopened and a working one's interface checked.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Largest datagram read.
const RECV_BUFFER: usize = 65_536;

/// What the protocol thread set up before it reported that it runs.
#[derive(Debug)]
pub(crate) struct Prepared {
    runtime: Runtime,
    store: StateStore,
    boot: BootState,
}

/// Runs on the protocol thread before anything else: enters the network namespace,
/// builds the runtime and starts a new generation on disk.
pub(crate) fn prepare(config: &HbConfig) -> Result<Prepared, Error> {
    let runtime = crate::thread::runtime_in(config.netns.as_deref())?;
    let store = StateStore::open(&config.state_dir, &config.node, &config.peer)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let boot = store.boot(now)?;
    Ok(Prepared {
        runtime,
        store,
        boot,
    })
}

/// The protocol loop; returns after [`Command::Shutdown`] (or when the supervisor
/// drops its handle).
pub(crate) fn run(
    prepared: Prepared,
    config: HbConfig,
    commands: mpsc::UnboundedReceiver<Command>,
    transitions: mpsc::UnboundedSender<Transition>,
    status: watch::Sender<Status>,
) {
    let Prepared {
        runtime,
        store,
        boot,
    } = prepared;
    runtime.block_on(run_loop(config, store, boot, commands, transitions, status));
}

/// A datagram, or the error that ended a socket's reader.
type Received = (usize, u64, io::Result<(Vec<u8>, SocketAddr)>);

/// One medium's open socket and the task reading it.
struct Open {
    socket: Arc<MediumSocket>,
    reader: JoinHandle<()>,
    /// Which opening this is (so a dead reader's last word is not taken for a
    /// newer socket's).
    epoch: u64,
}

struct Driver {
    config: HbConfig,
    machine: Machine,
    store: StateStore,
    open: Vec<Option<Open>>,
    epochs: u64,
    received: mpsc::UnboundedSender<Received>,
    transitions: mpsc::UnboundedSender<Transition>,
    status: watch::Sender<Status>,
    last_transition: Option<Transition>,
    check_at: Instant,
    /// Last problem logged per medium (opening or sending), so retries log once.
    problems: Vec<Option<String>>,
}

/// What woke the loop.
enum Wake {
    Command(Option<Command>),
    Timer,
    Received(Option<Received>),
    Check,
}

async fn run_loop(
    config: HbConfig,
    store: StateStore,
    boot: BootState,
    mut commands: mpsc::UnboundedReceiver<Command>,
    transitions: mpsc::UnboundedSender<Transition>,
    status: watch::Sender<Status>,
) {
    let (received_tx, mut received_rx) = mpsc::unbounded_channel();
    let now = Instant::now();
    let media = config.media.len();
    let mut driver = Driver {
        machine: Machine::new(&config, boot, now, SystemTime::now()),
        config,
        store,
        open: (0..media).map(|_| None).collect(),
        epochs: 0,
        received: received_tx,
        transitions,
        status,
        last_transition: None,
        check_at: now,
        problems: vec![None; media],
    };
    tracing::info!(
        node = %driver.config.node,
        peer = %driver.config.peer,
        generation = boot.generation,
        media = ?driver.config.media.iter().map(|m| m.describe()).collect::<Vec<_>>(),
        "heartbeat starting"
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
            received = received_rx.recv() => Wake::Received(received),
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
            Wake::Received(Some((medium, epoch, Ok((bytes, from))))) => {
                if driver.is_current(medium, epoch) {
                    driver.event(
                        now,
                        Event::Datagram {
                            medium,
                            from,
                            bytes,
                        },
                    );
                }
            }
            Wake::Received(Some((medium, epoch, Err(source)))) => {
                if driver.is_current(medium, epoch) {
                    let error = Error::ReceiveMedium {
                        medium: driver.config.media[medium].describe(),
                        source,
                    };
                    driver.socket_down(now, medium, &error);
                }
            }
            // The driver holds a sender: the channel never closes.
            Wake::Received(None) => {}
            Wake::Check => driver.check(now),
        }
        driver.publish();
    }
    for open in driver.open.iter_mut().filter_map(Option::take) {
        open.reader.abort();
    }
    tracing::info!(node = %driver.config.node, "heartbeat stopped");
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// Reads one socket until it fails.
async fn read(
    socket: Arc<MediumSocket>,
    medium: usize,
    epoch: u64,
    out: mpsc::UnboundedSender<Received>,
) {
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        let result = socket
            .socket
            .recv_from(&mut buf)
            .await
            .map(|(n, from)| (buf[..n].to_vec(), from));
        let failed = result.is_err();
        if out.send((medium, epoch, result)).is_err() || failed {
            return;
        }
    }
}

impl Driver {
    fn is_current(&self, medium: usize, epoch: u64) -> bool {
        self.open
            .get(medium)
            .and_then(Option::as_ref)
            .is_some_and(|o| o.epoch == epoch)
    }

    /// Feeds the machine and carries out its actions. The status is published
    /// before the transitions go out, so a supervisor that reads the status on a
    /// transition sees the new state.
    fn event(&mut self, now: Instant, event: Event) {
        let actions = self.machine.handle(now, event);
        let mut transitions = Vec::new();
        for action in actions {
            match action {
                Action::Send { bytes } => self.send(&bytes),
                Action::Transition {
                    role,
                    state,
                    reason,
                } => {
                    tracing::info!(
                        node = %self.config.node,
                        state = state.name(),
                        ?role,
                        %reason,
                        "heartbeat transition"
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
                Action::PeerLate { silent_for } => tracing::warn!(
                    peer = %self.config.peer,
                    silent_ms = silent_for.as_millis(),
                    "late heartbeat: nothing from the peer for warntime"
                ),
                Action::PeerDead { reason } => {
                    tracing::warn!(peer = %self.config.peer, %reason, "peer dead");
                }
                Action::PeerAlive { address } => {
                    tracing::info!(peer = %self.config.peer, %address, "peer alive");
                }
                Action::LinkUp { medium } => tracing::info!(
                    medium = %self.config.media[medium].describe(),
                    "heartbeat link up"
                ),
                Action::LinkDown { medium, silent_for } => tracing::warn!(
                    medium = %self.config.media[medium].describe(),
                    silent_ms = silent_for.as_millis(),
                    "heartbeat link down: nothing from the peer on it for deadtime"
                ),
                Action::PeerGeneration { generation } => {
                    tracing::info!(peer = %self.config.peer, generation, "peer runs a new generation");
                    if let Err(e) = self.store.save_peer_generation(generation) {
                        tracing::warn!(error = %describe(&e), "peer generation not kept on disk");
                    }
                }
                Action::Dropped {
                    medium,
                    reason,
                    detail,
                } => tracing::debug!(
                    medium = %self.config.media[medium].describe(),
                    reason,
                    %detail,
                    "heartbeat message dropped"
                ),
            }
        }
        if !transitions.is_empty() {
            self.publish();
            for transition in transitions {
                let _ = self.transitions.send(transition);
            }
        }
    }

    /// Sends on every open medium. A failed send is logged (once per problem), not a
    /// fault: the peer's silence on that medium is what counts.
    fn send(&mut self, bytes: &[u8]) {
        for (medium, open) in self.open.iter().enumerate() {
            let Some(open) = open else { continue };
            let result = open
                .socket
                .socket
                .try_send_to(bytes, open.socket.destination);
            let problem = match result {
                Ok(n) if n == bytes.len() => None,
                Ok(_) => Some("short send".to_owned()),
                Err(e) => Some(format!("cannot send to {}: {e}", open.socket.destination)),
            };
            if problem != self.problems[medium] {
                match &problem {
                    Some(p) => tracing::warn!(
                        medium = %self.config.media[medium].describe(),
                        problem = %p,
                        "heartbeat message not sent"
                    ),
                    None => tracing::info!(
                        medium = %self.config.media[medium].describe(),
                        "heartbeat messages go out again"
                    ),
                }
                self.problems[medium] = problem;
            }
        }
    }

    fn socket_down(&mut self, now: Instant, medium: usize, error: &Error) {
        if let Some(open) = self.open[medium].take() {
            open.reader.abort();
        }
        let reason = describe(error);
        if self.problems[medium].as_deref() != Some(reason.as_str()) {
            tracing::warn!(
                medium = %self.config.media[medium].describe(),
                %reason,
                "heartbeat medium unusable; retrying every second"
            );
            self.problems[medium] = Some(reason.clone());
        }
        self.event(now, Event::SocketDown { medium, reason });
    }

    /// Opens the media that are closed and checks that the open ones' interfaces
    /// are still there. Media that open are reported before those that fail, so a
    /// start with one bad medium out of two is no fault.
    fn check(&mut self, now: Instant) {
        self.check_at = now + CHECK_INTERVAL;
        let mut failed = Vec::new();
        for medium in 0..self.open.len() {
            let config = &self.config.media[medium];
            match &self.open[medium] {
                None => match socket::open(config, self.config.port) {
                    Ok(socket) => {
                        tracing::info!(
                            medium = %config.describe(),
                            destination = %socket.destination,
                            "heartbeat medium open"
                        );
                        self.epochs += 1;
                        let epoch = self.epochs;
                        let socket = Arc::new(socket);
                        let reader = tokio::spawn(read(
                            Arc::clone(&socket),
                            medium,
                            epoch,
                            self.received.clone(),
                        ));
                        self.open[medium] = Some(Open {
                            socket,
                            reader,
                            epoch,
                        });
                        self.problems[medium] = None;
                        // As in VRRP: timers count from the moment the medium can
                        // hear the peer, not from when this check began.
                        self.event(Instant::now(), Event::SocketUp { medium });
                    }
                    Err(e) => failed.push((medium, e)),
                },
                Some(open) => match socket::interface_info(config.interface()) {
                    Err(e) => failed.push((medium, e)),
                    Ok(info) if info.index != open.socket.ifindex => failed.push((
                        medium,
                        Error::FindInterface {
                            interface: config.interface().to_owned(),
                            source: io::Error::other("the interface was re-created"),
                        },
                    )),
                    Ok(_) => {}
                },
            }
        }
        for (medium, error) in failed {
            self.socket_down(now, medium, &error);
        }
    }

    fn publish(&self) {
        let m = &self.machine;
        let links = self
            .config
            .media
            .iter()
            .zip(m.links())
            .map(|(medium, link)| LinkStatus {
                medium: medium.describe(),
                interface: medium.interface().to_owned(),
                up: link.up,
                last_seen: link.last_seen.map(wall_clock),
            })
            .collect();
        let status = Status {
            protocol: "heartbeat".into(),
            role: m.state().role(),
            state: m.state().name().into(),
            priority: 0,
            effective_priority: 0,
            r#override: m.override_mode(),
            ready: m.is_ready(),
            peer: m.peer().map(|p| PeerSeen {
                address: p.address,
                priority: 0,
                advert_interval: p.keepalive,
                last_seen: wall_clock(p.last_seen),
            }),
            counters: m.counters().clone(),
            last_transition: self.last_transition.clone(),
            links,
        };
        self.status.send_replace(status);
    }
}
