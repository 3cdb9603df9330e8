//! The heartbeat machine with synthetic time: one node alone, or two nodes joined
//! by a simulated network of two media that can be cut one by one.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::linuxha::authkeys::{AuthKeys, Method};
use crate::linuxha::message::tests::{HB_SHUTDONE, HB_STATUS_SHA1};
use crate::linuxha::message::{Format, Message, name};
use crate::linuxha::state::BootState;
use crate::linuxha::{HbConfig, Medium};

const NAMES: [&str; 2] = ["lvs1", "lvs2"];
/// Unicast addresses on medium 0.
const UCAST: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)];
/// Addresses on medium 1 (multicast).
const MCAST_SRC: [Ipv4Addr; 2] = [
    Ipv4Addr::new(198, 51, 100, 1),
    Ipv4Addr::new(198, 51, 100, 2),
];
const GROUP: Ipv4Addr = Ipv4Addr::new(239, 0, 0, 94);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn keys() -> AuthKeys {
    AuthKeys::single(1, Method::Sha256, "secret")
}

fn config(i: usize) -> HbConfig {
    let mut c = HbConfig::new(
        NAMES[i],
        NAMES[1 - i],
        vec![
            Medium::Unicast {
                peer: IpAddr::V4(UCAST[1 - i]),
                interface: "eth1".into(),
            },
            Medium::Multicast {
                group: IpAddr::V4(GROUP),
                interface: "eth0".into(),
                ttl: 1,
            },
        ],
        keys(),
    );
    c.keepalive = ms(1000);
    c.warntime = ms(2000);
    c.deadtime = ms(3000);
    c.initdead = ms(6000);
    c
}

fn boot(generation: u64) -> BootState {
    BootState {
        generation,
        uuid: [generation as u8; 16],
        peer_generation: None,
    }
}

fn from(i: usize, medium: usize) -> SocketAddr {
    let ip = if medium == 0 { UCAST[i] } else { MCAST_SRC[i] };
    SocketAddr::new(IpAddr::V4(ip), 694)
}

fn transitions(actions: &[Action]) -> Vec<(State, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Transition { state, reason, .. } => Some((*state, reason.clone())),
            _ => None,
        })
        .collect()
}

fn sent(actions: &[Action]) -> Vec<Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { bytes } => Some(Message::parse(bytes).expect("we send valid messages")),
            _ => None,
        })
        .collect()
}

/// A started machine alone (both sockets up) at t0.
fn alone(c: &HbConfig) -> (Machine, Instant, Vec<Action>) {
    let t0 = Instant::now();
    let mut m = Machine::new(
        c,
        boot(100),
        t0,
        SystemTime::UNIX_EPOCH + Duration::from_secs(0x6000_0000),
    );
    assert_eq!(m.next_deadline(), None);
    let mut actions = m.handle(t0, Event::SocketUp { medium: 0 });
    actions.extend(m.handle(t0, Event::SocketUp { medium: 1 }));
    (m, t0, actions)
}

/// Two machines, two media, zero latency.
struct Net {
    now: Instant,
    nodes: [Machine; 2],
    /// Medium cut (both directions).
    cut: [bool; 2],
    /// Node unreachable (killed or isolated): nothing in or out.
    isolated: [bool; 2],
    log: [Vec<Action>; 2],
}

impl Net {
    fn new(a: HbConfig, b: HbConfig) -> Net {
        Net::with_start(a, b, Duration::ZERO)
    }

    /// Node b starts `delay` after node a.
    fn with_start(a: HbConfig, b: HbConfig, delay: Duration) -> Net {
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(0x6000_0000);
        let mut net = Net {
            now: t0,
            nodes: [
                Machine::new(&a, boot(100), t0, wall),
                Machine::new(&b, boot(200), t0, wall),
            ],
            cut: [false; 2],
            isolated: [false; 2],
            log: [Vec::new(), Vec::new()],
        };
        net.start(0);
        net.advance(delay);
        net.start(1);
        net
    }

    fn start(&mut self, i: usize) {
        self.feed(i, Event::SocketUp { medium: 0 });
        self.feed(i, Event::SocketUp { medium: 1 });
    }

    /// Feeds an event to node `i` and delivers everything sent as a result.
    fn feed(&mut self, i: usize, event: Event) -> Vec<Action> {
        let mut queue = VecDeque::from([(i, event)]);
        let mut first = None;
        while let Some((node, event)) = queue.pop_front() {
            let actions = self.nodes[node].handle(self.now, event);
            for action in &actions {
                if let Action::Send { bytes } = action {
                    if self.isolated[node] || self.isolated[1 - node] {
                        continue;
                    }
                    for medium in 0..2 {
                        if !self.cut[medium] {
                            queue.push_back((
                                1 - node,
                                Event::Datagram {
                                    medium,
                                    from: from(node, medium),
                                    bytes: bytes.clone(),
                                },
                            ));
                        }
                    }
                }
            }
            if first.is_none() {
                first = Some(actions.clone());
            }
            self.log[node].extend(actions);
        }
        first.unwrap_or_default()
    }

