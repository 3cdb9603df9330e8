//! Link state and the link watcher against the real kernel.

mod common;

use std::time::Duration;

use common::{DIRECTOR_IF, PEER_IF, in_netns, ip};
use tokio::{sync::watch, time::timeout};
use vipmgr::{Error, LinkState, link_is_up, link_state, watch_link};

/// How long a test waits for an event before it fails (not a hoped-for delay:
/// events normally arrive within milliseconds).
const EVENT_DEADLINE: Duration = Duration::from_secs(5);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn wait_for(rx: &mut watch::Receiver<LinkState>, want: LinkState) {
    let seen = timeout(EVENT_DEADLINE, rx.wait_for(|state| *state == want))
        .await
        .map(|r| r.is_ok());
    assert!(
        matches!(seen, Ok(true)),
        "link state did not become {want:?}; it is {:?}",
        *rx.borrow()
    );
}

#[test]
fn link_is_up_needs_admin_up_and_carrier() {
    in_netns("link_is_up_needs_admin_up_and_carrier", || {
        assert!(link_is_up(DIRECTOR_IF).expect("va"));
        assert_eq!(link_state(DIRECTOR_IF).expect("va"), LinkState::Up);

        // The peer going down takes the carrier away: va is admin up but Down.
        ip(&["link", "set", PEER_IF, "down"]);
        assert!(!link_is_up(DIRECTOR_IF).expect("va"));
        ip(&["link", "set", PEER_IF, "up"]);
        assert!(link_is_up(DIRECTOR_IF).expect("va"));

        ip(&["link", "set", DIRECTOR_IF, "down"]);
        assert_eq!(link_state(DIRECTOR_IF).expect("va"), LinkState::Down);

        assert_eq!(link_state("nosuch0").expect("lookup"), LinkState::Missing);
        assert!(matches!(
            link_is_up("nosuch0"),
            Err(Error::LinkNotFound { interface }) if interface == "nosuch0"
        ));
    });
}

#[test]
fn watcher_follows_down_up_delete_and_recreate() {
    in_netns("watcher_follows_down_up_delete_and_recreate", || {
        runtime().block_on(async {
            let mut rx = watch_link(DIRECTOR_IF).expect("watch va");
            assert_eq!(*rx.borrow_and_update(), LinkState::Up);

            ip(&["link", "set", DIRECTOR_IF, "down"]);
            wait_for(&mut rx, LinkState::Down).await;
            ip(&["link", "set", DIRECTOR_IF, "up"]);
            wait_for(&mut rx, LinkState::Up).await;

            // Carrier loss alone (the peer goes down) is Down too.
            ip(&["link", "set", PEER_IF, "down"]);
            wait_for(&mut rx, LinkState::Down).await;
            ip(&["link", "set", PEER_IF, "up"]);
            wait_for(&mut rx, LinkState::Up).await;

            ip(&["link", "del", DIRECTOR_IF]);
            wait_for(&mut rx, LinkState::Missing).await;

            ip(&[
                "link",
                "add",
                DIRECTOR_IF,
                "type",
                "veth",
                "peer",
                "name",
                "vc",
            ]);
            wait_for(&mut rx, LinkState::Down).await;
            ip(&["link", "set", "vc", "up"]);
            ip(&["link", "set", DIRECTOR_IF, "up"]);
            wait_for(&mut rx, LinkState::Up).await;
        });
    });
}

#[test]
fn watcher_notices_a_rename_away_and_a_missing_link_appearing() {
    in_netns("watcher_notices_a_rename", || {
        runtime().block_on(async {
            let mut renamed = watch_link(DIRECTOR_IF).expect("watch va");
            let mut absent = watch_link("later0").expect("watch later0");
            assert_eq!(*absent.borrow_and_update(), LinkState::Missing);

            ip(&["link", "set", DIRECTOR_IF, "down"]);
            wait_for(&mut renamed, LinkState::Down).await;
            ip(&["link", "set", DIRECTOR_IF, "name", "later0"]);
            wait_for(&mut renamed, LinkState::Missing).await;
            wait_for(&mut absent, LinkState::Down).await;
            ip(&["link", "set", "later0", "up"]);
            wait_for(&mut absent, LinkState::Up).await;
        });
    });
}

#[test]
fn watch_rejects_an_impossible_name() {
    // No namespace needed: the name is refused before any socket is opened.
    assert!(matches!(
        watch_link("this-name-is-too-long"),
        Err(Error::WatchLink { .. })
    ));
}

#[test]
fn watcher_thread_ends_after_the_last_receiver_is_dropped() {
    // Needs no privilege: any process may follow RTNLGRP_LINK.
    fn watcher_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .expect("/proc/self/task")
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim() == "link-watch-gz9")
            .count()
    }
    fn wait_until_count(want: usize) -> usize {
        let end = std::time::Instant::now() + EVENT_DEADLINE;
        loop {
            let count = watcher_threads();
            if count == want || std::time::Instant::now() >= end {
                return count;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let rx = watch_link("gz9").expect("watch gz9");
    assert_eq!(*rx.borrow(), LinkState::Missing);
    // The thread names itself once it runs.
    assert_eq!(wait_until_count(1), 1, "no watcher thread");
    drop(rx);
    assert_eq!(
        wait_until_count(0),
        0,
        "watcher thread outlived its receivers"
    );
}
