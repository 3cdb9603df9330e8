//! The VRRP router state machine (RFC 5798 §6.4, RFC 3768 §6.4) as a sans-IO core.
//!
//! The driver feeds it [`Event`]s with the current time and carries out the
//! returned [`Action`]s; [`Machine::next_deadline`] tells it when to call
//! [`Machine::poll_timeout`]. Nothing here reads a clock or touches a socket.
//!
//! Beyond the RFC, and matching keepalived so that the two form one pair:
//! - `preempt_delay`: a backup that hears a lower-priority master keeps accepting
//!   its adverts for `preempt_delay` after the first one, then ignores them, so the
//!   master-down timer fires and it takes over.
//! - A master that hears a lower-priority advert answers at once with its own, so a
//!   lower-priority router that also thinks it is master yields quickly.
//!
//! Operator overrides ([`Command::Takeover`], [`Command::Standby`]) change the
//! effective priority and hold until the other one is given:
//! - Takeover becomes master at once and always preempts. It first *claims* with
//!   priority 255 for three advert intervals, so that any master at 1..=254 yields
//!   (a master always yields to a higher priority, preempt or not) — including a
//!   peer holding an earlier takeover — then settles at 254, which no configured
//!   peer below 254 can preempt. A master under Takeover that is outbid (the peer's
//!   operator took over more recently) yields and drops its override: the latest
//!   takeover wins. An address owner (255) keeps 255.
//! - Standby sends a priority-0 advert if master, then advertises 1 and never
//!   preempts, but still takes over when the master-down timer fires, so a site
//!   never goes dark.
//!
//! Readiness ([`Command::Ready`], initially [`VrrpConfig::ready`]): a node whose
//! health checks are not settled *holds*. A holding backup behaves as if `preempt`
//! were off (it accepts a lower-priority master), and an address owner starts as
//! backup instead of master at once; the master-down timer (or a priority-0
//! advert) still makes it master when no master is heard. Holding never causes a
//! hand-over: a master stays master, and still yields to a higher priority as
//! always. `Ready(false)` on a backup that was already ignoring a lower-priority
//! master (preempting) takes that master's last advert as accepted, so the
//! takeover is called off. `Ready(true)` ends the hold: with `preempt` on, a
//! current lower-priority master is preempted the usual way (its adverts are
//! ignored until the master-down timer fires), and `preempt_delay` counts from the
//! `Ready(true)` — the moment the node became eligible — not from the first
//! lower-priority advert heard while holding. An operator `Takeover` overrides the
//! hold (the operator knows); `resume_master` is not affected by it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::role::{Command, Counters, Override, Role};
use crate::vrrp::packet::{Repr, Version};
use crate::vrrp::{Family, VrrpConfig};

/// Priority of the address owner.
pub const PRIORITY_OWNER: u8 = 255;
/// Priority a master sends when it stops.
pub const PRIORITY_STOP: u8 = 0;
/// Effective priority under a Takeover override (unless the node owns the addresses).
pub const PRIORITY_TAKEOVER: u8 = 254;
/// Effective priority under a Standby override.
pub const PRIORITY_STANDBY: u8 = 1;

/// Protocol state (RFC 5798 §6.4 plus Fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not started yet, or stopped.
    Initialize,
    Backup,
    Master,
    /// Cannot take part: link down or socket error.
    Fault,
}

impl State {
    /// Name shown in `Status::state` and `Transition::state`.
    pub const fn name(self) -> &'static str {
        match self {
            State::Initialize => "initialize",
            State::Backup => "backup",
            State::Master => "master",
            State::Fault => "fault",
        }
    }

    /// The role the supervisor acts on.
    pub const fn role(self) -> Role {
        match self {
            State::Master => Role::Active,
            State::Backup | State::Initialize => Role::Standby,
            State::Fault => Role::Fault,
        }
    }
}

/// Input to the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The sockets are open; adverts go out from `local`.
    SocketUp { local: IpAddr },
    /// The sockets failed (or the interface vanished).
    SocketDown { reason: String },
    /// A well-formed advert (already through [`Repr::parse`] and the driver's
    /// TTL/hop-limit check) from `src`.
    Advert { src: IpAddr, repr: Repr },
    /// A packet the driver dropped, to be counted under `reason`.
    Dropped { reason: &'static str },
    /// A deadline from [`Machine::next_deadline`] may have passed.
    Timeout,
    /// An order from the supervisor.
    Command(Command),
}

/// Output of the machine, to be carried out in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send one advert (to the group, or to every unicast peer) with this priority.
    /// Build it with [`Machine::advert`].
    SendAdvert { priority: u8 },
    /// The state changed.
    Transition {
        role: Role,
        state: State,
        reason: String,
    },
}

/// The master this node last heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub address: IpAddr,
    pub priority: u8,
    pub advert_interval: Duration,
    pub last_seen: Instant,
}

/// The VRRP state machine of one virtual router.
#[derive(Debug, Clone)]
pub struct Machine {
    version: Version,
    vrid: u8,
    priority: u8,
    preempt: bool,
    preempt_delay: Duration,
    advert_interval: Duration,
    unicast_peers: Vec<IpAddr>,
    addresses: Vec<IpAddr>,
    family: Family,

    state: State,
    overrides: Override,
    /// Under Takeover: still claiming at 255, until `claim_until`.
    takeover_raised: bool,
    claim_until: Option<Instant>,
    /// Start as master (an in-place restart of a master); used once.
    resume_master: bool,
    /// The health checks are settled; false: hold (see the module docs).
    ready: bool,
    /// When the current takeover claim began.
    claim_started: Option<Instant>,
    /// Since when the peer has advertised without a gap longer than the master-down
    /// interval: tells an older master's adverts from a newer takeover's.
    peer_stream_since: Option<Instant>,
    local: Option<IpAddr>,
    link_up: bool,
    socket_up: bool,
    stopped: bool,

    master_adver_interval: Duration,
    master_down_at: Option<Instant>,
    advert_at: Option<Instant>,
    preempt_at: Option<Instant>,
    /// When the machine entered Backup (for the master-down reason).
    backup_since: Option<Instant>,
    peer: Option<Peer>,
    counters: Counters,
}