    /// Runs both nodes' timers up to `now + d`.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = (0..2)
                .filter_map(|i| self.nodes[i].next_deadline().map(|t| (t, i)))
                .filter(|(t, _)| *t <= end)
                .min();
            let Some((t, i)) = next else { break };
            self.now = self.now.max(t);
            self.feed(i, Event::Timeout);
        }
        self.now = end;
    }

    fn states(&self) -> (State, State) {
        (self.nodes[0].state(), self.nodes[1].state())
    }

    fn transitions(&self, i: usize) -> Vec<(State, String)> {
        transitions(&self.log[i])
    }

    fn clear_logs(&mut self) {
        self.log = [Vec::new(), Vec::new()];
    }
}

#[test]
fn state_names_and_roles() {
    assert_eq!(State::Init.name(), "init");
    assert_eq!(State::Stopped.role(), Role::Standby);
    assert_eq!(State::Fault.role(), Role::Fault);
    assert_eq!(State::Active.role(), Role::Active);
}

#[test]
fn alone_waits_initdead_then_takes_over() {
    let c = config(0);
    let (mut m, t0, actions) = alone(&c);
    assert_eq!(m.state(), State::Init);
    assert_eq!(
        transitions(&actions),
        [(
            State::Init,
            "startup: waiting up to 6000ms (initdead) for lvs2".into()
        )]
    );
    // The first keepalive goes out at once.
    let first = sent(&actions);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].get_str(name::TYPE), Some("status"));
    assert_eq!(m.next_deadline(), Some(t0 + ms(1000)));
    // Keepalives every second; no takeover before initdead.
    for k in 1..6 {
        let t = t0 + ms(1000 * k);
        assert_eq!(m.next_deadline(), Some(t));
        let actions = m.handle(t, Event::Timeout);
        assert_eq!(sent(&actions).len(), 1, "keepalive {k}");
        assert_eq!(m.state(), State::Init);
    }
    let actions = m.handle(t0 + ms(6000), Event::Timeout);
    assert_eq!(
        transitions(&actions),
        [(
            State::Active,
            "initdead expired: nothing from lvs2 for 6000ms".into()
        )]
    );
    assert_eq!(m.counters().became_active, 1);
    assert!(m.links().iter().all(|l| l.socket_up && !l.up));
}

#[test]
fn keepalive_content_is_signed_heartbeat_status() {
    let c = config(0);
    let (mut m, t0, actions) = alone(&c);
    let mut seqs = Vec::new();
    let mut all = actions;
    for k in 1..=3 {
        all.extend(m.handle(t0 + ms(1000 * k), Event::Timeout));
    }
    for message in sent(&all) {
        assert_eq!(message.format(), Format::Classic);
        assert_eq!(message.verify(&keys()), Ok(1));
        let h = Header::parse(&message).expect("header");
        assert_eq!(
            (h.kind, h.src.as_str(), h.generation),
            (Kind::Status, "lvs1", 100)
        );
        assert_eq!(message.get_str(name::STATUS), Some("active"));
        assert_eq!(message.get_str(name::DEADTIME), Some("bb8"));
        assert_eq!(message.get_str(name::PROTOCOL), Some("1"));
        assert_eq!(message.get_str(name::TTL), Some("3"));
        assert_eq!(message.get_str(field::ROLE), Some("init"));
        assert_eq!(message.get_str(field::OVERRIDE), Some("none"));
        assert_eq!(message.get_str(field::KEEPALIVE), Some("3e8"));
        assert_eq!(message.get_str(field::READY), Some("1"));
        assert_eq!(message.get(name::SRC_UUID), Some(&[100u8; 16][..]));
        seqs.push(h.seq.expect("seq"));
    }
    assert_eq!(seqs, [1, 2, 3, 4]);
    // ts follows the wall clock given at construction.
    let last = sent(&m.handle(t0 + ms(4000), Event::Timeout)).remove(0);
    assert_eq!(last.get_hex(name::TIME), Ok(Some(0x6000_0004)));
    assert_eq!(m.counters().adverts_sent, 5);
}

#[test]
fn late_wakeup_resets_cadence() {
    let (mut m, t0, _) = alone(&config(0));
    // The thread was held up for 2.5 intervals: one keepalive, then a fresh cadence.
    let actions = m.handle(t0 + ms(3500), Event::Timeout);
    assert_eq!(sent(&actions).len(), 1);
    assert_eq!(m.next_deadline(), Some(t0 + ms(4500)));
}

#[test]
fn two_nodes_converge_lower_name_active() {
    let mut net = Net::new(config(0), config(1));
    net.advance(ms(100));
    assert_eq!(net.states(), (State::Active, State::Standby));
    assert_eq!(
        net.transitions(0),
        [
            (
                State::Init,
                "startup: waiting up to 6000ms (initdead) for lvs2".into()
            ),
            (
                State::Active,
                "peer lvs2 is alive; lvs1 has the lexically lower name".into()
            ),
        ]
    );
    // lvs1 answered lvs2's first keepalive at once (zero latency here).
    assert_eq!(
        net.transitions(1)[1],
        (
            State::Standby,
            "peer lvs1 is alive; lvs1 already holds the VIPs".into()
        )
    );
    net.advance(ms(10_000));
    assert_eq!(net.states(), (State::Active, State::Standby));
    for node in &net.nodes {
        assert!(node.links().iter().all(|l| l.up), "{:?}", node.links());
        assert!(node.counters().invalid.is_empty(), "{:?}", node.counters());
        let peer = node.peer().expect("peer");
        assert!(peer.alive);
        assert_eq!(peer.keepalive, ms(1000));
    }
    assert_eq!(net.nodes[1].peer().expect("peer").role, PeerRole::Active);
    assert_eq!(
        net.nodes[1].peer().expect("peer").address,
        IpAddr::V4(MCAST_SRC[0])
    );
    // Each message arrives on both media: counted twice, acted on once.
    let received = net.nodes[1].counters().adverts_received;
    assert!(received >= 20, "{received}");
    assert_eq!(net.transitions(1).len(), 2);
}

