//! directord pairs running the UDP 694 heartbeat in the namespace lab. d1 and d2 are
//! joined by two links: unicast over `eth1` (a link of their own, 198.51.100.0/24) and
//! multicast to 239.0.0.94 (or broadcast) on `eth0`, the service network where the
//! client probes VIP:7 every 10 ms. Keepalive 100 ms, deadtime 300 ms, d1 preferred with
//! auto-failback, unless a test says otherwise. Run as root; otherwise each test says it
//! was skipped.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use directord_tests::directord::{HEARTBEAT_GROUP, Heartbeat};
use directord_tests::lab::{self, IFACE, IFACE2, Lab};
use directord_tests::pair::Pair;
use directord_tests::wait;
use heartbeat::linuxha::message::Message;
use heartbeat::linuxha::{AuthKeys, Method};
use serde_json::Value;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const KEEPALIVE: Duration = Duration::from_millis(100);
const DEADTIME: Duration = Duration::from_millis(300);
/// What a move may take beyond what the protocol needs, on a busy 2-core machine: the
/// supervisor adding the VIP, and the 20 ms poll that sees it (two `ip` and two
/// `directorctl` runs per sample).
const MARGIN: Duration = Duration::from_millis(400);
const PORT: u16 = 694;

/// Keepalive 100 ms, deadtime 300 ms, d1 preferred, multicast on eth0.
fn fast() -> Heartbeat {
    Heartbeat::new(KEEPALIVE, DEADTIME)
}

/// A started heartbeat pair, converged on `active`.
fn converged<'a>(lab: &'a Lab, hb: Heartbeat, active: &str) -> Result<Pair<'a>> {
    let mut pair = Pair::heartbeat(lab, hb);
    pair.start()?;
    pair.wait_converged(active, pair.failover_deadline())?;
    Ok(pair)
}

/// The entry of `status.links` for the medium on `iface`.
fn link<'s>(status: &'s Value, iface: &str) -> Result<&'s Value> {
    status["links"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["interface"] == iface)
        .with_context(|| format!("no link on {iface} in status {status}"))
}

/// Waits until `node` shows the medium on `eth1` and the one on `eth0` up or down as
/// given.
fn wait_links(pair: &Pair, node: &str, eth1_up: bool, eth0_up: bool) -> Result<Value> {
    let d = pair.directord(node)?;
    let what = format!("{node} to show eth1 up={eth1_up}, eth0 up={eth0_up}");
    let mut last = Value::Null;
    let r = wait::value(DEADTIME * 3 + Duration::from_secs(2), &what, || {
        last = d.status()?;
        let shown = (
            link(&last, IFACE2)?["up"].clone(),
            link(&last, IFACE)?["up"].clone(),
        );
        Ok((shown == (eth1_up.into(), eth0_up.into())).then(|| last.clone()))
    });
    r.map(|(s, _)| s)
        .with_context(|| format!("last status of {node}: {}", last["links"]))
}

fn counter(status: &Value, name: &str) -> u64 {
    status["counters"][name].as_u64().unwrap_or(0)
}

fn invalid(status: &Value, reason: &str) -> u64 {
    status["counters"]["invalid"][reason].as_u64().unwrap_or(0)
}

