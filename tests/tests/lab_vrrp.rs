//! directord pairs in the namespace lab: two directors (d1 priority 150, d2 priority 100)
//! and a client probing VIP:7 every 10 ms. Run as root; otherwise each test says it was
//! skipped.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use directord_tests::lab::{self, Lab};
use directord_tests::pair::{Daemon, Pair};
use directord_tests::vrrp::Setup;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A started, converged directord pair: d1 active.
fn converged<'a>(lab: &'a Lab, setup: Setup) -> Result<Pair<'a>> {
    let mut pair = Pair::usual(lab, setup, Daemon::Directord);
    pair.start()?;
    pair.wait_converged("d1", pair.setup.failover_deadline())?;
    Ok(pair)
}

/// (a) Exactly one director holds the VIP, the one with the higher priority, and both
/// report it.
#[test]
fn pair_converges_on_the_higher_priority() {
    lab::test("pair_converges_on_the_higher_priority", Lab::pair, |lab| {
        let pair = converged(lab, Setup::v3(ms(100)))?;
        pair.assert_sole_holder_for("d1", ms(500))?;
        let d1 = pair.directord("d1")?.status()?;
        let d2 = pair.directord("d2")?.status()?;
        ensure!(
            d1["state"] == "master" && d1["priority"] == 150,
            "d1 status: {d1}"
        );
        ensure!(d2["state"] == "backup", "d2 status: {d2}");
        ensure!(d1["vips"][0]["held"] == true, "d1 status: {d1}");
        ensure!(d2["vips"][0]["held"] == false, "d2 status: {d2}");
        ensure!(
            d2["peer"]["priority"] == 150,
            "d2 does not see d1 as its peer: {d2}"
        );
        ensure!(
            d1["counters"]["adverts_sent"].as_u64().unwrap_or(0) > 0
                && d2["counters"]["adverts_received"].as_u64().unwrap_or(0) > 0,
            "counters: d1 {d1} d2 {d2}"
        );
        let probe = pair.probe()?;
        pair.wait_answered_by(&probe, "d1", 0, ms(2000))?;
        pair.assert_no_invalid_packets()?;
        Ok(())
    });
}

/// (b) kill -9 of the active daemon: the standby takes the VIP and the client is answered
/// by it (the old active still runs its echo responder, so only a moved ARP entry makes
/// this pass).
#[test]
fn kill9_of_the_active_moves_the_vip() {
    lab::test("kill9_of_the_active_moves_the_vip", Lab::pair, |lab| {
        let pair = converged(lab, Setup::v3(ms(100)))?;
        let probe = pair.probe()?;
        pair.wait_answered_by(&probe, "d1", 0, ms(2000))?;
        let t0 = probe.now_us();
        pair.kill9("d1")?;
        let deadline = pair.setup.failover_deadline();
        pair.wait_holds("d2", deadline)?;
        pair.wait_answered_by(&probe, "d2", t0, deadline)?;
        ensure!(pair.directord("d2")?.role()? == "active");
        let report = probe.stop();
        eprintln!("{}", report.describe());
        Ok(())
    });
}

/// (c) The active's link goes down: the standby takes over. Link up: the higher priority
/// preempts back, and once converged only it holds the VIP.
#[test]
fn link_down_fails_over_and_link_up_preempts_back() {
    lab::test(
        "link_down_fails_over_and_link_up_preempts_back",
        Lab::pair,
        |lab| {
            let pair = converged(lab, Setup::v3(ms(100)))?;
            let deadline = pair.setup.failover_deadline();
            let probe = pair.probe()?;
            let t0 = probe.now_us();
            lab.link_down("d1")?;
            pair.wait_holds("d2", deadline)?;
            pair.wait_answered_by(&probe, "d2", t0, deadline)?;
            let t1 = probe.now_us();
            lab.link_up("d1")?;
            pair.wait_converged("d1", deadline)?;
            pair.wait_answered_by(&probe, "d1", t1, deadline)?;
            pair.assert_sole_holder_for("d1", ms(1000))?;
            eprintln!("{}", probe.stop().describe());
            Ok(())
        },
    );
}