#[test]
fn peer_late_then_dead_then_takeover_on_standby() {
    let mut net = Net::new(config(0), config(1));
    net.advance(ms(5000));
    assert_eq!(net.states(), (State::Active, State::Standby));
    net.clear_logs();
    // Kill the active node (it stops without a word).
    net.isolated[0] = true;
    let killed = net.now;
    let last_heard = net.nodes[1].peer().expect("peer").last_seen;
    net.advance(ms(1990));
    assert!(
        !net.log[1]
            .iter()
            .any(|a| matches!(a, Action::PeerLate { .. }))
    );
    net.advance(ms(4000));
    let late: Vec<_> = net.log[1]
        .iter()
        .filter_map(|a| match a {
            Action::PeerLate { silent_for } => Some(*silent_for),
            _ => None,
        })
        .collect();
    assert_eq!(late, [ms(2000)]);
    assert!(net.log[1].contains(&Action::PeerDead {
        reason: "peer lvs1 dead: nothing on any medium for 3000ms".into()
    }));
    assert_eq!(
        net.transitions(1),
        [(
            State::Active,
            "peer lvs1 dead: nothing on any medium for 3000ms".into()
        )]
    );
    assert!(last_heard + ms(3000) <= killed + ms(3000));
    // Both media reported down too.
    let downs = net.log[1]
        .iter()
        .filter(|a| matches!(a, Action::LinkDown { .. }))
        .count();
    assert_eq!(downs, 2);
    assert!(net.nodes[1].links().iter().all(|l| !l.up));
}

#[test]
fn one_medium_cut_is_reported_but_no_failover() {
    let mut net = Net::new(config(0), config(1));
    net.advance(ms(5000));
    net.clear_logs();
    net.cut[0] = true;
    net.advance(ms(10_000));
    assert_eq!(net.states(), (State::Active, State::Standby));
    for i in 0..2 {
        let downs: Vec<_> = net.log[i]
            .iter()
            .filter_map(|a| match a {
                Action::LinkDown { medium, silent_for } => Some((*medium, *silent_for)),
                _ => None,
            })
            .collect();
        assert_eq!(downs, [(0, ms(3000))], "node {i}");
        assert!(!net.nodes[i].links()[0].up);
        assert!(net.nodes[i].links()[1].up);
        assert!(net.transitions(i).is_empty());
        assert!(
            !net.log[i]
                .iter()
                .any(|a| matches!(a, Action::PeerDead { .. } | Action::PeerLate { .. }))
        );
    }
    // The medium comes back.
    net.cut[0] = false;
    net.advance(ms(1000));
    assert!(net.log[1].contains(&Action::LinkUp { medium: 0 }));
    assert!(net.nodes[1].links()[0].up);
}

#[test]
fn all_media_cut_fails_over_and_heal_settles_within_one_keepalive() {
    let mut net = Net::new(config(0), config(1));
    net.advance(ms(5000));
    net.clear_logs();
    net.cut = [true, true];
    net.advance(ms(3500));
    assert_eq!(
        net.states(),
        (State::Active, State::Active),
        "split brain while cut"
    );
    net.clear_logs();
    net.cut = [false, false];
    net.advance(ms(1000));
    // lvs1 (lower name) stays and announces again; lvs2 yields.
    assert_eq!(net.states(), (State::Active, State::Standby));
    assert_eq!(
        net.transitions(1),
        [(
            State::Standby,
            "both active; yielding: lvs1 has the lexically lower name".into()
        )]
    );
    assert_eq!(
        net.transitions(0),
        [(
            State::Active,
            "lvs2 released the VIPs: announcing them again".into()
        )]
    );
    net.advance(ms(5000));
    assert_eq!(net.transitions(0).len(), 1, "announced once");
    assert_eq!(net.states(), (State::Active, State::Standby));
}

#[test]
fn heal_keeps_the_preferred_node() {
    let mut a = config(0);
    let mut b = config(1);
    a.preferred = Some("lvs2".into());
    b.preferred = Some("lvs2".into());
    a.auto_failback = false;
    b.auto_failback = false;
    let mut net = Net::new(a, b);
    net.advance(ms(100));
    // Neither holds yet: the preferred node wins.
    assert_eq!(net.states(), (State::Standby, State::Active));
    net.cut = [true, true];
    net.advance(ms(4000));
    assert_eq!(net.states(), (State::Active, State::Active));
    net.cut = [false, false];
    net.advance(ms(1000));
    assert_eq!(net.states(), (State::Standby, State::Active));
    assert_eq!(
        net.transitions(0).last().expect("t").1,
        "both active; yielding: lvs2 is the preferred node"
    );
}

#[test]
fn auto_failback_on_preferred_node_takes_back() {
    let mut a = config(0);
    let mut b = config(1);
    a.preferred = Some("lvs2".into());
    b.preferred = Some("lvs2".into());
    // lvs2 starts 10 s late: lvs1 has taken over after initdead.
    let mut net = Net::with_start(a, b, ms(10_000));
    net.advance(ms(100));
    assert_eq!(net.states(), (State::Standby, State::Active));
    assert_eq!(
        net.transitions(1)[1].1,
        "peer lvs1 is alive; lvs2 is the preferred node (auto_failback)"
    );
    assert_eq!(
        net.transitions(0).last().expect("t").1,
        "both active; yielding: lvs2 is the preferred node (auto_failback)"
    );
}

