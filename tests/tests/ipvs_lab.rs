//! End-to-end through IPVS (issue 3, item 4): a client sends real HTTP requests to the VIP
//! and real servers answer through the kernel's IPVS, in the IPVS VM (DESIGN §7, layer 4).
//!
//! `ipvs_lab_in_vm` runs on the host with plain `cargo test` (as root): it boots the VM
//! once and runs this test binary inside it with `--ignored vm_`. Each `vm_*` test builds
//! its own namespace lab (client 192.0.2.2, directors d1/d2, real servers rs1/rs2 running
//! `labhttp`, see `directord_tests::{lab, ipvs, http}`) and asserts what the client sees
//! (which real server answered, that the client's address reached it, that a connection
//! survived) and what `ipvsadm -Ln` lists.

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use directord_tests::directord::Directord;
use directord_tests::http::{self, Answer};
use directord_tests::ipvs::{self, Forward, ServiceConfig, Target};
use directord_tests::lab::{self, IFACE, Lab, VIP4};
use directord_tests::vm;
use directord_tests::vrrp::Setup;
use directord_tests::wait;

/// Boots the VM once and runs every `vm_*` test below inside it.
#[test]
fn ipvs_lab_in_vm() {
    vm::run_tests_inside("ipvs_lab_in_vm", "vm_", 1, Duration::from_secs(420));
}

/// Runs one lab test inside the VM (see [`lab::test`]); says it skipped elsewhere.
fn in_vm(name: &str, build: impl FnOnce() -> Result<Lab>, body: impl FnOnce(&Lab) -> Result<()>) {
    if vm::inside_or_skip(name) {
        lab::test(name, build, body);
    }
}

fn vip(port: u16) -> SocketAddr {
    SocketAddr::from((VIP4, port))
}

const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const REALS: [&str; 2] = ["rs1", "rs2"];

/// One director (d1), the client, two real servers.
fn one_director() -> Result<Lab> {
    Lab::builder()
        .node("d1")
        .node("client")
        .node("rs1")
        .node("rs2")
        .build()
}

/// Two directors, the client, two real servers.
fn two_directors() -> Result<Lab> {
    Lab::builder()
        .node("d1")
        .node("d2")
        .node("client")
        .node("rs1")
        .node("rs2")
        .build()
}

/// rs1 and rs2 set up for `forward` and answering HTTP on `ports`; for LVS-NAT, d1 is
/// their gateway.
fn real_servers(lab: &Lab, forward: Forward, ports: &[u16]) -> Result<()> {
    if forward == Forward::Nat {
        ipvs::nat_director(lab, "d1")?;
    }
    for rs in REALS {
        ipvs::real_server(lab, rs, forward, VIP4)?;
        ipvs::start_http(lab, rs, ports)?;
    }
    Ok(())
}

/// The VRRP setup of the directors: 200 ms adverts leave a standby under emulation (and
/// a busy host) enough slack not to claim the VIP while the active lives.
fn setup() -> Setup {
    Setup::v3(Duration::from_millis(200))
}

/// The usual web service: VIP:80 over rs1 and rs2.
fn web(lab: &Lab, forward: Forward, scheduler: &str, weights: [u32; 2]) -> ServiceConfig {
    ServiceConfig {
        name: "www".to_string(),
        target: Target::Tcp(vip(80)),
        scheduler: scheduler.to_string(),
        forward,
        persistence: None,
        reals: REALS
            .iter()
            .zip(weights)
            .map(|(rs, w)| (format!("{}:80", ipvs::real_ip(lab, rs, forward)), w))
            .collect(),
    }
}

fn toml(services: &[ServiceConfig]) -> String {
    services.iter().map(ServiceConfig::toml).collect()
}

/// Waits until `node`'s directord reports `role`.
fn wait_role(d: &Directord, role: &str) -> Result<()> {
    let mut last = String::new();
    wait::until(
        setup().failover_deadline(),
        &format!("directord on {} to be {role}", d.node),
        || {
            last = d.role()?;
            Ok(last == role)
        },
    )
    .with_context(|| format!("last role {last}"))
}

