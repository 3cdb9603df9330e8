//! Two directord VRRP instances in two network namespaces joined by a veth pair.
//! Needs root; prints why it skipped otherwise.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{ADDR4, Lab, drain, shutdown, skip_reason, wait_role, wait_status};
use heartbeat::role::{Command, Override, Role};
use heartbeat::vrrp::{Family, Version, spawn};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// Election (the higher priority wins, the other sees it as master), then a clean
/// stop of the master: the backup takes over after its skew time (priority-0
/// advert), well before the master-down interval.
#[tokio::test]
async fn v3_ipv4_multicast_election_and_priority_zero_failover() {
    if let Some(why) = skip_reason() {
        println!("{why}");
        return;
    }
    let lab = Lab::new();
    let mut a = spawn(lab.config(0, Version::V3, Family::V4, 150)).expect("spawn a");
    let mut b = spawn(lab.config(1, Version::V3, Family::V4, 100)).expect("spawn b");

    let sa = wait_role(&a, Role::Active, Duration::from_secs(10)).await;
    assert_eq!(sa.state, "master");
    let sb = wait_status(&b, "b hears a", Duration::from_secs(5), |s| {
        s.peer.as_ref().is_some_and(|p| p.priority == 150)
    })
    .await;
    assert_eq!(sb.role, Role::Standby);
    let peer = sb.peer.expect("peer");
    assert_eq!(peer.address, ip(ADDR4[0]));
    assert_eq!(peer.advert_interval, Duration::from_secs(1));
    // Stable: still exactly one master a few adverts later.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(a.status.borrow().role, Role::Active);
    assert_eq!(b.status.borrow().role, Role::Standby);
    assert!(b.status.borrow().counters.adverts_received >= 2);
    assert!(
        b.status.borrow().counters.invalid.is_empty(),
        "{:?}",
        b.status.borrow().counters
    );

    // Clean stop of the master.
    let stopped = Instant::now();
    shutdown(&mut a);
    let sb = wait_role(&b, Role::Active, Duration::from_secs(5)).await;
    let took = stopped.elapsed();
    // Skew of priority 100 at 1 s is 609 ms; the master-down interval is 3.6 s.
    assert!(took < Duration::from_millis(2000), "failover took {took:?}");
    assert!(took >= Duration::from_millis(550), "failover took {took:?}");
    assert_eq!(sb.counters.priority_zero_received, 1);
    assert!(
        sb.last_transition
            .expect("transition")
            .reason
            .contains("master-down")
    );

    let ta: Vec<_> = drain(&mut a).await.into_iter().map(|t| t.state).collect();
    assert_eq!(ta, ["backup", "master", "initialize"]);
    let tb: Vec<_> = drain(&mut b).await.into_iter().map(|t| t.state).collect();
    assert_eq!(tb, ["backup", "master"]);
    shutdown(&mut b);
    let last = drain(&mut b).await.pop().expect("final transition");
    assert_eq!(
        (last.role, last.state.as_str(), last.reason.as_str()),
        (Role::Standby, "initialize", "shutdown")
    );
}

/// VRRPv2 with unicast peers.
#[tokio::test]
async fn v2_ipv4_unicast() {
    if let Some(why) = skip_reason() {
        println!("{why}");
        return;
    }
    let lab = Lab::new();
    let mut ca = lab.config(0, Version::V2, Family::V4, 100);
    ca.unicast_peers = vec![ip(ADDR4[1])];
    let mut cb = lab.config(1, Version::V2, Family::V4, 200);
    cb.unicast_peers = vec![ip(ADDR4[0])];
    let mut a = spawn(ca).expect("spawn a");
    let mut b = spawn(cb).expect("spawn b");

    wait_role(&b, Role::Active, Duration::from_secs(10)).await;
    wait_status(&a, "a hears b", Duration::from_secs(5), |s| {
        s.peer
            .as_ref()
            .is_some_and(|p| p.address == ip(ADDR4[1]) && p.priority == 200)
    })
    .await;
    assert_eq!(a.status.borrow().role, Role::Standby);

    let stopped = Instant::now();
    shutdown(&mut b);
    wait_role(&a, Role::Active, Duration::from_secs(5)).await;
    let took = stopped.elapsed();
    // v2 skew of priority 100: 609 ms; master-down 3.6 s.
    assert!(took < Duration::from_millis(2000), "failover took {took:?}");
    assert_eq!(a.status.borrow().counters.priority_zero_received, 1);
    assert!(a.status.borrow().counters.invalid.is_empty());
    shutdown(&mut a);
}

