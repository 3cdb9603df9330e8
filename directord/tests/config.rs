//! The config file as an operator meets it: samples validate, mistakes are named
//! with file:line:column, all at once, and `--check-config` exits 0 or 78.

use std::path::{Path, PathBuf};
use std::process::Command;

use directord::config::{Config, Problems};

fn etc() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc")
}

fn samples() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![etc()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("etc/ is readable") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "toml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn problems(text: &str) -> Problems {
    Config::parse(Path::new("/etc/directord.toml"), text).expect_err("must be refused")
}

fn lines(p: &Problems) -> Vec<String> {
    p.0.iter().map(|x| x.to_string()).collect()
}

const GOOD: &str = r#"[node]
name = "lvs1"

[failover]
protocol = "vrrp"
interface = "eth0"
priority = 150

[failover.vrrp]
router_id = 51
advert_interval = "100ms"

[[vip]]
address = "192.0.2.100/24"
"#;

#[test]
fn every_sample_in_etc_is_valid() {
    let samples = samples();
    assert!(samples.len() >= 4, "samples found: {samples:?}");
    for s in samples {
        // Pure validation: the heartbeat sample names a key file of the target machine.
        let text = std::fs::read_to_string(&s).expect("readable");
        if let Err(p) = Config::parse(&s, &text) {
            panic!("{} is invalid:\n{p}", s.display());
        }
    }
}

#[test]
fn minimal_file_gets_defaults() {
    let c = Config::parse(Path::new("x.toml"), GOOD).expect("valid");
    assert_eq!(c.failover.priority, 150);
    assert!(c.failover.preempt);
    assert_eq!(c.vips[0].interface, "eth0");
    assert_eq!(c.vips[0].prefix_len, 24);
    assert_eq!(c.announce.count, 5);
    assert_eq!(c.control.socket, Path::new("/run/directord/directord.sock"));
}

#[test]
fn unknown_key_is_named_with_line_and_column() {
    let text = GOOD.replace("priority = 150", "priority = 150\npriorty = 10");
    let p = problems(&text);
    let l = lines(&p);
    assert_eq!(l.len(), 1, "{l:?}");
    assert!(l[0].starts_with("/etc/directord.toml:8:1: "), "{}", l[0]);
    assert!(l[0].contains("priorty"), "{}", l[0]);
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"[node]
name = "lvs1"
colour = "blue"

[failover]
protocol = "vrrp"
interface = "eth0"
priority = 300

[failover.vrrp]
router_id = 51
advert_interval = "15ms"

[[vip]]
address = "192.0.2.300/24"

[[vip]]
address = "192.0.2.100/24"
interfce = "eth1"

[bogus]
x = 1
"#;
    let p = problems(text);
    let l = lines(&p);
    let at = |line: usize, col: usize, word: &str| {
        assert!(
            l.iter().any(
                |x| x.starts_with(&format!("/etc/directord.toml:{line}:{col}: "))
                    && x.contains(word)
            ),
            "no problem at {line}:{col} mentioning {word:?} in {l:#?}"
        );
    };
    at(3, 1, "colour");
    at(8, 12, "priority");
    at(12, 19, "multiple of 10ms");
    at(15, 11, "192.0.2.300");
    at(19, 1, "interfce");
    at(21, 2, "bogus");
    assert_eq!(l.len(), 6, "{l:#?}");
}

#[test]
fn syntax_errors_name_the_place() {
    let p = problems("[node]\nname = \"lvs1\n");
    assert!(p.0[0].line == 2, "{p}");
    assert!(p.to_string().contains("TOML syntax"), "{p}");
}

#[test]
fn version_two_is_whole_seconds_and_ipv4() {
    let text = GOOD.replace("router_id = 51", "router_id = 51\nversion = 2");
    let l = lines(&problems(&text));
    assert!(l[0].contains("whole seconds"), "{l:?}");
    let text = GOOD
        .replace("router_id = 51", "router_id = 51\nversion = 2")
        .replace("100ms", "1s")
        .replace("192.0.2.100/24", "2001:db8::100/64");
    let l = lines(&problems(&text));
    assert!(l.iter().any(|x| x.contains("IPv4 only")), "{l:?}");
}