#[test]
fn auto_failback_off_holder_keeps() {
    let mut a = config(0);
    let mut b = config(1);
    for c in [&mut a, &mut b] {
        c.preferred = Some("lvs2".into());
        c.auto_failback = false;
    }
    let mut net = Net::with_start(a, b, ms(10_000));
    net.advance(ms(5000));
    assert_eq!(net.states(), (State::Active, State::Standby));
    assert_eq!(
        net.transitions(1)[1].1,
        "peer lvs1 is alive; lvs1 already holds the VIPs"
    );
    // Without a preferred node the holder keeps them too, whatever the names.
    let mut net = Net::with_start(config(1), config(0), ms(10_000));
    net.advance(ms(5000));
    assert_eq!(net.states(), (State::Active, State::Standby));
    assert_eq!(net.nodes[0].node, "lvs2");
}

/// Node `i` with its health checks not settled yet.
fn not_ready(i: usize) -> HbConfig {
    let mut c = config(i);
    c.ready = false;
    c
}

#[test]
fn holding_preferred_node_fails_back_only_when_ready() {
    let mut a = config(0);
    let mut b = not_ready(1);
    a.preferred = Some("lvs2".into());
    b.preferred = Some("lvs2".into());
    // lvs2 starts 10 s late, holding: lvs1 keeps the VIPs.
    let mut net = Net::with_start(a, b, ms(10_000));
    net.advance(ms(10_000));
    assert_eq!(net.states(), (State::Active, State::Standby));
    assert_eq!(
        net.transitions(1)[1].1,
        "peer lvs1 is alive; lvs1 already holds the VIPs"
    );
    assert!(!net.nodes[0].peer().expect("peer").ready);
    net.clear_logs();
    // Checks settled: auto-failback now, both in the same instant.
    let actions = net.feed(1, Event::Command(Command::Ready(true)));
    assert_eq!(sent(&actions)[0].get_str(field::READY), Some("1"));
    assert_eq!(net.states(), (State::Standby, State::Active));
    assert_eq!(
        net.transitions(1),
        [(
            State::Active,
            "peer lvs1 is alive; lvs2 is the preferred node (auto_failback)".into()
        )]
    );
    assert_eq!(
        net.transitions(0),
        [(
            State::Standby,
            "both active; yielding: lvs2 is the preferred node (auto_failback)".into()
        )]
    );
    assert!(net.nodes[0].peer().expect("peer").ready);
}

#[test]
fn holding_node_leaves_the_vips_to_a_ready_peer() {
    // lvs1 would win by its lower name, but its checks are not settled.
    let mut net = Net::new(not_ready(0), config(1));
    net.advance(ms(100));
    assert_eq!(net.states(), (State::Standby, State::Active));
    assert_eq!(
        net.transitions(0)[1].1,
        "peer lvs2 is alive; lvs1 waits for its health checks"
    );
    // Ready: nothing to take back (no preferred node), but the peer is told.
    net.clear_logs();
    let actions = net.feed(0, Event::Command(Command::Ready(true)));
    assert!(transitions(&actions).is_empty());
    assert_eq!(sent(&actions)[0].get_str(field::READY), Some("1"));
    assert!(net.nodes[1].peer().expect("peer").ready);
    net.advance(ms(5000));
    assert_eq!(net.states(), (State::Standby, State::Active));
}

#[test]
fn holding_node_takes_over_from_a_dead_peer() {
    let mut net = Net::new(not_ready(0), config(1));
    net.advance(ms(3000));
    assert_eq!(net.states(), (State::Standby, State::Active));
    net.clear_logs();
    net.isolated[1] = true;
    net.advance(ms(3100));
    assert_eq!(net.nodes[0].state(), State::Active);
    assert!(net.transitions(0)[0].1.starts_with("peer lvs2 dead"));
    assert!(!net.nodes[0].is_ready());
    // And alone, after initdead.
    let (mut m, t0, _) = alone(&not_ready(0));
    let actions = m.handle(t0 + ms(6000), Event::Timeout);
    assert_eq!(
        transitions(&actions),
        [(
            State::Active,
            "initdead expired: nothing from lvs2 for 6000ms".into()
        )]
    );
}

#[test]
fn active_node_keeps_the_vips_when_not_ready() {
    let mut net = Net::new(config(0), config(1));
    net.advance(ms(3000));
    assert_eq!(net.states(), (State::Active, State::Standby));
    net.clear_logs();
    let actions = net.feed(0, Event::Command(Command::Ready(false)));
    assert!(transitions(&actions).is_empty());
    assert_eq!(sent(&actions)[0].get_str(field::READY), Some("0"));
    assert!(!net.nodes[1].peer().expect("peer").ready);
    net.advance(ms(10_000));
    assert_eq!(net.states(), (State::Active, State::Standby));
    assert!(net.transitions(0).is_empty() && net.transitions(1).is_empty());
}