impl Machine {
    /// A machine in Initialize; it starts on [`Event::SocketUp`].
    pub fn new(config: &VrrpConfig) -> Machine {
        Machine {
            version: config.version,
            vrid: config.vrid,
            priority: config.priority,
            preempt: config.preempt,
            preempt_delay: config.preempt_delay,
            advert_interval: config.advert_interval,
            unicast_peers: config.unicast_peers.clone(),
            addresses: config.addresses.clone(),
            family: config.family,
            state: State::Initialize,
            overrides: Override::None,
            takeover_raised: false,
            claim_until: None,
            resume_master: config.resume_master,
            ready: config.ready,
            claim_started: None,
            peer_stream_since: None,
            local: None,
            link_up: true,
            socket_up: false,
            stopped: false,
            master_adver_interval: config.advert_interval,
            master_down_at: None,
            advert_at: None,
            preempt_at: None,
            backup_since: None,
            peer: None,
            counters: Counters {
                invalid: BTreeMap::new(),
                ..Counters::default()
            },
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Configured priority.
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// Priority this node advertises now (differs under an override).
    pub fn effective_priority(&self) -> u8 {
        match self.overrides {
            Override::None => self.priority,
            Override::Standby => PRIORITY_STANDBY,
            Override::Takeover if self.priority == PRIORITY_OWNER || self.takeover_raised => {
                PRIORITY_OWNER
            }
            Override::Takeover => PRIORITY_TAKEOVER,
        }
    }

    /// Operator override in force.
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

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The address adverts go out from, once the sockets are up.
    pub fn local_address(&self) -> Option<IpAddr> {
        self.local
    }

    /// Whether the machine handled [`Command::Shutdown`]; it ignores everything after.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// The master's advertisement interval as this node knows it (v3: learnt from
    /// the master's adverts while backup).
    pub fn master_adver_interval(&self) -> Duration {
        self.master_adver_interval
    }

    /// Skew_Time: `((256 - priority) * Master_Adver_Interval) / 256` for v3,
    /// `(256 - priority) / 256` seconds for v2, with the effective priority.
    pub fn skew_time(&self) -> Duration {
        let weight = u64::from(256 - u16::from(self.effective_priority()));
        let micros = match self.version {
            Version::V3 => {
                let centis = duration_centis(self.master_adver_interval);
                weight * centis * 10_000 / 256
            }
            Version::V2 => weight * 1_000_000 / 256,
        };
        Duration::from_micros(micros)
    }

    /// Master_Down_Interval: `3 * Master_Adver_Interval + Skew_Time`.
    pub fn master_down_interval(&self) -> Duration {
        self.master_adver_interval * 3 + self.skew_time()
    }

    /// The advert to send with `priority` (see [`Action::SendAdvert`]).
    pub fn advert(&self, priority: u8) -> Repr {
        let max_advert_interval = match self.version {
            Version::V3 => u16::try_from(duration_centis(self.advert_interval)).unwrap_or(u16::MAX),
            Version::V2 => u16::try_from(self.advert_interval.as_secs()).unwrap_or(u16::MAX),
        };
        Repr {
            version: self.version,
            vrid: self.vrid,
            priority,
            max_advert_interval,
            addresses: self.addresses.clone(),
        }
    }

    /// When [`Machine::poll_timeout`] must be called next, if at all.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.state {
            State::Backup => self.master_down_at,
            State::Master => self.advert_at,
            State::Initialize | State::Fault => None,
        }
    }

    /// Runs the timers that are due at `now`.
    pub fn poll_timeout(&mut self, now: Instant) -> Vec<Action> {
        self.handle(now, Event::Timeout)
    }

