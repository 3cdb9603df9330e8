//! The lab demo: two directors in front of two real servers, a client, and a failover
//! drill with the probe running; then an account of who held the VIP when and how long
//! the client saw no answer at each step.
//!
//! `lab-demo [--advert 100ms|1s] [--daemon directord|keepalived]`; run as root
//! (`tests/bench/demo.sh` builds first). Until IPVS arrives, the directors forward
//! VIP:80 to the real servers with nftables DNAT + masquerade.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use directord_tests::drill::{HolderWatch, probe_epoch};
use directord_tests::lab::{self, IFACE, Lab, VIP4};
use directord_tests::pair::{Daemon, Pair};
use directord_tests::vrrp::{Setup, duration_str};

const REAL_SERVERS: [&str; 2] = ["rs1", "rs2"];

/// nftables on a director: VIP:80 spread over the real servers, masqueraded so replies
/// come back through the director; nothing else is forwarded.
fn nat_rules(lab: &Lab) -> String {
    let rs: Vec<String> = REAL_SERVERS
        .iter()
        .map(|r| lab.node(r).ipv4.to_string())
        .collect();
    format!(
        "table ip demo {{
    chain prerouting {{
        type nat hook prerouting priority dstnat;
        ip daddr {VIP4} tcp dport 80 dnat to numgen inc mod 2 map {{ 0 : {rs1}, 1 : {rs2} }}
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat;
        ct status dnat masquerade
    }}
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct status dnat accept
    }}
}}
",
        rs1 = rs[0],
        rs2 = rs[1]
    )
}

fn setup_lab() -> Result<Lab> {
    let lab = Lab::builder()
        .node("d1")
        .node("d2")
        .node("client")
        .node("rs1")
        .node("rs2")
        .build()?;
    for rs in REAL_SERVERS {
        let root = lab.path(&format!("{rs}-www"));
        std::fs::create_dir_all(&root)?;
        std::fs::write(root.join("index.html"), format!("hello from {rs}\n"))?;
        let root = root.to_string_lossy().into_owned();
        lab.spawn(
            rs,
            "http",
            "python3",
            &[
                "-m",
                "http.server",
                "80",
                "--bind",
                "0.0.0.0",
                "--directory",
                &root,
            ],
            &[],
        )?;
    }
    let rules = lab.path("nat.nft");
    std::fs::write(&rules, nat_rules(&lab))?;
    for d in ["d1", "d2"] {
        lab.exec(
            d,
            "sysctl",
            &[
                "-q",
                "-w",
                "net.ipv4.ip_forward=1",
                "net.ipv4.conf.all.send_redirects=0",
                &format!("net.ipv4.conf.{IFACE}.send_redirects=0"),
            ],
        )?;
        lab.exec(d, "nft", &["-f", &rules.to_string_lossy()])?;
    }
    Ok(lab)
}

/// One HTTP GET from the client to VIP:80: the real server's greeting.
fn http_get(lab: &Lab) -> Result<String> {
    lab.in_netns("client", || {
        let addr = SocketAddr::new(VIP4.into(), 80);
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body
            .rsplit("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .trim()
            .to_string())
    })?
    .join()
    .map_err(|_| anyhow::anyhow!("http thread panicked"))?
}

fn http_sample(lab: &Lab) -> String {
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(match http_get(lab) {
            Ok(body) => body.trim_start_matches("hello from ").to_string(),
            Err(e) => format!("error ({e})"),
        });
    }
    answers.join(", ")
}

struct Step {
    what: String,
    at_us: u64,
    settled_us: u64,
    http: String,
}

fn main() -> Result<()> {
    let usage = "usage: lab-demo [--advert 100ms|1s] [--daemon directord|keepalived]";
    let mut advert = Duration::from_millis(100);
    let mut daemon = Daemon::Directord;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--advert" => {
                let a = args.next().context(usage)?;
                advert = match a.strip_suffix("ms") {
                    Some(ms) => Duration::from_millis(ms.parse()?),
                    None => Duration::from_secs(a.trim_end_matches('s').parse()?),
                }
            }
            "--daemon" => {
                daemon = match args.next().context(usage)?.as_str() {
                    "directord" => Daemon::Directord,
                    "keepalived" => Daemon::Keepalived,
                    d => bail!("unknown daemon {d}: {usage}"),
                }
            }
            _ => bail!(usage),
        }
    }
    if !lab::is_root_or_skip("lab-demo") {
        bail!("lab-demo needs root");
    }
    let mut lab = setup_lab()?;
    lab.keep_files();
    let result = drill(&lab, daemon, advert);
    if result.is_err() {
        lab.mark_failed();
    }
    result
}

