//! Health checks end to end, in the IPVS VM (DESIGN §3, §7 layer 4): directord checks
//! its real servers over HTTP and the kernel's table follows what a user would see — a
//! real server whose `labhttp` stops goes to weight 0 (or leaves the table), the sorry
//! server steps in when none is left, and a director whose link comes back does not take
//! the VIP back before its own checks have seen the real servers again (ready before
//! active), so a client hammering the VIP loses no request to the switch-back.
//!
//! `health_lab_in_vm` runs on the host with plain `cargo test` (as root): it boots the
//! VM once and runs this test binary inside it with `--ignored vm_`. Each `vm_*` test
//! builds its own namespace lab (see `ipvs_lab.rs`): client 192.0.2.2, directors d1/d2,
//! real servers rs1/rs2 (LVS-DR) running `labhttp`. About 25 s of VM time in all on an
//! idle 2-core machine; the figures (time to down and up, failures and slow requests
//! around the switch-back) are printed on stderr even when the tests pass, and
//! `HEALTH_LAB_LOGS=1` adds both directors' logs from d1's link coming back.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use directord_tests::directord::Directord;
use directord_tests::http::{self, Load, LoadReport};
use directord_tests::ipvs::{self, Forward, ServiceConfig, Target};
use directord_tests::lab::{self, IFACE, Lab, Proc, VIP4, find_bin};
use directord_tests::vm;
use directord_tests::vrrp::Setup;
use directord_tests::wait;
use serde_json::Value;

/// Boots the VM once and runs every `vm_*` test below inside it.
#[test]
fn health_lab_in_vm() {
    vm::run_tests_inside("health_lab_in_vm", "vm_", 1, Duration::from_secs(300));
}

/// Runs one lab test inside the VM (see [`lab::test`]); says it skipped elsewhere.
fn in_vm(name: &str, build: impl FnOnce() -> Result<Lab>, body: impl FnOnce(&Lab) -> Result<()>) {
    if vm::inside_or_skip(name) {
        lab::test(name, build, body);
    }
}

/// Prints a line even from a passing test (the harness captures `eprintln!` there).
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

const REALS: [&str; 2] = ["rs1", "rs2"];
/// The `[[service]]` line of `ipvsadm -Ln` for the web service.
const WWW: &str = "TCP 192.0.2.100:80 rr";
/// The configured weights of rs1 and rs2.
const WEIGHTS: [u32; 2] = [3, 2];
const RISE: u32 = 2;
const FALL: u32 = 2;

/// How often the tests poll what they wait for: each poll forks `ip`, `ipvsadm` or
/// `directorctl`, which the emulated VM pays dearly for while it carries the load.
const POLL: Duration = Duration::from_millis(100);

/// The HTTP check of the web service: `GET /` of `labhttp`, rise 2, fall 2.
#[derive(Debug, Clone, Copy)]
struct Check {
    interval: Duration,
    /// As long as the interval allows: the emulated VM carrying the client's load can
    /// take over 100 ms to answer even a healthy `labhttp` (at 100 ms both directors
    /// saw false failures, and a false failure right after a director's link came back
    /// decides that real server's health at once).
    timeout: Duration,
}

/// Tests 1 and 2: a round every 200 ms.
const FAST: Check = Check {
    interval: Duration::from_millis(200),
    timeout: Duration::from_millis(200),
};

/// The switch-back: a round every 500 ms. Against VRRP's 341 ms master-down interval
/// (100 ms adverts) this is what makes the drill meaningful: at 200 ms, `rise` good
/// rounds would end about when d1 may preempt anyway, so d1 would find its real servers
/// up even without holding back; at 500 ms a d1 that did not wait for its checks would
/// take the VIP with every real server at weight 0.
const SWITCH: Check = Check {
    interval: Duration::from_millis(500),
    timeout: Duration::from_millis(250),
};

