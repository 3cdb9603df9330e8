//! keepalived (the Debian package) as a real VRRP peer of directord: one director runs
//! keepalived, the other directord, in both roles; multicast and unicast; VRRPv3 at
//! 100 ms adverts and VRRPv2 at 1 s. Run as root; otherwise each test says it was
//! skipped.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use directord_tests::drill::{self, Event};
use directord_tests::lab::{self, Lab};
use directord_tests::pair::{Daemon, Pair};
use directord_tests::vrrp::Setup;

use Daemon::{Directord, Keepalived};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The pair elects d1 (priority 150) alone; kill -9 of d1 moves the VIP to d2 and the
/// client follows; d1 restarts and preempts back.
fn fail_over_and_back(lab: &Lab, setup: Setup, d1: Daemon, d2: Daemon) -> Result<()> {
    if d1 == Keepalived || d2 == Keepalived {
        directord_tests::keepalived::find()?;
    }
    let mut pair = Pair::new(lab, setup, [("d1", d1, 150), ("d2", d2, 100)]);
    pair.start()?;
    let deadline = pair.setup.failover_deadline();
    pair.wait_converged("d1", deadline)
        .context("initial election")?;
    pair.assert_sole_holder_for("d1", ms(300))?;
    let f = drill::measure(&mut pair, Event::Crash).context("kill -9 of d1, then its restart")?;
    eprintln!(
        "{d1} -> {d2}: client outage {:.0} ms, answered by {} after {:?}",
        f.outage.ms, f.to, f.answered_after
    );
    pair.assert_sole_holder_for("d1", ms(300))?;
    pair.assert_no_invalid_packets()?;
    Ok(())
}

/// The lab itself, checked with keepalived on both sides: if this fails, the lab (not
/// directord) is broken.
#[test]
fn keepalived_pair_baseline() {
    lab::test("keepalived_pair_baseline", Lab::pair, |lab| {
        fail_over_and_back(lab, Setup::v3(ms(100)), Keepalived, Keepalived)
    });
}

#[test]
fn v3_multicast_directord_master_keepalived_backup() {
    lab::test(
        "v3_multicast_directord_master_keepalived_backup",
        Lab::pair,
        |lab| fail_over_and_back(lab, Setup::v3(ms(100)), Directord, Keepalived),
    );
}

#[test]
fn v3_multicast_keepalived_master_directord_backup() {
    lab::test(
        "v3_multicast_keepalived_master_directord_backup",
        Lab::pair,
        |lab| fail_over_and_back(lab, Setup::v3(ms(100)), Keepalived, Directord),
    );
}

#[test]
fn v3_unicast_directord_master_keepalived_backup() {
    lab::test(
        "v3_unicast_directord_master_keepalived_backup",
        Lab::pair,
        |lab| fail_over_and_back(lab, Setup::v3(ms(100)).unicast(), Directord, Keepalived),
    );
}

#[test]
fn v3_unicast_keepalived_master_directord_backup() {
    lab::test(
        "v3_unicast_keepalived_master_directord_backup",
        Lab::pair,
        |lab| fail_over_and_back(lab, Setup::v3(ms(100)).unicast(), Keepalived, Directord),
    );
}

#[test]
fn v2_multicast_directord_master_keepalived_backup() {
    lab::test(
        "v2_multicast_directord_master_keepalived_backup",
        Lab::pair,
        |lab| fail_over_and_back(lab, Setup::v2(), Directord, Keepalived),
    );
}

#[test]
fn v2_unicast_keepalived_master_directord_backup() {
    lab::test(
        "v2_unicast_keepalived_master_directord_backup",
        Lab::pair,
        |lab| fail_over_and_back(lab, Setup::v2().unicast(), Keepalived, Directord),
    );
}

#[test]
fn v3_ipv6_keepalived_master_directord_backup() {
    lab::test(
        "v3_ipv6_keepalived_master_directord_backup",
        Lab::pair,
        |lab| {
            lab.wait_ipv6_ready()?;
            fail_over_and_back(lab, Setup::v3(ms(100)).ipv6(), Keepalived, Directord)
        },
    );
}

/// `directorctl takeover` on directord makes keepalived yield although keepalived has
/// the higher priority; `directorctl standby` hands the VIP back.
fn takeover_from_keepalived(lab: &Lab, setup: Setup) -> Result<()> {
    directord_tests::keepalived::find()?;
    let mut pair = Pair::new(
        lab,
        setup,
        [("d1", Keepalived, 200), ("d2", Directord, 100)],
    );
    pair.start()?;
    let deadline = pair.setup.failover_deadline();
    pair.wait_converged("d1", deadline)
        .context("initial election")?;
    let probe = pair.probe()?;
    let t0 = probe.now_us();
    pair.directord("d2")?.takeover()?;
    pair.wait_converged("d2", deadline)
        .context("keepalived did not yield to takeover")?;
    pair.wait_answered_by(&probe, "d2", t0, deadline)?;
    pair.assert_sole_holder_for("d2", ms(1000))
        .context("keepalived took the VIP back")?;
    let t1 = probe.now_us();
    pair.directord("d2")?.standby()?;
    pair.wait_converged("d1", deadline)
        .context("keepalived did not resume after standby")?;
    pair.wait_answered_by(&probe, "d1", t1, deadline)?;
    let report = probe.stop();
    eprintln!("{}", report.describe());
    let out = report.outage_between(t0, report.end_us);
    ensure!(
        out.recovered,
        "the client was left without answers: {out:?}"
    );
    pair.assert_no_invalid_packets()?;
    Ok(())
}

#[test]
fn takeover_makes_keepalived_yield_v3_multicast() {
    lab::test(
        "takeover_makes_keepalived_yield_v3_multicast",
        Lab::pair,
        |lab| takeover_from_keepalived(lab, Setup::v3(ms(100))),
    );
}

#[test]
fn takeover_makes_keepalived_yield_v2_unicast() {
    lab::test(
        "takeover_makes_keepalived_yield_v2_unicast",
        Lab::pair,
        |lab| takeover_from_keepalived(lab, Setup::v2().unicast()),
    );
}