#[test]
fn missing_sections_and_wrong_types() {
    let l = lines(&problems("[node]\nname = \"x\"\n"));
    assert!(
        l.iter().any(|x| x.contains("missing section [failover]")),
        "{l:?}"
    );
    assert!(l.iter().any(|x| x.contains("[[vip]]")), "{l:?}");
    let text = GOOD.replace("priority = 150", "priority = \"high\"");
    let l = lines(&problems(&text));
    assert!(l[0].starts_with("/etc/directord.toml:7:12: "), "{l:?}");
    let text = GOOD.replace("[[vip]]", "[vip]");
    let l = lines(&problems(&text));
    assert!(l.iter().any(|x| x.contains("[[vip]]")), "{l:?}");
}

#[test]
fn services_are_validated() {
    let text = format!(
        "{GOOD}
[[service]]
name = \"www\"
address = \"192.0.2.100:80\"
scheduler = \"fastest\"
forward = \"teleport\"
check = {{ type = \"http\", path = \"health\", query_name = \"x\" }}

[[service.real]]
address = \"10.0.1.11\"
weight = 70000
"
    );
    let l = lines(&problems(&text));
    for word in [
        "fastest",
        "teleport",
        "start with '/'",
        "query_name",
        "10.0.1.11",
        "weight",
    ] {
        assert!(l.iter().any(|x| x.contains(word)), "{word:?} not in {l:#?}");
    }
}

#[test]
fn unknown_failover_protocol() {
    let text = GOOD.replace("\"vrrp\"", "\"carp\"");
    let l = lines(&problems(&text));
    assert!(
        l[0].contains("carp") && l[0].starts_with("/etc/directord.toml:5:12"),
        "{l:?}"
    );
}

#[test]
fn check_config_exits_0_or_78() {
    let bin = env!("CARGO_BIN_EXE_directord");
    let sample = etc().join("directord.toml");
    let ok = Command::new(bin)
        .arg("--check-config")
        .arg(&sample)
        .output()
        .expect("runs");
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        GOOD.replace("router_id = 51", "router_id = 0")
            .replace("name = \"lvs1\"", "name = \"lvs1\"\nrole = 1"),
    )
    .expect("write");
    let out = Command::new(bin)
        .arg("--check-config")
        .arg(&bad)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:3:1: ", bad.display())), "{err}");
    assert!(err.contains(&format!("{}:11:13: ", bad.display())), "{err}");

    let missing = Command::new(bin)
        .arg("--check-config")
        .arg(dir.path().join("nope.toml"))
        .output()
        .expect("runs");
    assert_eq!(missing.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
}

const HEARTBEAT: &str = r#"[node]
name = "lvs1"

[failover]
protocol = "heartbeat"
interface = "eth0"

[failover.heartbeat]
peer = "lvs2"
auth_key_file = "KEYS"
keepalive = "100ms"
deadtime = "300ms"
media = [ { unicast = "192.0.2.12", interface = "eth1" }, { multicast = "239.0.0.94" } ]

[[vip]]
address = "192.0.2.100/24"
"#;

#[test]
fn heartbeat_section_and_its_key_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("authkeys");
    std::fs::write(&keys, "auth 1\n1 sha1 secret\n").expect("write");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let file = dir.path().join("d.toml");
    std::fs::write(
        &file,
        HEARTBEAT.replace("KEYS", &keys.display().to_string()),
    )
    .expect("w");
    let c = Config::load(&file).expect("valid");
    let directord::config::Protocol::Heartbeat(h) = &c.failover.protocol else {
        panic!("not heartbeat");
    };
    assert_eq!(h.port, 694);
    assert_eq!(h.warntime, std::time::Duration::from_millis(200));
    assert_eq!(h.initdead, std::time::Duration::from_millis(600));
    assert_eq!(h.media.len(), 2);
    assert!(h.auto_failback);

    // A key file others can read is refused, naming the file and its mode.
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let p = Config::load(&file).expect_err("world-readable keys");
    assert!(
        p.to_string().contains("0644") && p.to_string().contains(":10:17:"),
        "{p}"
    );

    // Timers that make no sense, and a medium that is two things at once.
    let text = HEARTBEAT
        .replace("KEYS", "/k")
        .replace("deadtime = \"300ms\"", "deadtime = \"150ms\"")
        .replace(
            "{ multicast = \"239.0.0.94\" }",
            "{ multicast = \"239.0.0.94\", broadcast = true }",
        );
    let l = lines(&problems(&text));
    assert!(
        l.iter().any(|x| x.contains("twice the keepalive")),
        "{l:#?}"
    );
    assert!(l.iter().any(|x| x.contains("exactly one of")), "{l:#?}");
}
