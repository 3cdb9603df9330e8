//! VIP addresses against the real kernel, each test in its own network namespace.

mod common;

use std::{io, net::IpAddr, thread};

use common::{DIRECTOR_IF, in_netns, ip};
use vipmgr::{AddressManager, Changes, Error, Vip};

fn vip(address: &str, prefix_len: u8) -> Vip {
    Vip::new(
        address.parse::<IpAddr>().expect("test address"),
        prefix_len,
        DIRECTOR_IF,
    )
}

/// What `ip addr show dev va` lists, one "address/prefix flags..." line each.
fn ip_addr_lines() -> Vec<String> {
    ip(&["-o", "addr", "show", "dev", DIRECTOR_IF])
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace().skip(3);
            let address = words.next()?;
            Some(format!("{address} {}", words.collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

fn ip_shows(prefix: &str) -> bool {
    ip_addr_lines()
        .iter()
        .any(|line| line.starts_with(&format!("{prefix} ")))
}

#[test]
fn ipv4_add_is_idempotent_and_remove_too() {
    in_netns("ipv4_add_is_idempotent_and_remove_too", || {
        let mut mgr = AddressManager::new().expect("netlink socket");
        let v = vip("192.0.2.100", 24);

        assert!(!mgr.is_held(&v).expect("is_held"));
        assert!(mgr.add(&v).expect("add"), "first add adds");
        assert!(ip_shows("192.0.2.100/24"), "{:?}", ip_addr_lines());
        assert!(mgr.is_held(&v).expect("is_held"));
        assert!(!mgr.add(&v).expect("add again"), "second add is a no-op");
        assert_eq!(
            ip_addr_lines()
                .iter()
                .filter(|l| l.starts_with("192.0.2.100/"))
                .count(),
            1
        );
        let listed = mgr.addresses(DIRECTOR_IF).expect("addresses");
        assert!(listed.contains(&(v.address, 24)), "{listed:?}");

        assert!(mgr.remove(&v).expect("remove"), "first remove removes");
        assert!(!ip_shows("192.0.2.100/24"));
        assert!(!mgr.is_held(&v).expect("is_held"));
        assert!(
            !mgr.remove(&v).expect("remove again"),
            "second remove is a no-op"
        );
    });
}

#[test]
fn ipv6_vip_is_added_without_dad_and_usable_at_once() {
    in_netns("ipv6_vip_is_added_without_dad_and_usable_at_once", || {
        // DAD on, as on a real director: the VIP must still not be tentative.
        common::sysctl(&format!("net.ipv6.conf.{DIRECTOR_IF}.accept_dad"), "1");
        let mut mgr = AddressManager::new().expect("netlink socket");
        let v = vip("2001:db8::100", 64);
        assert!(mgr.add(&v).expect("add"));
        let line = ip_addr_lines()
            .into_iter()
            .find(|l| l.starts_with("2001:db8::100/64 "))
            .expect("address listed");
        assert!(line.contains("nodad"), "{line}");
        assert!(!line.contains("tentative"), "{line}");
        assert!(!mgr.add(&v).expect("add again"));
        assert!(mgr.is_held(&v).expect("is_held"));
        assert!(mgr.remove(&v).expect("remove"));
        assert!(!mgr.remove(&v).expect("remove again"));
        assert!(!ip_shows("2001:db8::100/64"));
    });
}

#[test]
fn ipv6_same_address_other_prefix_is_an_error_not_already_held() {
    in_netns("ipv6_same_address_other_prefix", || {
        let mut mgr = AddressManager::new().expect("netlink socket");
        ip(&[
            "addr",
            "add",
            "2001:db8::100/64",
            "dev",
            DIRECTOR_IF,
            "nodad",
        ]);
        let v = vip("2001:db8::100", 128);
        match mgr.add(&v) {
            Err(Error::AddVip { vip, source }) => {
                assert_eq!(vip, v);
                assert_eq!(source.kind(), io::ErrorKind::AlreadyExists);
            }
            other => panic!("expected AddVip error, got {other:?}"),
        }
        assert!(!mgr.is_held(&v).expect("is_held"));
    });
}

#[test]
fn label_is_set_on_ipv4_vips() {
    in_netns("label_is_set_on_ipv4_vips", || {
        let mut mgr = AddressManager::new().expect("netlink socket");
        let mut v = vip("192.0.2.100", 32);
        v.label = Some(format!("{DIRECTOR_IF}:web"));
        assert!(mgr.add(&v).expect("add"));
        let shown = ip(&["-4", "addr", "show", "dev", DIRECTOR_IF]);
        assert!(shown.contains("192.0.2.100/32"), "{shown}");
        assert!(shown.contains("va:web"), "{shown}");
    });
}

#[test]
fn errors_name_the_vip_and_interface() {
    in_netns("errors_name_the_vip_and_interface", || {
        let mut mgr = AddressManager::new().expect("netlink socket");
        let missing = Vip::new("192.0.2.100".parse().expect("addr"), 24, "nosuch0");
        let err = mgr.add(&missing).expect_err("no such interface");
        assert_eq!(err.to_string(), "cannot add VIP 192.0.2.100/24 dev nosuch0");
        match err {
            Error::AddVip { source, .. } => assert_eq!(source.raw_os_error(), Some(libc::ENODEV)),
            other => panic!("expected AddVip, got {other:?}"),
        }
        // Not held, and removing it is the no-op it should be.
        assert!(!mgr.is_held(&missing).expect("is_held"));
        assert!(!mgr.remove(&missing).expect("remove"));
        assert!(matches!(
            mgr.link_index("nosuch0"),
            Err(Error::LinkNotFound { interface }) if interface == "nosuch0"
        ));
        assert!(matches!(
            mgr.addresses("nosuch0"),
            Err(Error::LinkNotFound { .. })
        ));
        let bad = vip("192.0.2.100", 40);
        assert!(matches!(mgr.add(&bad), Err(Error::InvalidVip { .. })));
    });
}

#[test]
fn reconcile_applies_only_the_difference() {
    in_netns("reconcile_applies_only_the_difference", || {
        let mut mgr = AddressManager::new().expect("netlink socket");
        // The interface's own address: named in neither list, never touched.
        ip(&["addr", "add", "192.0.2.1/24", "dev", DIRECTOR_IF]);
        // A VIP this director managed before and no longer wants.
        ip(&["addr", "add", "192.0.2.102/24", "dev", DIRECTOR_IF]);

        let a = vip("192.0.2.100", 24);
        let b = vip("2001:db8::100", 64);
        let old = vip("192.0.2.102", 24);
        let never_held = vip("192.0.2.103", 24);
        let desired = vec![a.clone(), b.clone(), a.clone()];
        let managed = vec![a.clone(), b.clone(), old.clone(), never_held.clone()];

        let first = mgr.reconcile(&desired, &managed).expect("first reconcile");
        assert_eq!(
            first,
            Changes {
                added: vec![a.clone(), b.clone()],
                removed: vec![old.clone()],
            }
        );
        assert!(ip_shows("192.0.2.100/24"));
        assert!(ip_shows("2001:db8::100/64"));
        assert!(!ip_shows("192.0.2.102/24"));
        assert!(ip_shows("192.0.2.1/24"), "unmanaged address left alone");

        let before = ip_addr_lines();
        let second = mgr.reconcile(&desired, &managed).expect("second reconcile");
        assert!(second.is_empty(), "second apply changed {second:?}");
        assert_eq!(ip_addr_lines(), before);

        // Standby: nothing desired, the managed VIPs go, the rest stays.
        let standby = mgr.reconcile(&[], &managed).expect("standby reconcile");
        assert_eq!(standby.removed, vec![a.clone(), b.clone()]);
        assert!(standby.added.is_empty());
        assert!(!ip_shows("192.0.2.100/24"));
        assert!(!ip_shows("2001:db8::100/64"));
        assert!(ip_shows("192.0.2.1/24"));
        assert!(mgr.reconcile(&[], &managed).expect("again").is_empty());
    });
}

#[test]
fn reconcile_carries_on_past_a_failing_vip() {
    in_netns("reconcile_carries_on_past_a_failing_vip", || {
        let mut mgr = AddressManager::new().expect("netlink socket");
        let broken = Vip::new("192.0.2.200".parse().expect("addr"), 24, "nosuch0");
        let good = vip("192.0.2.100", 24);
        let desired = vec![broken.clone(), good.clone()];
        match mgr.reconcile(&desired, &desired) {
            Err(Error::Reconcile { applied, failed }) => {
                assert_eq!(applied.added, vec![good.clone()]);
                assert_eq!(failed.len(), 1);
                assert!(matches!(&failed[0], Error::AddVip { vip, .. } if *vip == broken));
            }
            other => panic!("expected Reconcile error, got {other:?}"),
        }
        assert!(ip_shows("192.0.2.100/24"));
    });
}

#[test]
fn manager_stays_in_the_namespace_it_was_opened_in() {
    // Opened in the lab namespace, then used from a thread in the host's.
    let Some(mut mgr) = in_netns("manager_stays_in_the_namespace", || {
        AddressManager::new().expect("netlink socket")
    }) else {
        return;
    };
    let used_elsewhere = thread::spawn(move || {
        let index = mgr
            .link_index(DIRECTOR_IF)
            .expect("va exists in the lab namespace");
        let v = vip("192.0.2.100", 24);
        assert!(mgr.add(&v).expect("add"));
        assert!(mgr.is_held(&v).expect("is_held"));
        index
    })
    .join()
    .expect("thread");
    assert!(used_elsewhere > 0);
}