/// Converges on the preferred node even when it is not the one the name order picks
/// (d2 here), and only it holds the VIP; both show the peer, both media up and no
/// invalid packet; the client is answered by it.
#[test]
fn pair_converges_on_the_preferred_node() {
    lab::test(
        "pair_converges_on_the_preferred_node",
        Lab::pair_two_links,
        |lab| {
            let pair = converged(lab, fast().preferred("d2"), "d2")?;
            pair.assert_sole_holder_for("d2", ms(500))?;
            for (node, peer, state) in [("d1", "d2", "standby"), ("d2", "d1", "active")] {
                let s = wait_links(&pair, node, true, true)?;
                ensure!(
                    s["protocol"] == "heartbeat" && s["state"] == state,
                    "{node}: {s}"
                );
                ensure!(s["keepalive"] == 100 && s["deadtime"] == 300, "{node}: {s}");
                let peer_eth1 = lab.ipv4_on(peer, IFACE2);
                ensure!(
                    link(&s, IFACE2)?["medium"] == format!("ucast eth1 {peer_eth1}")
                        && link(&s, IFACE)?["medium"] == format!("mcast eth0 {HEARTBEAT_GROUP}"),
                    "{node} links: {}",
                    s["links"]
                );
                ensure!(s["peer"]["advert_interval"] == 100, "{node} peer: {s}");
                ensure!(
                    counter(&s, "adverts_sent") > 0 && counter(&s, "adverts_received") > 0,
                    "{node} counters: {}",
                    s["counters"]
                );
            }
            let d2 = pair.directord("d2")?.status()?;
            ensure!(d2["vips"][0]["held"] == true, "d2: {d2}");
            let probe = pair.probe()?;
            pair.wait_answered_by(&probe, "d2", 0, ms(2000))?;
            pair.assert_no_invalid_packets()?;
            Ok(())
        },
    );
}

/// kill -9 of the active daemon: the standby holds the VIP within the dead time and the
/// client is answered by it (the killed node keeps its stale VIP and its echo responder,
/// so only the gratuitous ARPs make this pass). Restarted (a new generation), the
/// preferred node takes the VIP back.
#[test]
fn kill9_of_the_active_fails_over_within_the_deadtime() {
    lab::test(
        "kill9_of_the_active_fails_over_within_the_deadtime",
        Lab::pair_two_links,
        |lab| {
            let mut pair = converged(lab, fast(), "d1")?;
            let deadline = pair.failover_deadline();
            let probe = pair.probe()?;
            pair.wait_answered_by(&probe, "d1", 0, ms(2000))?;
            let t0 = probe.now_us();
            let killed = Instant::now();
            pair.kill9("d1")?;
            pair.wait_holds("d2", deadline)?;
            let took = killed.elapsed();
            pair.wait_answered_by(&probe, "d2", t0, deadline)?;
            eprintln!("d2 held the VIP {took:?} after kill -9 of d1");
            ensure!(
                took <= DEADTIME + MARGIN,
                "d2 took {took:?} to hold the VIP, deadtime {DEADTIME:?}"
            );
            let d2 = pair.directord("d2")?.status()?;
            ensure!(d2["role"] == "active", "d2: {d2}");
            ensure!(
                counter(&d2, "priority_zero_received") == 0,
                "no goodbye from a kill -9: {d2}"
            );
            let reason = d2["last_transition"]["reason"].as_str().unwrap_or("");
            ensure!(
                reason.starts_with("peer d1 dead"),
                "d2 became active: {reason}"
            );

            let t1 = probe.now_us();
            pair.start_node("d1")?;
            pair.wait_converged("d1", deadline)
                .context("auto-failback to the restarted preferred node")?;
            pair.wait_answered_by(&probe, "d1", t1, deadline)?;
            pair.assert_sole_holder_for("d1", ms(500))?;
            eprintln!("{}", probe.stop().describe());
            pair.assert_no_invalid_packets()?;
            Ok(())
        },
    );
}

