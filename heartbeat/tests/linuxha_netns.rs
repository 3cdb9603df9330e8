//! Two directord heartbeat nodes in two network namespaces joined by two links:
//! unicast on one, multicast (or broadcast) on the other. Needs root; prints why it
//! skipped otherwise.
//!
//! Timers: keepalive 200 ms, warntime 400 ms, deadtime 1 s, initdead 3 s. lvs1 (in
//! namespace a) wins elections by its lower name.

mod linuxha_lab;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use heartbeat::linuxha::message::{Format, Message};
use heartbeat::linuxha::{AuthKeys, Method, spawn};
use heartbeat::role::{Command, FailoverHandle, Override, Role};
use linuxha_lab::{
    ADDR, GROUP, Lab, NAMES, PORT, Second, assert_stable, config_from_spec, drain, roles, shutdown,
    skip_reason, wait_role, wait_status,
};

const DEADTIME: Duration = Duration::from_millis(1000);
const KEEPALIVE: Duration = Duration::from_millis(200);

fn skip() -> bool {
    if let Some(why) = skip_reason() {
        println!("{why}");
        return true;
    }
    false
}

/// Starts both nodes and waits until lvs1 is active and lvs2 standby, each hearing
/// the other on both links.
async fn pair(lab: &Lab, second: Second) -> (FailoverHandle, FailoverHandle) {
    let a = spawn(lab.config(0, second)).expect("spawn a");
    let b = spawn(lab.config(1, second)).expect("spawn b");
    wait_role(&a, Role::Active, Duration::from_secs(5)).await;
    wait_role(&b, Role::Standby, Duration::from_secs(5)).await;
    for h in [&a, &b] {
        wait_status(h, "both links up", Duration::from_secs(3), |s| {
            s.links.len() == 2 && s.links.iter().all(|l| l.up)
        })
        .await;
    }
    (a, b)
}

/// Converges to one active node (lvs1, the lower name), both links shown up, peer
/// addresses and keepalive learnt; the standby's clean stop hands nothing over; the
/// active's clean stop ("shutdone") makes the standby active at once, well inside
/// the dead time.
#[tokio::test]
async fn converge_then_clean_stop_hands_over_at_once() {
    if skip() {
        return;
    }
    let lab = Lab::new();
    let (mut a, mut b) = pair(&lab, Second::Multicast).await;
    assert_stable(
        &a,
        &b,
        (Role::Active, Role::Standby),
        Duration::from_millis(1500),
    )
    .await;

    let sb = b.status.borrow().clone();
    assert_eq!(sb.protocol, "heartbeat");
    assert_eq!(sb.state, "standby");
    let peer = sb.peer.clone().expect("peer");
    assert!(
        [IpAddr::V4(ADDR[0][0]), IpAddr::V4(ADDR[1][0])].contains(&peer.address),
        "{peer:?}"
    );
    assert_eq!(peer.advert_interval, KEEPALIVE);
    assert_eq!(
        sb.links[0].medium,
        format!("ucast {} {}", lab.ifname[0][1], ADDR[0][0])
    );
    assert_eq!(
        sb.links[1].medium,
        format!("mcast {} {GROUP}", lab.ifname[1][1])
    );
    assert!(sb.counters.adverts_received >= 10, "{:?}", sb.counters);
    assert!(sb.counters.invalid.is_empty(), "{:?}", sb.counters);
    let json = serde_json::to_value(&sb).expect("json");
    assert_eq!(json["protocol"], "heartbeat");
    assert_eq!(json["links"][1]["up"], true);
    assert!(json["links"][1]["last_seen"].as_u64().is_some(), "{json}");

    let stopped = Instant::now();
    shutdown(&mut a);
    let sb = wait_role(&b, Role::Active, DEADTIME).await;
    let took = stopped.elapsed();
    assert!(took < Duration::from_millis(500), "hand-over took {took:?}");
    assert_eq!(sb.counters.priority_zero_received, 1);
    assert_eq!(
        sb.last_transition.expect("transition").reason,
        "peer lvs1 left (shutdown notice)"
    );
    let ta: Vec<_> = drain(&mut a).await.into_iter().map(|t| t.state).collect();
    assert_eq!(ta, ["init", "active", "stopped"]);
    let tb: Vec<_> = drain(&mut b).await.into_iter().map(|t| t.state).collect();
    assert_eq!(tb, ["init", "standby", "active"]);
    shutdown(&mut b);
    let last = drain(&mut b).await.pop().expect("final transition");
    assert_eq!(
        (last.role, last.state.as_str(), last.reason.as_str()),
        (Role::Standby, "stopped", "shutdown")
    );
}