/// directord alone on d1 with `services`: waits until it is active, holds the VIP, and
/// the kernel lists every service.
fn start_alone(lab: &Lab, services: &[ServiceConfig]) -> Result<Directord> {
    let d1 = Directord::start_with(lab, "d1", None, &setup(), 150, &toml(services))?;
    wait_role(&d1, "active")?;
    wait::until(Duration::from_secs(5), "d1 to hold the VIP", || {
        lab.holds("d1", VIP4.into())
    })?;
    for s in services {
        let key = match s.target {
            Target::Tcp(a) => format!("TCP {a}"),
            Target::Fwmark(m) => format!("FWM {m}"),
        };
        wait::until(
            Duration::from_secs(10),
            &format!("ipvsadm -Ln on d1 to list {key} with its real servers"),
            || {
                let table = ipvs::table(lab, "d1")?;
                Ok(ipvs::service(&table, &key).is_ok_and(|l| l.reals.len() == s.reals.len()))
            },
        )?;
    }
    Ok(d1)
}

/// Every answer came from the client's own address, to `local` as the real server saw it
/// (`None`: the real server's own address for port 80).
fn assert_addresses(
    lab: &Lab,
    answers: &[Answer],
    forward: Forward,
    local: Option<SocketAddr>,
) -> Result<()> {
    for a in answers {
        ensure!(
            a.client.ip() == IpAddr::V4(CLIENT),
            "the real server saw the client as {} (want {CLIENT}): {a}",
            a.client
        );
        let want =
            local.unwrap_or_else(|| SocketAddr::from((ipvs::real_ip(lab, &a.server, forward), 80)));
        ensure!(
            a.local == want,
            "the request reached {} (want {want}): {a}",
            a.local
        );
    }
    Ok(())
}

/// Round robin: consecutive answers come from different real servers, and each gave
/// `n_each`.
fn assert_round_robin(answers: &[Answer], n_each: usize) -> Result<()> {
    let counts = http::by_server(answers);
    let want: BTreeMap<String, usize> = REALS.iter().map(|r| (r.to_string(), n_each)).collect();
    ensure!(
        counts == want,
        "answers per real server {counts:?}, want {want:?}"
    );
    for pair in answers.windows(2) {
        ensure!(
            pair[0].server != pair[1].server,
            "two answers in a row from {}: {answers:#?}",
            pair[0].server
        );
    }
    Ok(())
}

/// `ipvsadm -Ln` on `director` lists `service` (its whole line) with these real servers
/// (address, forwarding, weight).
fn assert_listed(
    lab: &Lab,
    director: &str,
    service: &str,
    reals: &[(String, &str, u32)],
) -> Result<()> {
    let table = ipvs::table(lab, director)?;
    let key: Vec<&str> = service.split(' ').take(2).collect();
    let listed = ipvs::service(&table, &key.join(" "))?;
    ensure!(
        listed.service == service,
        "ipvsadm -Ln on {director} lists {:?}, want {service:?}",
        listed.service
    );
    let got: Vec<(String, &str, u32)> = listed
        .reals
        .iter()
        .map(|r| (r.address.clone(), r.forward.as_str(), r.weight))
        .collect();
    ensure!(
        got == reals,
        "ipvsadm -Ln on {director}, {service}: real servers {got:?}, want {reals:?}"
    );
    Ok(())
}

/// Polls [`assert_listed`] until it holds (directord programs the kernel on its own
/// thread).
fn wait_listed(
    lab: &Lab,
    director: &str,
    service: &str,
    reals: &[(String, &str, u32)],
) -> Result<()> {
    let mut last = None;
    wait::until(
        Duration::from_secs(10),
        &format!("ipvsadm -Ln on {director} to list {service}"),
        || {
            last = assert_listed(lab, director, service, reals).err();
            Ok(last.is_none())
        },
    )
    .with_context(|| format!("{last:?}"))
}