/// IPv6 with 100 ms adverts, preemption, and the operator moves.
#[tokio::test]
async fn v3_ipv6_multicast_100ms_takeover_standby() {
    if let Some(why) = skip_reason() {
        println!("{why}");
        return;
    }
    let lab = Lab::new();
    let mut ca = lab.config(0, Version::V3, Family::V6, 100);
    ca.advert_interval = Duration::from_millis(100);
    let mut cb = lab.config(1, Version::V3, Family::V6, 200);
    cb.advert_interval = Duration::from_millis(100);
    let mut a = spawn(ca).expect("spawn a");
    // b starts later and preempts a.
    wait_role(&a, Role::Active, Duration::from_secs(5)).await;
    let mut b = spawn(cb).expect("spawn b");
    wait_role(&b, Role::Active, Duration::from_secs(5)).await;
    let sa = wait_role(&a, Role::Standby, Duration::from_secs(5)).await;
    let peer = sa.peer.expect("peer");
    assert_eq!(peer.priority, 200);
    assert!(
        matches!(peer.address, IpAddr::V6(v6) if v6.segments()[0] == 0xfe80),
        "{peer:?}"
    );
    assert_eq!(peer.advert_interval, Duration::from_millis(100));

    // Standby on b: a takes over at once (b's priority-0 advert), b stays backup.
    let t = Instant::now();
    b.commands.send(Command::Standby).expect("standby");
    let sa = wait_role(&a, Role::Active, Duration::from_secs(2)).await;
    let took = t.elapsed();
    // a's skew is 61 ms, its master-down interval 361 ms: the priority-0 advert
    // did it (the counter says so even on a slow machine).
    assert_eq!(sa.counters.priority_zero_received, 1);
    assert!(took < Duration::from_millis(1000), "handover took {took:?}");
    let sb = wait_role(&b, Role::Standby, Duration::from_secs(1)).await;
    assert_eq!(
        (sb.effective_priority, sb.r#override),
        (1, Override::Standby)
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        b.status.borrow().role,
        Role::Standby,
        "standby must not preempt"
    );
    assert_eq!(a.status.borrow().role, Role::Active);

    // Takeover on b: b master at once, a yields.
    b.commands.send(Command::Takeover).expect("takeover");
    wait_role(&b, Role::Active, Duration::from_secs(1)).await;
    wait_role(&a, Role::Standby, Duration::from_secs(1)).await;
    wait_status(&b, "takeover settles at 254", Duration::from_secs(2), |s| {
        s.effective_priority == 254
    })
    .await;

    // Takeover on a too: the latest takeover wins, and b drops its override.
    a.commands.send(Command::Takeover).expect("takeover");
    wait_role(&a, Role::Active, Duration::from_secs(1)).await;
    wait_role(&b, Role::Standby, Duration::from_secs(1)).await;
    assert_eq!(b.status.borrow().r#override, Override::None);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (ra, rb) = (a.status.borrow().role, b.status.borrow().role);
    assert_eq!((ra, rb), (Role::Active, Role::Standby));

    shutdown(&mut a);
    shutdown(&mut b);
}

/// A link going away puts the node in Fault; it comes back by itself.
#[tokio::test]
async fn link_down_is_fault_and_recovers() {
    if let Some(why) = skip_reason() {
        println!("{why}");
        return;
    }
    let lab = Lab::new();
    let mut a = spawn(lab.config(0, Version::V3, Family::V4, 255)).expect("spawn a");
    wait_role(&a, Role::Active, Duration::from_secs(2)).await;
    let status = std::process::Command::new("ip")
        .args(["-n", &lab.ns[0], "link", "set", &lab.ifname[0], "down"])
        .status()
        .expect("ip");
    assert!(status.success());
    let s = wait_role(&a, Role::Fault, Duration::from_secs(3)).await;
    assert!(
        s.last_transition
            .expect("transition")
            .reason
            .contains("is down"),
        "reason names the problem"
    );
    let status = std::process::Command::new("ip")
        .args(["-n", &lab.ns[0], "link", "set", &lab.ifname[0], "up"])
        .status()
        .expect("ip");
    assert!(status.success());
    wait_role(&a, Role::Active, Duration::from_secs(5)).await;
    shutdown(&mut a);
}

/// A higher-priority node whose health checks are not settled does not preempt the
/// running master; once ready, it does.
#[tokio::test]
async fn not_ready_holds_back_preemption_until_ready() {
    if let Some(why) = skip_reason() {
        println!("{why}");
        return;
    }
    let lab = Lab::new();
    let mut ca = lab.config(0, Version::V3, Family::V4, 100);
    ca.advert_interval = Duration::from_millis(100);
    let mut cb = lab.config(1, Version::V3, Family::V4, 200);
    cb.advert_interval = Duration::from_millis(100);
    cb.ready = false;
    let mut a = spawn(ca).expect("spawn a");
    wait_role(&a, Role::Active, Duration::from_secs(5)).await;
    let mut b = spawn(cb).expect("spawn b");
    let sb = wait_status(&b, "b hears a", Duration::from_secs(2), |s| {
        s.peer.as_ref().is_some_and(|p| p.priority == 100)
    })
    .await;
    assert!(!sb.ready);
    // Many master-down intervals (341 ms for b): a stays master.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(a.status.borrow().role, Role::Active);
    assert_eq!(b.status.borrow().role, Role::Standby);
    assert_eq!(b.status.borrow().state, "backup");

    let t = Instant::now();
    b.commands.send(Command::Ready(true)).expect("ready");
    let sb = wait_role(&b, Role::Active, Duration::from_secs(2)).await;
    assert!(sb.ready);
    wait_role(&a, Role::Standby, Duration::from_secs(1)).await;
    // Preempted the usual way: within a master-down interval of b.
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "took {:?}",
        t.elapsed()
    );
    let json = serde_json::to_value(&sb).expect("json");
    assert_eq!(json["ready"], true);
    shutdown(&mut a);
    shutdown(&mut b);
}