/// One of the two links cut: both nodes show that medium down, nothing fails over and
/// the client stays with d1. Both cut: d2 takes over within the dead time (d1, cut off,
/// stays active: a split brain). Healed: within about one keepalive exactly one is
/// active again, the preferred d1, and the client is answered by it.
#[test]
fn link_cuts_fail_over_only_when_both_links_are_cut() {
    lab::test(
        "link_cuts_fail_over_only_when_both_links_are_cut",
        Lab::pair_two_links,
        |lab| {
            let pair = converged(lab, fast(), "d1")?;
            let deadline = pair.failover_deadline();
            let probe = pair.probe()?;

            let t0 = probe.now_us();
            lab.cut("d1", IFACE2)?;
            for node in ["d1", "d2"] {
                wait_links(&pair, node, false, true).context("eth1 cut")?;
            }
            pair.assert_sole_holder_for("d1", DEADTIME * 4)?;
            let d2 = pair.directord("d2")?.status()?;
            ensure!(
                d2["role"] == "standby" && counter(&d2, "became_active") == 0,
                "d2 after the eth1 cut: {d2}"
            );
            ensure!(
                probe.answered_since(t0).as_deref() == Some("d1"),
                "the client lost d1 on the eth1 cut"
            );

            let cut = Instant::now();
            let t1 = probe.now_us();
            lab.cut("d1", IFACE)?;
            pair.wait_holds("d2", deadline)?;
            let took = cut.elapsed();
            eprintln!("d2 held the VIP {took:?} after the second cut");
            ensure!(
                took <= DEADTIME + MARGIN,
                "d2 took {took:?} to hold the VIP, deadtime {DEADTIME:?}"
            );
            pair.wait_answered_by(&probe, "d2", t1, deadline)?;
            wait_links(&pair, "d2", false, false)?;
            ensure!(
                pair.directord("d1")?.role()? == "active",
                "d1 cut off should still be active"
            );

            let t2 = probe.now_us();
            lab.heal("d1", IFACE2)?;
            lab.heal("d1", IFACE)?;
            let healed = Instant::now();
            let settled = pair.wait_converged("d1", deadline)?;
            eprintln!("one active again {settled:?} after the heal");
            ensure!(
                settled <= KEEPALIVE + MARGIN,
                "settling took {settled:?}, keepalive {KEEPALIVE:?}"
            );
            pair.wait_answered_by(&probe, "d1", t2, deadline)?;
            eprintln!(
                "client answered by d1 {:?} after the heal",
                healed.elapsed()
            );
            pair.assert_sole_holder_for("d1", ms(500))?;
            for node in ["d1", "d2"] {
                wait_links(&pair, node, true, true).context("healed")?;
            }
            eprintln!("{}", probe.stop().describe());
            pair.assert_no_invalid_packets()?;
            Ok(())
        },
    );
}

/// Planned moves do not wait for a dead time: at keepalive 1 s / deadtime 3 s,
/// `takeover` on the standby and `standby` on the active move the VIP within a second,
/// and the client follows.
#[test]
fn takeover_and_standby_move_the_vip_at_once() {
    lab::test(
        "takeover_and_standby_move_the_vip_at_once",
        Lab::pair_two_links,
        |lab| {
            let pair = converged(lab, Heartbeat::new(ms(1000), ms(3000)), "d1")?;
            let probe = pair.probe()?;
            let quick = ms(1000);

            let t0 = probe.now_us();
            pair.directord("d2")?.takeover()?;
            let took = pair
                .wait_converged("d2", quick)
                .context("takeover on the standby")?;
            pair.wait_answered_by(&probe, "d2", t0, quick)?;
            eprintln!("takeover: d2 the only holder after {took:?}");
            let d2 = pair.directord("d2")?.status()?;
            ensure!(d2["override"] == "takeover", "d2 after takeover: {d2}");

            let t1 = probe.now_us();
            pair.directord("d2")?.standby()?;
            let took = pair
                .wait_converged("d1", quick)
                .context("standby on the active")?;
            pair.wait_answered_by(&probe, "d1", t1, quick)?;
            eprintln!("standby: d1 the only holder after {took:?}");
            let d2 = pair.directord("d2")?.status()?;
            ensure!(d2["override"] == "standby", "d2 after standby: {d2}");
            pair.assert_sole_holder_for("d1", ms(1500))?;

            let report = probe.stop();
            eprintln!("{}", report.describe());
            let out = report.outage();
            ensure!(out.ms < 1000.0, "planned moves cost the client {out:?}");
            Ok(())
        },
    );
}

