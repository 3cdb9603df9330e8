//! A directord VRRP node and a keepalived node form one pair, in two network
//! namespaces joined by a veth pair. Needs root and keepalived (Debian:
//! `apt-get install keepalived`); prints why it skipped otherwise.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{
    ADDR4, ADDR6, Lab, assert_keepalived_accepted_all, drain, have_keepalived, keepalived_state,
    shutdown, skip_reason, wait_keepalived, wait_role, wait_status,
};
use heartbeat::role::{Command, Role};
use heartbeat::vrrp::{Family, Version, spawn};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn skip() -> bool {
    if let Some(why) = skip_reason() {
        println!("{why}");
        return true;
    }
    if !have_keepalived() {
        println!("skipped: needs keepalived (apt-get install keepalived)");
        return true;
    }
    false
}

/// keepalived (priority 200, preempt) against directord (100), VRRPv3 multicast:
/// keepalived is master; `takeover` makes directord master and keepalived stays
/// backup although it has the higher priority and preempts; `standby` hands back;
/// keepalived's clean stop (priority 0) makes directord master within its skew
/// time, even under Standby.
#[tokio::test]
async fn keepalived_v3_ipv4_multicast_takeover_standby() {
    if skip() {
        return;
    }
    let mut lab = Lab::new();
    let log = lab.keepalived(
        0,
        Version::V3,
        "  priority 200\n  advert_int 1\n  virtual_ipaddress {\n    192.0.2.100\n    192.0.2.101\n  }",
    );
    wait_keepalived(&log, "BACKUP", Duration::from_secs(5)).await;
    let mut d = spawn(lab.config(1, Version::V3, Family::V4, 100)).expect("spawn");
    wait_keepalived(&log, "MASTER", Duration::from_secs(10)).await;
    let s = wait_status(
        &d,
        "directord hears keepalived",
        Duration::from_secs(5),
        |s| s.peer.as_ref().is_some_and(|p| p.priority == 200),
    )
    .await;
    assert_eq!(s.role, Role::Standby);
    assert_eq!(s.peer.expect("peer").address, ip(ADDR4[0]));
    assert!(s.counters.invalid.is_empty(), "{:?}", s.counters);

    // Takeover: directord claims at 255, then settles at 254; keepalived (200) yields.
    d.commands.send(Command::Takeover).expect("takeover");
    wait_role(&d, Role::Active, Duration::from_secs(1)).await;
    wait_keepalived(&log, "BACKUP", Duration::from_secs(3)).await;
    // keepalived preempts lower priorities, but 254 is not lower: it stays backup
    // well past its master-down interval (3.2 s).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(keepalived_state(&log).as_deref(), Some("BACKUP"));
    assert_eq!(d.status.borrow().role, Role::Active);
    assert_eq!(d.status.borrow().effective_priority, 254);

    // Standby: directord sends priority 0; keepalived takes over after its skew.
    let t = Instant::now();
    d.commands.send(Command::Standby).expect("standby");
    wait_keepalived(&log, "MASTER", Duration::from_secs(3)).await;
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "handover took {:?}",
        t.elapsed()
    );
    wait_role(&d, Role::Standby, Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(d.status.borrow().role, Role::Standby);

    // keepalived stops cleanly: directord takes over after its skew (priority 1:
    // 255/256 s), not after the master-down interval.
    let t = Instant::now();
    lab.stop_keepalived();
    let s = wait_role(&d, Role::Active, Duration::from_secs(5)).await;
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "failover took {:?}",
        t.elapsed()
    );
    assert!(s.counters.priority_zero_received >= 1);
    assert!(s.counters.invalid.is_empty(), "{:?}", s.counters);
    let states: Vec<_> = drain(&mut d).await.into_iter().map(|t| t.state).collect();
    assert_eq!(states, ["backup", "master", "backup", "master"]);
    assert_keepalived_accepted_all(&log);
    shutdown(&mut d);
}

