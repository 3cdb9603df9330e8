//! The control socket against a running directord (as root, in a network namespace
//! of its own): status, operator moves, bad requests, reloads good and bad, SIGTERM.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

mod common;

use common::{Node, need_root, wait};

fn start(tag: &str) -> Node {
    start_with(tag, "")
}

/// `extra`: appended to the shared config.
fn start_with(tag: &str, extra: &str) -> Node {
    Node::solo("dctl", tag, extra)
}

#[test]
fn status_takeover_standby_and_sigterm() {
    need_root!();
    let mut node = start("a");
    // Alone on its link: it becomes master after the master-down interval.
    node.wait_role("active");
    wait(Duration::from_secs(5), "VIP added", || {
        node.holds("198.51.100.10")
    });
    let s = node.status();
    assert_eq!(s["node"], "solo");
    assert_eq!(s["state"], "master");
    assert_eq!(s["vips"][0]["held"], true);
    assert!(
        s["last_transition"]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );

    let table = node.ctl(&["status"]);
    assert!(table.status.success());
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("ACTIVE") && table.contains("198.51.100.10/24"),
        "{table}"
    );

    let out = node.ctl(&["standby"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!node.holds("198.51.100.10"), "standby must drop the VIP");
    let s = node.status();
    assert_eq!(s["override"], "standby");
    // Alone, a standby-held node still takes over once the master-down timer fires
    // (nobody else advertises) — the site must not go dark.
    node.wait_role("active");

    let out = node.ctl(&["takeover"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = node.status();
    assert_eq!(s["override"], "takeover");
    // A takeover claims at 255 for three adverts, then settles at 254.
    wait(Duration::from_secs(5), "takeover settles at 254", || {
        node.status()["effective_priority"] == 254
    });
    assert!(node.holds("198.51.100.10"));

    let child = node.child.as_mut().expect("running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let code = child.wait().expect("exits");
    node.child = None;
    assert!(code.success(), "exit {code:?}\n{}", node.log());
    assert!(!node.holds("198.51.100.10"), "SIGTERM must remove the VIP");
    assert!(!node.socket().exists(), "socket file removed on exit");
}

#[test]
fn bad_requests_get_errors_and_change_nothing() {
    need_root!();
    let node = start("b");
    node.wait_role("active");
    let before = node.status();
    for bad in [
        &b"status\n"[..],
        b"{}\n",
        b"{\"command\":\"explode\"}\n",
        b"{\"command\":\"takeover\",\"force\":true}\n",
        b"\xff\xfe\n",
        b"\n",
    ] {
        let r = node.call_raw(bad);
        assert_eq!(r["ok"], false, "{:?} → {r}", String::from_utf8_lossy(bad));
        assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
    }
    let mut long = vec![b'x'; 70 * 1024];
    long.push(b'\n');
    let r = node.call_raw(&long);
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap_or("").contains("longer"), "{r}");

    // Several requests on one connection, the bad one in the middle.
    let mut s = UnixStream::connect(node.socket()).expect("connect");
    s.write_all(b"{\"command\":\"status\"}\nnope\n{\"command\":\"status\"}\n")
        .expect("write");
    let mut lines = BufReader::new(s).lines();
    let oks: Vec<bool> = (0..3)
        .map(|_| {
            let l = lines.next().expect("line").expect("read");
            serde_json::from_str::<Value>(&l).expect("json")["ok"] == true
        })
        .collect();
    assert_eq!(oks, [true, false, true]);

    let after = node.status();
    assert_eq!(before["role"], after["role"]);
    assert_eq!(before["override"], after["override"]);
    assert_eq!(after["vips"][0]["held"], true);
}

#[test]
fn reload_applies_a_valid_file_and_keeps_running_on_a_bad_one() {
    need_root!();
    let node = start("c");
    node.wait_role("active");
    wait(Duration::from_secs(5), "VIP", || {
        node.holds("198.51.100.10")
    });

    // A broken file: refused with file:line:column, nothing changes.
    let good = node.config_text();
    std::fs::write(
        node.config(),
        good.replace("count = 2", "count = 2\ncolor = 1"),
    )
    .expect("w");
    let out = node.ctl(&["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:15:1:", node.config().display())),
        "{err}"
    );
    assert!(node.holds("198.51.100.10"));

    // SIGHUP with the broken file: still running, still holding.
    let pid = node.status()["pid"].as_u64().expect("pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("HUP");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(node.status()["role"], "active");

    // A valid change: a second VIP appears, the first stays.
    let two = format!("{good}\n[[vip]]\naddress = \"198.51.100.11/24\"\n");
    std::fs::write(node.config(), two).expect("w");
    let out = node.ctl(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(node.holds("198.51.100.11") && node.holds("198.51.100.10"));

    // A change that needs a restart is refused whole.
    std::fs::write(
        node.config(),
        good.replace("priority = 100", "priority = 90"),
    )
    .expect("w");
    let out = node.ctl(&["reload"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("[failover]"));
    assert!(
        node.holds("198.51.100.11"),
        "refused reload changed nothing"
    );
    assert_eq!(node.status()["priority"], 100);
}

#[test]
fn socket_is_for_root_only() {
    need_root!();
    let node = start("d");
    let mode = std::fs::metadata(node.socket()).map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    assert_eq!(mode.ok(), Some(0o660));
    // The temp dir must be traversable for the test user to reach the socket at all.
    std::fs::set_permissions(
        node.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_directorctl"))
        .arg("--socket")
        .arg(node.socket())
        .arg("status")
        .output()
        .expect("setpriv");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach directord"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const SERVICES: &str = r#"
[[service]]
name = "www"
address = "198.51.100.10:80"
forward = "nat"

[[service.real]]
address = "10.0.1.11:8080"
weight = 100
"#;

/// This machine's kernel may have no IPVS. A director with services must then
/// still fail over and hold its VIPs, say once that IPVS is missing, show it in
/// status, and refuse a drain with that reason. (With IPVS, the table is there.)
#[test]
fn services_without_ipvs_still_fail_over() {
    need_root!();
    let node = start_with("e", SERVICES);
    node.wait_role("active");
    wait(Duration::from_secs(5), "VIP", || {
        node.holds("198.51.100.10")
    });
    let ipvs = node.status()["ipvs"].clone();
    let www = &ipvs["services"][0];
    assert_eq!(www["name"], "www", "{ipvs}");
    assert_eq!(www["reals"][0]["configured_weight"], 100, "{ipvs}");
    match ipvs["state"].as_str() {
        Some("unavailable") => {
            assert!(
                ipvs["error"].as_str().is_some_and(|e| e.contains("IPVS")),
                "{ipvs}"
            );
            assert_eq!(www["present"], false);
            let out = node.ctl(&["drain", "www", "10.0.1.11:8080"]);
            assert!(!out.status.success());
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("IPVS is unavailable"), "{err}");
            // A reload is fine, and the warning is not repeated.
            let out = node.ctl(&["reload"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("IPVS unavailable"),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
            assert_eq!(
                node.log().matches("IPVS is unavailable").count(),
                1,
                "{}",
                node.log()
            );
            let table = node.ctl(&["status"]);
            let table = String::from_utf8_lossy(&table.stdout);
            assert!(table.contains("ipvs        unavailable"), "{table}");
        }
        Some("ok") => {
            assert_eq!(www["present"], true, "{ipvs}");
            assert_eq!(www["reals"][0]["weight"], 100, "{ipvs}");
        }
        other => panic!("ipvs state {other:?}: {ipvs}"),
    }
    // Unknown names are explained whatever the kernel.
    let out = node.ctl(&["enable", "nosuch", "10.0.1.11:8080"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no service named `nosuch` (services: www)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = node.ctl(&["drain", "www", "10.0.1.12:8080"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no real server `10.0.1.12:8080`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Health checks as the operator sees them, whatever the kernel: `status` shows each
/// checked real server's health, last result, reason and latency; `directorctl check`
/// runs one check now (exit 0 passed, 1 failed); a failing real server goes down
/// after `fall` rounds and comes back after `rise`; `ready` turns true once every
/// check has had a round.
#[test]
fn checks_show_in_status_and_run_on_demand() {
    need_root!();
    let flag = tempfile::tempdir().expect("tempdir");
    let up = flag.path().join("up");
    std::fs::write(&up, "").expect("flag");
    let extra = format!(
        r#"
[[service]]
name = "app"
address = "198.51.100.10:80"
forward = "nat"
check = {{ type = "external", command = ["/bin/sh", "-c", "test -e {}"], interval = "200ms", timeout = "150ms", rise = 2, fall = 2 }}

[[service.real]]
address = "10.0.1.11:8080"

[[service.real]]
address = "10.0.1.12:8080"
"#,
        up.display()
    );
    let node = start_with("h", &extra);
    let checks = |node: &Node| node.status()["checks"].clone();
    wait(Duration::from_secs(5), "both real servers up", || {
        let c = checks(&node);
        c.as_array()
            .is_some_and(|a| a.len() == 2 && a.iter().all(|x| x["health"] == "up"))
    });
    let status = node.status();
    assert_eq!(status["ready"], true, "{status}");
    let first = &status["checks"][0];
    assert_eq!(first["service"], "app", "{first}");
    assert_eq!(first["real"], "10.0.1.11:8080", "{first}");
    assert_eq!(first["last"]["result"], "up", "{first}");
    assert!(first["last"]["latency_ms"].as_f64().is_some(), "{first}");
    let real = &status["ipvs"]["services"][0]["reals"][0];
    assert_eq!(real["health"], "up", "{real}");

    let out = node.ctl(&["check", "app", "10.0.1.11:8080"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("app 10.0.1.11:8080: external check UP"),
        "{text}"
    );

    // The real server fails: down after `fall` rounds, with the reason.
    std::fs::remove_file(&up).expect("unflag");
    let out = node.ctl(&["check", "app", "10.0.1.12:8080"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("DOWN: exit status 1"), "{text}");
    wait(Duration::from_secs(5), "both real servers down", || {
        let c = checks(&node);
        c.as_array()
            .is_some_and(|a| a.iter().all(|x| x["health"] == "down"))
    });
    let c = checks(&node);
    assert!(
        c[0]["last"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("exit status 1")),
        "{c}"
    );
    let table = String::from_utf8_lossy(&node.ctl(&["status"]).stdout).into_owned();
    assert!(
        table.contains("checks      app 10.0.1.11:8080 DOWN"),
        "{table}"
    );
    assert!(node.log().contains("real server down"), "{}", node.log());

    // And back after `rise` good rounds.
    std::fs::write(&up, "").expect("flag");
    wait(Duration::from_secs(5), "both real servers up again", || {
        let c = checks(&node);
        c.as_array()
            .is_some_and(|a| a.iter().all(|x| x["health"] == "up"))
    });

    // Unknown names are explained.
    let out = node.ctl(&["check", "app", "10.9.9.9:1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no real server `10.9.9.9:1`"), "{err}");
    let out = node.ctl(&["check", "nosuch", "10.0.1.11:8080"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no service named `nosuch`"), "{err}");
}

/// `reload --dry-run` says what a file would change and changes nothing; `reload`
/// then applies exactly that (one weight), keeping the checks' up/down state; an
/// invalid file is refused with its place and the running config stays.
#[test]
fn reload_dry_run_then_apply_keeps_health() {
    need_root!();
    let extra = r#"
[[service]]
name = "app"
address = "198.51.100.10:80"
forward = "nat"
check = { type = "external", command = ["/bin/true"], interval = "100ms", timeout = "80ms", rise = 3, fall = 3 }

[[service.real]]
address = "10.0.1.11:8080"
weight = 100

[[service.real]]
address = "10.0.1.12:8080"
weight = 100
"#;
    let node = start_with("r", extra);
    let checks = |node: &Node| node.status()["checks"].clone();
    wait(Duration::from_secs(5), "real servers up", || {
        checks(&node)
            .as_array()
            .is_some_and(|a| a.len() == 2 && a.iter().all(|x| x["health"] == "up"))
    });
    let weights = |node: &Node| -> Vec<u64> {
        node.status()["ipvs"]["services"][0]["reals"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["configured_weight"].as_u64())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(weights(&node), vec![100, 100]);

    let good = node.config_text();
    let changed = good.replacen("weight = 100", "weight = 50", 1);
    std::fs::write(node.config(), &changed).expect("w");
    let out = node.ctl(&["reload", "--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("service app: real server 10.0.1.11:8080 weight 100 -> 50"),
        "{text}"
    );
    assert_eq!(text.matches("\n  ").count(), 1, "one change only: {text}");
    assert_eq!(weights(&node), vec![100, 100], "a dry run applies nothing");

    let streak = checks(&node)[0]["streak"].as_u64().expect("streak");
    let out = node.ctl(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(weights(&node), vec![50, 100]);
    let after = checks(&node);
    assert_eq!(after[0]["health"], "up", "{after}");
    assert!(
        after[0]["streak"].as_u64().expect("streak") >= streak,
        "an unchanged check keeps its state: {after}"
    );
    assert!(
        node.log().contains("weight 100 -> 50"),
        "the reload is logged"
    );

    // A dry run of an invalid file names the place; nothing changes.
    std::fs::write(node.config(), changed.replace("weight = 50", "weight = -5")).expect("w");
    for args in [&["reload", "--dry-run"][..], &["reload"][..]] {
        let out = node.ctl(args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{}:", node.config().display())) && err.contains("weight"),
            "{err}"
        );
    }
    assert_eq!(weights(&node), vec![50, 100]);
    std::fs::write(node.config(), &changed).expect("w");
    let out = node.ctl(&["reload", "--dry-run"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("would change nothing"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