impl Check {
    fn toml(&self) -> String {
        format!(
            "check = {{ type = \"http\", path = \"/\", interval = \"{}ms\", \
             timeout = \"{}ms\", rise = {RISE}, fall = {FALL} }}",
            self.interval.as_millis(),
            self.timeout.as_millis()
        )
    }

    /// How long a health change may take once the real server changed: `rounds`
    /// rounds (the first within an interval), plus slack for the emulated VM and the
    /// polling.
    fn deadline(&self, rounds: u32) -> Duration {
        self.interval * (rounds + 1) + Duration::from_millis(1500)
    }
}

fn vip(port: u16) -> SocketAddr {
    SocketAddr::from((VIP4, port))
}

/// VRRPv3 at 100 ms adverts.
fn setup() -> Setup {
    Setup::v3(Duration::from_millis(100))
}

/// `rs1`'s or `rs2`'s address as the config and `ipvsadm` name it.
fn real(lab: &Lab, node: &str) -> String {
    format!("{}:80", lab.node(node).ipv4)
}

/// The web service over rs1 and rs2 (LVS-DR) with `check`, `scheduler` and more
/// `options` of its `[[service]]` table.
fn www(lab: &Lab, check: Check, scheduler: &str, options: &[&str]) -> String {
    let service = ServiceConfig {
        name: "www".to_string(),
        target: Target::Tcp(vip(80)),
        scheduler: scheduler.to_string(),
        forward: Forward::Dr,
        persistence: None,
        reals: REALS
            .iter()
            .zip(WEIGHTS)
            .map(|(rs, w)| (real(lab, rs), w))
            .collect(),
    };
    let check = check.toml();
    let mut all = vec![check.as_str()];
    all.extend_from_slice(options);
    service.toml_with(&all)
}

/// Sets up `nodes` as LVS-DR real servers answering HTTP on port 80.
fn real_servers(lab: &Lab, nodes: &[&str]) -> Result<BTreeMap<String, Proc>> {
    let mut procs = BTreeMap::new();
    for rs in nodes {
        ipvs::real_server(lab, rs, Forward::Dr, VIP4)?;
        procs.insert(rs.to_string(), ipvs::start_http(lab, rs, &[80])?);
    }
    Ok(procs)
}

/// The real servers of the web service in `ipvsadm -Ln` on `director`: (address,
/// weight).
fn listed(lab: &Lab, director: &str) -> Result<Vec<(String, u32)>> {
    let table = ipvs::table(lab, director)?;
    Ok(ipvs::service(&table, "TCP 192.0.2.100:80")?
        .reals
        .iter()
        .map(|r| (r.address.clone(), r.weight))
        .collect())
}

/// Waits until `ipvsadm -Ln` on `director` lists exactly `want` for the web service;
/// returns how long it took.
fn wait_listed(
    lab: &Lab,
    director: &str,
    want: &[(String, u32)],
    timeout: Duration,
) -> Result<Duration> {
    let mut last = None;
    let (_, took) = wait::value_every(
        POLL,
        timeout,
        &format!("ipvsadm -Ln on {director} to list the web service with {want:?}"),
        || {
            let got = listed(lab, director).map_err(|e| format!("{e:#}"));
            let done = got.as_ref().is_ok_and(|g| g == want);
            last = Some(got);
            Ok(done.then_some(()))
        },
    )
    .with_context(|| format!("last listed {last:?}"))?;
    Ok(took)
}

/// rs1 and rs2 at their configured weights.
fn both_up(lab: &Lab) -> Vec<(String, u32)> {
    REALS
        .iter()
        .zip(WEIGHTS)
        .map(|(rs, w)| (real(lab, rs), w))
        .collect()
}

