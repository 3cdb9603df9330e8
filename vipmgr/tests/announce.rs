//! Gratuitous ARP and unsolicited NA, sent on one end of a veth pair and
//! captured on the other.

mod common;

use std::{net::IpAddr, time::Duration};

use common::{Capture, DIRECTOR_IF, DIRECTOR_MAC, PEER_IF, in_netns, ip, sysctl};

use tokio::time::Instant;
use vipmgr::{
    AddressManager, AnnounceConfig, Error, MacAddr, Vip, announce,
    announce::{GratuitousArp, UnsolicitedNa},
    announce_once,
};

/// How long a capture waits for frames that normally arrive within microseconds.
const CAPTURE_DEADLINE: Duration = Duration::from_secs(3);

fn director_mac() -> MacAddr {
    DIRECTOR_MAC.parse().expect("MAC")
}

fn vip(address: &str, prefix_len: u8) -> Vip {
    Vip::new(
        address.parse::<IpAddr>().expect("test address"),
        prefix_len,
        DIRECTOR_IF,
    )
}

#[test]
fn gratuitous_arp_reaches_the_peer() {
    in_netns("gratuitous_arp_reaches_the_peer", || {
        let v = vip("192.0.2.100", 24);
        AddressManager::new()
            .and_then(|mut mgr| mgr.add(&v))
            .expect("add VIP");
        let capture = Capture::start(PEER_IF);
        announce_once(&v).expect("announce");
        let frames = capture.frames(1, CAPTURE_DEADLINE, |f| GratuitousArp::parse(f).ok());
        assert_eq!(
            frames,
            vec![GratuitousArp {
                mac: director_mac(),
                address: "192.0.2.100".parse().expect("addr"),
            }]
        );
    });
}

/// Waits until the peer's neighbour entry for `address` shows `mac`.
fn peer_learns(address: &str, mac: &str) -> String {
    let end = std::time::Instant::now() + CAPTURE_DEADLINE;
    loop {
        let neigh = ip(&["neigh", "show", address, "dev", PEER_IF]);
        if neigh.contains(mac) || std::time::Instant::now() >= end {
            return neigh;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// In the two tests below the VIP is *not* put on `va`: peer and director share
// one namespace here, and the kernel ignores a gratuitous announcement of an
// address that is local to its own namespace. Announcing does not need the
// address to be held.

#[test]
fn gratuitous_arp_moves_the_peers_neighbour_entry() {
    in_netns("gratuitous_arp_moves_the_peers_neighbour_entry", || {
        // The peer has the VIP cached at the old director's MAC, as after a failover.
        ip(&["addr", "add", "192.0.2.2/24", "dev", PEER_IF]);
        ip(&[
            "neigh",
            "replace",
            "192.0.2.100",
            "lladdr",
            "02:00:5e:00:53:99",
            "dev",
            PEER_IF,
            "nud",
            "reachable",
        ]);
        announce_once(&vip("192.0.2.100", 24)).expect("announce");
        let neigh = peer_learns("192.0.2.100", DIRECTOR_MAC);
        assert!(neigh.contains(DIRECTOR_MAC), "peer's entry: {neigh}");
    });
}

#[test]
fn unsolicited_na_moves_the_peers_neighbour_entry() {
    in_netns("unsolicited_na_moves_the_peers_neighbour_entry", || {
        ip(&["addr", "add", "2001:db8::2/64", "dev", PEER_IF, "nodad"]);
        ip(&[
            "neigh",
            "replace",
            "2001:db8::100",
            "lladdr",
            "02:00:5e:00:53:99",
            "dev",
            PEER_IF,
            "nud",
            "reachable",
        ]);
        announce_once(&vip("2001:db8::100", 64)).expect("announce");
        let neigh = peer_learns("2001:db8::100", DIRECTOR_MAC);
        assert!(neigh.contains(DIRECTOR_MAC), "peer's entry: {neigh}");
    });
}

#[test]
fn unsolicited_na_reaches_the_peer_with_router_flag_from_forwarding() {
    in_netns("unsolicited_na_reaches_the_peer", || {
        let v = vip("2001:db8::100", 64);
        AddressManager::new()
            .and_then(|mut mgr| mgr.add(&v))
            .expect("add VIP");
        let address = "2001:db8::100".parse().expect("addr");

        let capture = Capture::start(PEER_IF);
        announce_once(&v).expect("announce");
        let frames = capture.frames(1, CAPTURE_DEADLINE, |f| UnsolicitedNa::parse(f).ok());
        assert_eq!(
            frames,
            vec![UnsolicitedNa {
                mac: director_mac(),
                address,
                router: false,
            }]
        );

        sysctl(&format!("net.ipv6.conf.{DIRECTOR_IF}.forwarding"), "1");
        announce_once(&v).expect("announce as a router");
        let frames = capture.frames(1, CAPTURE_DEADLINE, |f| UnsolicitedNa::parse(f).ok());
        assert_eq!(
            frames,
            vec![UnsolicitedNa {
                mac: director_mac(),
                address,
                router: true,
            }]
        );
    });
}

#[test]
fn announce_sends_count_frames_spacing_apart() {
    in_netns("announce_sends_count_frames_spacing_apart", || {
        let v = vip("192.0.2.100", 24);
        let capture = Capture::start(PEER_IF);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime");
        let cfg = AnnounceConfig {
            count: 3,
            spacing: Duration::from_secs(1),
            refresh: None,
        };
        let (sent, took) = runtime.block_on(async {
            let start = Instant::now();
            let sent = announce(&v, &cfg).await.expect("announce");
            (sent, start.elapsed())
        });
        assert_eq!(sent, 3);
        // First at once, then two spacings: 2 s of (paused, virtual) time.
        assert_eq!(took, Duration::from_secs(2));
        let frames = capture.frames(4, Duration::from_millis(500), |f| {
            GratuitousArp::parse(f).ok()
        });
        assert_eq!(frames.len(), 3, "{frames:?}");

        let none = runtime.block_on(announce(
            &v,
            &AnnounceConfig {
                count: 0,
                ..cfg.clone()
            },
        ));
        assert_eq!(none.expect("count 0"), 0);
    });
}

#[test]
fn announcing_on_a_missing_or_down_interface_names_the_vip() {
    in_netns("announcing_on_a_missing_or_down_interface", || {
        let missing = Vip::new("192.0.2.100".parse().expect("addr"), 24, "nosuch0");
        let err = announce_once(&missing).expect_err("no interface");
        assert_eq!(
            err.to_string(),
            "cannot announce VIP 192.0.2.100/24 dev nosuch0"
        );
        assert!(matches!(err, Error::AnnounceVip { .. }));

        ip(&["link", "set", DIRECTOR_IF, "down"]);
        let err = announce_once(&vip("192.0.2.100", 24)).expect_err("interface down");
        match err {
            Error::AnnounceVip { source, .. } => {
                assert_eq!(source.raw_os_error(), Some(libc::ENETDOWN), "{source}");
            }
            other => panic!("expected AnnounceVip, got {other:?}"),
        }

        let lo = Vip::new("127.0.0.2".parse().expect("addr"), 8, "lo");
        assert!(matches!(announce_once(&lo), Err(Error::AnnounceVip { .. })));
    });
}