#[test]
fn takeover_overrides_the_hold() {
    let mut net = Net::new(not_ready(0), config(1));
    net.advance(ms(3000));
    assert_eq!(net.states(), (State::Standby, State::Active));
    net.feed(0, Event::Command(Command::Takeover));
    assert_eq!(net.states(), (State::Active, State::Standby));
    net.advance(ms(5000));
    assert_eq!(net.states(), (State::Active, State::Standby));
    assert!(!net.nodes[0].is_ready());
}

#[test]
fn takeover_and_standby_are_immediate_hand_offs() {
    let mut net = Net::new(config(0), config(1));
    net.advance(ms(3000));
    assert_eq!(net.states(), (State::Active, State::Standby));
    net.clear_logs();

    // Takeover on the standby: both move in the same instant (zero latency).
    net.feed(1, Event::Command(Command::Takeover));
    assert_eq!(net.states(), (State::Standby, State::Active));
    assert_eq!(
        net.transitions(1),
        [(State::Active, "operator takeover".into())]
    );
    assert_eq!(
        net.transitions(0),
        [(
            State::Standby,
            "both active; yielding: lvs2 took over by operator command".into()
        )]
    );
    assert_eq!(net.nodes[1].override_mode(), Override::Takeover);
    // It holds: lvs1's lower name does not take it back.
    net.advance(ms(10_000));
    assert_eq!(net.states(), (State::Standby, State::Active));

    // Takeover on lvs1 now: the later command wins, lvs2 drops its own.
    net.clear_logs();
    net.feed(0, Event::Command(Command::Takeover));
    assert_eq!(net.states(), (State::Active, State::Standby));
    assert_eq!(net.nodes[1].override_mode(), Override::None);
    net.advance(ms(5000));
    assert_eq!(net.states(), (State::Active, State::Standby));

    // Standby on the active one: the peer takes over at once.
    net.clear_logs();
    net.feed(0, Event::Command(Command::Standby));
    assert_eq!(net.states(), (State::Standby, State::Active));
    assert_eq!(
        net.transitions(0),
        [(
            State::Standby,
            "operator standby: handing over to lvs2".into()
        )]
    );
    assert_eq!(
        net.transitions(1),
        [(
            State::Active,
            "peer lvs1 is alive; lvs1 stands by by operator command".into()
        )]
    );
    // Standby holds although lvs1 has the lower name (and lvs1 has no takeover).
    net.advance(ms(10_000));
    assert_eq!(net.states(), (State::Standby, State::Active));
    assert_eq!(net.nodes[0].override_mode(), Override::Standby);

    // But a standby still takes over when the peer dies.
    net.clear_logs();
    net.isolated[1] = true;
    net.advance(ms(3100));
    assert_eq!(net.nodes[0].state(), State::Active);
    assert!(net.transitions(0)[0].1.starts_with("peer lvs2 dead"));
}

#[test]
fn standby_with_nobody_to_hand_over_to_keeps_the_vips() {
    let (mut m, t0, _) = alone(&config(0));
    m.handle(t0 + ms(6000), Event::Timeout);
    assert_eq!(m.state(), State::Active);
    let actions = m.handle(t0 + ms(6100), Event::Command(Command::Standby));
    assert!(transitions(&actions).is_empty());
    assert_eq!(m.state(), State::Active);
    assert_eq!(m.override_mode(), Override::Standby);
    // The peer is told the override at once.
    let status = &sent(&actions)[0];
    assert_eq!(status.get_str(field::OVERRIDE), Some("standby"));
    assert_eq!(status.get_str(field::ROLE), Some("active"));
}

#[test]
fn standby_on_both_nodes_still_leaves_one_active() {
    let mut net = Net::new(config(0), config(1));
    net.advance(ms(3000));
    net.feed(1, Event::Command(Command::Standby));
    assert_eq!(net.states(), (State::Active, State::Standby));
    // Standby on lvs1 too: the later command wins, lvs2 serves.
    net.feed(0, Event::Command(Command::Standby));
    assert_eq!(net.states(), (State::Standby, State::Active));
    assert_eq!(net.nodes[1].override_mode(), Override::None);
    net.advance(ms(5000));
    assert_eq!(net.states(), (State::Standby, State::Active));
}

#[test]
fn shutdown_hands_over_at_once() {
    let mut net = Net::new(config(0), config(1));
    net.advance(ms(3000));
    net.clear_logs();
    let actions = net.feed(0, Event::Command(Command::Shutdown));
    assert_eq!(transitions(&actions), [(State::Stopped, "shutdown".into())]);
    assert_eq!(net.nodes[0].state().role(), Role::Standby);
    let goodbye = sent(&actions);
    assert_eq!(goodbye.len(), 2);
    assert_eq!(goodbye[0].get_str(name::TYPE), Some("shutdone"));
    assert_eq!(goodbye[0].get_str(name::STATUS), Some("dead"));
    assert_eq!(goodbye[1].get_str(name::TYPE), Some("status"));
    assert_eq!(goodbye[1].get_str(name::STATUS), Some("dead"));
    assert_eq!(net.nodes[0].counters().priority_zero_sent, 1);
    assert_eq!(net.nodes[1].state(), State::Active);
    assert_eq!(
        net.transitions(1),
        [(State::Active, "peer lvs1 left (shutdown notice)".into())]
    );
    assert_eq!(net.nodes[1].counters().priority_zero_received, 1);
    // A stopped machine does nothing more.
    assert!(net.nodes[0].is_stopped());
    assert_eq!(net.nodes[0].next_deadline(), None);
    assert!(net.nodes[0].handle(net.now, Event::Timeout).is_empty());
    assert!(
        net.nodes[0]
            .handle(net.now, Event::Command(Command::Takeover))
            .is_empty()
    );
}