/// The hardest case for `takeover`: keepalived at 254 (the takeover priority) with
/// a higher address, and `nopreempt`. directord's takeover claim at 255 makes it
/// yield; once settled at 254, keepalived (254, nopreempt) stays backup.
#[tokio::test]
async fn keepalived_254_higher_address_nopreempt_yields_to_takeover() {
    if skip() {
        return;
    }
    let mut lab = Lab::new();
    // keepalived on the second namespace: 192.0.2.2 > directord's 192.0.2.1.
    let log = lab.keepalived(
        1,
        Version::V3,
        "  priority 254\n  nopreempt\n  advert_int 1\n  virtual_ipaddress {\n    192.0.2.100\n    192.0.2.101\n  }",
    );
    let mut d = spawn(lab.config(0, Version::V3, Family::V4, 100)).expect("spawn");
    wait_keepalived(&log, "MASTER", Duration::from_secs(10)).await;
    wait_status(
        &d,
        "directord hears keepalived",
        Duration::from_secs(5),
        |s| s.role == Role::Standby && s.peer.as_ref().is_some_and(|p| p.priority == 254),
    )
    .await;

    d.commands.send(Command::Takeover).expect("takeover");
    wait_keepalived(&log, "BACKUP", Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(keepalived_state(&log).as_deref(), Some("BACKUP"));
    let s = d.status.borrow().clone();
    assert_eq!(s.role, Role::Active);
    assert_eq!(s.effective_priority, 254, "claim settled at 254");
    assert!(s.counters.invalid.is_empty(), "{:?}", s.counters);
    assert_keepalived_accepted_all(&log);
    let states: Vec<_> = drain(&mut d).await.into_iter().map(|t| t.state).collect();
    assert_eq!(states, ["backup", "master"]);
    shutdown(&mut d);
}

/// directord (150) against keepalived (100), VRRPv2 unicast: directord is master,
/// keepalived backup; directord's clean stop makes keepalived master at once.
#[tokio::test]
async fn keepalived_v2_ipv4_unicast() {
    if skip() {
        return;
    }
    let mut lab = Lab::new();
    let log = lab.keepalived(
        0,
        Version::V2,
        &format!(
            "  priority 100\n  advert_int 1\n  unicast_src_ip {}\n  unicast_peer {{\n    {}\n  }}\n  \
             virtual_ipaddress {{\n    192.0.2.100\n    192.0.2.101\n  }}",
            ADDR4[0], ADDR4[1]
        ),
    );
    let mut config = lab.config(1, Version::V2, Family::V4, 150);
    config.unicast_peers = vec![ip(ADDR4[0])];
    let mut d = spawn(config).expect("spawn");
    wait_role(&d, Role::Active, Duration::from_secs(10)).await;
    wait_keepalived(&log, "BACKUP", Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        keepalived_state(&log).as_deref(),
        Some("BACKUP"),
        "keepalived hears us"
    );
    assert_eq!(d.status.borrow().role, Role::Active);

    let t = Instant::now();
    shutdown(&mut d);
    wait_keepalived(&log, "MASTER", Duration::from_secs(3)).await;
    // keepalived's skew at priority 100: 609 ms; master-down 3.6 s.
    assert!(
        t.elapsed() < Duration::from_millis(2000),
        "failover took {:?}",
        t.elapsed()
    );
    assert_keepalived_accepted_all(&log);
}

/// keepalived (200) against directord (100) over IPv6 unicast at 100 ms:
/// keepalived sends unicast IPv6 with hop limit 64, which directord must accept;
/// keepalived lets the kernel check our checksum, so it only yields to
/// `takeover` if our IPv6 pseudo-header checksum is right.
#[tokio::test]
async fn keepalived_v3_ipv6_unicast_100ms() {
    if skip() {
        return;
    }
    let mut lab = Lab::new();
    let log = lab.keepalived(
        0,
        Version::V3,
        &format!(
            "  priority 200\n  advert_int 0.1\n  unicast_src_ip {}\n  unicast_peer {{\n    {}\n  }}\n  \
             virtual_ipaddress {{\n    fd00::100\n    fd00::101\n  }}",
            ADDR6[0], ADDR6[1]
        ),
    );
    let mut config = lab.config(1, Version::V3, Family::V6, 100);
    config.advert_interval = Duration::from_millis(100);
    config.unicast_peers = vec![ip(ADDR6[0])];
    config.source_address = Some(ip(ADDR6[1]));
    let mut d = spawn(config).expect("spawn");
    wait_keepalived(&log, "MASTER", Duration::from_secs(10)).await;
    let s = wait_status(
        &d,
        "directord hears keepalived",
        Duration::from_secs(5),
        |s| s.role == Role::Standby && s.peer.as_ref().is_some_and(|p| p.priority == 200),
    )
    .await;
    assert_eq!(
        s.peer.expect("peer").advert_interval,
        Duration::from_millis(100)
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(d.status.borrow().role, Role::Standby);
    assert!(
        d.status.borrow().counters.invalid.is_empty(),
        "{:?}",
        d.status.borrow().counters
    );

    d.commands.send(Command::Takeover).expect("takeover");
    wait_keepalived(&log, "BACKUP", Duration::from_secs(2)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(keepalived_state(&log).as_deref(), Some("BACKUP"));
    assert_eq!(d.status.borrow().role, Role::Active);

    let t = Instant::now();
    shutdown(&mut d);
    wait_keepalived(&log, "MASTER", Duration::from_secs(2)).await;
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "failover took {:?}",
        t.elapsed()
    );
    assert_keepalived_accepted_all(&log);
}

/// directord (150) and keepalived (100) in one more combination: directord wins
/// the election and keepalived stays backup; `standby` hands over to keepalived at
/// once; keepalived's clean stop hands back.
async fn pair(version: Version, family: Family, unicast: bool, interval: Duration) {
    let mut lab = Lab::new();
    let (addrs, vips) = match family {
        Family::V4 => (ADDR4, "192.0.2.100\n    192.0.2.101"),
        Family::V6 => (ADDR6, "fd00::100\n    fd00::101"),
    };
    let unicast_conf = if unicast {
        format!(
            "  unicast_src_ip {}\n  unicast_peer {{\n    {}\n  }}\n",
            addrs[0], addrs[1]
        )
    } else {
        String::new()
    };
    let log = lab.keepalived(
        0,
        version,
        &format!(
            "  priority 100\n  advert_int {}\n{unicast_conf}  virtual_ipaddress {{\n    {vips}\n  }}",
            interval.as_secs_f64()
        ),
    );
    let mut config = lab.config(1, version, family, 150);
    config.advert_interval = interval;
    if unicast {
        config.unicast_peers = vec![ip(addrs[0])];
        config.source_address = Some(ip(addrs[1]));
    }
    let mut d = spawn(config).expect("spawn");
    wait_role(&d, Role::Active, Duration::from_secs(10)).await;
    wait_keepalived(&log, "BACKUP", Duration::from_secs(3)).await;
    tokio::time::sleep(interval * 5).await;
    assert_eq!(
        keepalived_state(&log).as_deref(),
        Some("BACKUP"),
        "keepalived hears us"
    );
    assert_eq!(d.status.borrow().role, Role::Active);

    d.commands.send(Command::Standby).expect("standby");
    wait_keepalived(&log, "MASTER", interval * 2 + Duration::from_millis(500)).await;
    let s = wait_status(
        &d,
        "directord hears keepalived",
        interval * 3 + Duration::from_secs(1),
        |s| s.role == Role::Standby && s.peer.as_ref().is_some_and(|p| p.priority == 100),
    )
    .await;
    assert_eq!(
        s.peer.expect("peer").address.is_ipv4(),
        family == Family::V4
    );

    // Under Standby directord's skew is 255/256 of the interval and its master-down
    // interval over 4 intervals; the counter shows keepalived's priority-0 advert
    // arrived.
    lab.stop_keepalived();
    let s = wait_role(&d, Role::Active, interval * 4 + Duration::from_secs(2)).await;
    assert_eq!(s.counters.priority_zero_received, 1);
    assert!(
        s.last_transition
            .as_ref()
            .is_some_and(|t| t.reason.contains("master-down")),
        "{s:?}"
    );
    assert!(s.counters.invalid.is_empty(), "{:?}", s.counters);
    assert_keepalived_accepted_all(&log);
    shutdown(&mut d);
}

#[tokio::test]
async fn keepalived_v2_ipv4_multicast() {
    if skip() {
        return;
    }
    pair(Version::V2, Family::V4, false, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn keepalived_v3_ipv4_unicast_100ms() {
    if skip() {
        return;
    }
    pair(Version::V3, Family::V4, true, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn keepalived_v3_ipv6_multicast() {
    if skip() {
        return;
    }
    pair(Version::V3, Family::V6, false, Duration::from_secs(1)).await;
}