/// The `checks` entry of `directorctl status --json` for the web service's `real`.
fn check_status(d: &Directord, real: &str) -> Result<Value> {
    let status = d.status()?;
    status["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["service"] == "www" && c["real"] == real)
        .cloned()
        .with_context(|| format!("no check of www {real} in {status}"))
}

/// The IPVS real server entry of `directorctl status --json` for the web service.
fn ipvs_status(d: &Directord, real: &str) -> Result<Value> {
    let status = d.status()?;
    status["ipvs"]["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["name"] == "www")
        .flat_map(|s| s["reals"].as_array().into_iter().flatten())
        .find(|r| r["address"] == real)
        .cloned()
        .with_context(|| format!("no IPVS real server www {real} in {status}"))
}

/// `directorctl check www REAL`: exit code and what it printed.
fn ctl_check(d: &Directord, real: &str) -> Result<(Option<i32>, String)> {
    let out = Command::new(find_bin("directorctl")?)
        .arg("--socket")
        .arg(&d.socket)
        .args(["check", "www", real])
        .output()
        .context("running directorctl check")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.code(), text.trim().to_string()))
}

/// Waits until `d` reports `role`.
fn wait_role(d: &Directord, role: &str, timeout: Duration) -> Result<Duration> {
    let mut last = String::new();
    let what = format!("directord on {} to be {role}", d.node);
    let (_, took) = wait::value_every(POLL, timeout, &what, || {
        last = d.role()?;
        Ok((last == role).then_some(()))
    })
    .with_context(|| format!("last role {last}"))?;
    Ok(took)
}

/// The failed requests, one a line (at most 20).
fn list(shots: &[&http::Shot]) -> String {
    shots
        .iter()
        .take(20)
        .map(|s| format!("\n  {s}"))
        .collect::<String>()
}