#[test]
fn link_down_is_fault_and_the_peer_takes_over_at_once() {
    let mut net = Net::new(config(0), config(1));
    net.advance(ms(3000));
    net.clear_logs();
    net.feed(0, Event::Command(Command::LinkDown));
    assert_eq!(net.states(), (State::Fault, State::Active));
    assert_eq!(net.transitions(0), [(State::Fault, "link down".into())]);
    assert_eq!(
        net.transitions(1),
        [(State::Active, "peer lvs1 is alive; lvs1 is in fault".into())]
    );
    net.advance(ms(5000));
    assert_eq!(net.states(), (State::Fault, State::Active));
    net.clear_logs();
    net.feed(0, Event::Command(Command::LinkUp));
    assert_eq!(net.states(), (State::Standby, State::Active));
    assert_eq!(
        net.transitions(0),
        [
            (State::Init, "link up".into()),
            (
                State::Standby,
                "peer lvs2 is alive; lvs2 already holds the VIPs".into()
            )
        ]
    );
}

#[test]
fn no_usable_medium_is_fault() {
    let c = config(0);
    let t0 = Instant::now();
    // One medium failing while another works: no fault.
    let mut m = Machine::new(&c, boot(1), t0, SystemTime::now());
    m.handle(t0, Event::SocketUp { medium: 1 });
    let actions = m.handle(
        t0,
        Event::SocketDown {
            medium: 0,
            reason: "x".into(),
        },
    );
    assert!(transitions(&actions).is_empty());
    assert_eq!(m.state(), State::Init);
    let actions = m.handle(
        t0,
        Event::SocketDown {
            medium: 1,
            reason: "y".into(),
        },
    );
    assert_eq!(
        transitions(&actions),
        [(State::Fault, "no heartbeat medium usable: y".into())]
    );
    // None ever opened.
    let mut m = Machine::new(&c, boot(1), t0, SystemTime::now());
    m.handle(
        t0,
        Event::SocketDown {
            medium: 0,
            reason: "x".into(),
        },
    );
    assert_eq!(m.state(), State::Fault);
    let actions = m.handle(
        t0,
        Event::SocketDown {
            medium: 1,
            reason: "z".into(),
        },
    );
    assert!(actions.is_empty());
    let actions = m.handle(t0 + ms(1000), Event::SocketUp { medium: 1 });
    assert_eq!(
        transitions(&actions),
        [(State::Init, "a heartbeat medium is usable again".into())]
    );
    // Alone: takes over one deadtime later.
    let actions = m.handle(t0 + ms(4000), Event::Timeout);
    assert_eq!(transitions(&actions)[0].0, State::Active);
}

/// A message as lvs2 would send it, signed with `keys`.
fn forged(keys: &AuthKeys, src: &str, seq: u64, generation: u64) -> Vec<u8> {
    let mut m = Message::new(Format::Classic);
    for (k, v) in [
        ("t", "status".to_owned()),
        ("st", "active".to_owned()),
        ("dd_role", "active".to_owned()),
        ("src", src.to_owned()),
        ("seq", format!("{seq:x}")),
        ("hg", format!("{generation:x}")),
        ("ts", "1".to_owned()),
    ] {
        m.push_str(k, &v).expect("field");
    }
    m.sign(keys);
    m.to_bytes()
}

#[test]
fn drops_forged_replayed_and_stale_messages_and_counts_them() {
    let mut net = Net::new(config(0), config(1));
    net.advance(ms(3000));
    assert_eq!(net.states(), (State::Active, State::Standby));
    let now = net.now;
    let m = &mut net.nodes[1];
    let datagram = |medium: usize, bytes: Vec<u8>| Event::Datagram {
        medium,
        from: from(0, medium),
        bytes,
    };
    // Wrong key: auth.
    let wrong = AuthKeys::single(1, Method::Sha256, "guess");
    let a = m.handle(now, datagram(1, forged(&wrong, "lvs1", 1000, 100)));
    assert!(
        matches!(a[..], [Action::Dropped { reason: "auth", .. }]),
        "{a:?}"
    );
    // Right key, unknown node: source.
    m.handle(now, datagram(1, forged(&keys(), "lvs3", 1000, 100)));
    // Right key, right node, unicast medium but another address: source.
    m.handle(
        now,
        Event::Datagram {
            medium: 0,
            from: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99)), 694),
            bytes: forged(&keys(), "lvs1", 1000, 100),
        },
    );
    // An older generation: generation.
    m.handle(now, datagram(1, forged(&keys(), "lvs1", 1000, 99)));
    // A sequence number already seen on that medium: replay.
    m.handle(now, datagram(1, forged(&keys(), "lvs1", 2, 100)));
    // Garbage: malformed.
    m.handle(now, datagram(1, b"GET / HTTP/1.0\r\n\r\n".to_vec()));
    m.handle(now, datagram(1, b">>>\nt=status\n<<<\n".to_vec()));
    // Our own looped-back multicast: ignored, not counted.
    let own = forged(&keys(), "lvs2", 1, 200);
    assert!(m.handle(now, datagram(1, own)).is_empty());
    let invalid: Vec<_> = m
        .counters()
        .invalid
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        invalid,
        [
            ("auth", 1),
            ("generation", 1),
            ("malformed", 2),
            ("replay", 1),
            ("source", 2)
        ]
    );
    // None of it moved anything.
    net.advance(ms(5000));
    assert_eq!(net.states(), (State::Active, State::Standby));
}

