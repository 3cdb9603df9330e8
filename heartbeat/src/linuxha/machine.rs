//! The heartbeat protocol of one node of a two-node cluster, as a sans-IO core.
//!
//! The driver feeds it [`Event`]s (datagrams as received, socket changes, timer
//! expiries, commands) with the current time and carries out the returned
//! [`Action`]s; [`Machine::next_deadline`] says when to feed [`Event::Timeout`].
//! It parses, authenticates and signs messages itself, so every path is a plain
//! test.
//!
//! # Liveness
//! Every `keepalive` this node sends a `t=status` message on all media. The peer is
//! late after `warntime` without an accepted message from it, and dead after
//! `deadtime` of silence on every medium. A medium is up while the peer is heard on
//! it within `deadtime`; a medium going down is reported, and causes nothing else
//! while another medium carries the keepalives. At start the node waits `initdead`
//! for the peer before taking over.
//!
//! # Acceptance
//! A datagram counts only when it parses ("malformed"), carries a valid signature
//! from the key file ("auth"), comes from the configured peer (by `src`, and by
//! address on a unicast medium: "source"), is of the peer's current generation or a
//! newer one ("generation"), and has a sequence number above the last one seen on
//! that medium and within 64 of the highest seen ("replay"). The same message
//! arriving over two media is accepted on both (it keeps both media up) and acted
//! on once.
//!
//! # Who holds the VIPs
//! Each keepalive carries the sender's role, operator override and readiness
//! (`dd_role`, `dd_ovr`, `dd_ka`, `dd_yields`, `dd_ready`: directord fields that
//! heartbeat ignores). When both nodes run, the one that ranks higher is active;
//! ranks compare, in order:
//! 1. able to serve (not in fault);
//! 2. under an operator `takeover`;
//! 3. not under an operator `standby`;
//! 4. the preferred node, when `auto_failback` is on and its health checks are
//!    settled (ready);
//! 5. already active (the holder keeps the VIPs);
//! 6. ready (health checks settled);
//! 7. the preferred node;
//! 8. the lexically lower node name.
//!
//! Readiness ([`Command::Ready`], initially [`HbConfig::ready`]) gates taking the
//! VIPs from a live peer, never holding them: a node that is not ready does not
//! fail back (rule 4), does not take the VIPs from an active peer (rule 5 decides
//! first), and leaves them to a ready peer when neither holds them (rule 6). It
//! still takes over when the peer dies, leaves or is in fault, and under an
//! operator takeover. An active node that becomes not ready keeps the VIPs (rule
//! 5); only when both are active (a healed partition) does the one not ready yield.
//! `Ready(true)` settles the role again at once: auto-failback happens then. A
//! peer that does not send `dd_ready` (Linux-HA heartbeat, an older directord)
//! counts as ready. Every change of readiness is sent to the peer at once.
//!
//! A standby node that ranks higher becomes active at once; an active node yields
//! only once the peer says it is active and ranks higher. So after a partition heals
//! (both active) exactly one yields (rule 5 ties, so the preferred node, else the
//! lower name, stays). The loser counts the yield in its keepalives (`dd_yields`);
//! when the winner sees that count rise it announces the VIPs again (a repeated
//! transition to Active), since neighbours may still send to the loser. heartbeat
//! itself restarts one side on a split brain; this is the same outcome without the
//! restart.
//!
//! Operator moves are hand-offs: `Takeover` makes this node active and sends a
//! keepalive at once (the peer yields on reading it); `Standby` makes it standby and
//! sends one at once (the peer takes over on reading it). The later command wins:
//! a node drops its own override when the peer takes the same one. A standby node
//! still takes over when the peer dies, and an active node asked to stand by while
//! the peer is dead keeps the VIPs.
//!
//! # Talking to Linux-HA heartbeat
//! It answers `reqnodes` with `repnodes` (heartbeat waits for it before its
//! communication is up), acknowledges every tenth sequence number with
//! `NS_ackmsg` (heartbeat's flow control), resends from a short history on
//! `NS_rexmit`, and on shutdown sends `t=shutdone st=dead` (heartbeat takes over
//! the resources at once) and `t=status st=dead` (heartbeat marks the node dead at
//! once); this machine takes either as the peer leaving.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::linuxha::authkeys::AuthKeys;
use crate::linuxha::message::{FieldType, Format, Header, Kind, Message, NodeStatus, name};
use crate::linuxha::state::BootState;
use crate::linuxha::{HbConfig, Medium};
use crate::role::{Command, Counters, Override, Role};