/// UDP 694 datagrams injected from the client onto the multicast medium: replays of
/// each node's own keepalive, forgeries signed with a wrong key that would move the VIP
/// if believed (d1 saying goodbye, d2 claiming a takeover), and garbage. Each node drops
/// and counts every one aimed at it, by reason, and the pair does not move.
#[test]
fn forged_and_replayed_packets_are_rejected_and_counted() {
    lab::test(
        "forged_and_replayed_packets_are_rejected_and_counted",
        Lab::pair_two_links,
        |lab| {
            let pair = converged(lab, fast(), "d1")?;
            let before = [
                pair.directord("d1")?.status()?,
                pair.directord("d2")?.status()?,
            ];
            let captured = capture_keepalives(lab)?;
            let wrong = AuthKeys::single(1, Method::Sha256, "guessed-secret");
            let mut datagrams = Vec::new();
            for (src, bytes) in &captured {
                // Replayed as sent.
                datagrams.push(bytes.clone());
                // Forged: a fresh sequence number and a message that moves the VIP.
                let mut m = Message::parse(bytes)?;
                let seq = u64::from_str_radix(m.get_str("seq").context("seq")?, 16)?;
                m.set_str("seq", &format!("{:x}", seq + 1000))?;
                if src == "d1" {
                    m.set_str("t", "shutdone")?;
                    m.set_str("st", "dead")?;
                } else {
                    m.set_str("dd_role", "active")?;
                    m.set_str("dd_ovr", "takeover")?;
                }
                m.sign(&wrong);
                datagrams.push(m.to_bytes());
            }
            datagrams.push(b"GET / HTTP/1.0\r\n\r\n".to_vec());
            const ROUNDS: u64 = 5;
            inject(lab, &datagrams, ROUNDS)?;

            // Each node ignores what claims to come from itself, and counts the rest.
            for (node, before) in ["d1", "d2"].iter().zip(&before) {
                let d = pair.directord(node)?;
                let want = [("auth", ROUNDS), ("malformed", ROUNDS), ("replay", ROUNDS)];
                let mut last = Value::Null;
                wait::until(
                    ms(2000),
                    &format!("{node} to count the injected datagrams"),
                    || {
                        last = d.status()?;
                        Ok(want.iter().all(|(r, n)| {
                            invalid(&last, r).saturating_sub(invalid(before, r)) >= *n
                        }))
                    },
                )
                .with_context(|| format!("{node} counted {}", last["counters"]["invalid"]))?;
                for (reason, n) in want {
                    let counted = invalid(&last, reason).saturating_sub(invalid(before, reason));
                    ensure!(counted == n, "{node} counted {counted} {reason}, sent {n}");
                }
            }
            pair.assert_sole_holder_for("d1", ms(1000))?;
            for (node, before) in ["d1", "d2"].iter().zip(&before) {
                let s = pair.directord(node)?.status()?;
                ensure!(
                    s["role"] == before["role"]
                        && s["last_transition"] == before["last_transition"]
                        && counter(&s, "priority_zero_received") == 0,
                    "{node} moved: before {before}, now {s}"
                );
            }
            Ok(())
        },
    );
}

/// Broadcast on eth0 as the second medium: it carries the keepalives alone when eth1 is
/// cut, and a node's own broadcasts coming back are not counted as invalid.
#[test]
fn broadcast_medium_carries_the_keepalives_alone() {
    lab::test(
        "broadcast_medium_carries_the_keepalives_alone",
        Lab::pair_two_links,
        |lab| {
            let pair = converged(lab, fast().broadcast(), "d1")?;
            let s = wait_links(&pair, "d2", true, true)?;
            ensure!(
                link(&s, IFACE)?["medium"] == "bcast eth0",
                "d2 links: {}",
                s["links"]
            );
            lab.cut("d2", IFACE2)?;
            for node in ["d1", "d2"] {
                wait_links(&pair, node, false, true).context("eth1 cut")?;
            }
            pair.assert_sole_holder_for("d1", DEADTIME * 4)?;
            pair.assert_no_invalid_packets()?;
            Ok(())
        },
    );
}