/// (1) One director checking rs1 and rs2: `labhttp` stopped on rs1 takes it to weight
/// 0 within `fall` rounds (status says why), the client is then answered by rs2 alone,
/// and rs1 comes back at its weight after `rise` good rounds. `directorctl check` runs
/// one check and says so in its exit code.
#[test]
#[ignore = "runs inside the IPVS VM, started by health_lab_in_vm"]
fn vm_health_takes_down_and_restores_real_servers() {
    in_vm(
        "vm_health_takes_down_and_restores_real_servers",
        || {
            Lab::builder()
                .node("d1")
                .node("client")
                .node("rs1")
                .node("rs2")
                .build()
        },
        |lab| {
            let procs = real_servers(lab, &REALS)?;
            let d1 =
                Directord::start_with(lab, "d1", None, &setup(), 150, &www(lab, FAST, "rr", &[]))?;
            wait_role(&d1, "active", setup().failover_deadline())?;
            wait::until(Duration::from_secs(5), "d1 to hold the VIP", || {
                lab.holds("d1", VIP4.into())
            })?;
            wait_listed(lab, "d1", &both_up(lab), Duration::from_secs(10))?;
            let table = ipvs::table(lab, "d1")?;
            let line = &ipvs::service(&table, "TCP 192.0.2.100:80")?.service;
            ensure!(
                line == WWW,
                "ipvsadm -Ln on d1 lists {line:?}, want {WWW:?}"
            );
            let (rs1, rs2) = (real(lab, "rs1"), real(lab, "rs2"));
            for r in [&rs1, &rs2] {
                let c = check_status(&d1, r)?;
                ensure!(
                    c["health"] == "up"
                        && c["last"]["result"] == "up"
                        && c["last"]["latency_ms"].as_f64().is_some_and(|l| l > 0.0),
                    "status of www {r}: {c}"
                );
                ensure!(ipvs_status(&d1, r)?["health"] == "up", "IPVS status of {r}");
            }
            let answers = http::get_n(lab, "client", vip(80), 4)?;
            let by = http::by_server(&answers);
            ensure!(by.len() == 2, "answers per real server {by:?}");

            // labhttp on rs1 stops: rs1 refuses connections.
            let load = Load::start_in(
                lab,
                "client",
                vip(80),
                Duration::from_millis(20),
                Duration::from_secs(2),
            )?;
            wait::until(Duration::from_secs(5), "a load baseline", || {
                Ok(load.snapshot().shots.len() >= 10)
            })?;
            lab.kill9(&procs["rs1"])?;
            let killed_us = load.now_us();
            let down_after = wait_listed(
                lab,
                "d1",
                &[(rs1.clone(), 0), (rs2.clone(), WEIGHTS[1])],
                FAST.deadline(FALL),
            )?;
            let down_us = load.now_us();
            wait::until(Duration::from_secs(5), "a second of load on rs2", || {
                Ok(load.now_us() > down_us + 1_000_000)
            })?;
            let report = load.stop()?;
            let c = check_status(&d1, &rs1)?;
            let reason = c["last"]["reason"].as_str().unwrap_or_default();
            ensure!(
                c["health"] == "down"
                    && c["last"]["result"] == "down"
                    && reason.contains("connection refused")
                    && c["streak"].as_u64().is_some_and(|s| s >= u64::from(FALL)),
                "status of www {rs1} after labhttp stopped: {c}"
            );
            ensure!(
                ipvs_status(&d1, &rs1)?["health"] == "down",
                "IPVS status of {rs1}"
            );
            // Once the table changed, every request is answered, by rs2.
            let after = report.failed_between(down_us, u64::MAX);
            ensure!(
                after.is_empty(),
                "{} requests failed after rs1 went to weight 0:{}",
                after.len(),
                list(&after)
            );
            let by = report.by_server_between(down_us, u64::MAX);
            ensure!(
                by.keys().eq(["rs2"]) && by["rs2"] >= 20,
                "answers after rs1 went to weight 0: {by:?}"
            );
            let lost = report.failed_between(killed_us, down_us).len();

            // directorctl check, judged at the end: exit 1 for rs1, 0 for rs2.
            let checked = [ctl_check(&d1, &rs1)?, ctl_check(&d1, &rs2)?];

            // labhttp back on rs1: its weight again after `rise` good rounds.
            ipvs::start_http(lab, "rs1", &[80])?;
            let up_after = wait_listed(lab, "d1", &both_up(lab), FAST.deadline(RISE))?;
            let c = check_status(&d1, &rs1)?;
            ensure!(
                c["health"] == "up" && c["streak"].as_u64().is_some_and(|s| s >= u64::from(RISE)),
                "status of www {rs1} back: {c}"
            );
            let answers = http::get_n(lab, "client", vip(80), 4)?;
            let by = http::by_server(&answers);
            ensure!(
                by.len() == 2,
                "answers per real server once rs1 is back {by:?}"
            );
            say(&format!(
                "health: rs1 down {:.0} ms after labhttp stopped ({lost} requests to it failed \
                 meanwhile), up {:.0} ms after it listened again",
                down_after.as_secs_f64() * 1e3,
                up_after.as_secs_f64() * 1e3,
            ));
            let [(code, text), (code2, text2)] = checked;
            ensure!(
                code == Some(1) && text.contains("connection refused"),
                "directorctl check www {rs1} (down): exit {code:?}: {text}"
            );
            ensure!(
                code2 == Some(0) && text2.contains("UP"),
                "directorctl check www {rs2} (up): exit {code2:?}: {text2}"
            );
            say(&format!(
                "directorctl check: {text:?} (exit 1), {text2:?} (exit 0)"
            ));
            Ok(())
        },
    );
}