#[test]
fn replay_across_media_and_window() {
    let c = config(1);
    let t0 = Instant::now();
    let mut m = Machine::new(&c, boot(5), t0, SystemTime::now());
    m.handle(t0, Event::SocketUp { medium: 0 });
    m.handle(t0, Event::SocketUp { medium: 1 });
    let msg = |seq| forged(&keys(), "lvs1", seq, 100);
    let on = |medium: usize, seq: u64| Event::Datagram {
        medium,
        from: from(0, medium),
        bytes: msg(seq),
    };
    let reasons = |actions: &[Action]| -> Vec<&'static str> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Dropped { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    };
    assert!(reasons(&m.handle(t0, on(0, 10))).is_empty());
    // The same message on the other medium: accepted (that medium lives).
    let a = m.handle(t0, on(1, 10));
    assert!(reasons(&a).is_empty());
    assert!(a.contains(&Action::LinkUp { medium: 1 }));
    // Again on either: replay.
    assert_eq!(reasons(&m.handle(t0, on(0, 10))), ["replay"]);
    assert_eq!(reasons(&m.handle(t0, on(1, 9))), ["replay"]);
    // Far ahead on medium 0, then an old one on medium 1 below the window.
    assert!(reasons(&m.handle(t0, on(0, 200))).is_empty());
    assert_eq!(reasons(&m.handle(t0, on(1, 100))), ["replay"]);
    assert!(reasons(&m.handle(t0, on(1, 150))).is_empty());
    // A new generation of the peer (it restarted): seq starts over.
    let a = m.handle(
        t0,
        Event::Datagram {
            medium: 0,
            from: from(0, 0),
            bytes: forged(&keys(), "lvs1", 1, 101),
        },
    );
    assert!(reasons(&a).is_empty());
    assert!(a.contains(&Action::PeerGeneration { generation: 101 }));
    assert_eq!(m.peer().expect("peer").generation, 101);
    assert_eq!(m.counters().adverts_received, 5);
}

#[test]
fn persisted_peer_generation_blocks_old_replays_after_restart() {
    let c = config(1);
    let t0 = Instant::now();
    let mut state = boot(5);
    state.peer_generation = Some(100);
    let mut m = Machine::new(&c, state, t0, SystemTime::now());
    m.handle(t0, Event::SocketUp { medium: 0 });
    let a = m.handle(
        t0,
        Event::Datagram {
            medium: 0,
            from: from(0, 0),
            bytes: forged(&keys(), "lvs1", 7, 99),
        },
    );
    assert!(matches!(
        a[..],
        [Action::Dropped {
            reason: "generation",
            ..
        }]
    ));
    // The current generation is fine, and is not reported as new.
    let a = m.handle(
        t0,
        Event::Datagram {
            medium: 0,
            from: from(0, 0),
            bytes: forged(&keys(), "lvs1", 7, 100),
        },
    );
    assert!(
        !a.iter()
            .any(|a| matches!(a, Action::PeerGeneration { .. } | Action::Dropped { .. }))
    );
}

#[test]
fn rolled_keys_accept_any_configured_id() {
    let mut c = config(1);
    c.keys = AuthKeys::new(
        2,
        [
            crate::linuxha::authkeys::Key::new(1, Method::Sha1, "old"),
            crate::linuxha::authkeys::Key::new(2, Method::Sha256, "new"),
        ],
    )
    .expect("keys");
    let (mut m, t0, actions) = alone(&c);
    assert!(
        sent(&actions)[0]
            .get_str(name::AUTH)
            .expect("auth")
            .starts_with("2 ")
    );
    let old = AuthKeys::single(1, Method::Sha1, "old");
    let a = m.handle(
        t0,
        Event::Datagram {
            medium: 1,
            from: from(0, 1),
            bytes: forged(&old, "lvs1", 1, 100),
        },
    );
    assert!(
        a.iter().any(|a| matches!(a, Action::PeerAlive { .. })),
        "{a:?}"
    );
}

#[test]
fn sub_second_timers() {
    let mut a = config(0);
    let mut b = config(1);
    for c in [&mut a, &mut b] {
        c.keepalive = ms(100);
        c.warntime = ms(200);
        c.deadtime = ms(300);
        c.initdead = ms(300);
    }
    let mut net = Net::new(a, b);
    net.advance(ms(1000));
    assert_eq!(net.states(), (State::Active, State::Standby));
    net.clear_logs();
    net.isolated[0] = true;
    let killed = net.now;
    net.advance(ms(250));
    assert_eq!(net.nodes[1].state(), State::Standby);
    net.advance(ms(100));
    assert_eq!(net.nodes[1].state(), State::Active);
    // The last keepalive left at a multiple of 100 ms: dead 300 ms after it.
    let last = net.nodes[1].peer().expect("peer").last_seen;
    assert!(last <= killed && last + ms(300) <= killed + ms(300));
    assert_eq!(
        net.transitions(1)[0].1,
        "peer lvs1 dead: nothing on any medium for 300ms"
    );
}