fn drill(lab: &Lab, daemon: Daemon, advert: Duration) -> Result<()> {
    let mut pair = Pair::usual(lab, Setup::v3(advert), daemon);
    println!(
        "lab {}: d1 (priority 150) and d2 (priority 100) run {daemon}, VRRPv3 every {}; \
         VIP {VIP4}; real servers rs1 {} and rs2 {} behind VIP:80 (nftables DNAT); the \
         client probes VIP:7 (UDP echo on the directors) every 10 ms",
        lab.id(),
        duration_str(advert),
        lab.node("rs1").ipv4,
        lab.node("rs2").ipv4,
    );
    pair.start()?;
    let deadline = pair.setup.failover_deadline();
    let started = Instant::now();
    pair.wait_converged("d1", deadline)?;
    println!(
        "pair converged in {:.2}s: d1 holds the VIP",
        started.elapsed().as_secs_f64()
    );

    let probe = pair.probe()?;
    let watch = HolderWatch::start(lab, &["d1", "d2"], pair.setup.vip(), probe_epoch(&probe));
    let mut steps: Vec<Step> = Vec::new();
    let mut step = |what: &str,
                    pair: &mut Pair,
                    act: &dyn Fn(&mut Pair) -> Result<()>,
                    then: &str|
     -> Result<()> {
        // A quiet second between steps, so each step's outage stands alone.
        std::thread::sleep(Duration::from_secs(1));
        let at_us = probe.now_us();
        println!("-> {what}");
        act(pair)?;
        pair.wait_answered_by(&probe, then, at_us, deadline)?;
        pair.wait_holds(then, deadline)?;
        let settled_us = probe.now_us();
        steps.push(Step {
            what: what.to_string(),
            at_us,
            settled_us,
            http: http_sample(pair.lab),
        });
        Ok(())
    };
    step("baseline", &mut pair, &|_| Ok(()), "d1")?;
    step(
        "kill -9 of d1's daemon and echo service",
        &mut pair,
        &|p| p.crash("d1"),
        "d2",
    )?;
    step(
        "restart d1: it preempts back",
        &mut pair,
        &|p| {
            p.start_node("d1")?;
            p.wait_converged("d1", p.setup.failover_deadline())?;
            Ok(())
        },
        "d1",
    )?;
    if daemon == Daemon::Directord {
        step(
            "directorctl takeover on d2",
            &mut pair,
            &|p| {
                p.directord("d2")?.takeover()?;
                p.wait_converged("d2", p.setup.failover_deadline())?;
                Ok(())
            },
            "d2",
        )?;
        step(
            "directorctl standby on d2",
            &mut pair,
            &|p| {
                p.directord("d2")?.standby()?;
                p.wait_converged("d1", p.setup.failover_deadline())?;
                Ok(())
            },
            "d1",
        )?;
    }
    step(
        "link down on d1",
        &mut pair,
        &|p| p.lab.link_down("d1"),
        "d2",
    )?;
    step(
        "link up on d1: it preempts back",
        &mut pair,
        &|p| {
            p.lab.link_up("d1")?;
            p.wait_converged("d1", p.setup.failover_deadline())?;
            Ok(())
        },
        "d1",
    )?;
    std::thread::sleep(Duration::from_secs(1));
    let changes = watch.stop();
    let report = probe.stop();

    let secs = |us: u64| us as f64 / 1e6;
    println!();
    println!(
        "== account ({} probes sent, {} answered)",
        report.sent(),
        report.answered()
    );
    println!(
        "{:<42} {:>8} {:>9} {:>10}  {:<14} HTTP via VIP (4 GETs)",
        "step", "at", "settled", "no answer", "answered by"
    );
    for s in &steps {
        let out = report.outage_between(s.at_us, s.settled_us);
        let by = report.answered_between(s.at_us, s.settled_us);
        println!(
            "{:<42} {:>7.2}s {:>8.2}s {:>7.0} ms  {:<14} {}",
            s.what,
            secs(s.at_us),
            secs(s.settled_us),
            out.ms,
            by.join(" -> "),
            s.http
        );
    }
    println!();
    println!("== who held the VIP (sampled every 50 ms)");
    for c in &changes {
        let who = if c.holders.is_empty() {
            "nobody".to_string()
        } else {
            c.holders.join(" and ")
        };
        println!("  {:>7.2}s  {who}", secs(c.at_us));
    }
    println!();
    println!("== who answered the client");
    for seg in report.timeline() {
        println!(
            "  {:>7.2}s .. {:>7.2}s  {:<4} ({} replies)",
            secs(seg.first_us),
            secs(seg.last_us),
            seg.node,
            seg.replies
        );
    }
    println!();
    println!(
        "Notes: after kill -9 the dead daemon's VIP stays configured on d1 (nobody removes it) \
         until d1's daemon starts again; the client follows the gratuitous ARPs of the new \
         active director. Configs and logs are kept in {}",
        lab.dir().display()
    );
    Ok(())
}
