//! The check under test: a [`Check`] around a protocol's options, one attempt of
//! it, and what its verdict says.

use std::net::SocketAddr;
use std::time::Duration;

use checkers::spec::{Check, Connect, Health, Http, Method, Protocol};
use checkers::{Probe, Verdict};

/// A check with the protocol's options and a timeout; no retries.
pub fn check(protocol: Protocol, timeout: Duration) -> Check {
    Check {
        interval: Duration::from_secs(1),
        timeout,
        rise: 1,
        fall: 1,
        retry: 0,
        retry_delay: Duration::ZERO,
        initial: Health::Down,
        connect: Connect::default(),
        protocol,
    }
}

/// A GET / check expecting 2xx, with a 2 s budget, changed by `edit`.
pub fn http_check(edit: impl FnOnce(&mut Http, &mut Check)) -> Check {
    let mut http = Http {
        tls: None,
        method: Method::Get,
        path: "/".into(),
        host: None,
        expect_status: vec![200..=299],
        expect_body: None,
        expect_digest: None,
        headers: Vec::new(),
        basic_auth: None,
    };
    let mut check = check(Protocol::Ping, Duration::from_secs(2));
    edit(&mut http, &mut check);
    check.protocol = Protocol::Http(http);
    check
}

/// One attempt of `check` against `real`; a checker error fails the test.
pub async fn verdict(check: Check, real: SocketAddr) -> Verdict {
    let probe = Probe::new(check).expect("valid check");
    probe.run(real).await.expect("the checker works")
}

/// Down for exactly `reason`.
pub fn down(reason: &str) -> Verdict {
    Verdict::Down(reason.to_owned())
}

/// Asserts that `v` is down for a reason containing `needle`; returns the reason.
#[track_caller]
pub fn assert_down(v: &Verdict, needle: &str) -> String {
    match v {
        Verdict::Down(reason) => {
            // Shown with --nocapture: what an operator would read.
            eprintln!("down: {reason}");
            assert!(
                reason.contains(needle),
                "reason {reason:?} should contain {needle:?}"
            );
            reason.clone()
        }
        Verdict::Up => panic!("expected down with {needle:?}, got up"),
    }
}

/// As [`assert_down`], and the reason does not show `secret`.
#[track_caller]
pub fn assert_down_hiding(v: &Verdict, needle: &str, secret: &str) -> String {
    let reason = assert_down(v, needle);
    assert!(
        !reason.contains(secret),
        "reason {reason:?} shows the password"
    );
    reason
}