/// (d) Planned moves do not wait for a dead time: at 1 s adverts (3.6 s dead time) the
/// client is answered by the new active within a second.
#[test]
fn planned_takeover_and_standby() {
    lab::test("planned_takeover_and_standby", Lab::pair, |lab| {
        let pair = converged(lab, Setup::v3(ms(1000)))?;
        let probe = pair.probe()?;
        let quick = ms(1500);

        let t0 = probe.now_us();
        pair.directord("d2")?.takeover()?;
        pair.wait_converged("d2", quick)
            .context("takeover on the standby")?;
        pair.wait_answered_by(&probe, "d2", t0, quick)?;
        let d2 = pair.directord("d2")?.status()?;
        ensure!(
            d2["override"] == "takeover",
            "d2 status after takeover: {d2}"
        );

        let t1 = probe.now_us();
        pair.directord("d2")?.standby()?;
        pair.wait_converged("d1", quick)
            .context("standby on the active")?;
        pair.wait_answered_by(&probe, "d1", t1, quick)?;
        let d2 = pair.directord("d2")?.status()?;
        ensure!(d2["override"] == "standby", "d2 status after standby: {d2}");
        // It stays standby: d1 keeps the VIP.
        pair.assert_sole_holder_for("d1", ms(1000))?;

        let report = probe.stop();
        eprintln!("{}", report.describe());
        let out = report.outage();
        ensure!(out.ms < 1000.0, "planned moves cost the client {out:?}");
        Ok(())
    });
}

/// (e) The higher priority node preempts back when its daemon restarts.
#[test]
fn restart_of_the_higher_priority_preempts_back() {
    lab::test(
        "restart_of_the_higher_priority_preempts_back",
        Lab::pair,
        |lab| {
            let mut pair = converged(lab, Setup::v3(ms(100)))?;
            let deadline = pair.setup.failover_deadline();
            pair.crash("d1")?;
            pair.wait_holds("d2", deadline)?;
            ensure!(pair.directord("d2")?.role()? == "active");
            pair.start_node("d1")?;
            pair.wait_converged("d1", deadline)?;
            let probe = pair.probe()?;
            pair.wait_answered_by(&probe, "d1", 0, deadline)?;
            pair.assert_sole_holder_for("d1", ms(500))?;
            Ok(())
        },
    );
}

/// (f) The client's ARP entry for the VIP follows the active director's MAC.
#[test]
fn client_arp_entry_follows_the_active() {
    lab::test("client_arp_entry_follows_the_active", Lab::pair, |lab| {
        let mut pair = converged(lab, Setup::v3(ms(100)))?;
        let deadline = pair.setup.failover_deadline();
        let probe = pair.probe()?;
        pair.wait_client_neighbour("d1", deadline)?;
        pair.crash("d1")?;
        pair.wait_client_neighbour("d2", deadline)?;
        pair.start_node("d1")?;
        pair.wait_converged("d1", deadline)?;
        pair.wait_client_neighbour("d1", deadline)?;
        drop(probe);
        Ok(())
    });
}

/// (g) Once converged, the VIP is never on both directors, even while the standby's
/// daemon is killed and restarted.
#[test]
fn vip_never_on_both_once_converged() {
    lab::test("vip_never_on_both_once_converged", Lab::pair, |lab| {
        let mut pair = converged(lab, Setup::v3(ms(100)))?;
        pair.assert_sole_holder_for("d1", ms(1000))?;
        pair.kill9("d2")?;
        pair.assert_sole_holder_for("d1", ms(500))?;
        pair.start_node("d2")?;
        pair.assert_sole_holder_for("d1", ms(1500))?;
        ensure!(pair.directord("d2")?.role()? == "standby");
        Ok(())
    });
}

/// (h) SIGTERM: the active sends priority 0 and removes the VIP; the peer takes over
/// after its skew time (0.6 s at 1 s adverts), not after the 3.6 s dead time.
#[test]
fn sigterm_steps_down_cleanly() {
    lab::test("sigterm_steps_down_cleanly", Lab::pair, |lab| {
        let pair = converged(lab, Setup::v3(ms(1000)))?;
        let probe = pair.probe()?;
        let t0 = probe.now_us();
        let start = Instant::now();
        pair.terminate("d1")?;
        pair.wait_holds("d2", ms(3000))
            .context("the peer did not take over before the 3.6 s dead time")?;
        let took = start.elapsed();
        ensure!(
            !lab.holds("d1", pair.setup.vip())?,
            "d1 kept the VIP after SIGTERM"
        );
        pair.wait_answered_by(&probe, "d2", t0, ms(2000))?;
        eprintln!("peer took over {took:?} after SIGTERM");
        pair.assert_sole_holder_for("d2", ms(500))?;
        Ok(())
    });
}