/// One link cut: that medium goes down on both nodes, no failover. Both cut: the
/// standby takes over within the dead time. Healed: exactly one active again within
/// about one keepalive (lvs1 stays, lvs2 yields and lvs1 announces again).
#[tokio::test]
async fn link_cuts_failover_and_heal() {
    if skip() {
        return;
    }
    let lab = Lab::new();
    let (mut a, mut b) = pair(&lab, Second::Multicast).await;
    drain(&mut a).await;
    drain(&mut b).await;

    lab.cut(0);
    for h in [&a, &b] {
        let s = wait_status(h, "link 0 down", DEADTIME * 2, |s| !s.links[0].up).await;
        assert!(s.links[1].up, "{s:?}");
    }
    assert_stable(
        &a,
        &b,
        (Role::Active, Role::Standby),
        Duration::from_millis(1500),
    )
    .await;
    assert!(
        drain(&mut b).await.is_empty(),
        "no transition on one cut link"
    );

    let cut = Instant::now();
    lab.cut(1);
    let sb = wait_role(&b, Role::Active, DEADTIME + Duration::from_millis(500)).await;
    let took = cut.elapsed();
    assert!(
        took <= DEADTIME + Duration::from_millis(300),
        "failover took {took:?}"
    );
    assert!(
        took >= DEADTIME - KEEPALIVE - Duration::from_millis(50),
        "failover took {took:?}"
    );
    assert!(
        sb.last_transition
            .expect("transition")
            .reason
            .starts_with("peer lvs1 dead: nothing on any medium for"),
    );
    assert!(sb.links.iter().all(|l| !l.up));
    assert_eq!(roles(&a, &b), (Role::Active, Role::Active), "partitioned");
    drain(&mut a).await;
    drain(&mut b).await;

    lab.heal(0);
    lab.heal(1);
    let healed = Instant::now();
    wait_role(&b, Role::Standby, Duration::from_secs(2)).await;
    let took = healed.elapsed();
    assert!(
        took <= KEEPALIVE + Duration::from_millis(300),
        "settling took {took:?}"
    );
    assert_stable(
        &a,
        &b,
        (Role::Active, Role::Standby),
        Duration::from_millis(1000),
    )
    .await;
    let tb = drain(&mut b).await;
    assert_eq!(tb.len(), 1, "{tb:?}");
    assert_eq!(
        tb[0].reason,
        "both active; yielding: lvs1 has the lexically lower name"
    );
    let ta = drain(&mut a).await;
    assert_eq!(ta.len(), 1, "{ta:?}");
    assert_eq!(
        (ta[0].role, ta[0].reason.as_str()),
        (
            Role::Active,
            "lvs2 released the VIPs: announcing them again"
        )
    );
    shutdown(&mut a);
    shutdown(&mut b);
}