/// (2) `on_failure = "remove"` with a sorry server (a third `labhttp`, named `sorry`):
/// with both real servers down they leave the table and the sorry server answers; when
/// rs2 comes back the sorry server leaves and rs2 takes the traffic.
#[test]
#[ignore = "runs inside the IPVS VM, started by health_lab_in_vm"]
fn vm_remove_and_sorry_server() {
    in_vm(
        "vm_remove_and_sorry_server",
        || {
            Lab::builder()
                .node("d1")
                .node("client")
                .node("rs1")
                .node("rs2")
                .node_with_host("sorry", 23)
                .build()
        },
        |lab| {
            let procs = real_servers(lab, &["rs1", "rs2", "sorry"])?;
            let sorry = real(lab, "sorry");
            let options = [
                "on_failure = \"remove\"".to_string(),
                format!("sorry_server = \"{sorry}\""),
            ];
            let options: Vec<&str> = options.iter().map(String::as_str).collect();
            let d1 = Directord::start_with(
                lab,
                "d1",
                None,
                &setup(),
                150,
                &www(lab, FAST, "rr", &options),
            )?;
            wait_role(&d1, "active", setup().failover_deadline())?;
            wait_listed(lab, "d1", &both_up(lab), Duration::from_secs(10))?;
            let answers = http::get_n(lab, "client", vip(80), 4)?;
            ensure!(
                !http::by_server(&answers).contains_key("sorry"),
                "the sorry server answered while the real servers are up: {answers:?}"
            );

            for rs in REALS {
                lab.kill9(&procs[rs])?;
            }
            let sorry_after = wait_listed(lab, "d1", &[(sorry.clone(), 1)], FAST.deadline(FALL))?;
            let answers = http::get_n(lab, "client", vip(80), 6)?;
            let by = http::by_server(&answers);
            ensure!(
                by.keys().eq(["sorry"]),
                "with both real servers down, answers came from {by:?}"
            );
            for rs in REALS {
                let c = check_status(&d1, &real(lab, rs))?;
                ensure!(c["health"] == "down", "status of www {rs}: {c}");
            }

            ipvs::start_http(lab, "rs2", &[80])?;
            let rs2 = real(lab, "rs2");
            let back_after =
                wait_listed(lab, "d1", &[(rs2.clone(), WEIGHTS[1])], FAST.deadline(RISE))?;
            let answers = http::get_n(lab, "client", vip(80), 6)?;
            let by = http::by_server(&answers);
            ensure!(
                by.keys().eq(["rs2"]),
                "with rs2 back, answers came from {by:?}"
            );
            say(&format!(
                "sorry server: in {:.0} ms after both real servers stopped, out {:.0} ms \
                 after rs2 listened again",
                sorry_after.as_secs_f64() * 1e3,
                back_after.as_secs_f64() * 1e3
            ));
            Ok(())
        },
    );
}

/// `d1`'s table when it was sampled after its link came back.
#[derive(Debug)]
struct Sample {
    at_us: u64,
    holds_vip: bool,
    reals: Vec<(String, u32)>,
}

/// How the pair balances new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Balancing {
    /// Round robin, the IPVS sync daemon sharing the connection table.
    RoundRobin,
    /// Maglev hashing of the client's address and port (`mh-port`, `mh-fallback` so
    /// a quiesced real server's share goes to the others) with `sloppy_tcp`: a
    /// director that meets the middle of a connection it did not schedule sends it
    /// where its peer did. The sync daemon runs too.
    Consistent,
}

/// What [`switch_back`] saw.
#[derive(Debug)]
struct Drill {
    report: LoadReport,
    /// On the load's clock: d1's link back, d1 seen holding the VIP again, and the end
    /// of the switch-back window (a second later).
    up_us: u64,
    master_us: u64,
    end_us: u64,
}

impl Drill {
    /// The failed requests sent between the link's return and the window's end.
    fn switch_back_failures(&self) -> Vec<&http::Shot> {
        self.report.failed_between(self.up_us, self.end_us)
    }
}

/// The first line of `log` (a directord log) at or after `after` that contains
/// `needle`: its timestamp.
fn logged(log: &std::path::Path, after: SystemTime, needle: &str) -> Option<SystemTime> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().find_map(|line| {
        let plain = strip_ansi(line);
        let at = parse_utc(plain.split_whitespace().next()?)?;
        (at >= after && plain.contains(needle)).then_some(at)
    })
}