    /// Feeds one event; returns what to do, in order.
    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.stopped {
            return actions;
        }
        if self.claim_until.is_some_and(|until| now >= until) {
            // The takeover claim is over: settle at 254.
            self.takeover_raised = false;
            self.claim_until = None;
        }
        match event {
            Event::SocketUp { local } => {
                self.socket_up = true;
                self.local = Some(local);
                if self.link_up && matches!(self.state, State::Initialize | State::Fault) {
                    let reason = if self.state == State::Initialize {
                        "startup"
                    } else {
                        "socket ready"
                    };
                    self.start(now, reason, &mut actions);
                }
            }
            Event::SocketDown { reason } => {
                self.socket_up = false;
                if self.state != State::Fault {
                    self.enter_fault(reason, &mut actions);
                }
            }
            Event::Advert { src, repr } => self.on_advert(now, src, repr, &mut actions),
            Event::Dropped { reason } => self.count_invalid(reason),
            Event::Timeout => self.on_timeout(now, &mut actions),
            Event::Command(command) => self.on_command(now, command, &mut actions),
        }
        actions
    }

    fn count_invalid(&mut self, reason: &str) {
        *self.counters.invalid.entry(reason.to_owned()).or_insert(0) += 1;
    }

    fn transition(&mut self, state: State, reason: impl Into<String>, actions: &mut Vec<Action>) {
        self.state = state;
        actions.push(Action::Transition {
            role: state.role(),
            state,
            reason: reason.into(),
        });
    }

    fn send_advert(&mut self, priority: u8, actions: &mut Vec<Action>) {
        self.counters.adverts_sent += 1;
        if priority == PRIORITY_STOP {
            self.counters.priority_zero_sent += 1;
        }
        actions.push(Action::SendAdvert { priority });
    }

    /// Leaves Initialize or Fault (RFC 5798 §6.4.1). A holding owner starts as a
    /// backup.
    fn start(&mut self, now: Instant, reason: &str, actions: &mut Vec<Action>) {
        if self.effective_priority() == PRIORITY_OWNER && self.ready {
            self.become_master(
                now,
                format!("{reason}: address owner (priority 255)"),
                actions,
            );
        } else if self.overrides == Override::Takeover {
            self.become_master(
                now,
                format!("{reason}: operator takeover in force"),
                actions,
            );
        } else if self.resume_master {
            self.resume_master = false;
            self.become_master(
                now,
                format!("{reason}: resumed as master after an in-place restart"),
                actions,
            );
        } else {
            self.master_adver_interval = self.advert_interval;
            self.become_backup(now, reason.to_owned(), actions);
        }
    }

    fn become_master(&mut self, now: Instant, reason: String, actions: &mut Vec<Action>) {
        let priority = self.effective_priority();
        self.send_advert(priority, actions);
        self.advert_at = Some(now + self.advert_interval);
        self.master_down_at = None;
        self.preempt_at = None;
        self.backup_since = None;
        self.counters.became_active += 1;
        self.transition(State::Master, reason, actions);
    }

    fn become_backup(&mut self, now: Instant, reason: String, actions: &mut Vec<Action>) {
        self.advert_at = None;
        self.preempt_at = None;
        self.backup_since = Some(now);
        self.master_down_at = Some(now + self.master_down_interval());
        self.transition(State::Backup, reason, actions);
    }

    fn enter_fault(&mut self, reason: String, actions: &mut Vec<Action>) {
        self.advert_at = None;
        self.master_down_at = None;
        self.preempt_at = None;
        self.backup_since = None;
        self.transition(State::Fault, reason, actions);
    }

    fn on_timeout(&mut self, now: Instant, actions: &mut Vec<Action>) {
        match self.state {
            State::Backup => {
                let Some(at) = self.master_down_at else {
                    return;
                };
                if now < at {
                    return;
                }
                let reason = match (&self.peer, self.backup_since) {
                    (Some(peer), Some(since)) if peer.last_seen >= since => format!(
                        "master-down timer expired (no advert from {} for {}ms)",
                        peer.address,
                        now.saturating_duration_since(peer.last_seen).as_millis()
                    ),
                    _ => format!(
                        "master-down timer expired (no advert for {}ms)",
                        self.backup_since
                            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
                            .as_millis()
                    ),
                };
                self.become_master(now, reason, actions);
            }
            State::Master => {
                let Some(at) = self.advert_at else {
                    return;
                };
                if now < at {
                    return;
                }
                let priority = self.effective_priority();
                self.send_advert(priority, actions);
                // Keep the cadence unless the thread was held up for a whole interval.
                let next = at + self.advert_interval;
                self.advert_at = Some(if next > now {
                    next
                } else {
                    now + self.advert_interval
                });
            }
            State::Initialize | State::Fault => {}
        }
    }

    fn on_advert(&mut self, now: Instant, src: IpAddr, repr: Repr, actions: &mut Vec<Action>) {
        if !matches!(self.state, State::Backup | State::Master) {
            return;
        }
        if Some(src) == self.local {
            return;
        }
        if repr.vrid != self.vrid {
            self.count_invalid("vrid");
            return;
        }
        if repr.version != self.version {
            self.count_invalid("version");
            return;
        }
        if !self.unicast_peers.is_empty() && !self.unicast_peers.contains(&src) {
            self.count_invalid("source");
            return;
        }
        if src.is_ipv4() != (self.family == Family::V4) {
            self.count_invalid("family");
            return;
        }
        if self.version == Version::V2 && repr.advert_interval() != self.advert_interval {
            // RFC 3768 §7.1: MUST verify the interval; keepalived drops these too.
            self.count_invalid("interval-mismatch");
            return;
        }
        self.counters.adverts_received += 1;
        let continuing = self
            .peer
            .as_ref()
            .filter(|p| p.address == src)
            .is_some_and(|p| {
                now.saturating_duration_since(p.last_seen) <= self.master_down_interval()
            });
        if !continuing {
            self.peer_stream_since = Some(now);
        }
        if repr.priority == PRIORITY_STOP {
            self.counters.priority_zero_received += 1;
        }
        self.peer = Some(Peer {
            address: src,
            priority: repr.priority,
            advert_interval: repr.advert_interval(),
            last_seen: now,
        });
        match self.state {
            State::Backup => self.backup_advert(now, &repr),
            State::Master => self.master_advert(now, src, &repr, actions),
            State::Initialize | State::Fault => {}
        }
    }

    /// Whether a lower-priority master is to be preempted (after the delay).
    fn preempts(&self) -> bool {
        match self.overrides {
            Override::None => self.preempt && self.ready,
            Override::Takeover => true,
            Override::Standby => false,
        }
    }

    /// RFC 5798 §6.4.2, with keepalived's preempt delay.
    fn backup_advert(&mut self, now: Instant, repr: &Repr) {
        if repr.priority == PRIORITY_STOP {
            // The master stops: take over after Skew_Time only.
            self.master_down_at = Some(now + self.skew_time());
            return;
        }
        let ours = self.effective_priority();
        let delay = if self.overrides == Override::Takeover {
            Duration::ZERO
        } else {
            self.preempt_delay
        };
        let in_delay = !delay.is_zero() && self.preempt_at.is_none_or(|at| now < at);
        if !self.preempts() || repr.priority >= ours || in_delay {
            if self.version == Version::V3 {
                self.master_adver_interval = repr.advert_interval();
            }
            self.master_down_at = Some(now + self.master_down_interval());
            if !delay.is_zero() {
                if repr.priority >= ours || !self.preempts() {
                    // The delay starts once the node may preempt (not while it
                    // holds or stands by).
                    self.preempt_at = None;
                } else if self.preempt_at.is_none() {
                    self.preempt_at = Some(now + delay);
                }
            }
        }
        // Otherwise: a lower-priority master and we preempt. Discard the advert so
        // the master-down timer fires.
    }

    /// RFC 5798 §6.4.3.
    fn master_advert(&mut self, now: Instant, src: IpAddr, repr: &Repr, actions: &mut Vec<Action>) {
        let ours = self.effective_priority();
        if repr.priority == PRIORITY_STOP {
            self.send_advert(ours, actions);
            self.advert_at = Some(now + self.advert_interval);
            return;
        }
        let local = self.local.unwrap_or(src);
        let wins = repr.priority > ours || (repr.priority == ours && src > local);
        if !wins {
            // A lower-priority router believes it is master: tell it now.
            self.send_advert(ours, actions);
            self.advert_at = Some(now + self.advert_interval);
            return;
        }
        if self.version == Version::V3 {
            self.master_adver_interval = repr.advert_interval();
        }
        let older_master = match (self.claim_until, self.claim_started, self.peer_stream_since) {
            (Some(_), Some(claim), Some(stream)) => stream < claim,
            _ => false,
        };
        if self.overrides == Override::Takeover && older_master {
            // Still claiming, and this peer has been advertising since before our
            // takeover: its advert predates our claim. Reassert; it will yield.
            self.send_advert(ours, actions);
            self.advert_at = Some(now + self.advert_interval);
            return;
        }
        if self.overrides == Override::Takeover {
            // Outbid while holding a takeover: the peer's operator took over more
            // recently (or it owns the addresses). The latest takeover wins.
            self.overrides = Override::None;
            self.takeover_raised = false;
            self.claim_until = None;
            let reason = format!(
                "advert from {src} with priority {} outbids our takeover; takeover released",
                repr.priority
            );
            self.become_backup(now, reason, actions);
            return;
        }
        let reason = if repr.priority > ours {
            format!(
                "advert from {src} with higher priority {} (ours {ours})",
                repr.priority
            )
        } else {
            format!("advert from {src} with equal priority {ours} and a higher address")
        };
        self.become_backup(now, reason, actions);
    }

    fn on_command(&mut self, now: Instant, command: Command, actions: &mut Vec<Action>) {
        match command {
            Command::Takeover => {
                self.overrides = Override::Takeover;
                self.takeover_raised = true;
                self.claim_until = Some(now + self.advert_interval * 3);
                self.claim_started = Some(now);
                match self.state {
                    State::Backup => {
                        self.become_master(now, "operator takeover".to_owned(), actions);
                    }
                    State::Master => {
                        // Tell the peer the new priority at once.
                        let priority = self.effective_priority();
                        self.send_advert(priority, actions);
                        self.advert_at = Some(now + self.advert_interval);
                    }
                    State::Initialize | State::Fault => {}
                }
            }
            Command::Standby => {
                self.overrides = Override::Standby;
                self.takeover_raised = false;
                self.claim_until = None;
                match self.state {
                    State::Master => {
                        self.send_advert(PRIORITY_STOP, actions);
                        self.master_adver_interval = self.advert_interval;
                        self.become_backup(now, "operator standby".to_owned(), actions);
                    }
                    State::Backup => self.preempt_at = None,
                    State::Initialize | State::Fault => {}
                }
            }
            Command::Ready(ready) => self.on_ready(now, ready),
            Command::LinkDown => {
                self.link_up = false;
                if self.state != State::Fault {
                    self.enter_fault("link down".to_owned(), actions);
                }
            }
            Command::LinkUp => {
                self.link_up = true;
                if self.socket_up && self.state == State::Fault {
                    self.start(now, "link up", actions);
                }
            }
            Command::Shutdown => {
                if self.state == State::Master {
                    self.send_advert(PRIORITY_STOP, actions);
                }
                self.advert_at = None;
                self.master_down_at = None;
                self.preempt_at = None;
                self.transition(State::Initialize, "shutdown", actions);
                self.stopped = true;
            }
        }
    }

    /// [`Command::Ready`]: only the timers of a backup change; nothing is sent and
    /// the state stays.
    fn on_ready(&mut self, now: Instant, ready: bool) {
        if ready == self.ready {
            return;
        }
        self.ready = ready;
        if self.state != State::Backup {
            return;
        }
        // A lower-priority master heard within the master-down interval.
        let ours = self.effective_priority();
        let current_lower = self.peer.clone().filter(|p| {
            p.priority != PRIORITY_STOP
                && p.priority < ours
                && now.saturating_duration_since(p.last_seen) <= self.master_down_interval()
        });
        if ready {
            // Eligible from now: the preempt delay starts here.
            let delay = !self.preempt_delay.is_zero();
            self.preempt_at = (current_lower.is_some() && self.preempts() && delay)
                .then(|| now + self.preempt_delay);
        } else {
            self.preempt_at = None;
            if let Some(peer) = current_lower {
                // Its adverts were being ignored to preempt it: take the last one
                // as accepted, so the master-down timer waits for it again.
                if self.version == Version::V3 {
                    self.master_adver_interval = peer.advert_interval;
                }
                let down = peer.last_seen + self.master_down_interval();
                self.master_down_at = Some(self.master_down_at.map_or(down, |at| at.max(down)));
            }
        }
    }
}