/// (i) IPv6: VRRPv3 over IPv6 (ff02::12), an IPv6 VIP announced with unsolicited NA.
#[test]
fn ipv6_vip_converges_and_fails_over() {
    lab::test("ipv6_vip_converges_and_fails_over", Lab::pair, |lab| {
        lab.wait_ipv6_ready()?;
        let pair = converged(lab, Setup::v3(ms(100)).ipv6())?;
        let deadline = pair.setup.failover_deadline();
        let probe = pair.probe()?;
        pair.wait_answered_by(&probe, "d1", 0, deadline)?;
        pair.wait_client_neighbour("d1", deadline)?;
        let t0 = probe.now_us();
        pair.crash("d1")?;
        pair.wait_holds("d2", deadline)?;
        pair.wait_answered_by(&probe, "d2", t0, deadline)?;
        pair.wait_client_neighbour("d2", deadline)?;
        eprintln!("{}", probe.stop().describe());
        pair.assert_no_invalid_packets()?;
        Ok(())
    });
}

/// (j) VRRPv2 (1 s adverts) converges and fails over.
#[test]
fn vrrp_v2_converges_and_fails_over() {
    lab::test("vrrp_v2_converges_and_fails_over", Lab::pair, |lab| {
        let pair = converged(lab, Setup::v2())?;
        ensure!(pair.directord("d1")?.status()?["state"] == "master");
        let deadline = pair.setup.failover_deadline();
        let probe = pair.probe()?;
        let t0 = probe.now_us();
        pair.crash("d1")?;
        pair.wait_holds("d2", deadline)?;
        pair.wait_answered_by(&probe, "d2", t0, deadline)?;
        eprintln!("{}", probe.stop().describe());
        Ok(())
    });
}

/// Unicast peers instead of multicast.
#[test]
fn unicast_peers_converge_and_fail_over() {
    lab::test("unicast_peers_converge_and_fail_over", Lab::pair, |lab| {
        let pair = converged(lab, Setup::v3(ms(100)).unicast())?;
        let deadline = pair.setup.failover_deadline();
        let probe = pair.probe()?;
        let t0 = probe.now_us();
        pair.crash("d1")?;
        pair.wait_holds("d2", deadline)?;
        pair.wait_answered_by(&probe, "d2", t0, deadline)?;
        Ok(())
    });
}

/// Operators move the VIP back and forth with `takeover` alone: each takeover wins,
/// whatever takeovers came before on either node: the latest takeover wins.
#[test]
fn takeover_back_and_forth() {
    lab::test("takeover_back_and_forth", Lab::pair, |lab| {
        let pair = converged(lab, Setup::v3(ms(100)))?;
        let quick = ms(1500);
        for (round, node) in ["d2", "d1", "d2", "d1"].into_iter().enumerate() {
            pair.directord(node)?
                .takeover()
                .with_context(|| format!("round {round}: takeover on {node}"))?;
            pair.wait_converged(node, quick)
                .with_context(|| format!("round {round}: takeover on {node}"))?;
        }
        Ok(())
    });
}

/// `directorctl restart` on the active director re-executes directord in place: the
/// VIP never leaves it, the peer never becomes active, and the client is answered
/// throughout (the peer's master-down timer never fires).
#[test]
fn restart_in_place_keeps_the_vip() {
    lab::test("restart_in_place_keeps_the_vip", Lab::pair, |lab| {
        let pair = converged(lab, Setup::v3(ms(100)))?;
        let probe = pair.probe()?;
        pair.wait_answered_by(&probe, "d1", 0, ms(2000))?;
        let d1 = pair.directord("d1")?;
        let before = d1.status()?;
        let d2_before = pair.directord("d2")?.status()?;
        let out = d1.ctl(&["restart"])?;
        ensure!(
            out.contains("restarted in place"),
            "directorctl restart said: {out}"
        );
        let after = d1.status()?;
        ensure!(
            after["started"] != before["started"] && after["pid"] == before["pid"],
            "not a restart in place: before {before} after {after}"
        );
        ensure!(
            after["role"] == "active" && after["vips"][0]["held"] == true,
            "d1 after the restart: {after}"
        );
        pair.assert_sole_holder_for("d1", ms(1000))?;
        let d2 = pair.directord("d2")?.status()?;
        ensure!(
            d2["counters"]["became_active"] == d2_before["counters"]["became_active"]
                && d2["role"] == "standby",
            "d2 took over during the restart: {d2}"
        );
        Ok(())
    });
}