/// The lines of `log` (a directord log) from `after` on, without colours or debug
/// lines: for a failure report.
fn log_since(log: &std::path::Path, after: SystemTime) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .map(strip_ansi)
        .filter(|l| {
            !l.contains(" DEBUG ")
                && l.split_whitespace()
                    .next()
                    .and_then(parse_utc)
                    .is_some_and(|at| at >= after)
        })
        .map(|l| format!("  {l}\n"))
        .collect()
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ ... final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `2026-11-25T17:15:20.673092Z` (tracing's timestamps).
fn parse_utc(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<u64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    let nanos: u64 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
    Some(
        UNIX_EPOCH
            + Duration::from_secs(days * 86_400 + hh * 3600 + mm * 60 + ss)
            + Duration::from_nanos(nanos),
    )
}

/// Milliseconds from `from` to `to`, for the figures.
fn ms_since(from: SystemTime, to: Option<SystemTime>) -> String {
    to.and_then(|t| t.duration_since(from).ok())
        .map_or("?".to_string(), |d| format!("{:.0}", d.as_secs_f64() * 1e3))
}

/// The switch-back drill: d1 (priority 150, preempt) and d2 (100), VRRP at 100 ms
/// adverts, both checking rs1 and rs2 ([`SWITCH`]), a client opening a connection to
/// the VIP every 10 ms. d1's only link goes down, d2 takes over, d1's link comes back.
/// Asserts that d1's checks failed while it was cut off, that d1 did not hold the VIP
/// again before its own table listed the real servers up, and that d1 became master
/// again; prints the figures and returns what the client saw.
fn switch_back(lab: &Lab, balancing: Balancing) -> Result<Drill> {
    real_servers(lab, &REALS)?;
    let sync = format!("\n[ipvs]\nsync_interface = \"{IFACE}\"\nsync_id = 7\n");
    let service = match balancing {
        Balancing::RoundRobin => www(lab, SWITCH, "rr", &[]),
        Balancing::Consistent => {
            for d in ["d1", "d2"] {
                ipvs::sysctl(lab, d, &[("net.ipv4.vs.sloppy_tcp", "1")])?;
            }
            www(
                lab,
                SWITCH,
                "mh",
                &["scheduler_flags = [\"mh-fallback\", \"mh-port\"]"],
            )
        }
    };
    let extra = format!("{sync}{service}");
    let d1 = Directord::start_with(lab, "d1", Some("d2"), &setup(), 150, &extra)?;
    let d2 = Directord::start_with(lab, "d2", Some("d1"), &setup(), 100, &extra)?;
    let deadline = setup().failover_deadline();
    wait_role(&d1, "active", deadline)?;
    wait_role(&d2, "standby", deadline)?;
    wait::until(Duration::from_secs(5), "d1 to hold the VIP", || {
        lab.holds("d1", VIP4.into())
    })?;
    for d in ["d1", "d2"] {
        wait_listed(lab, d, &both_up(lab), Duration::from_secs(10))?;
    }
    for d in [&d1, &d2] {
        let s = d.status()?;
        ensure!(s["ready"] == true, "{} is not ready: {s}", d.node);
    }

    let load = Load::start_in(
        lab,
        "client",
        vip(80),
        Duration::from_millis(10),
        Duration::from_secs(2),
    )?;
    wait::until(Duration::from_secs(5), "a load baseline", || {
        Ok(load.snapshot().shots.len() >= 50)
    })?;

    // d1's only link goes down: it is cut from its peer, the client and the real
    // servers alike, as a director with one uplink would be.
    let cut_us = load.now_us();
    lab.link_down("d1")?;
    wait_role(&d2, "active", deadline)?;
    // d1's own checks fail meanwhile: its table has both real servers at weight 0.
    let rs = both_up(lab);
    let zero: Vec<(String, u32)> = rs.iter().map(|(a, _)| (a.clone(), 0)).collect();
    wait_listed(lab, "d1", &zero, SWITCH.deadline(FALL))?;
    for (r, _) in &rs {
        let c = check_status(&d1, r)?;
        ensure!(
            c["health"] == "down" && c["last"]["result"] == "down",
            "d1's check of {r} while its link is down: {c}"
        );
    }
    let reason = check_status(&d1, &rs[0].0)?["last"]["reason"].clone();
    // The client is served through d2.
    wait::value_every(
        POLL,
        deadline,
        "the client to be answered through d2",
        || {
            let r = load.snapshot();
            let recent = r.sent_between(load.now_us().saturating_sub(500_000), u64::MAX);
            Ok((recent.len() >= 20 && recent.iter().all(|s| s.result.is_ok())).then_some(()))
        },
    )?;

    // d1's link comes back. Its checks start over, and it must not take the VIP back
    // before its own table has the real servers again.
    let up_us = load.now_us();
    let up_wall = SystemTime::now();
    lab.link_up("d1")?;
    let mut samples = Vec::new();
    let every = Duration::from_millis(50);
    wait::value_every(every, deadline * 2, "d1 to hold the VIP again", || {
        // The VIP first, then the table: a table read after the VIP was seen held is
        // what the VIP's first packets met (or better).
        let holds_vip = lab.holds("d1", VIP4.into())?;
        let reals = listed(lab, "d1")?;
        samples.push(Sample {
            at_us: load.now_us(),
            holds_vip,
            reals,
        });
        Ok(holds_vip.then_some(()))
    })?;
    let master_us = load.now_us();
    let taken = samples.last().context("no sample")?;
    ensure!(
        taken.reals == rs,
        "d1 held the VIP again while its table listed {:?} (want {rs:?}); since link up:{}",
        taken.reals,
        samples
            .iter()
            .map(|s| format!(
                "\n  {:.3}s VIP {} table {:?}",
                s.at_us as f64 / 1e6,
                if s.holds_vip { "held" } else { "not held" },
                s.reals
            ))
            .collect::<String>()
    );
    wait_role(&d1, "active", deadline)?;
    wait_role(&d2, "standby", deadline)?;
    let end_us = master_us + 1_000_000;
    wait::value_every(
        POLL,
        Duration::from_secs(10),
        "a second of load after d1 is back",
        || Ok((load.now_us() > end_us).then_some(())),
    )?;
    let report = load.stop()?;
    let drill = Drill {
        report,
        up_us,
        master_us,
        end_us,
    };

    // When d1 saw its link, settled its checks and held the VIP, from its log.
    let log = &d1.proc().context("d1 not started")?.log;
    let link_seen = logged(log, up_wall, "link state changed");
    let settled = logged(log, up_wall, "health checks settled");
    let held = logged(log, up_wall, "VIPs held");
    let r = &drill.report;
    let failover = r.failed_between(cut_us, up_us);
    let slow: Vec<&http::Shot> = r
        .sent_between(up_us, end_us)
        .into_iter()
        .filter(|s| s.result.is_ok() && s.done_us - s.sent_us > 300_000)
        .collect();
    say(&format!(
        "switch-back ({balancing:?}): failover (link down): {} of {} requests failed; \
         switch-back: {} of {} failed, {} more took over 300 ms (slowest {:.0} ms); after \
         link up d1 saw it in {} ms, settled its checks in {} ms, held the VIP in {} ms; \
         d1's check while cut: {reason}",
        failover.len(),
        r.sent_between(cut_us, up_us).len(),
        drill.switch_back_failures().len(),
        r.sent_between(up_us, end_us).len(),
        slow.len(),
        r.slowest_between(up_us, end_us).as_secs_f64() * 1e3,
        ms_since(up_wall, link_seen),
        ms_since(up_wall, settled),
        ms_since(up_wall, held),
    ));
    say(&format!(
        "  load clock: link down {:.3}s, up {:.3}s, d1 seen holding the VIP {:.3}s; \
         failed in the failover:{}\n  failed in the switch-back:{}\n  slow in the \
         switch-back:{}",
        cut_us as f64 / 1e6,
        up_us as f64 / 1e6,
        master_us as f64 / 1e6,
        list(&failover),
        list(&drill.switch_back_failures()),
        list(&slow)
    ));
    // Ready before active, in d1's own words: its checks settled before it held the
    // VIP again.
    ensure!(
        settled.is_some() && held.is_some() && settled <= held,
        "after its link came back d1 settled its checks at {settled:?} and held the VIP at \
         {held:?}; its log since:\n{}",
        log_since(log, up_wall)
    );
    if std::env::var_os("HEALTH_LAB_LOGS").is_some() {
        say(&log_since(log, up_wall));
        say(&log_since(
            &d2.proc().context("d2 not started")?.log,
            up_wall,
        ));
    }
    let by = r.by_server_between(master_us, end_us);
    ensure!(
        by.len() == 2,
        "after d1 took the VIP back, answers came from {by:?}"
    );
    Ok(drill)
}

/// (3) The headline: d1's link goes down (d2 takes over; failures there are counted,
/// not judged) and comes back: d1's checks start over and it holds back until they have
/// run, so no request fails while it takes the VIP back. Connections are balanced by a
/// consistent hash with `sloppy_tcp`, so the few connections caught mid-handshake by
/// the VIP's move are carried on by d1 too (see the round-robin drill below).
#[test]
#[ignore = "runs inside the IPVS VM, started by health_lab_in_vm"]
fn vm_switch_back_loses_no_request() {
    in_vm("vm_switch_back_loses_no_request", two_directors, |lab| {
        let drill = switch_back(lab, Balancing::Consistent)?;
        let failed = drill.switch_back_failures();
        ensure!(
            failed.is_empty(),
            "{} of {} requests failed during the switch-back (link up at {:.3}s, d1 seen \
             holding the VIP at {:.3}s):{}",
            failed.len(),
            drill.report.sent_between(drill.up_us, drill.end_us).len(),
            drill.up_us as f64 / 1e6,
            drill.master_us as f64 / 1e6,
            list(&failed)
        );
        Ok(())
    });
}

/// (3b) The same drill with round robin and the sync daemon. Health is not what fails
/// here: no request is refused (which a table without an up real server would do) and
/// none times out. What can fail is a connection whose handshake went through d2 and
/// whose request reaches d1 after the VIP moved: d1 has no entry for it (the sync
/// daemon sends a connection only from its third packet on) and its own stack resets
/// it. Those are counted and printed, not judged.
#[test]
#[ignore = "runs inside the IPVS VM, started by health_lab_in_vm"]
fn vm_switch_back_round_robin_fails_only_mid_handshake() {
    in_vm(
        "vm_switch_back_round_robin_fails_only_mid_handshake",
        two_directors,
        |lab| {
            let drill = switch_back(lab, Balancing::RoundRobin)?;
            let failed = drill.switch_back_failures();
            let other: Vec<&http::Shot> = failed
                .iter()
                .copied()
                .filter(|s| {
                    !s.result
                        .as_ref()
                        .is_err_and(|e| e.starts_with("GET ") && e.contains("reset by peer"))
                })
                .collect();
            ensure!(
                other.is_empty(),
                "{} requests failed during the switch-back other than by a reset after \
                 connecting:{}",
                other.len(),
                list(&other)
            );
            Ok(())
        },
    );
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

#[test]
fn parses_tracing_timestamps() {
    assert_eq!(
        parse_utc("2026-11-25T17:19:48.5Z"),
        Some(UNIX_EPOCH + Duration::from_millis(1_795_627_188_500))
    );
    assert_eq!(
        parse_utc("2024-02-29T23:59:59.000001Z"),
        Some(UNIX_EPOCH + Duration::from_micros(1_709_251_199_000_001))
    );
    assert_eq!(
        strip_ansi("\x1b[2m2026-11-25T17:15:20.673092Z\x1b[0m \x1b[32m INFO\x1b[0m x"),
        "2026-11-25T17:15:20.673092Z  INFO x"
    );
}