/// directord's own fields in every status message.
pub mod field {
    /// The sender's role: init, standby, active, fault.
    pub const ROLE: &str = "dd_role";
    /// The sender's operator override: none, takeover, standby.
    pub const OVERRIDE: &str = "dd_ovr";
    /// The sender's keepalive interval, milliseconds (hex).
    pub const KEEPALIVE: &str = "dd_ka";
    /// How often the sender gave up the active role in this generation (hex): when
    /// it rises, the active peer announces the VIPs again.
    pub const YIELDS: &str = "dd_yields";
    /// "1" when the sender's health checks are settled, "0" while it holds back.
    pub const READY: &str = "dd_ready";
}

/// Sequence numbers this far below the highest seen are replays.
pub const REPLAY_WINDOW: u64 = 64;
/// Messages kept for retransmission on request.
const HISTORY: usize = 64;
/// At most this many messages are resent for one request.
const MAX_RESEND: u64 = 32;
/// heartbeat acknowledges one sequence number in this many.
const ACK_EVERY: u64 = 10;
/// heartbeat's hop count for a two-node cluster (hopfudge 1 + 2 nodes).
const TTL: &str = "3";
/// heartbeat's protocol version field.
const PROTOCOL: &str = "1";

/// Protocol state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Started, waiting (up to initdead) to hear the peer.
    Init,
    Standby,
    Active,
    /// Cannot take part: link down, or no medium usable.
    Fault,
    /// After Shutdown.
    Stopped,
}

impl State {
    /// Name shown in `Status::state` and `Transition::state`.
    pub const fn name(self) -> &'static str {
        match self {
            State::Init => "init",
            State::Standby => "standby",
            State::Active => "active",
            State::Fault => "fault",
            State::Stopped => "stopped",
        }
    }

    /// The role the supervisor acts on.
    pub const fn role(self) -> Role {
        match self {
            State::Active => Role::Active,
            State::Init | State::Standby | State::Stopped => Role::Standby,
            State::Fault => Role::Fault,
        }
    }
}

/// What the peer says about itself (`dd_role`); `Unknown` for a Linux-HA
/// heartbeat node, which does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    Init,
    Standby,
    Active,
    Fault,
    Unknown,
}

impl PeerRole {
    fn parse(s: Option<&str>) -> PeerRole {
        match s {
            Some("init") => PeerRole::Init,
            Some("standby") => PeerRole::Standby,
            Some("active") => PeerRole::Active,
            Some("fault") => PeerRole::Fault,
            _ => PeerRole::Unknown,
        }
    }
}

fn override_name(o: Override) -> &'static str {
    match o {
        Override::None => "none",
        Override::Takeover => "takeover",
        Override::Standby => "standby",
    }
}

fn parse_override(s: Option<&str>) -> Override {
    match s {
        Some("takeover") => Override::Takeover,
        Some("standby") => Override::Standby,
        _ => Override::None,
    }
}

/// Input to the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The socket of `media[medium]` is open.
    SocketUp { medium: usize },
    /// The socket of `media[medium]` failed (or its interface vanished).
    SocketDown { medium: usize, reason: String },
    /// A datagram arrived on `media[medium]` from `from`.
    Datagram {
        medium: usize,
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    /// A deadline from [`Machine::next_deadline`] may have passed.
    Timeout,
    /// An order from the supervisor.
    Command(Command),
}

/// Output of the machine, to be carried out in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this datagram on every medium.
    Send { bytes: Vec<u8> },
    /// The state changed (or, Active to Active: announce the VIPs again).
    Transition {
        role: Role,
        state: State,
        reason: String,
    },
    /// The peer has been silent for warntime (log it).
    PeerLate { silent_for: Duration },
    /// The peer is dead (silent on every medium for deadtime, or it left).
    PeerDead { reason: String },
    /// The peer is heard again (or for the first time).
    PeerAlive { address: IpAddr },
    /// The peer is heard on this medium again.
    LinkUp { medium: usize },
    /// The peer has been silent on this medium for deadtime.
    LinkDown { medium: usize, silent_for: Duration },
    /// The peer runs a new generation: keep it on disk.
    PeerGeneration { generation: u64 },
    /// A datagram was dropped and counted under `reason`.
    Dropped {
        medium: usize,
        reason: &'static str,
        detail: String,
    },
}

/// The peer as last heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub address: IpAddr,
    pub last_seen: Instant,
    /// The peer's keepalive interval: as it says (`dd_ka`), else as measured.
    pub keepalive: Duration,
    pub role: PeerRole,
    pub overrides: Override,
    /// Not dead.
    pub alive: bool,
    pub generation: u64,
    /// Its `st` field.
    pub status: String,
    /// Its health checks are settled (`dd_ready`; true when it does not say).
    pub ready: bool,
}

/// One medium as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The peer was heard on it within deadtime.
    pub up: bool,
    pub last_seen: Option<Instant>,
    /// Its socket is open.
    pub socket_up: bool,
    last_seq: Option<u64>,
}