fn web_reals(lab: &Lab, forward: Forward, weights: [u32; 2]) -> Vec<(String, &'static str, u32)> {
    REALS
        .iter()
        .zip(weights)
        .map(|(rs, w)| {
            (
                format!("{}:80", ipvs::real_ip(lab, rs, forward)),
                forward.listed(),
                w,
            )
        })
        .collect()
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// (a) LVS-NAT: the real servers sit on 10.0.1.0/24 behind the director, which rewrites
/// the destination and the answers' source; the client reaches them only through the VIP.
#[test]
#[ignore = "runs inside the IPVS VM, started by ipvs_lab_in_vm"]
fn vm_lvs_nat() {
    in_vm("vm_lvs_nat", one_director, |lab| {
        real_servers(lab, Forward::Nat, &[80])?;
        let _d1 = start_alone(lab, &[web(lab, Forward::Nat, "rr", [1, 1])])?;
        let answers = http::get_n(lab, "client", vip(80), 4)?;
        assert_round_robin(&answers, 2)?;
        // The real servers were asked on their own address, by the client's own address.
        assert_addresses(lab, &answers, Forward::Nat, None)?;
        assert_listed(
            lab,
            "d1",
            "TCP 192.0.2.100:80 rr",
            &web_reals(lab, Forward::Nat, [1, 1]),
        )?;
        // Without the director there is no way to them.
        let direct = SocketAddr::from((ipvs::nat_ip(lab, "rs1"), 80));
        ensure!(
            http::get_each(lab, "client", vec![(direct, None)]).is_err(),
            "the client reached {direct} without the director"
        );
        Ok(())
    });
}

/// (b) LVS-DR: the real servers hold the VIP on `lo` and answer the client directly; they
/// do not answer ARP for it, so the client's neighbour entry for the VIP is the
/// director's.
#[test]
#[ignore = "runs inside the IPVS VM, started by ipvs_lab_in_vm"]
fn vm_lvs_dr() {
    in_vm("vm_lvs_dr", one_director, |lab| {
        real_servers(lab, Forward::Dr, &[80])?;
        let _d1 = start_alone(lab, &[web(lab, Forward::Dr, "rr", [1, 1])])?;
        let answers = http::get_n(lab, "client", vip(80), 4)?;
        assert_round_robin(&answers, 2)?;
        assert_addresses(lab, &answers, Forward::Dr, Some(vip(80)))?;
        assert_listed(
            lab,
            "d1",
            "TCP 192.0.2.100:80 rr",
            &web_reals(lab, Forward::Dr, [1, 1]),
        )?;
        let d1 = lab.mac("d1")?;
        let neighbour = lab.neighbour("client", VIP4.into())?;
        ensure!(
            neighbour.as_ref().and_then(|n| n.mac.as_deref()) == Some(d1.as_str()),
            "the client's neighbour entry for the VIP is {neighbour:?}, want d1's {d1}"
        );
        Ok(())
    });
}

/// The packets `tunl0` of `node` received.
fn tunnel_rx_packets(lab: &Lab, node: &str) -> Result<u64> {
    let json = lab.ip(node, &["-s", "-j", "link", "show", "tunl0"])?;
    let v: serde_json::Value = serde_json::from_str(&json).context("parsing ip -j -s link")?;
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .with_context(|| format!("no rx packets in {json}"))
}

/// (c) LVS-TUN: the director wraps each packet in IP-in-IP; the real servers unwrap it on
/// `tunl0` (which holds the VIP) and answer the client directly.
#[test]
#[ignore = "runs inside the IPVS VM, started by ipvs_lab_in_vm"]
fn vm_lvs_tun() {
    in_vm("vm_lvs_tun", one_director, |lab| {
        real_servers(lab, Forward::Tun, &[80])?;
        let _d1 = start_alone(lab, &[web(lab, Forward::Tun, "rr", [1, 1])])?;
        let answers = http::get_n(lab, "client", vip(80), 4)?;
        assert_round_robin(&answers, 2)?;
        assert_addresses(lab, &answers, Forward::Tun, Some(vip(80)))?;
        assert_listed(
            lab,
            "d1",
            "TCP 192.0.2.100:80 rr",
            &web_reals(lab, Forward::Tun, [1, 1]),
        )?;
        for rs in REALS {
            // Each took two connections: at least SYN, ACK, request, ACK through the tunnel.
            let rx = tunnel_rx_packets(lab, rs)?;
            ensure!(rx >= 8, "{rs}'s tunl0 received {rx} packets");
        }
        Ok(())
    });
}

/// (d) Schedulers: rr gives 40 requests 20 / 20, alternating; wrr with weights 3 and 1
/// gives the next 40 requests 30 / 10. The kernel's connection counters agree.
#[test]
#[ignore = "runs inside the IPVS VM, started by ipvs_lab_in_vm"]
fn vm_schedulers_rr_and_wrr() {
    in_vm("vm_schedulers_rr_and_wrr", one_director, |lab| {
        real_servers(lab, Forward::Dr, &[80])?;
        let d1 = start_alone(lab, &[web(lab, Forward::Dr, "rr", [1, 1])])?;
        let rs1 = format!("{}:80", lab.node("rs1").ipv4);
        let rs2 = format!("{}:80", lab.node("rs2").ipv4);

        let answers = http::get_n(lab, "client", vip(80), 40)?;
        assert_round_robin(&answers, 20)?;
        ipvs::wait_conns(
            lab,
            "d1",
            "TCP 192.0.2.100:80",
            &counts(&[(&rs1, 20), (&rs2, 20)]),
        )?;

        // Reload with wrr and weights 3 and 1: one edit of the service, one of rs1.
        fs::write(&d1.config, {
            let text = fs::read_to_string(&d1.config)?;
            let (base, _) = text
                .split_once("\n[[service]]")
                .context("no service in the config")?;
            format!("{base}\n{}", toml(&[web(lab, Forward::Dr, "wrr", [3, 1])]))
        })?;
        d1.ctl(&["reload"])?;
        wait_listed(
            lab,
            "d1",
            "TCP 192.0.2.100:80 wrr",
            &web_reals(lab, Forward::Dr, [3, 1]),
        )?;
        let answers = http::get_n(lab, "client", vip(80), 40)?;
        let got = http::by_server(&answers);
        let want: BTreeMap<String, usize> =
            [("rs1".to_string(), 30), ("rs2".to_string(), 10)].into();
        ensure!(
            got == want,
            "wrr 3:1 over 40 requests gave {got:?}, want {want:?}"
        );
        // The counters kept counting (20 + 30, 20 + 10): the reload edited the service in
        // place, it did not rebuild it.
        ipvs::wait_conns(
            lab,
            "d1",
            "TCP 192.0.2.100:80",
            &counts(&[(&rs1, 50), (&rs2, 30)]),
        )?;
        Ok(())
    });
}

/// (e) A fwmark service: nftables marks TCP to VIP:80 and VIP:8080 with 1 in the
/// director's prerouting; one IPVS service for mark 1 balances both ports (the real
/// servers keep the client's port). VIP:8081 is not marked and not balanced.
#[test]
#[ignore = "runs inside the IPVS VM, started by ipvs_lab_in_vm"]
fn vm_fwmark_service() {
    in_vm("vm_fwmark_service", one_director, |lab| {
        real_servers(lab, Forward::Dr, &[80, 8080])?;
        lab.exec(
            "d1",
            "nft",
            &[&format!(
                "add table ip lab; \
                 add chain ip lab prerouting {{ type filter hook prerouting priority mangle; }}; \
                 add rule ip lab prerouting ip daddr {VIP4} tcp dport {{ 80, 8080 }} meta mark set 1"
            )],
        )?;
        let marked = ServiceConfig {
            name: "marked".to_string(),
            target: Target::Fwmark(1),
            scheduler: "rr".to_string(),
            forward: Forward::Dr,
            persistence: None,
            reals: REALS
                .iter()
                .map(|rs| (lab.node(rs).ipv4.to_string(), 1))
                .collect(),
        };
        let _d1 = start_alone(lab, &[marked])?;
        let requests: Vec<http::Request> = [80, 8080, 8080, 80, 80, 8080, 8080, 80]
            .iter()
            .map(|&p| (vip(p), None))
            .collect();
        let answers = http::get_each(lab, "client", requests.clone())?;
        assert_round_robin(&answers, 4)?;
        for ((target, _), a) in requests.iter().zip(&answers) {
            ensure!(
                a.local == *target,
                "asked {target}, the real server saw {a}"
            );
        }
        let reals: Vec<(String, &str, u32)> = REALS
            .iter()
            .map(|rs| (format!("{}:0", lab.node(rs).ipv4), "Route", 1))
            .collect();
        assert_listed(lab, "d1", "FWM 1 rr", &reals)?;
        let rs1 = format!("{}:0", lab.node("rs1").ipv4);
        let rs2 = format!("{}:0", lab.node("rs2").ipv4);
        ipvs::wait_conns(lab, "d1", "FWM 1", &counts(&[(&rs1, 4), (&rs2, 4)]))?;
        ensure!(
            http::get_each(lab, "client", vec![(vip(8081), None)]).is_err(),
            "VIP:8081 is not marked, yet something answered"
        );
        Ok(())
    });
}

/// (f) Persistence: with rr and a 60 s persistence, each client address sticks to one
/// real server over many connections, and the two clients got different ones (rr over
/// the persistence templates). `ipvsadm -Lnc` lists the templates.
#[test]
#[ignore = "runs inside the IPVS VM, started by ipvs_lab_in_vm"]
fn vm_persistence() {
    in_vm("vm_persistence", one_director, |lab| {
        real_servers(lab, Forward::Dr, &[80])?;
        let persistent = ServiceConfig {
            persistence: Some(60),
            ..web(lab, Forward::Dr, "rr", [1, 1])
        };
        let _d1 = start_alone(lab, &[persistent])?;
        let second = Ipv4Addr::new(192, 0, 2, 3);
        lab.ip(
            "client",
            &["addr", "add", &format!("{second}/24"), "dev", IFACE],
        )?;
        let a: IpAddr = CLIENT.into();
        let b: IpAddr = second.into();
        // A five times, B five times, A three more: without persistence rr would
        // alternate within each run.
        let sources = [[a; 5].as_slice(), &[b; 5], &[a; 3]].concat();
        let requests = sources.iter().map(|&s| (vip(80), Some(s))).collect();
        let answers = http::get_each(lab, "client", requests)?;
        let mut server_of: BTreeMap<IpAddr, String> = BTreeMap::new();
        for (source, answer) in sources.iter().zip(&answers) {
            ensure!(
                answer.client.ip() == *source,
                "sent from {source}, seen {answer}"
            );
            let first = server_of
                .entry(*source)
                .or_insert_with(|| answer.server.clone());
            ensure!(
                *first == answer.server,
                "{source} moved from {first} to {}: {answers:#?}",
                answer.server
            );
        }
        ensure!(
            server_of[&a] != server_of[&b],
            "both clients on {}: rr should give the second template the other server",
            server_of[&a]
        );
        assert_listed(
            lab,
            "d1",
            "TCP 192.0.2.100:80 rr persistent 60",
            &web_reals(lab, Forward::Dr, [1, 1]),
        )?;
        let conns = ipvs::connections(lab, "d1")?;
        for (source, server) in &server_of {
            let rs = format!("{}:80", lab.node(server).ipv4);
            ensure!(
                // A template: client port 0, state NONE, ASSURED once used again.
                conns
                    .iter()
                    .any(|c| c.source == format!("{source}:0") && c.destination == rs),
                "no persistence template {source} -> {rs} in {conns:#?}"
            );
        }
        Ok(())
    });
}

/// Waits until the client's neighbour entry for the VIP is `node`'s MAC.
fn wait_client_neighbour(lab: &Lab, node: &str) -> Result<()> {
    let mac = lab.mac(node)?;
    let mut last = None;
    wait::until(
        setup().failover_deadline(),
        &format!("the client's neighbour entry for the VIP to be {node}'s {mac}"),
        || {
            last = lab.neighbour("client", VIP4.into())?;
            Ok(last.as_ref().and_then(|n| n.mac.as_deref()) == Some(mac.as_str()))
        },
    )
    .with_context(|| format!("last entry {last:?}"))
}

/// Waits until `node` runs a sync daemon whose `ipvsadm -L --daemon` line starts with
/// `want` (`master sync daemon (mcast=eth0, syncid=7`).
fn wait_sync_daemon(lab: &Lab, node: &str, want: &str) -> Result<()> {
    let mut last = Vec::new();
    wait::until(
        Duration::from_secs(10),
        &format!("{node} to run a {want}...)"),
        || {
            last = ipvs::daemons(lab, node)?;
            Ok(last.iter().any(|d| d.starts_with(want)))
        },
    )
    .with_context(|| format!("ipvsadm -L --daemon on {node}: {last:?}"))
}

/// (g) Two directors running directord with connection sync: a long-lived HTTP
/// connection opened through d1 keeps working after d1 dies (`kill -9` of its directord,
/// cable pulled) and d2 takes the VIP, because d2's sync daemon (backup) learnt the
/// connection from d1's (master). directord programs the same table on both and moves
/// the sync master to the new active.
#[test]
#[ignore = "runs inside the IPVS VM, started by ipvs_lab_in_vm"]
fn vm_failover_keeps_connections() {
    in_vm("vm_failover_keeps_connections", two_directors, |lab| {
        let started = Instant::now();
        let step = |what: &str| eprintln!("{:6.2}s {what}", started.elapsed().as_secs_f64());
        for rs in REALS {
            ipvs::real_server(lab, rs, Forward::Dr, VIP4)?;
            ipvs::start_http(lab, rs, &[80])?;
        }
        step("real servers ready");
        let extra = format!(
            "\n[ipvs]\nsync_interface = \"{IFACE}\"\nsync_id = 7\n{}",
            toml(&[web(lab, Forward::Dr, "rr", [1, 1])])
        );
        let d1 = Directord::start_with(lab, "d1", Some("d2"), &setup(), 150, &extra)?;
        let d2 = Directord::start_with(lab, "d2", Some("d1"), &setup(), 100, &extra)?;
        step("directord started on d1 and d2");
        wait_role(&d1, "active")?;
        wait_role(&d2, "standby")?;
        wait::until(Duration::from_secs(5), "d1 to hold the VIP", || {
            lab.holds("d1", VIP4.into())
        })?;
        for director in ["d1", "d2"] {
            wait_listed(
                lab,
                director,
                "TCP 192.0.2.100:80 rr",
                &web_reals(lab, Forward::Dr, [1, 1]),
            )?;
        }
        wait_sync_daemon(lab, "d1", "master sync daemon (mcast=eth0, syncid=7")?;
        wait_sync_daemon(lab, "d2", "backup sync daemon (mcast=eth0, syncid=7")?;
        step("d1 active, both tables programmed, sync master on d1, backup on d2");

        let mut conn = http::open_in(lab, "client", vip(80), None)?;
        let before = conn.get(true)?;
        let client = conn.local_addr()?;
        ensure!(
            before.client == client,
            "the real server saw {before}, we are {client}"
        );
        let rs = format!("{}:80", lab.node(&before.server).ipv4);
        // The standby learnt the connection from the active's sync daemon.
        wait::until(
            Duration::from_secs(10),
            &format!("d2 to list the synced connection {client} -> {rs}"),
            || {
                Ok(ipvs::connections(lab, "d2")?
                    .iter()
                    .any(|c| c.source == client.to_string() && c.destination == rs))
            },
        )?;
        step("d2 has the synced connection");

        // d1 dies: its directord is killed and its cable pulled.
        d1.kill9(lab)?;
        lab.link_down("d1")?;
        wait_role(&d2, "active")?;
        wait_client_neighbour(lab, "d2")?;
        // The new active sends the connection table from now on.
        wait_sync_daemon(lab, "d2", "master sync daemon (mcast=eth0, syncid=7")?;
        step("d2 took over");

        let after = conn
            .get(true)
            .context("the connection opened through d1, after d2 took over")?;
        ensure!(
            after == before,
            "the same connection got another answer: before {before}, after {after}"
        );
        let carried = ipvs::connections(lab, "d2")?;
        ensure!(
            carried.iter().any(|c| c.source == client.to_string()
                && c.destination == rs
                && c.state == "ESTABLISHED"),
            "d2 does not carry {client} -> {rs}: {carried:#?}"
        );
        // New connections go through d2 as well.
        let fresh = http::get_n(lab, "client", vip(80), 2)?;
        assert_round_robin(&fresh, 1)?;
        Ok(())
    });
}