/// Takeover and standby move the role at once, far inside the dead time.
#[tokio::test]
async fn takeover_and_standby_hand_offs_are_immediate() {
    if skip() {
        return;
    }
    let lab = Lab::new();
    let (mut a, mut b) = pair(&lab, Second::Multicast).await;

    let t = Instant::now();
    b.commands.send(Command::Takeover).expect("takeover");
    wait_role(&b, Role::Active, Duration::from_millis(300)).await;
    wait_role(&a, Role::Standby, Duration::from_millis(300)).await;
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(b.status.borrow().r#override, Override::Takeover);
    assert_stable(
        &a,
        &b,
        (Role::Standby, Role::Active),
        Duration::from_millis(1500),
    )
    .await;

    let t = Instant::now();
    b.commands.send(Command::Standby).expect("standby");
    wait_role(&a, Role::Active, Duration::from_millis(300)).await;
    wait_role(&b, Role::Standby, Duration::from_millis(300)).await;
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(b.status.borrow().r#override, Override::Standby);
    assert_stable(
        &a,
        &b,
        (Role::Active, Role::Standby),
        Duration::from_millis(1500),
    )
    .await;

    // Standby holds lvs2 back, but not when lvs1 dies.
    shutdown(&mut a);
    wait_role(&b, Role::Active, Duration::from_millis(500)).await;
    shutdown(&mut b);
}

/// lvs2, the preferred node with auto-failback, started with its health checks not
/// settled, does not take the VIPs back from the running lvs1; once ready, it
/// does at once.
#[tokio::test]
async fn not_ready_preferred_node_fails_back_only_when_ready() {
    if skip() {
        return;
    }
    let lab = Lab::new();
    let mut ca = lab.config(0, Second::Multicast);
    let mut cb = lab.config(1, Second::Multicast);
    for c in [&mut ca, &mut cb] {
        c.preferred = Some(NAMES[1].into());
        c.auto_failback = true;
    }
    cb.ready = false;
    // lvs1 alone: active after initdead.
    let mut a = spawn(ca).expect("spawn a");
    wait_role(&a, Role::Active, Duration::from_secs(5)).await;
    let mut b = spawn(cb).expect("spawn b");
    let sb = wait_status(&b, "lvs2 hears lvs1", Duration::from_secs(3), |s| {
        s.role == Role::Standby && s.links.iter().all(|l| l.up)
    })
    .await;
    assert!(!sb.ready);
    assert_stable(
        &a,
        &b,
        (Role::Active, Role::Standby),
        Duration::from_millis(1500),
    )
    .await;
    drain(&mut a).await;
    drain(&mut b).await;

    let t = Instant::now();
    b.commands.send(Command::Ready(true)).expect("ready");
    let sb = wait_role(&b, Role::Active, Duration::from_millis(300)).await;
    wait_role(&a, Role::Standby, Duration::from_millis(300)).await;
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "took {:?}",
        t.elapsed()
    );
    assert!(sb.ready);
    assert_eq!(
        sb.last_transition.expect("transition").reason,
        "peer lvs1 is alive; lvs2 is the preferred node (auto_failback)"
    );
    assert_stable(
        &a,
        &b,
        (Role::Standby, Role::Active),
        Duration::from_millis(1000),
    )
    .await;
    shutdown(&mut a);
    shutdown(&mut b);
}

/// Wrong-key, replayed, old-generation and garbage datagrams, on both links, are
/// dropped and counted by reason while the pair stays as it is.
#[tokio::test]
async fn forged_and_replayed_packets_are_rejected_and_counted() {
    if skip() {
        return;
    }
    let lab = Lab::new();
    let (mut a, mut b) = pair(&lab, Second::Multicast).await;

    // Record a real keepalive of lvs1 from inside namespace b (joined to the group
    // next to lvs2's own socket).
    let if_b1 = lab.ifname[1][1].clone();
    let captured: Vec<u8> = lab.in_netns(1, move || {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
            .expect("socket");
        socket.set_reuse_address(true).expect("reuse");
        socket
            .bind_device(Some(if_b1.as_bytes()))
            .expect("bind device");
        socket
            .bind(&SocketAddr::new(IpAddr::V4(GROUP), PORT).into())
            .expect("bind");
        let index = nix::net::if_::if_nametoindex(if_b1.as_str()).expect("ifindex");
        socket
            .join_multicast_v4_n(&GROUP, &socket2::InterfaceIndexOrAddress::Index(index))
            .expect("join");
        let socket: UdpSocket = socket.into();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut buf = [0u8; 4096];
        loop {
            let (n, _) = socket.recv_from(&mut buf).expect("a keepalive of lvs1");
            let m = Message::parse(&buf[..n]).expect("parse");
            if m.get_str("src") == Some("lvs1") && m.get_str("t") == Some("status") {
                return buf[..n].to_vec();
            }
        }
    });
    let original = Message::parse(&captured).expect("parse");
    let keys = AuthKeys::single(1, Method::Sha256, linuxha_lab::SECRET);
    assert_eq!(original.verify(&keys), Ok(1));

    // A forged one: same fields, another key.
    let mut forged = original.clone();
    forged.sign(&AuthKeys::single(1, Method::Sha256, "guessed"));
    // An old generation, with the right key.
    let mut old = Message::new(Format::Classic);
    for field in original.fields().iter().filter(|f| f.name() != "auth") {
        let value = if field.name() == "hg" {
            b"1".as_slice()
        } else {
            field.value()
        };
        old.push(field.name(), field.kind(), value).expect("field");
    }
    old.sign(&keys);
    let before = b.status.borrow().counters.clone();

    // Send them to lvs2 from lvs1's addresses in namespace a: on link 0 by
    // unicast, on link 1 to the group.
    let datagrams = vec![
        captured.clone(),
        forged.to_bytes(),
        old.to_bytes(),
        b"GET / HTTP/1.0\r\n\r\n".to_vec(),
    ];
    lab.in_netns(0, move || {
        let unicast = UdpSocket::bind(SocketAddr::new(IpAddr::V4(ADDR[0][0]), 0)).expect("bind");
        let multicast = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
            .expect("socket");
        multicast
            .bind(&SocketAddr::new(IpAddr::V4(ADDR[1][0]), 0).into())
            .expect("bind");
        multicast
            .set_multicast_if_v4(&ADDR[1][0])
            .expect("multicast if");
        // Not back to lvs1's own socket in this namespace.
        multicast.set_multicast_loop_v4(false).expect("loop");
        let multicast: UdpSocket = multicast.into();
        for bytes in &datagrams {
            unicast
                .send_to(bytes, SocketAddr::new(IpAddr::V4(ADDR[0][1]), PORT))
                .expect("send unicast");
            multicast
                .send_to(bytes, SocketAddr::new(IpAddr::V4(GROUP), PORT))
                .expect("send multicast");
        }
    });
    let s = wait_status(
        &b,
        "every injected datagram counted",
        Duration::from_secs(2),
        |s| s.counters.invalid.values().sum::<u64>() >= 8,
    )
    .await;
    let invalid: Vec<_> = s
        .counters
        .invalid
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        invalid,
        [
            ("auth", 2),
            ("generation", 2),
            ("malformed", 2),
            ("replay", 2)
        ],
        "before: {before:?}"
    );
    assert_stable(
        &a,
        &b,
        (Role::Active, Role::Standby),
        Duration::from_millis(1500),
    )
    .await;
    assert!(drain(&mut b).await.iter().all(|t| t.state != "active"));
    assert!(a.status.borrow().counters.invalid.is_empty());
    shutdown(&mut a);
    shutdown(&mut b);
}