/// Which side a comparison favours, and why.
struct Ranking {
    we_win: bool,
    why: String,
}

/// The heartbeat state machine of one node.
#[derive(Debug, Clone)]
pub struct Machine {
    node: String,
    peer_name: String,
    preferred: Option<String>,
    auto_failback: bool,
    keepalive: Duration,
    warntime: Duration,
    deadtime: Duration,
    initdead: Duration,
    media: Vec<Medium>,
    keys: AuthKeys,
    format: Format,

    generation: u64,
    uuid: [u8; 16],
    clock: (Instant, SystemTime),
    ack_trigger: u64,

    state: State,
    overrides: Override,
    /// The health checks are settled; false: hold (see the module docs).
    ready: bool,
    link_up: bool,
    started: bool,
    init_deadline: Option<Instant>,
    next_keepalive: Option<Instant>,
    /// Last sequence number sent.
    seq: u64,
    history: VecDeque<(u64, Vec<u8>)>,

    peer: Option<Peer>,
    peer_generation: Option<u64>,
    /// Highest peer sequence number seen, and a bitmap of the 64 below it (bit i:
    /// max - i was seen).
    peer_max_seq: Option<u64>,
    peer_seen: u64,
    late_warned: bool,
    /// How often this node went from active to standby (sent as `dd_yields`).
    yields: u64,
    /// The peer's `dd_yields` last seen.
    peer_yields: Option<u64>,
    /// When this node last became active.
    active_since: Option<Instant>,
    links: Vec<Link>,
    counters: Counters,
}

