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

    // A key file heartbeat could not use is refused too.
    std::fs::write(&keys, "auth 2\n1 sha1 secret\n").expect("write");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let p = Config::load(&file).expect_err("auth names a missing key");
    assert!(p.to_string().contains(":10:17:"), "{p}");

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

const WWW: &str = r#"
[[service]]
name = "www"
address = "192.0.2.100:80"

[[service.real]]
address = "10.0.1.11:80"
"#;

#[test]
fn ipvs_sync_daemon_defaults_follow_the_services_and_vrrp() {
    let c = Config::parse(Path::new("x.toml"), GOOD).expect("valid");
    assert_eq!(c.ipvs.sync, None, "no service, no sync daemon");

    let c = Config::parse(Path::new("x.toml"), &format!("{GOOD}{WWW}")).expect("valid");
    let sync = c.ipvs.sync.expect("sync runs when there are services");
    assert_eq!(sync.interface, "eth0");
    assert_eq!(sync.sync_id, 51, "the VRRP router id");
    assert_eq!((sync.group, sync.port, sync.ttl), (None, None, None));

    let text = format!(
        "{GOOD}
[ipvs]
sync_interface = \"eth1\"
sync_id = 9
sync_group = \"239.1.2.3\"
sync_port = 8850
sync_ttl = 2
{WWW}"
    );
    let sync = Config::parse(Path::new("x.toml"), &text)
        .expect("valid")
        .ipvs
        .sync
        .expect("sync");
    assert_eq!(sync.interface, "eth1");
    assert_eq!(sync.sync_id, 9);
    assert_eq!(sync.group, Some("239.1.2.3".parse().unwrap()));
    assert_eq!((sync.port, sync.ttl), (Some(8850), Some(2)));

    let off = format!("{GOOD}\n[ipvs]\nsync = false\n{WWW}");
    assert_eq!(
        Config::parse(Path::new("x.toml"), &off)
            .expect("valid")
            .ipvs
            .sync,
        None
    );
    let on = format!("{GOOD}\n[ipvs]\nsync = true\n");
    assert!(
        Config::parse(Path::new("x.toml"), &on)
            .expect("valid")
            .ipvs
            .sync
            .is_some()
    );
}

#[test]
fn ipvs_section_mistakes_are_named() {
    // GOOD has 14 lines; [ipvs] starts on line 16.
    let text = format!(
        "{GOOD}
[ipvs]
sync = false
sync_interface = \"eth1\"
"
    );
    let l = lines(&problems(&text));
    assert_eq!(l.len(), 1, "{l:?}");
    assert!(
        l[0].starts_with("/etc/directord.toml:18:18: ") && l[0].contains("sync = false"),
        "{l:?}"
    );

    let text = format!(
        "{GOOD}
[ipvs]
sync_id = 300
sync_group = \"10.0.0.1\"
sync_ttl = 0
sync_daemon = \"eth0\"
{WWW}"
    );
    let l = lines(&problems(&text));
    // Unknown keys stop the section before its values are looked at.
    assert_eq!(l.len(), 1, "{l:?}");
    assert!(l[0].contains("sync_daemon"), "{l:?}");
    let text = text.replace("sync_daemon = \"eth0\"\n", "");
    let l = lines(&problems(&text));
    for (line, word) in [(17, "sync_id"), (18, "not a multicast"), (19, "sync_ttl")] {
        assert!(
            l.iter()
                .any(|x| x.starts_with(&format!("/etc/directord.toml:{line}:")) && x.contains(word)),
            "no problem at line {line} with {word:?} in {l:#?}"
        );
    }
    assert_eq!(l.len(), 3, "{l:#?}");
}