/// Broadcast on the second link carries the keepalives alone when the unicast link
/// is cut.
#[tokio::test]
async fn broadcast_medium_carries_keepalives() {
    if skip() {
        return;
    }
    let lab = Lab::new();
    let (mut a, mut b) = pair(&lab, Second::Broadcast).await;
    assert_eq!(
        b.status.borrow().links[1].medium,
        format!("bcast {}", lab.ifname[1][1])
    );
    lab.cut(0);
    wait_status(&b, "link 0 down", DEADTIME * 2, |s| {
        !s.links[0].up && s.links[1].up
    })
    .await;
    assert_stable(
        &a,
        &b,
        (Role::Active, Role::Standby),
        Duration::from_millis(1500),
    )
    .await;
    // Our own broadcasts come back to us; they are not counted as invalid.
    assert!(a.status.borrow().counters.invalid.is_empty());
    shutdown(&mut a);
    wait_role(&b, Role::Active, Duration::from_millis(500)).await;
    shutdown(&mut b);
}

/// IPv6 multicast (a link-local group, from link-local addresses) on the second
/// link carries the keepalives alone when the unicast link is cut.
#[tokio::test]
async fn ipv6_multicast_medium_carries_keepalives() {
    if skip() {
        return;
    }
    let lab = Lab::new();
    let (mut a, mut b) = pair(&lab, Second::Multicast6).await;
    let peer_on_link1 = |s: &heartbeat::role::Status| {
        s.peer
            .as_ref()
            .is_some_and(|p| matches!(p.address, IpAddr::V6(v6) if v6.segments()[0] == 0xfe80))
    };
    lab.cut(0);
    let s = wait_status(&b, "link 0 down", DEADTIME * 2, |s| {
        !s.links[0].up && s.links[1].up && peer_on_link1(s)
    })
    .await;
    assert_eq!(
        s.links[1].medium,
        format!("mcast {} ff02::6:94", lab.ifname[1][1])
    );
    assert_stable(
        &a,
        &b,
        (Role::Active, Role::Standby),
        Duration::from_millis(1500),
    )
    .await;
    assert!(b.status.borrow().counters.invalid.is_empty());
    shutdown(&mut a);
    wait_role(&b, Role::Active, Duration::from_millis(500)).await;
    shutdown(&mut b);
}