impl Machine {
    /// A machine in Init; it starts on the first [`Event::SocketUp`]. `now` is the
    /// monotonic time of `wall_clock`, the wall clock (for `ts` fields).
    pub fn new(
        config: &HbConfig,
        boot: BootState,
        now: Instant,
        wall_clock: SystemTime,
    ) -> Machine {
        Machine {
            node: config.node.clone(),
            peer_name: config.peer.clone(),
            preferred: config.preferred.clone(),
            auto_failback: config.auto_failback,
            keepalive: config.keepalive,
            warntime: config.warntime,
            deadtime: config.deadtime,
            initdead: config.initdead,
            media: config.media.clone(),
            keys: config.keys.clone(),
            format: Format::Classic,
            generation: boot.generation,
            uuid: boot.uuid,
            clock: (now, wall_clock),
            ack_trigger: boot.generation % ACK_EVERY,
            state: State::Init,
            overrides: Override::None,
            ready: config.ready,
            link_up: true,
            started: false,
            init_deadline: None,
            next_keepalive: None,
            seq: 0,
            history: VecDeque::new(),
            peer: None,
            peer_generation: boot.peer_generation,
            peer_max_seq: None,
            peer_seen: 0,
            late_warned: false,
            yields: 0,
            peer_yields: None,
            active_since: None,
            links: config
                .media
                .iter()
                .map(|_| Link {
                    up: false,
                    last_seen: None,
                    socket_up: false,
                    last_seq: None,
                })
                .collect(),
            counters: Counters::default(),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn override_mode(&self) -> Override {
        self.overrides
    }

    /// Whether the health checks are settled ([`Command::Ready`]); false: holding.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    pub fn peer(&self) -> Option<&Peer> {
        self.peer.as_ref()
    }

    /// Media in configuration order.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// This run's generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether the machine handled [`Command::Shutdown`]; it ignores everything after.
    pub fn is_stopped(&self) -> bool {
        self.state == State::Stopped
    }

    /// When [`Event::Timeout`] must be fed next, if at all.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.started || self.state == State::Stopped {
            return None;
        }
        let mut deadlines = vec![self.next_keepalive];
        if let Some(peer) = self.peer.as_ref().filter(|p| p.alive) {
            if !self.late_warned && self.warntime < self.deadtime {
                deadlines.push(Some(peer.last_seen + self.warntime));
            }
            deadlines.push(Some(peer.last_seen + self.deadtime));
        }
        for link in self.links.iter().filter(|l| l.up) {
            deadlines.push(link.last_seen.map(|t| t + self.deadtime));
        }
        if self.peer.is_none() && matches!(self.state, State::Init | State::Standby) {
            deadlines.push(self.init_deadline);
        }
        deadlines.into_iter().flatten().min()
    }

    /// Feeds one event; returns what to do, in order.
    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.state == State::Stopped {
            return actions;
        }
        match event {
            Event::SocketUp { medium } => self.socket_up(now, medium, &mut actions),
            Event::SocketDown { medium, reason } => {
                self.socket_down(now, medium, reason, &mut actions);
            }
            Event::Datagram {
                medium,
                from,
                bytes,
            } => self.on_datagram(now, medium, from, &bytes, &mut actions),
            Event::Timeout => self.on_timeout(now, &mut actions),
            Event::Command(command) => self.on_command(now, command, &mut actions),
        }
        actions
    }

    // ---- sending -------------------------------------------------------------

    fn wall_seconds(&self, now: Instant) -> u64 {
        let (base, wall) = self.clock;
        wall.checked_add(now.saturating_duration_since(base))
            .and_then(|wall| wall.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs())
    }

    /// Builds, signs and sends a message: `fields`, then heartbeat's default
    /// fields (src, srcuuid, seq unless `NS_*`, hg, ts, ttl), then auth.
    fn send(&mut self, now: Instant, fields: &[(&str, String)], actions: &mut Vec<Action>) {
        let mut message = Message::new(self.format);
        let mut with_seq = true;
        for (name, value) in fields {
            if *name == name::TYPE {
                with_seq = Kind::from(value.as_str()).has_seq();
            }
            // Our own field values are always carriable.
            let _ = message.push_str(name, value);
        }
        let _ = message.push_str(name::SRC, &self.node);
        let _ = message.push(name::SRC_UUID, FieldType::Binary, &self.uuid);
        let seq = with_seq.then(|| {
            self.seq += 1;
            self.seq
        });
        if let Some(seq) = seq {
            let _ = message.push_str(name::SEQ, &format!("{seq:x}"));
        }
        let _ = message.push_str(name::GENERATION, &format!("{:x}", self.generation));
        let _ = message.push_str(name::TIME, &format!("{:x}", self.wall_seconds(now)));
        let _ = message.push_str(name::TTL, TTL);
        message.sign(&self.keys);
        let bytes = message.to_bytes();
        if let Some(seq) = seq {
            if self.history.len() == HISTORY {
                self.history.pop_front();
            }
            self.history.push_back((seq, bytes.clone()));
        }
        self.counters.adverts_sent += 1;
        actions.push(Action::Send { bytes });
    }

    fn role_name(&self) -> &'static str {
        match self.state {
            State::Init => "init",
            State::Standby | State::Stopped => "standby",
            State::Active => "active",
            State::Fault => "fault",
        }
    }

    fn send_status(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let fields = [
            (name::TYPE, Kind::Status.as_str().to_owned()),
            (name::STATUS, NodeStatus::Active.as_str().to_owned()),
            (name::DEADTIME, format!("{:x}", self.deadtime.as_millis())),
            (name::PROTOCOL, PROTOCOL.to_owned()),
            (field::ROLE, self.role_name().to_owned()),
            (field::OVERRIDE, override_name(self.overrides).to_owned()),
            (
                field::KEEPALIVE,
                format!("{:x}", self.keepalive.as_millis()),
            ),
            (field::YIELDS, format!("{:x}", self.yields)),
            (field::READY, if self.ready { "1" } else { "0" }.to_owned()),
        ];
        self.send(now, &fields, actions);
        self.next_keepalive = Some(now + self.keepalive);
    }

    // ---- state changes -------------------------------------------------------

    fn transition(&mut self, state: State, reason: impl Into<String>, actions: &mut Vec<Action>) {
        self.state = state;
        actions.push(Action::Transition {
            role: state.role(),
            state,
            reason: reason.into(),
        });
    }

    fn become_active(&mut self, now: Instant, reason: String, actions: &mut Vec<Action>) {
        self.counters.became_active += 1;
        self.active_since = Some(now);
        self.transition(State::Active, reason, actions);
        self.send_status(now, actions);
    }

    fn become_standby(&mut self, now: Instant, reason: String, actions: &mut Vec<Action>) {
        if self.state == State::Active {
            self.yields += 1;
        }
        self.transition(State::Standby, reason, actions);
        self.send_status(now, actions);
    }

    fn any_socket_up(&self) -> bool {
        self.links.iter().any(|l| l.socket_up)
    }

    fn socket_up(&mut self, now: Instant, medium: usize, actions: &mut Vec<Action>) {
        let Some(link) = self.links.get_mut(medium) else {
            return;
        };
        link.socket_up = true;
        if !self.started {
            self.started = true;
            self.init_deadline = Some(now + self.initdead);
            let reason = format!(
                "startup: waiting up to {}ms (initdead) for {}",
                self.initdead.as_millis(),
                self.peer_name
            );
            self.transition(State::Init, reason, actions);
            self.send_status(now, actions);
            if !self.link_up {
                self.transition(State::Fault, "link down", actions);
            }
        } else if self.state == State::Fault && self.link_up {
            self.leave_fault(now, "a heartbeat medium is usable again", actions);
        }
    }

    fn socket_down(
        &mut self,
        now: Instant,
        medium: usize,
        reason: String,
        actions: &mut Vec<Action>,
    ) {
        let Some(link) = self.links.get_mut(medium) else {
            return;
        };
        link.socket_up = false;
        if !self.any_socket_up() && self.state != State::Fault {
            if !self.started {
                // Never started: start in Fault, with the timers of a start.
                self.started = true;
                self.init_deadline = Some(now + self.initdead);
                self.next_keepalive = Some(now + self.keepalive);
            }
            self.transition(
                State::Fault,
                format!("no heartbeat medium usable: {reason}"),
                actions,
            );
        }
    }

    fn leave_fault(&mut self, now: Instant, reason: &str, actions: &mut Vec<Action>) {
        // Like a start, but only one deadtime to hear the peer.
        self.init_deadline = Some(now + self.deadtime);
        self.transition(State::Init, reason, actions);
        self.send_status(now, actions);
        self.resolve(now, actions);
    }

    // ---- receiving -----------------------------------------------------------

    fn drop_datagram(
        &mut self,
        medium: usize,
        reason: &'static str,
        detail: String,
        actions: &mut Vec<Action>,
    ) {
        *self.counters.invalid.entry(reason.to_owned()).or_insert(0) += 1;
        actions.push(Action::Dropped {
            medium,
            reason,
            detail,
        });
    }

    fn on_datagram(
        &mut self,
        now: Instant,
        medium: usize,
        from: SocketAddr,
        bytes: &[u8],
        actions: &mut Vec<Action>,
    ) {
        if medium >= self.links.len() || !self.started {
            return;
        }
        let message = match Message::parse(bytes) {
            Ok(m) => m,
            Err(e) => return self.drop_datagram(medium, e.reason(), e.to_string(), actions),
        };
        let header = match Header::parse(&message) {
            Ok(h) => h,
            Err(e) => return self.drop_datagram(medium, e.reason(), e.to_string(), actions),
        };
        if header.src == self.node {
            // Our own broadcast or multicast, looped back.
            return;
        }
        if let Err(e) = message.verify(&self.keys) {
            let detail = format!("from {} ({}): {e}", from.ip(), header.src);
            return self.drop_datagram(medium, "auth", detail, actions);
        }
        if header.src != self.peer_name {
            let detail = format!("from unknown node {:?} at {}", header.src, from.ip());
            return self.drop_datagram(medium, "source", detail, actions);
        }
        if let Medium::Unicast { peer, .. } = &self.media[medium]
            && from.ip() != *peer
        {
            let detail = format!("{} sent from {}, not {peer}", header.src, from.ip());
            return self.drop_datagram(medium, "source", detail, actions);
        }
        match self.peer_generation {
            Some(known) if header.generation < known => {
                let detail = format!("generation {:x} is older than {known:x}", header.generation);
                return self.drop_datagram(medium, "generation", detail, actions);
            }
            Some(known) if header.generation == known => {}
            _ => {
                // First message of a new run of the peer.
                self.peer_generation = Some(header.generation);
                self.peer_max_seq = None;
                self.peer_seen = 0;
                self.peer_yields = None;
                for link in &mut self.links {
                    link.last_seq = None;
                }
                actions.push(Action::PeerGeneration {
                    generation: header.generation,
                });
            }
        }
        if let Some(dest) = &header.dest
            && dest != &self.node
        {
            // For another node (heartbeat acknowledges its own messages too).
            return;
        }
        let Some(seq) = header.seq else {
            // NS_* messages have no sequence number: they cannot be checked for
            // replay, so they do not count as signs of life.
            if header.kind == Kind::Rexmit {
                self.resend(&message, actions);
            }
            return;
        };
        if let Some(last) = self.links[medium].last_seq
            && seq <= last
        {
            let detail = format!("seq {seq:x} not above {last:x} on this medium");
            return self.drop_datagram(medium, "replay", detail, actions);
        }
        if let Some(max) = self.peer_max_seq
            && seq.saturating_add(REPLAY_WINDOW) <= max
        {
            let detail = format!("seq {seq:x} far below {max:x}");
            return self.drop_datagram(medium, "replay", detail, actions);
        }
        self.links[medium].last_seq = Some(seq);
        let fresh = self.mark_seen(seq);
        self.counters.adverts_received += 1;
        let goodbye = header.kind == Kind::Shutdone
            || (header.kind == Kind::Status
                && message.get_str(name::STATUS) == Some(NodeStatus::Dead.as_str()));
        let revived = if goodbye {
            // The medium works, but the peer is leaving: no sign of life.
            self.links[medium].last_seen = Some(now);
            false
        } else {
            self.heard(now, medium, from.ip(), &message, actions)
        };
        if !fresh {
            return;
        }
        let sends_before = actions.len();
        match header.kind {
            _ if goodbye => self.peer_left(now, actions),
            Kind::Status => self.peer_status(now, &message, actions),
            Kind::ReqNodes => {
                let fields = [
                    (name::TYPE, Kind::RepNodes.as_str().to_owned()),
                    (name::DEST, self.peer_name.clone()),
                    (
                        name::NODE_LIST,
                        format!("{} {} ", self.node, self.peer_name),
                    ),
                    (name::DEL_NODE_LIST, " ".to_owned()),
                ];
                self.send(now, &fields, actions);
            }
            _ => {}
        }
        if seq % ACK_EVERY == self.ack_trigger {
            let fields = [
                (name::TYPE, Kind::Ack.as_str().to_owned()),
                (name::DEST, self.peer_name.clone()),
                (name::ACK_SEQ, format!("{seq:x}")),
            ];
            self.send(now, &fields, actions);
        }
        // A peer heard for the first time (or again) learns our role at once
        // rather than a keepalive later.
        let answered = actions[sends_before..]
            .iter()
            .any(|a| matches!(a, Action::Send { .. }));
        if revived && !answered && self.state != State::Stopped {
            self.send_status(now, actions);
        }
    }

    /// Records `seq` as seen; false if it was already.
    fn mark_seen(&mut self, seq: u64) -> bool {
        match self.peer_max_seq {
            Some(max) if seq > max => {
                let shift = seq - max;
                self.peer_seen = if shift >= 64 {
                    0
                } else {
                    self.peer_seen << shift
                };
                self.peer_seen |= 1;
                self.peer_max_seq = Some(seq);
                true
            }
            Some(max) => {
                let bit = 1u64 << (max - seq);
                let fresh = self.peer_seen & bit == 0;
                self.peer_seen |= bit;
                fresh
            }
            None => {
                self.peer_max_seq = Some(seq);
                self.peer_seen = 1;
                true
            }
        }
    }

    /// An accepted message from the peer on `medium`: the medium and the peer live.
    /// True if the peer was not alive before.
    fn heard(
        &mut self,
        now: Instant,
        medium: usize,
        address: IpAddr,
        message: &Message,
        actions: &mut Vec<Action>,
    ) -> bool {
        let link = &mut self.links[medium];
        link.last_seen = Some(now);
        if !link.up {
            link.up = true;
            actions.push(Action::LinkUp { medium });
        }
        let generation = self.peer_generation.unwrap_or(0);
        let mut revived = false;
        let said = message
            .get_hex(field::KEEPALIVE)
            .ok()
            .flatten()
            .map(Duration::from_millis);
        match &mut self.peer {
            Some(peer) => {
                let measured = now.saturating_duration_since(peer.last_seen);
                if let Some(k) = said {
                    peer.keepalive = k;
                } else if peer.alive && !measured.is_zero() {
                    peer.keepalive = measured;
                }
                peer.address = address;
                peer.last_seen = now;
                peer.generation = generation;
                if !peer.alive {
                    peer.alive = true;
                    revived = true;
                    actions.push(Action::PeerAlive { address });
                }
            }
            None => {
                self.peer = Some(Peer {
                    address,
                    last_seen: now,
                    keepalive: said.unwrap_or(self.keepalive),
                    role: PeerRole::Unknown,
                    overrides: Override::None,
                    alive: true,
                    generation,
                    status: String::new(),
                    ready: true,
                });
                revived = true;
                actions.push(Action::PeerAlive { address });
            }
        }
        self.late_warned = false;
        revived
    }

    fn peer_status(&mut self, now: Instant, message: &Message, actions: &mut Vec<Action>) {
        let role = PeerRole::parse(message.get_str(field::ROLE));
        let overrides = parse_override(message.get_str(field::OVERRIDE));
        let status = message.get_str(name::STATUS).unwrap_or("").to_owned();
        let yields = message.get_hex(field::YIELDS).ok().flatten();
        let ready = message.get_str(field::READY) != Some("0");
        if let Some(peer) = &mut self.peer {
            // The later operator command wins: the peer took the override we hold.
            if overrides != Override::None
                && overrides != peer.overrides
                && overrides == self.overrides
            {
                self.overrides = Override::None;
            }
            peer.role = role;
            peer.overrides = overrides;
            peer.status = status;
            peer.ready = ready;
        }
        let was_active = self.state == State::Active;
        self.resolve(now, actions);
        let released =
            matches!((self.peer_yields, yields), (Some(before), Some(after)) if after > before);
        if yields.is_some() {
            self.peer_yields = yields;
        }
        // A node that became active less than a keepalive ago (a hand-off) has just
        // announced the VIPs.
        let settled = self
            .active_since
            .is_some_and(|t| now.saturating_duration_since(t) >= self.keepalive);
        if released && was_active && settled && self.state == State::Active {
            // The peer held the VIPs too (a partition healed) and gave them up:
            // neighbours may still send to it, so announce them again.
            let reason = format!(
                "{} released the VIPs: announcing them again",
                self.peer_name
            );
            self.transition(State::Active, reason, actions);
        }
    }

    /// The peer announced that it stops.
    fn peer_left(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if !self.peer.as_ref().is_some_and(|p| p.alive) {
            // Its second goodbye (it sends "shutdone", then a status "dead").
            return;
        }
        self.counters.priority_zero_received += 1;
        let reason = format!("peer {} left (shutdown notice)", self.peer_name);
        self.peer_dead(now, reason, actions);
    }

    fn peer_dead(&mut self, now: Instant, reason: String, actions: &mut Vec<Action>) {
        if let Some(peer) = &mut self.peer {
            peer.alive = false;
        }
        actions.push(Action::PeerDead {
            reason: reason.clone(),
        });
        if matches!(self.state, State::Init | State::Standby) {
            self.become_active(now, reason, actions);
        }
    }

    fn resend(&mut self, request: &Message, actions: &mut Vec<Action>) {
        let (Ok(Some(first)), Ok(Some(last))) = (
            request.get_hex(name::FIRST_SEQ),
            request.get_hex(name::LAST_SEQ),
        ) else {
            return;
        };
        let last = last.min(first.saturating_add(MAX_RESEND - 1));
        for (seq, bytes) in &self.history {
            if (first..=last).contains(seq) {
                actions.push(Action::Send {
                    bytes: bytes.clone(),
                });
            }
        }
    }

    // ---- deciding who is active ----------------------------------------------

    /// Compares this node with the peer (see the module docs for the order).
    fn rank(&self, peer: &Peer) -> Ranking {
        let us_preferred = self.preferred.as_deref() == Some(self.node.as_str());
        let peer_preferred = self.preferred.as_deref() == Some(self.peer_name.as_str());
        let criteria: [(bool, bool, &str); 8] = [
            (
                self.state != State::Fault,
                peer.role != PeerRole::Fault,
                "is in fault",
            ),
            (
                self.overrides == Override::Takeover,
                peer.overrides == Override::Takeover,
                "took over by operator command",
            ),
            (
                self.overrides != Override::Standby,
                peer.overrides != Override::Standby,
                "stands by by operator command",
            ),
            (
                self.auto_failback && us_preferred && self.ready,
                self.auto_failback && peer_preferred && peer.ready,
                "is the preferred node (auto_failback)",
            ),
            (
                self.state == State::Active,
                peer.role == PeerRole::Active,
                "already holds the VIPs",
            ),
            (self.ready, peer.ready, "waits for its health checks"),
            (us_preferred, peer_preferred, "is the preferred node"),
            (
                self.node < self.peer_name,
                self.peer_name < self.node,
                "has the lexically lower name",
            ),
        ];
        for (i, (ours, theirs, what)) in criteria.into_iter().enumerate() {
            if ours != theirs {
                // Criteria 0, 2 and 5 are worded for the side that loses on them.
                let (winner, loser) = if ours {
                    (&self.node, &self.peer_name)
                } else {
                    (&self.peer_name, &self.node)
                };
                let why = if matches!(i, 0 | 2 | 5) {
                    format!("{loser} {what}")
                } else {
                    format!("{winner} {what}")
                };
                return Ranking { we_win: ours, why };
            }
        }
        // Names differ (checked by the configuration), so this is not reached.
        Ranking {
            we_win: self.node < self.peer_name,
            why: "tie".into(),
        }
    }

    /// Settles the role against a live peer.
    fn resolve(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if !self.started || matches!(self.state, State::Fault | State::Stopped) {
            return;
        }
        let Some(peer) = self.peer.clone().filter(|p| p.alive) else {
            return;
        };
        let ranking = self.rank(&peer);
        match self.state {
            State::Init | State::Standby if ranking.we_win => {
                self.become_active(
                    now,
                    format!("peer {} is alive; {}", self.peer_name, ranking.why),
                    actions,
                );
            }
            State::Init => {
                self.become_standby(
                    now,
                    format!("peer {} is alive; {}", self.peer_name, ranking.why),
                    actions,
                );
            }
            State::Active if peer.role == PeerRole::Active && !ranking.we_win => {
                self.become_standby(
                    now,
                    format!("both active; yielding: {}", ranking.why),
                    actions,
                );
            }
            _ => {}
        }
    }

    // ---- timers ----------------------------------------------------------------

    fn on_timeout(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if !self.started {
            return;
        }
        if let Some(at) = self.next_keepalive
            && now >= at
        {
            self.send_status(now, actions);
            // Keep the cadence unless the thread was held up for a whole interval.
            let next = at + self.keepalive;
            self.next_keepalive = Some(if next > now {
                next
            } else {
                now + self.keepalive
            });
        }
        for (medium, link) in self.links.iter_mut().enumerate() {
            if let (true, Some(seen)) = (link.up, link.last_seen) {
                let silent_for = now.saturating_duration_since(seen);
                if silent_for >= self.deadtime {
                    link.up = false;
                    actions.push(Action::LinkDown { medium, silent_for });
                }
            }
        }
        if let Some(peer) = self.peer.as_ref().filter(|p| p.alive) {
            let silent_for = now.saturating_duration_since(peer.last_seen);
            if silent_for >= self.deadtime {
                let reason = format!(
                    "peer {} dead: nothing on any medium for {}ms",
                    self.peer_name,
                    silent_for.as_millis()
                );
                self.peer_dead(now, reason, actions);
            } else if !self.late_warned
                && self.warntime < self.deadtime
                && silent_for >= self.warntime
            {
                self.late_warned = true;
                actions.push(Action::PeerLate { silent_for });
            }
        }
        if self.peer.is_none()
            && matches!(self.state, State::Init | State::Standby)
            && self.init_deadline.is_some_and(|at| now >= at)
        {
            let reason = format!(
                "initdead expired: nothing from {} for {}ms",
                self.peer_name,
                self.initdead.as_millis()
            );
            self.become_active(now, reason, actions);
        }
    }

    // ---- commands ----------------------------------------------------------------

    fn on_command(&mut self, now: Instant, command: Command, actions: &mut Vec<Action>) {
        match command {
            Command::Takeover => {
                self.overrides = Override::Takeover;
                match self.state {
                    State::Init | State::Standby if self.started => {
                        self.become_active(now, "operator takeover".to_owned(), actions);
                    }
                    State::Active => self.send_status(now, actions),
                    _ => {}
                }
            }
            Command::Standby => {
                self.overrides = Override::Standby;
                let peer_can_serve = self
                    .peer
                    .as_ref()
                    .is_some_and(|p| p.alive && p.role != PeerRole::Fault);
                match self.state {
                    State::Active if peer_can_serve => {
                        let reason =
                            format!("operator standby: handing over to {}", self.peer_name);
                        self.become_standby(now, reason, actions);
                    }
                    // Nobody to hand over to: keep the VIPs, but tell the peer.
                    State::Active => self.send_status(now, actions),
                    State::Init if self.started => {
                        self.become_standby(now, "operator standby".to_owned(), actions);
                    }
                    State::Standby => self.send_status(now, actions),
                    _ => {}
                }
            }
            Command::Ready(ready) => {
                if ready == self.ready {
                    return;
                }
                self.ready = ready;
                if !self.started {
                    return;
                }
                // Do now what the hold held back (auto-failback), and tell the
                // peer, which may rank differently now.
                let sends_before = actions.len();
                if ready {
                    self.resolve(now, actions);
                }
                let sent = actions[sends_before..]
                    .iter()
                    .any(|a| matches!(a, Action::Send { .. }));
                if !sent {
                    self.send_status(now, actions);
                }
            }
            Command::LinkDown => {
                self.link_up = false;
                if self.started && self.state != State::Fault {
                    self.transition(State::Fault, "link down", actions);
                    // Tell the peer at once, so it takes over now.
                    self.send_status(now, actions);
                }
            }
            Command::LinkUp => {
                self.link_up = true;
                if self.state == State::Fault && self.any_socket_up() {
                    self.leave_fault(now, "link up", actions);
                }
            }
            Command::Shutdown => {
                if self.started && self.any_socket_up() {
                    // heartbeat takes the resources over on "shutdone", and marks
                    // the node dead on a status "dead".
                    let fields = [
                        (name::TYPE, Kind::Shutdone.as_str().to_owned()),
                        (name::STATUS, NodeStatus::Dead.as_str().to_owned()),
                    ];
                    self.send(now, &fields, actions);
                    let fields = [
                        (name::TYPE, Kind::Status.as_str().to_owned()),
                        (name::STATUS, NodeStatus::Dead.as_str().to_owned()),
                        (name::DEADTIME, format!("{:x}", self.deadtime.as_millis())),
                        (name::PROTOCOL, PROTOCOL.to_owned()),
                    ];
                    self.send(now, &fields, actions);
                    self.counters.priority_zero_sent += 1;
                }
                self.next_keepalive = None;
                self.transition(State::Stopped, "shutdown", actions);
            }
        }
    }
}

#[cfg(test)]
mod tests;