/// directord as node "dirtest" with a Linux-HA heartbeat 3 node "hbreal".
fn with_hbreal() -> (Machine, Instant) {
    let mut c = HbConfig::new(
        "dirtest",
        "hbreal",
        vec![Medium::Unicast {
            peer: IpAddr::V4(UCAST[0]),
            interface: "eth1".into(),
        }],
        AuthKeys::single(1, Method::Sha1, "secretkey"),
    );
    c.keepalive = ms(1000);
    c.warntime = ms(2000);
    c.deadtime = ms(4000);
    c.initdead = ms(8000);
    let t0 = Instant::now();
    let mut m = Machine::new(&c, boot(7), t0, SystemTime::now());
    m.handle(t0, Event::SocketUp { medium: 0 });
    (m, t0)
}

#[test]
fn accepts_linux_ha_heartbeat_netstring_messages() {
    let (mut m, t0) = with_hbreal();
    let from = SocketAddr::new(IpAddr::V4(UCAST[0]), 694);
    let a = m.handle(
        t0,
        Event::Datagram {
            medium: 0,
            from,
            bytes: HB_STATUS_SHA1.to_vec(),
        },
    );
    assert!(
        a.contains(&Action::PeerAlive { address: from.ip() }),
        "{a:?}"
    );
    assert!(a.contains(&Action::PeerGeneration {
        generation: 0x6b06_fba9
    }));
    let peer = m.peer().expect("peer");
    assert_eq!(
        (peer.role, peer.status.as_str()),
        (PeerRole::Unknown, "init")
    );
    // "dirtest" < "hbreal", and heartbeat holds nothing it tells us about.
    assert_eq!(m.state(), State::Active);
    assert!(m.counters().invalid.is_empty());
    // Its shutdown notice (a later run, so a newer generation).
    let a = m.handle(
        t0 + ms(10),
        Event::Datagram {
            medium: 0,
            from,
            bytes: HB_SHUTDONE.to_vec(),
        },
    );
    assert!(
        a.iter().any(
            |a| matches!(a, Action::PeerDead { reason } if reason.contains("shutdown notice"))
        )
    );
    assert_eq!(m.counters().priority_zero_received, 1);
}

/// A message from "hbreal" as heartbeat 3 would send it (netstring, signed).
fn from_hbreal(fields: &[(&str, &str)], seq: Option<u64>) -> Vec<u8> {
    let mut m = Message::new(Format::Netstring);
    for (k, v) in fields {
        m.push_str(k, v).expect("field");
    }
    m.push_str("src", "hbreal").expect("src");
    if let Some(seq) = seq {
        m.push_str("seq", &format!("{seq:x}")).expect("seq");
    }
    m.push_str("hg", "10").expect("hg");
    m.push_str("ts", "6b06fba8").expect("ts");
    m.push_str("ttl", "3").expect("ttl");
    m.sign(&AuthKeys::single(1, Method::Sha1, "secretkey"));
    m.to_bytes()
}

#[test]
fn answers_reqnodes_acks_and_resends() {
    let (mut m, t0) = with_hbreal();
    let from = SocketAddr::new(IpAddr::V4(UCAST[0]), 694);
    let dg = |bytes| Event::Datagram {
        medium: 0,
        from,
        bytes,
    };
    // heartbeat asks for our node list; we answer with both nodes.
    let a = m.handle(
        t0,
        dg(from_hbreal(
            &[("t", "reqnodes"), ("dest", "dirtest")],
            Some(1),
        )),
    );
    let replies = sent(&a);
    let rep = replies
        .iter()
        .find(|r| r.get_str("t") == Some("repnodes"))
        .expect("repnodes");
    assert_eq!(rep.get_str("dest"), Some("hbreal"));
    assert_eq!(rep.get_str("nodelist"), Some("dirtest hbreal "));
    assert_eq!(rep.get_str("delnodelist"), Some(" "));
    assert!(rep.get_str("seq").is_some());
    assert_eq!(
        rep.verify(&AuthKeys::single(1, Method::Sha1, "secretkey")),
        Ok(1)
    );
    // A reqnodes for another node is not ours to answer.
    let a = m.handle(
        t0,
        dg(from_hbreal(
            &[("t", "reqnodes"), ("dest", "other")],
            Some(2),
        )),
    );
    assert!(sent(&a).is_empty());
    // Acks: one sequence number in ten (ours: generation 7 % 10).
    let mut acks = Vec::new();
    for seq in 3..=30 {
        let a = m.handle(
            t0,
            dg(from_hbreal(&[("t", "status"), ("st", "active")], Some(seq))),
        );
        for s in sent(&a) {
            if s.get_str("t") == Some("NS_ackmsg") {
                assert_eq!(s.get_str("dest"), Some("hbreal"));
                assert!(s.get_str("seq").is_none(), "acks carry no seq");
                acks.push(s.get_hex("ackseq").expect("hex").expect("ackseq"));
            }
        }
    }
    assert_eq!(acks, [7, 17, 27]);
    // Resend on request: what we sent with seq 1..=2 (startup status, repnodes).
    let a = m.handle(
        t0,
        dg(from_hbreal(
            &[
                ("t", "NS_rexmit"),
                ("dest", "dirtest"),
                ("firstseq", "1"),
                ("lastseq", "2"),
            ],
            None,
        )),
    );
    let resent: Vec<_> = sent(&a)
        .iter()
        .map(|s| s.get_hex("seq").expect("hex"))
        .collect();
    assert_eq!(resent, [Some(1), Some(2)]);
    assert!(m.counters().invalid.is_empty(), "{:?}", m.counters());
}