/// SIGTERM of the active: it says goodbye and releases the VIP, and the peer takes over
/// at once, not after the 3 s dead time.
#[test]
fn sigterm_of_the_active_hands_over_at_once() {
    lab::test(
        "sigterm_of_the_active_hands_over_at_once",
        Lab::pair_two_links,
        |lab| {
            let pair = converged(lab, Heartbeat::new(ms(1000), ms(3000)), "d1")?;
            let probe = pair.probe()?;
            let t0 = probe.now_us();
            let start = Instant::now();
            pair.terminate("d1")?;
            pair.wait_holds("d2", ms(1000))
                .context("the peer did not take over within a second (deadtime 3 s)")?;
            let took = start.elapsed();
            eprintln!("d2 held the VIP {took:?} after SIGTERM of d1");
            ensure!(
                !lab.holds("d1", pair.setup.vip())?,
                "d1 kept the VIP after SIGTERM"
            );
            pair.wait_answered_by(&probe, "d2", t0, ms(1000))?;
            let d2 = pair.directord("d2")?.status()?;
            ensure!(
                counter(&d2, "priority_zero_received") >= 1,
                "d2 saw no goodbye: {d2}"
            );
            pair.assert_sole_holder_for("d2", ms(500))?;
            Ok(())
        },
    );
}

/// One status keepalive of each director, as the client receives them on the multicast
/// medium: (src, datagram).
fn capture_keepalives(lab: &Lab) -> Result<Vec<(String, Vec<u8>)>> {
    let client = lab.node("client").ipv4;
    lab.in_netns("client", move || {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
        socket.set_reuse_address(true)?;
        socket.bind(&SocketAddr::new(IpAddr::V4(HEARTBEAT_GROUP), PORT).into())?;
        socket.join_multicast_v4(&HEARTBEAT_GROUP, &client)?;
        let socket: UdpSocket = socket.into();
        socket.set_read_timeout(Some(ms(200)))?;
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        let mut buf = [0u8; 4096];
        while out.len() < 2 {
            if Instant::now() >= deadline {
                bail!(
                    "captured keepalives of {:?} only",
                    out.iter().map(|(s, _)| s).collect::<Vec<_>>()
                );
            }
            let Ok((n, _)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let m = Message::parse(&buf[..n])?;
            if let (Some(src), Some("status")) = (m.get_str("src"), m.get_str("t"))
                && !out.iter().any(|(s, _)| s == src)
            {
                out.push((src.to_string(), buf[..n].to_vec()));
            }
        }
        Ok(out)
    })?
    .join()
    .map_err(|_| anyhow::anyhow!("capture thread panicked"))?
}

/// Sends every datagram `rounds` times from the client to the heartbeat group.
fn inject(lab: &Lab, datagrams: &[Vec<u8>], rounds: u64) -> Result<()> {
    let client = lab.node("client").ipv4;
    let datagrams = datagrams.to_vec();
    lab.in_netns("client", move || {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
        socket.bind(&SocketAddr::new(IpAddr::V4(client), 0).into())?;
        socket.set_multicast_if_v4(&client)?;
        socket.set_multicast_loop_v4(false)?;
        let socket: UdpSocket = socket.into();
        for _ in 0..rounds {
            for bytes in &datagrams {
                socket.send_to(bytes, SocketAddr::new(IpAddr::V4(HEARTBEAT_GROUP), PORT))?;
            }
        }
        Ok(())
    })?
    .join()
    .map_err(|_| anyhow::anyhow!("inject thread panicked"))?
}