/// Whole centiseconds in `d` (intervals are validated to be multiples of 10 ms).
fn duration_centis(d: Duration) -> u64 {
    u64::try_from(d.as_millis() / 10).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    /// Higher than LOCAL.
    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
    /// Lower than LOCAL.
    const LOW_PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0));

    fn config(version: Version, priority: u8, interval: Duration) -> VrrpConfig {
        VrrpConfig {
            interface: "eth0".into(),
            version,
            vrid: 51,
            priority,
            preempt: true,
            preempt_delay: Duration::ZERO,
            advert_interval: interval,
            unicast_peers: Vec::new(),
            source_address: None,
            addresses: vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100))],
            family: Family::V4,
            netns: None,
            resume_master: false,
            ready: true,
        }
    }

    fn v3(priority: u8) -> VrrpConfig {
        config(Version::V3, priority, Duration::from_secs(1))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn advert(priority: u8, interval_cs: u16) -> Repr {
        Repr {
            version: Version::V3,
            vrid: 51,
            priority,
            max_advert_interval: interval_cs,
            addresses: vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100))],
        }
    }

    fn from(src: IpAddr, repr: Repr) -> Event {
        Event::Advert { src, repr }
    }

    /// A started machine (Backup, or Master for an owner) and the start time.
    fn started(cfg: &VrrpConfig) -> (Machine, Instant) {
        let t0 = Instant::now();
        let mut m = Machine::new(cfg);
        assert_eq!(m.state(), State::Initialize);
        assert_eq!(m.next_deadline(), None);
        m.handle(t0, Event::SocketUp { local: LOCAL });
        (m, t0)
    }

    fn states(actions: &[Action]) -> Vec<State> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Transition { state, .. } => Some(*state),
                Action::SendAdvert { .. } => None,
            })
            .collect()
    }

    fn sent(actions: &[Action]) -> Vec<u8> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::SendAdvert { priority } => Some(*priority),
                Action::Transition { .. } => None,
            })
            .collect()
    }

    #[test]
    fn skew_and_master_down_interval() {
        // v3, 1 s, priority 100: skew = 156 * 100 cs / 256 = 60.9375 cs.
        let m = Machine::new(&v3(100));
        assert_eq!(m.skew_time(), Duration::from_micros(609_375));
        assert_eq!(m.master_down_interval(), Duration::from_micros(3_609_375));
        // v3, 100 ms, priority 150: 106 * 10 cs / 256 = 4.140625 cs.
        let m = Machine::new(&config(Version::V3, 150, ms(100)));
        assert_eq!(m.skew_time(), Duration::from_micros(41_406));
        assert_eq!(m.master_down_interval(), Duration::from_micros(341_406));
        // v2, 1 s, priority 100: (256 - 100) / 256 s.
        let m = Machine::new(&config(Version::V2, 100, Duration::from_secs(1)));
        assert_eq!(m.skew_time(), Duration::from_micros(609_375));
        // v2 skew does not scale with the interval (RFC 3768).
        let m = Machine::new(&config(Version::V2, 100, Duration::from_secs(3)));
        assert_eq!(m.skew_time(), Duration::from_micros(609_375));
        assert_eq!(m.master_down_interval(), Duration::from_micros(9_609_375));
    }

    #[test]
    fn startup_backup_then_master_after_master_down() {
        let (mut m, t0) = {
            let t0 = Instant::now();
            let mut m = Machine::new(&v3(100));
            let a = m.handle(t0, Event::SocketUp { local: LOCAL });
            assert_eq!(states(&a), [State::Backup]);
            assert!(sent(&a).is_empty());
            (m, t0)
        };
        let down = t0 + m.master_down_interval();
        assert_eq!(m.next_deadline(), Some(down));
        // Early wake-ups change nothing.
        assert!(m.poll_timeout(down - ms(1)).is_empty());
        let a = m.poll_timeout(down);
        assert_eq!(sent(&a), [100]);
        assert_eq!(states(&a), [State::Master]);
        let Action::Transition { role, reason, .. } = &a[1] else {
            panic!("expected a transition, got {a:?}");
        };
        assert_eq!(*role, Role::Active);
        assert!(reason.contains("master-down timer expired"), "{reason}");
        assert_eq!(m.counters().became_active, 1);
        // Adverts every interval, on a steady cadence.
        assert_eq!(m.next_deadline(), Some(down + ms(1000)));
        assert_eq!(sent(&m.poll_timeout(down + ms(1003))), [100]);
        assert_eq!(m.next_deadline(), Some(down + ms(2000)));
        assert_eq!(m.counters().adverts_sent, 2);
    }

    #[test]
    fn backup_stays_while_master_adverts() {
        let (mut m, t0) = started(&v3(100));
        for i in 1..=10u64 {
            let now = t0 + ms(1000 * i);
            assert!(m.handle(now, from(PEER, advert(150, 100))).is_empty());
            assert_eq!(m.next_deadline(), Some(now + m.master_down_interval()));
            assert!(m.poll_timeout(now + ms(999)).is_empty());
        }
        assert_eq!(m.state(), State::Backup);
        assert_eq!(m.counters().adverts_received, 10);
        let peer = m.peer().expect("peer");
        assert_eq!((peer.address, peer.priority), (PEER, 150));
        // Master dies: master-down interval after its last advert.
        let last = t0 + ms(10_000);
        let a = m.poll_timeout(last + m.master_down_interval());
        assert_eq!(states(&a), [State::Master]);
        let Action::Transition { reason, .. } = &a[1] else {
            panic!("{a:?}");
        };
        assert!(
            reason.contains("no advert from 192.0.2.2 for 3609ms"),
            "{reason}"
        );
    }

    #[test]
    fn backup_learns_master_interval_v3() {
        let (mut m, t0) = started(&v3(100));
        // The master adverts every 100 ms although we are configured for 1 s.
        m.handle(t0, from(PEER, advert(150, 10)));
        assert_eq!(m.master_adver_interval(), ms(100));
        // 3 * 100 ms + 156 * 10 cs / 256.
        assert_eq!(m.next_deadline(), Some(t0 + Duration::from_micros(360_937)));
        // Once master, it sends at its own configured interval.
        let a = m.poll_timeout(t0 + ms(400));
        assert_eq!(states(&a), [State::Master]);
        assert_eq!(m.next_deadline(), Some(t0 + ms(1400)));
        assert_eq!(m.advert(100).max_advert_interval, 100);
    }

    #[test]
    fn v2_drops_interval_mismatch_and_does_not_learn() {
        let cfg = config(Version::V2, 100, Duration::from_secs(1));
        let (mut m, t0) = started(&cfg);
        let mut repr = advert(150, 2);
        repr.version = Version::V2;
        m.handle(t0 + ms(10), from(PEER, repr.clone()));
        assert_eq!(m.counters().invalid.get("interval-mismatch"), Some(&1));
        assert_eq!(m.counters().adverts_received, 0);
        assert_eq!(m.next_deadline(), Some(t0 + m.master_down_interval()));
        repr.max_advert_interval = 1;
        m.handle(t0 + ms(20), from(PEER, repr));
        assert_eq!(m.counters().adverts_received, 1);
        assert_eq!(m.master_adver_interval(), Duration::from_secs(1));
        assert_eq!(
            m.next_deadline(),
            Some(t0 + ms(20) + m.master_down_interval())
        );
        assert_eq!(m.advert(100).max_advert_interval, 1);
    }

    #[test]
    fn ignores_and_counts_foreign_adverts() {
        let (mut m, t0) = started(&v3(100));
        let deadline = m.next_deadline();
        let mut other = advert(200, 100);
        other.vrid = 52;
        assert!(m.handle(t0, from(PEER, other)).is_empty());
        let mut v2 = advert(200, 1);
        v2.version = Version::V2;
        m.handle(t0, from(PEER, v2));
        m.handle(t0, Event::Dropped { reason: "ttl" });
        m.handle(t0, Event::Dropped { reason: "ttl" });
        // Our own advert (looped back) is ignored without counting.
        m.handle(t0, from(LOCAL, advert(100, 100)));
        let invalid = &m.counters().invalid;
        assert_eq!(invalid.get("vrid"), Some(&1));
        assert_eq!(invalid.get("version"), Some(&1));
        assert_eq!(invalid.get("ttl"), Some(&2));
        assert_eq!(m.counters().adverts_received, 0);
        assert_eq!(m.next_deadline(), deadline);
    }

    #[test]
    fn unicast_peers_filter_sources() {
        let mut cfg = v3(100);
        cfg.unicast_peers = vec![PEER];
        let (mut m, t0) = started(&cfg);
        m.handle(t0, from(LOW_PEER, advert(150, 100)));
        assert_eq!(m.counters().invalid.get("source"), Some(&1));
        assert_eq!(m.next_deadline(), Some(t0 + m.master_down_interval()));
        m.handle(t0 + ms(500), from(PEER, advert(150, 100)));
        assert_eq!(m.counters().adverts_received, 1);
        assert_eq!(
            m.next_deadline(),
            Some(t0 + ms(500) + m.master_down_interval())
        );
    }

    #[test]
    fn preempt_lower_priority_master() {
        let (mut m, t0) = started(&v3(200));
        let deadline = m.next_deadline().expect("down timer");
        // A lower-priority master: discarded, so the timer keeps running.
        m.handle(t0 + ms(1000), from(PEER, advert(100, 100)));
        m.handle(t0 + ms(2000), from(PEER, advert(100, 100)));
        assert_eq!(m.next_deadline(), Some(deadline));
        let a = m.poll_timeout(deadline);
        assert_eq!(states(&a), [State::Master]);
        assert_eq!(sent(&a), [200]);
        // The old master still adverts once before it hears us: answer at once.
        let a = m.handle(deadline + ms(10), from(PEER, advert(100, 100)));
        assert_eq!(sent(&a), [200]);
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn no_preempt_keeps_lower_priority_master() {
        let mut cfg = v3(200);
        cfg.preempt = false;
        let (mut m, t0) = started(&cfg);
        for i in 1..=20u64 {
            m.handle(t0 + ms(1000 * i), from(PEER, advert(100, 100)));
            m.poll_timeout(t0 + ms(1000 * i + 500));
        }
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn preempt_delay_like_keepalived() {
        let mut cfg = v3(200);
        cfg.preempt_delay = Duration::from_secs(10);
        let (mut m, t0) = started(&cfg);
        // Lower-priority adverts are accepted for 10 s after the first one...
        for i in 1..=10u64 {
            let now = t0 + ms(1000 * i);
            m.handle(now, from(PEER, advert(100, 100)));
            assert_eq!(
                m.next_deadline(),
                Some(now + m.master_down_interval()),
                "{i}"
            );
        }
        // ...then ignored, so the master-down timer fires.
        m.handle(t0 + ms(11_000), from(PEER, advert(100, 100)));
        m.handle(t0 + ms(12_000), from(PEER, advert(100, 100)));
        let deadline = m.next_deadline().expect("down timer");
        assert_eq!(deadline, t0 + ms(10_000) + m.master_down_interval());
        assert!(m.poll_timeout(deadline - ms(1)).is_empty());
        assert_eq!(states(&m.poll_timeout(deadline)), [State::Master]);
    }

    #[test]
    fn preempt_delay_resets_on_higher_priority_advert() {
        let mut cfg = v3(200);
        cfg.preempt_delay = Duration::from_secs(5);
        let (mut m, t0) = started(&cfg);
        m.handle(t0 + ms(1000), from(PEER, advert(100, 100)));
        // A higher-priority master appears: delay window forgotten.
        m.handle(t0 + ms(2000), from(LOW_PEER, advert(250, 100)));
        // The lower one comes back later and gets a fresh window.
        m.handle(t0 + ms(9000), from(PEER, advert(100, 100)));
        m.handle(t0 + ms(13_000), from(PEER, advert(100, 100)));
        assert_eq!(
            m.next_deadline(),
            Some(t0 + ms(13_000) + m.master_down_interval())
        );
        assert_eq!(m.state(), State::Backup);
    }

    /// A node whose health checks are not settled yet.
    fn holding(priority: u8) -> VrrpConfig {
        let mut cfg = v3(priority);
        cfg.ready = false;
        cfg
    }

    #[test]
    fn holding_backup_does_not_preempt() {
        let (mut m, t0) = started(&holding(200));
        assert!(!m.is_ready());
        for i in 1..=20u64 {
            let now = t0 + ms(1000 * i);
            assert!(m.handle(now, from(PEER, advert(100, 100))).is_empty());
            assert_eq!(m.next_deadline(), Some(now + m.master_down_interval()));
            assert!(m.poll_timeout(now + ms(999)).is_empty());
        }
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn holding_owner_starts_as_backup() {
        let t0 = Instant::now();
        let mut m = Machine::new(&holding(255));
        let a = m.handle(t0, Event::SocketUp { local: LOCAL });
        assert_eq!(states(&a), [State::Backup]);
        assert!(sent(&a).is_empty());
        // A lower-priority master is accepted while holding.
        m.handle(t0 + ms(1000), from(PEER, advert(100, 100)));
        assert_eq!(
            m.next_deadline(),
            Some(t0 + ms(1000) + m.master_down_interval())
        );
        // The master falls silent: the master-down timer still makes it master.
        let a = m.poll_timeout(t0 + ms(1000) + m.master_down_interval());
        assert_eq!(states(&a), [State::Master]);
        assert_eq!(sent(&a), [255]);
    }

    #[test]
    fn holding_backup_takes_over_from_a_dead_master() {
        // Silent master: the master-down timer fires as always.
        let (mut m, t0) = started(&holding(200));
        m.handle(t0 + ms(1000), from(PEER, advert(100, 100)));
        let a = m.poll_timeout(t0 + ms(1000) + m.master_down_interval());
        assert_eq!(states(&a), [State::Master]);
        assert!(!m.is_ready());
        // A master that stops cleanly: taken over after the skew time.
        let (mut m, t0) = started(&holding(200));
        m.handle(t0 + ms(1000), from(PEER, advert(100, 100)));
        m.handle(t0 + ms(2000), from(PEER, advert(0, 100)));
        let a = m.poll_timeout(t0 + ms(2000) + m.skew_time());
        assert_eq!(states(&a), [State::Master]);
    }

    #[test]
    fn ready_then_preempts_lower_priority_master() {
        let (mut m, t0) = started(&holding(200));
        for i in 1..=5u64 {
            m.handle(t0 + ms(1000 * i), from(PEER, advert(100, 100)));
        }
        let accepted = t0 + ms(5000);
        assert!(
            m.handle(t0 + ms(5500), Event::Command(Command::Ready(true)))
                .is_empty()
        );
        assert!(m.is_ready());
        // From now on its adverts are ignored, so the master-down timer fires.
        m.handle(t0 + ms(6000), from(PEER, advert(100, 100)));
        m.handle(t0 + ms(7000), from(PEER, advert(100, 100)));
        let deadline = accepted + m.master_down_interval();
        assert_eq!(m.next_deadline(), Some(deadline));
        let a = m.poll_timeout(deadline);
        assert_eq!(states(&a), [State::Master]);
        assert_eq!(sent(&a), [200]);
    }

    #[test]
    fn ready_without_preempt_keeps_the_master() {
        let mut cfg = holding(200);
        cfg.preempt = false;
        let (mut m, t0) = started(&cfg);
        m.handle(t0 + ms(1000), from(PEER, advert(100, 100)));
        m.handle(t0 + ms(1500), Event::Command(Command::Ready(true)));
        for i in 2..=20u64 {
            m.handle(t0 + ms(1000 * i), from(PEER, advert(100, 100)));
            m.poll_timeout(t0 + ms(1000 * i + 500));
        }
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn preempt_delay_counts_from_ready() {
        let mut cfg = holding(200);
        cfg.preempt_delay = Duration::from_secs(10);
        let (mut m, t0) = started(&cfg);
        // Holding for 20 s: the delay does not run meanwhile.
        for i in 1..=20u64 {
            m.handle(t0 + ms(1000 * i), from(PEER, advert(100, 100)));
        }
        let ready = t0 + ms(20_500);
        m.handle(ready, Event::Command(Command::Ready(true)));
        // Adverts are accepted for 10 s after Ready(true)...
        for i in 21..=30u64 {
            let now = t0 + ms(1000 * i);
            m.handle(now, from(PEER, advert(100, 100)));
            assert_eq!(
                m.next_deadline(),
                Some(now + m.master_down_interval()),
                "{i}"
            );
        }
        // ...then ignored.
        m.handle(t0 + ms(31_000), from(PEER, advert(100, 100)));
        let deadline = t0 + ms(30_000) + m.master_down_interval();
        assert_eq!(m.next_deadline(), Some(deadline));
        assert_eq!(states(&m.poll_timeout(deadline)), [State::Master]);
    }

    #[test]
    fn not_ready_calls_off_a_preemption_under_way() {
        let (mut m, t0) = started(&v3(200));
        m.handle(t0 + ms(1000), from(PEER, advert(100, 100)));
        m.handle(t0 + ms(2000), from(PEER, advert(100, 100)));
        // The adverts are being ignored: the timer runs from the start.
        assert_eq!(m.next_deadline(), Some(t0 + m.master_down_interval()));
        m.handle(t0 + ms(2500), Event::Command(Command::Ready(false)));
        // The last advert counts as accepted; the master is kept from then on.
        assert_eq!(
            m.next_deadline(),
            Some(t0 + ms(2000) + m.master_down_interval())
        );
        for i in 3..=20u64 {
            m.handle(t0 + ms(1000 * i), from(PEER, advert(100, 100)));
            m.poll_timeout(t0 + ms(1000 * i + 500));
        }
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn master_unaffected_by_not_ready() {
        let (mut m, t0) = started(&v3(200));
        let down = t0 + m.master_down_interval();
        m.poll_timeout(down);
        assert_eq!(m.state(), State::Master);
        let a = m.handle(down + ms(100), Event::Command(Command::Ready(false)));
        assert!(a.is_empty(), "{a:?}");
        assert_eq!(m.state(), State::Master);
        // It keeps advertising its priority and answers a lower-priority router.
        assert_eq!(sent(&m.poll_timeout(down + ms(1000))), [200]);
        let a = m.handle(down + ms(1100), from(PEER, advert(100, 100)));
        assert_eq!(sent(&a), [200]);
        assert_eq!(m.state(), State::Master);
        // It yields to a higher priority as always.
        let a = m.handle(down + ms(1200), from(PEER, advert(250, 100)));
        assert_eq!(states(&a), [State::Backup]);
    }

    #[test]
    fn takeover_overrides_the_hold() {
        let (mut m, t0) = started(&holding(200));
        m.handle(t0 + ms(1000), from(PEER, advert(100, 100)));
        let a = m.handle(t0 + ms(1500), Event::Command(Command::Takeover));
        assert_eq!(states(&a), [State::Master]);
        assert_eq!(sent(&a), [255]);
        assert!(!m.is_ready());
        // And a holding node restarting under a takeover goes master at once.
        let a = m.handle(t0 + ms(1600), Event::Command(Command::LinkDown));
        assert_eq!(states(&a), [State::Fault]);
        let a = m.handle(t0 + ms(1700), Event::Command(Command::LinkUp));
        assert_eq!(states(&a), [State::Master]);
    }

    #[test]
    fn equal_priority_backup_accepts() {
        let (mut m, t0) = started(&v3(100));
        m.handle(t0 + ms(500), from(LOW_PEER, advert(100, 100)));
        assert_eq!(
            m.next_deadline(),
            Some(t0 + ms(500) + m.master_down_interval())
        );
    }

    #[test]
    fn master_yields_to_higher_priority() {
        let (mut m, t0) = started(&v3(100));
        let down = t0 + m.master_down_interval();
        m.poll_timeout(down);
        let now = down + ms(100);
        let a = m.handle(now, from(LOW_PEER, advert(150, 50)));
        assert_eq!(states(&a), [State::Backup]);
        assert!(sent(&a).is_empty());
        assert_eq!(m.master_adver_interval(), ms(500));
        assert_eq!(m.next_deadline(), Some(now + m.master_down_interval()));
    }

    #[test]
    fn master_tie_break_by_address() {
        // Equal priority, higher address: yield.
        let (mut m, t0) = started(&v3(100));
        let down = t0 + m.master_down_interval();
        m.poll_timeout(down);
        let a = m.handle(down + ms(10), from(PEER, advert(100, 100)));
        assert_eq!(states(&a), [State::Backup]);
        // Equal priority, lower address: stay and answer.
        let (mut m, t0) = started(&v3(100));
        let down = t0 + m.master_down_interval();
        m.poll_timeout(down);
        let a = m.handle(down + ms(10), from(LOW_PEER, advert(100, 100)));
        assert_eq!(sent(&a), [100]);
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn backup_takes_over_after_skew_on_priority_zero() {
        let (mut m, t0) = started(&v3(100));
        m.handle(t0 + ms(500), from(PEER, advert(150, 100)));
        let now = t0 + ms(1000);
        m.handle(now, from(PEER, advert(0, 100)));
        assert_eq!(m.counters().priority_zero_received, 1);
        assert_eq!(m.next_deadline(), Some(now + m.skew_time()));
        let a = m.poll_timeout(now + m.skew_time());
        assert_eq!(states(&a), [State::Master]);
    }

    #[test]
    fn master_answers_priority_zero() {
        let (mut m, t0) = started(&v3(100));
        let down = t0 + m.master_down_interval();
        m.poll_timeout(down);
        let now = down + ms(300);
        let a = m.handle(now, from(PEER, advert(0, 100)));
        assert_eq!(sent(&a), [100]);
        assert_eq!(m.next_deadline(), Some(now + ms(1000)));
    }

    #[test]
    fn shutdown_sends_priority_zero_when_master() {
        let (mut m, t0) = started(&v3(100));
        let down = t0 + m.master_down_interval();
        m.poll_timeout(down);
        let a = m.handle(down + ms(5), Event::Command(Command::Shutdown));
        assert_eq!(sent(&a), [0]);
        assert_eq!(
            a.last(),
            Some(&Action::Transition {
                role: Role::Standby,
                state: State::Initialize,
                reason: "shutdown".into()
            })
        );
        assert_eq!(m.counters().priority_zero_sent, 1);
        assert!(m.is_stopped());
        assert_eq!(m.next_deadline(), None);
        assert!(
            m.handle(down + ms(6), from(PEER, advert(150, 100)))
                .is_empty()
        );

        // A backup stops without an advert.
        let (mut m, t0) = started(&v3(100));
        let a = m.handle(t0, Event::Command(Command::Shutdown));
        assert!(sent(&a).is_empty());
        assert_eq!(states(&a), [State::Initialize]);
    }

    #[test]
    fn owner_goes_straight_to_master() {
        let (m, _) = started(&v3(255));
        assert_eq!(m.state(), State::Master);
        assert_eq!(m.counters().adverts_sent, 1);
        // And straight back after the link returns.
        let mut m = m;
        let t = Instant::now();
        let a = m.handle(t, Event::Command(Command::LinkDown));
        assert_eq!(states(&a), [State::Fault]);
        let a = m.handle(t + ms(10), Event::Command(Command::LinkUp));
        assert_eq!(states(&a), [State::Master]);
        assert_eq!(sent(&a), [255]);
    }

    #[test]
    fn link_down_and_up() {
        let (mut m, t0) = started(&v3(100));
        let down = t0 + m.master_down_interval();
        m.poll_timeout(down);
        let a = m.handle(down + ms(1), Event::Command(Command::LinkDown));
        assert_eq!(states(&a), [State::Fault]);
        assert!(sent(&a).is_empty(), "no adverts on a dead link");
        assert_eq!(m.next_deadline(), None);
        // Adverts and timers in Fault do nothing.
        assert!(
            m.handle(down + ms(2), from(PEER, advert(150, 100)))
                .is_empty()
        );
        assert!(m.poll_timeout(down + ms(5000)).is_empty());
        let up = down + ms(6000);
        let a = m.handle(up, Event::Command(Command::LinkUp));
        assert_eq!(states(&a), [State::Backup]);
        assert_eq!(m.next_deadline(), Some(up + m.master_down_interval()));
    }

    #[test]
    fn socket_errors_fault_until_reopened() {
        let (mut m, t0) = started(&v3(100));
        let a = m.handle(
            t0,
            Event::SocketDown {
                reason: "interface eth0 not found".into(),
            },
        );
        assert_eq!(
            a,
            [Action::Transition {
                role: Role::Fault,
                state: State::Fault,
                reason: "interface eth0 not found".into()
            }]
        );
        // Link up alone does not leave Fault while the socket is down.
        assert!(m.handle(t0, Event::Command(Command::LinkUp)).is_empty());
        let a = m.handle(t0 + ms(1000), Event::SocketUp { local: LOCAL });
        assert_eq!(states(&a), [State::Backup]);
        // And socket up does not leave Fault while the link is down.
        m.handle(t0 + ms(1100), Event::Command(Command::LinkDown));
        m.handle(t0 + ms(1200), Event::SocketDown { reason: "x".into() });
        assert!(
            m.handle(t0 + ms(1300), Event::SocketUp { local: LOCAL })
                .is_empty()
        );
        assert_eq!(m.state(), State::Fault);
    }

    #[test]
    fn takeover_from_backup_beats_any_keepalived_priority() {
        for peer_priority in [1u8, 100, 200, 253, 254] {
            let (mut m, t0) = started(&v3(100));
            m.handle(t0 + ms(100), from(PEER, advert(peer_priority, 100)));
            let a = m.handle(t0 + ms(200), Event::Command(Command::Takeover));
            assert_eq!(states(&a), [State::Master], "peer {peer_priority}");
            // The claim: 255 beats any master at 1..=254, ties included.
            assert_eq!(sent(&a), [255]);
            assert_eq!(m.override_mode(), Override::Takeover);
            // The peer was master too and sends once more before it hears us.
            let a = m.handle(t0 + ms(300), from(PEER, advert(peer_priority, 100)));
            assert_eq!(m.state(), State::Master, "peer {peer_priority}");
            assert_eq!(sent(&a), [255]);
            // After three advert intervals the claim settles at 254.
            let a = m.poll_timeout(t0 + ms(200) + Duration::from_secs(3));
            assert_eq!(sent(&a), [254], "peer {peer_priority}");
            assert_eq!(m.effective_priority(), 254);
        }
    }

    #[test]
    fn takeover_holds_against_higher_priority_preempting_peer() {
        let (mut m, t0) = started(&v3(100));
        m.handle(t0, Event::Command(Command::Takeover));
        assert_eq!(m.state(), State::Master);
        m.poll_timeout(t0 + Duration::from_secs(3));
        // A peer configured at 200 with preempt would accept our 254 as backup;
        // if it does advertise, we do not yield.
        let a = m.handle(t0 + ms(3500), from(PEER, advert(200, 100)));
        assert_eq!(sent(&a), [254]);
        assert_eq!(m.state(), State::Master);
        // Owner priority 255 node: takeover priority stays 255.
        let (mut m, t0) = started(&v3(255));
        m.handle(t0, Event::Command(Command::Takeover));
        m.poll_timeout(t0 + Duration::from_secs(5));
        assert_eq!(m.effective_priority(), 255);
    }

    #[test]
    fn the_latest_takeover_wins() {
        // We took over a while ago and settled at 254.
        let (mut m, t0) = started(&v3(100));
        m.handle(t0, Event::Command(Command::Takeover));
        m.poll_timeout(t0 + Duration::from_secs(3));
        assert_eq!(m.effective_priority(), 254);
        // The peer's operator takes over: its claim at 255 arrives.
        let a = m.handle(t0 + ms(3500), from(PEER, advert(255, 100)));
        assert_eq!(states(&a), [State::Backup]);
        assert_eq!(m.override_mode(), Override::None);
        assert_eq!(m.effective_priority(), 100);
        // Our operator takes it back at once, while the peer still claims at 255:
        // the peer's adverts predate our claim, so we reassert instead of yielding.
        let a = m.handle(t0 + ms(3600), Event::Command(Command::Takeover));
        assert_eq!(states(&a), [State::Master]);
        assert_eq!(sent(&a), [255]);
        let a = m.handle(t0 + ms(3700), from(PEER, advert(255, 100)));
        assert_eq!(m.state(), State::Master);
        assert_eq!(sent(&a), [255]);
        assert_eq!(m.override_mode(), Override::Takeover);
    }

    #[test]
    fn an_in_place_restart_resumes_as_master_once() {
        let mut cfg = v3(100);
        cfg.resume_master = true;
        let (m, _) = started(&cfg);
        assert_eq!(m.state(), State::Master);
        // A later start (after a fault) is an ordinary one.
        let (mut m, t0) = started(&cfg);
        m.handle(t0, Event::Command(Command::LinkDown));
        m.handle(t0 + ms(10), Event::Command(Command::LinkUp));
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn a_claiming_master_yields_to_a_newer_claim() {
        // We claim; the peer was silent (backup) when we did.
        let (mut m, t0) = started(&v3(100));
        m.handle(t0, Event::Command(Command::Takeover));
        // The peer's operator takes over within our claim window: its first advert
        // starts a new stream, newer than our claim, so we yield.
        let a = m.handle(t0 + ms(100), from(PEER, advert(255, 100)));
        assert_eq!(states(&a), [State::Backup]);
        assert_eq!(m.override_mode(), Override::None);
    }

    #[test]
    fn standby_hands_over_and_never_preempts() {
        let (mut m, t0) = started(&v3(200));
        let down = t0 + m.master_down_interval();
        m.poll_timeout(down);
        assert_eq!(m.state(), State::Master);
        let now = down + ms(100);
        let a = m.handle(now, Event::Command(Command::Standby));
        assert_eq!(sent(&a), [0]);
        assert_eq!(states(&a), [State::Backup]);
        assert_eq!(m.effective_priority(), 1);
        assert_eq!(m.override_mode(), Override::Standby);
        // The peer (priority 100 < our configured 200) takes over after its skew
        // and adverts; we accept it and do not preempt.
        for i in 1..=10u64 {
            let t = now + ms(600 + 1000 * i);
            assert!(m.handle(t, from(PEER, advert(100, 100))).is_empty());
            assert!(m.poll_timeout(t + ms(999)).is_empty());
        }
        assert_eq!(m.state(), State::Backup);
        // Peer dies: we still take over (a site must not go dark), at priority 1.
        let last = now + ms(600 + 10_000);
        let a = m.poll_timeout(last + m.master_down_interval());
        assert_eq!(states(&a), [State::Master]);
        assert_eq!(sent(&a), [1]);
        // Peer comes back (any priority > 1): we yield.
        let a = m.handle(last + ms(9000), from(LOW_PEER, advert(100, 100)));
        assert_eq!(states(&a), [State::Backup]);
        // Takeover clears Standby.
        let a = m.handle(last + ms(9100), Event::Command(Command::Takeover));
        assert_eq!(states(&a), [State::Master]);
        assert_eq!(sent(&a), [255], "a takeover claims at 255");
        assert_eq!(m.override_mode(), Override::Takeover);
        // And Standby clears Takeover again.
        let a = m.handle(last + ms(9200), Event::Command(Command::Standby));
        assert_eq!(sent(&a), [0]);
        assert_eq!(m.override_mode(), Override::Standby);
    }

    #[test]
    fn standby_master_down_uses_priority_one_skew() {
        let (mut m, t0) = started(&v3(200));
        let a = m.handle(t0, Event::Command(Command::Standby));
        assert!(a.is_empty());
        assert_eq!(
            m.skew_time(),
            Duration::from_micros(255 * 100 * 10_000 / 256)
        );
        // A low-priority master would normally be preempted; not under Standby.
        m.handle(t0 + ms(10), from(PEER, advert(50, 100)));
        assert_eq!(
            m.next_deadline(),
            Some(t0 + ms(10) + m.master_down_interval())
        );
    }

    #[test]
    fn takeover_in_fault_applies_on_link_up() {
        let (mut m, t0) = started(&v3(100));
        m.handle(t0, Event::Command(Command::LinkDown));
        assert!(m.handle(t0, Event::Command(Command::Takeover)).is_empty());
        assert_eq!(m.state(), State::Fault);
        let a = m.handle(t0 + ms(10), Event::Command(Command::LinkUp));
        assert_eq!(states(&a), [State::Master]);
        assert_eq!(sent(&a), [255], "still within the takeover claim");
    }

    #[test]
    fn sub_second_100ms() {
        let cfg = config(Version::V3, 100, ms(100));
        let (mut m, t0) = started(&cfg);
        // 300 ms + 156 * 10 cs / 256 = 360.9375 ms.
        let down = t0 + Duration::from_micros(360_937);
        assert_eq!(m.next_deadline(), Some(down));
        assert_eq!(states(&m.poll_timeout(down)), [State::Master]);
        for i in 1..=5u64 {
            assert_eq!(m.next_deadline(), Some(down + ms(100 * i)));
            assert_eq!(sent(&m.poll_timeout(down + ms(100 * i))), [100]);
        }
        assert_eq!(m.advert(100).max_advert_interval, 10);
    }

    #[test]
    fn sub_second_30ms() {
        let cfg = config(Version::V3, 200, ms(30));
        let (mut m, t0) = started(&cfg);
        // 90 ms + 56 * 3 cs / 256 = 96.5625 ms.
        assert_eq!(m.master_down_interval(), Duration::from_micros(96_562));
        // A 30 ms master keeps us backup.
        let mut t = t0;
        for _ in 0..10 {
            t += ms(30);
            m.handle(t, from(PEER, advert(250, 3)));
            assert!(m.poll_timeout(t + ms(29)).is_empty());
        }
        assert_eq!(m.state(), State::Backup);
        // Priority 0: skew = 56 * 3 cs / 256 = 6.5625 ms.
        m.handle(t + ms(5), from(PEER, advert(0, 3)));
        assert_eq!(
            m.next_deadline(),
            Some(t + ms(5) + Duration::from_micros(6_562))
        );
        assert_eq!(
            states(&m.poll_timeout(t + ms(12))),
            [State::Master],
            "took over ~7 ms after the priority-0 advert"
        );
        assert_eq!(m.advert(200).max_advert_interval, 3);
    }

    #[test]
    fn late_wakeup_resets_cadence() {
        let (mut m, t0) = started(&v3(255));
        assert_eq!(m.next_deadline(), Some(t0 + ms(1000)));
        m.poll_timeout(t0 + ms(3500));
        assert_eq!(m.next_deadline(), Some(t0 + ms(4500)));
    }
}