/// kill -9 of the active node (a process of its own): the standby takes over
/// within the dead time, and the restarted node (a new generation) rejoins as
/// standby (lvs2 holds the VIPs and there is no preferred node).
#[tokio::test]
async fn kill_9_of_the_active_takes_over_within_deadtime() {
    if skip() {
        return;
    }
    let lab = Lab::new();
    let mut helper = start_helper(&lab, 0);
    let mut b = spawn(lab.config(1, Second::Multicast)).expect("spawn b");
    wait_status(
        &b,
        "lvs1 active, lvs2 standby",
        Duration::from_secs(5),
        |s| s.role == Role::Standby && s.links.iter().all(|l| l.up),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let killed = Instant::now();
    helper.kill();
    let sb = wait_role(&b, Role::Active, DEADTIME + Duration::from_millis(500)).await;
    let took = killed.elapsed();
    assert!(
        took <= DEADTIME + Duration::from_millis(300),
        "failover took {took:?}"
    );
    assert!(
        sb.counters.priority_zero_received == 0,
        "no goodbye from a kill -9"
    );

    // Restarted: a higher generation, accepted; lvs2 keeps the VIPs.
    let generation_file = lab.state_dir(0).join("heartbeat/generation-lvs1");
    let first: u64 = std::fs::read_to_string(&generation_file)
        .expect("generation")
        .trim()
        .parse()
        .expect("number");
    let mut a = spawn(lab.config(0, Second::Multicast)).expect("respawn a");
    wait_role(&a, Role::Standby, Duration::from_secs(3)).await;
    let second: u64 = std::fs::read_to_string(&generation_file)
        .expect("generation")
        .trim()
        .parse()
        .expect("number");
    assert!(second > first);
    assert_stable(
        &a,
        &b,
        (Role::Standby, Role::Active),
        Duration::from_millis(1000),
    )
    .await;
    assert!(
        b.status.borrow().counters.invalid.is_empty(),
        "{:?}",
        b.status.borrow().counters
    );
    shutdown(&mut a);
    shutdown(&mut b);
}

/// A node in a process of its own, killed (-9) on drop.
struct Helper(std::process::Child);

impl Helper {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.kill();
    }
}

fn start_helper(lab: &Lab, node: usize) -> Helper {
    let child = Process::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "helper_node_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, lab.spec(node, Second::Multicast))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start helper");
    Helper(child)
}

const HELPER_ENV: &str = "LINUXHA_HELPER_NODE";

/// Not a test of its own: the node that `kill_9_of_the_active_takes_over_within_deadtime`
/// runs in a process of its own (this test binary, started again with the node in
/// the environment). Without it, it returns at once.
#[test]
fn helper_node_process() {
    let Ok(spec) = std::env::var(HELPER_ENV) else {
        return;
    };
    let config = config_from_spec(&spec);
    println!("helper: {} in {:?}", config.node, config.netns);
    let _handle = spawn(config).expect("spawn helper node");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn names_are_ordered_for_the_elections() {
    assert!(NAMES[0] < NAMES[1]);
}