#[test]
fn scheduler_flags_and_persistence_netmask() {
    let service = |extra: &str, real: &str| {
        format!(
            "{GOOD}
[[service]]
name = \"www\"
{extra}

[[service.real]]
address = \"{real}\"
"
        )
    };
    let ok = |text: &str| -> directord::config::Service {
        Config::parse(Path::new("x.toml"), text)
            .unwrap_or_else(|p| panic!("{p}"))
            .services
            .remove(0)
    };
    let s = ok(&service(
        "address = \"192.0.2.100:80\"\nscheduler = \"mh\"\nscheduler_flags = [\"mh-port\", \"mh-fallback\"]\npersistence = \"300s\"\npersistence_netmask = \"255.255.255.0\"",
        "10.0.1.11:80",
    ));
    assert_eq!(s.scheduler_flags, ["mh-port", "mh-fallback"]);
    assert_eq!(s.persistence_netmask, Some(24));
    let s = ok(&service(
        "address = \"[2001:db8::100]:53\"\nprotocol = \"udp\"\npersistence = \"60s\"\npersistence_netmask = 64",
        "[2001:db8::21]:53",
    ));
    assert_eq!(s.persistence_netmask, Some(64));
    let s = ok(&service(
        "fwmark = 7\nscheduler = \"sh\"\nscheduler_flags = [\"sh-port\"]",
        "2001:db8::21",
    ));
    assert_eq!(s.family(), directord::config::Family::V6);

    for (extra, real, at, word) in [
        (
            "address = \"192.0.2.100:80\"\nscheduler_flags = [\"mh-port\"]",
            "10.0.1.11:80",
            "19:20",
            "belongs to the mh scheduler, not wlc",
        ),
        (
            "address = \"192.0.2.100:80\"\nscheduler = \"sh\"\nscheduler_flags = [\"sh-prt\"]",
            "10.0.1.11:80",
            "20:20",
            "unknown scheduler flag",
        ),
        (
            "address = \"192.0.2.100:80\"\npersistence_netmask = 24",
            "10.0.1.11:80",
            "19:23",
            "only with persistence",
        ),
        (
            "address = \"192.0.2.100:80\"\npersistence = \"1s\"\npersistence_netmask = \"255.0.255.0\"",
            "10.0.1.11:80",
            "20:23",
            "netmask like",
        ),
        (
            "address = \"[2001:db8::100]:80\"\npersistence = \"1s\"\npersistence_netmask = \"ffff::\"",
            "[2001:db8::21]:80",
            "20:23",
            "prefix length 1-128",
        ),
    ] {
        let l = lines(&problems(&service(extra, real)));
        assert_eq!(l.len(), 1, "{l:#?}");
        assert!(
            l[0].starts_with(&format!("/etc/directord.toml:{at}: ")) && l[0].contains(word),
            "want {at} {word:?}, got {l:#?}"
        );
    }
}

#[test]
fn fwmark_services_are_keyed_by_mark_and_family() {
    let fwm = |name: &str, real: &str| {
        format!(
            "\n[[service]]\nname = \"{name}\"\nfwmark = 7\nprotocol = \"udp\"\n\n[[service.real]]\naddress = \"{real}\"\n"
        )
    };
    // The same mark for IPv4 and IPv6 is two services, whatever the protocol says.
    let text = format!(
        "{GOOD}{}{}",
        fwm("a", "10.0.1.11"),
        fwm("b", "2001:db8::11")
    );
    Config::parse(Path::new("x.toml"), &text).unwrap_or_else(|p| panic!("{p}"));
    let text = format!(
        "{GOOD}{}{}",
        fwm("a", "10.0.1.11"),
        fwm("b", "10.0.1.12").replace("udp", "tcp")
    );
    let l = lines(&problems(&text));
    assert!(
        l.len() == 1 && l[0].contains("repeats another service"),
        "{l:#?}"
    );
    let text = format!(
        "{GOOD}{}\n[[service.real]]\naddress = \"2001:db8::12\"\n",
        fwm("a", "10.0.1.11")
    );
    let l = lines(&problems(&text));
    assert!(
        l.len() == 1 && l[0].contains("one address family"),
        "{l:#?}"
    );
}

fn with_check(check: &str) -> String {
    format!(
        "{GOOD}\n[[service]]\nname = \"www\"\naddress = \"192.0.2.100:80\"\n{check}\n\n[[service.real]]\naddress = \"10.0.1.11:80\"\n"
    )
}

#[test]
fn checks_of_every_type_become_checker_specs() {
    use checkers::spec::{Health, Method, Protocol, QueryType, Rcode};
    let spec = |check: &str| {
        let text = with_check(check);
        let c = Config::parse(Path::new("x.toml"), &text)
            .unwrap_or_else(|p| panic!("{check} is valid, got:\n{p}"));
        c.services[0].check.clone().expect("a check")
    };
    let http = spec(
        r#"check = { type = "https", path = "/health?x=1", host = "www.example.org", expect_status = ["200-204", 301], expect_body = "^ok", expect_digest = "0123456789abcdef0123456789ABCDEF", headers = { "X-Check" = "directord" }, user = "u", password = "p", ca_file = "/etc/ssl/lab-ca.pem", interval = "2s", timeout = "500ms", rise = 2, fall = 3, retry = 1, retry_delay = "200ms", initial = "up", connect_port = 8443, bind_to = "10.0.1.1" }"#,
    );
    assert_eq!(http.interval, std::time::Duration::from_secs(2));
    assert_eq!((http.rise, http.fall, http.retry), (2, 3, 1));
    assert_eq!(http.initial, Health::Up);
    assert_eq!(http.connect.port, Some(8443));
    assert_eq!(http.connect.bind, Some("10.0.1.1".parse().unwrap()));
    let Protocol::Http(h) = &http.protocol else {
        panic!("{http:?}")
    };
    assert_eq!(h.method, Method::Get);
    assert_eq!(h.expect_status, vec![200..=204, 301..=301]);
    assert_eq!(h.expect_digest.map(|d| d[15]), Some(0xef));
    assert_eq!(h.headers, vec![("X-Check".into(), "directord".into())]);
    let tls = h.tls.as_ref().expect("https has TLS");
    assert!(tls.verify, "verification is on by default");
    assert_eq!(http.protocol.name(), "https");

    let plain = spec(r#"check = { type = "http" }"#);
    assert_eq!(
        plain.initial,
        Health::Down,
        "unchecked real servers get no traffic"
    );
    assert_eq!((plain.rise, plain.fall, plain.retry), (1, 1, 0));

    let Protocol::Dns(d) = spec(
        r#"check = { type = "dns", query_name = "www.lab.test", query_type = "aaaa", expect_rcode = "nxdomain", expect_answer = "2001:db8::1" }"#,
    )
    .protocol
    else {
        panic!()
    };
    assert_eq!(
        (d.query_type, d.expect_rcode),
        (QueryType::Aaaa, Rcode::NxDomain)
    );

    let Protocol::Tcp(t) =
        spec(r#"check = { type = "tcp", send = "PING\r\n", expect = "^\\+PONG" }"#).protocol
    else {
        panic!()
    };
    assert_eq!(t.send.as_deref(), Some(&b"PING\r\n"[..]));

    let Protocol::Smtp(m) =
        spec(r#"check = { type = "smtp", helo = "lvs1.example.org", starttls = true, tls_verify = false }"#)
            .protocol
    else {
        panic!()
    };
    assert!(m.starttls.is_some_and(|t| !t.verify));

    let Protocol::External(e) =
        spec(r#"check = { type = "external", command = "/usr/lib/check 'two words'" }"#).protocol
    else {
        panic!()
    };
    assert_eq!(e.argv, vec!["/usr/lib/check", "two words"]);
    assert_eq!(
        spec(r#"check = { type = "ping" }"#).protocol,
        Protocol::Ping
    );
}

#[test]
fn check_mistakes_are_named() {
    let cases: &[(&str, &str)] = &[
        (
            r#"check = { type = "gopher" }"#,
            "unknown check type \"gopher\"",
        ),
        (
            r#"check = { type = "http", expect_body = "(" }"#,
            "not a valid regular expression",
        ),
        (
            r#"check = { type = "http", expect_digest = "abc" }"#,
            "32 hexadecimal digits",
        ),
        (
            r#"check = { type = "http", method = "HEAD", expect_body = "x" }"#,
            "HEAD request has no body",
        ),
        (
            r#"check = { type = "http", user = "u" }"#,
            "`user` needs `password`",
        ),
        (
            r#"check = { type = "http", ca_file = "/x" }"#,
            "`ca_file` does not apply to a http check",
        ),
        (
            r#"check = { type = "smtp", tls_verify = false }"#,
            "without starttls = true",
        ),
        (
            r#"check = { type = "dns", query_name = "x", query_type = "BOGUS" }"#,
            "unknown DNS query type",
        ),
        (
            r#"check = { type = "dns", query_name = "x", expect_rcode = "MAYBE" }"#,
            "unknown DNS rcode",
        ),
        (
            r#"check = { type = "tcp", initial = "sideways" }"#,
            "initial must be",
        ),
        (
            r#"check = { type = "tcp", interval = "1s", timeout = "2s" }"#,
            "not longer than the interval",
        ),
        (
            r#"check = { type = "tcp", interval = "1s", timeout = "500ms", retry = 2, retry_delay = "1s" }"#,
            "longer than the 1000 ms interval",
        ),
        (
            r#"check = { type = "external", command = "x 'open" }"#,
            "unclosed ' quote",
        ),
        (
            r#"check = { type = "external", command = [] }"#,
            "command is empty",
        ),
        (
            r#"check = { type = "https", tls_verify = false, ca_file = "/x" }"#,
            "no effect with tls_verify = false",
        ),
        (
            r#"check = { type = "ping", connect_port = 80 }"#,
            "does not apply to a ping check",
        ),
    ];
    for (check, want) in cases {
        let text = with_check(check);
        let l = lines(&problems(&text));
        assert!(
            l.iter()
                .any(|x| x.contains(want) && x.starts_with("/etc/directord.toml:19:")),
            "{check}: expected a problem on line 19 saying {want:?}, got {l:#?}"
        );
    }
}

#[test]
fn protocol_checks_with_logins_tls_and_secrets() {
    use checkers::spec::{LdapScope, Protocol, SipTransport, TlsMode};
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").expect("write");
    let load = |check: &str| {
        let text = with_check(&check.replace("PW", &pw.display().to_string()));
        let path = dir.path().join("d.toml");
        std::fs::write(&path, &text).expect("write");
        let c = Config::load(&path).unwrap_or_else(|p| panic!("{check} is valid, got:\n{p}"));
        c.services[0].check.clone().expect("a check").protocol
    };
    let Protocol::Imap(i) = load(
        r#"check = { type = "imap", tls = "starttls", user = "monitor", password_file = "PW", ca_file = "/etc/ssl/certs/ca-certificates.crt" }"#,
    ) else {
        panic!()
    };
    assert!(matches!(i.tls, TlsMode::StartTls(_)));
    let login = i.login.expect("login");
    assert_eq!(login.password.expose(), "s3cret", "read from the file");
    let shown = format!("{login:?} {}", serde_json::to_string(&login).unwrap());
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("<secret from"), "{shown}");

    let Protocol::Pop(p) = load(r#"check = { type = "pops" }"#) else {
        panic!()
    };
    assert!(matches!(p.tls, TlsMode::Implicit(_)));
    let Protocol::Ftp(f) =
        load(r#"check = { type = "ftp", retrieve = "/health.txt", expect = "^ok" }"#)
    else {
        panic!()
    };
    assert!(f.login.is_none(), "anonymous by default");
    let Protocol::Ldap(l) = load(
        r#"check = { type = "ldaps", bind_dn = "cn=monitor,dc=lab,dc=test", password = "x", base_dn = "dc=lab,dc=test", scope = "one" }"#,
    ) else {
        panic!()
    };
    assert_eq!(
        (l.scope, l.filter.as_str()),
        (LdapScope::One, "(objectClass=*)")
    );
    let Protocol::Postgres(q) = load(
        r#"check = { type = "postgres", user = "monitor", password_file = "PW", database = "app", tls = "require" }"#,
    ) else {
        panic!()
    };
    assert_eq!(q.query, "SELECT 1");
    assert!(q.tls.is_some());
    let Protocol::Radius(r) = load(
        r#"check = { type = "radius", secret_file = "PW", user = "probe", password = "pw", accept_reject = true }"#,
    ) else {
        panic!()
    };
    assert!(r.accept_reject);
    assert!(!format!("{r:?}").contains("s3cret"));
    let Protocol::Sip(s) = load(r#"check = { type = "sip", transport = "tcp" }"#) else {
        panic!()
    };
    assert_eq!(s.transport, SipTransport::Tcp);
    assert!(matches!(
        load(r#"check = { type = "nntp", group = "lab.test" }"#),
        Protocol::Nntp(_)
    ));
    assert!(matches!(
        load(r#"check = { type = "mysql", user = "monitor" }"#),
        Protocol::Mysql(_)
    ));
}

#[test]
fn protocol_check_mistakes_are_named() {
    let cases: &[(&str, &str)] = &[
        (
            r#"check = { type = "imaps", tls = "starttls" }"#,
            "implicit TLS; use type = \"imap\"",
        ),
        (
            r#"check = { type = "imap", tls = "maybe" }"#,
            "tls must be \"none\", \"implicit\" or \"starttls\"",
        ),
        (
            r#"check = { type = "imap", ca_file = "/x" }"#,
            "`ca_file` does not apply to a imap check",
        ),
        (
            r#"check = { type = "pop", user = "u" }"#,
            "`user` needs `password` or `password_file`",
        ),
        (
            r#"check = { type = "pop", user = "u", password = "a", password_file = "/b" }"#,
            "not both",
        ),
        (
            r#"check = { type = "ftp", expect = "x" }"#,
            "needs `retrieve`",
        ),
        (r#"check = { type = "ldap" }"#, "needs `base_dn`"),
        (
            r#"check = { type = "ldap", base_dn = "dc=x", filter = "uid=x" }"#,
            "in parentheses",
        ),
        (
            r#"check = { type = "ldap", base_dn = "dc=x", password = "p" }"#,
            "needs `bind_dn`",
        ),
        (r#"check = { type = "mysql" }"#, "needs `user`"),
        (
            r#"check = { type = "postgres", user = "u", tls = "starttls" }"#,
            "\"none\" or \"require\"",
        ),
        (
            r#"check = { type = "radius", user = "u", password = "p" }"#,
            "needs `secret` or `secret_file`",
        ),
        (
            r#"check = { type = "radius", secret = "s" }"#,
            "needs `user` and `password`",
        ),
        (
            r#"check = { type = "sip", transport = "sctp" }"#,
            "\"udp\" or \"tcp\"",
        ),
        (r#"check = { type = "sip", uri = "http://x" }"#, "SIP URI"),
        (
            r#"check = { type = "nntp", user = "u", password = "p" }"#,
            "`user` does not apply to a nntp check",
        ),
    ];
    for (check, want) in cases {
        let text = with_check(check);
        let l = lines(&problems(&text));
        assert!(
            l.iter()
                .any(|x| x.contains(want) && x.starts_with("/etc/directord.toml:19:")),
            "{check}: expected a problem on line 19 saying {want:?}, got {l:#?}"
        );
    }
}

#[test]
fn an_unreadable_password_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("d.toml");
    std::fs::write(
        &path,
        with_check(r#"check = { type = "imap", user = "u", password_file = "/nonexistent/pw" }"#),
    )
    .expect("write");
    let p = Config::load(&path).expect_err("refused");
    let l = lines(&p);
    assert!(
        l.iter()
            .any(|x| x.contains(":19:") && x.contains("cannot read password_file /nonexistent/pw")),
        "{l:#?}"
    );
}
