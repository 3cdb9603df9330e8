//! directord under systemd, as systemd sees it: the sd_notify messages of a running
//! director (as root, in a network namespace of its own) on a socket the test binds
//! in systemd's place, where its logs go, and the shipped unit file checked by
//! `systemd-analyze verify`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

mod common;

use common::need_root;

/// The shared namespace and directord, whose `NOTIFY_SOCKET` is a datagram socket
/// this test reads.
struct Node {
    node: common::Node,
    notify: UnixDatagram,
}

impl std::ops::Deref for Node {
    type Target = common::Node;
    fn deref(&self) -> &common::Node {
        &self.node
    }
}

impl std::ops::DerefMut for Node {
    fn deref_mut(&mut self) -> &mut common::Node {
        &mut self.node
    }
}

impl Node {
    /// `env`: extra environment for directord (`WATCHDOG_USEC`, `JOURNAL_STREAM`).
    fn start(tag: &str, env: &[(&str, &str)]) -> Node {
        let mut node = common::Node::new("dsd", tag);
        let notify = UnixDatagram::bind(node.dir.path().join("notify")).expect("bind notify");
        std::fs::write(node.config(), node.solo_config()).expect("write config");
        let mut cmd = node.command("info");
        // `JOURNAL_STREAM=LOG`: the log file's device:inode, as systemd sets it for
        // a stderr connected to the journal.
        let meta = std::fs::metadata(node.log_path()).expect("log metadata");
        let log_stream = format!("{}:{}", meta.dev(), meta.ino());
        let env: Vec<(&str, &str)> = env
            .iter()
            .map(|&(k, v)| (k, if v == "LOG" { log_stream.as_str() } else { v }))
            .collect();
        cmd.env("NOTIFY_SOCKET", node.dir.path().join("notify"))
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("JOURNAL_STREAM")
            .envs(env);
        node.spawn(cmd);
        Node { node, notify }
    }

    /// The next notify message, or `None` once `limit` has passed.
    fn recv(&self, limit: Duration) -> Option<String> {
        self.notify
            .set_read_timeout(Some(limit.max(Duration::from_millis(1))))
            .expect("timeout");
        let mut buf = [0u8; 4096];
        loop {
            match self.notify.recv(&mut buf) {
                Ok(n) => return Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            }
        }
    }

    /// Reads messages until one satisfies `want`; every message read is returned.
    fn expect(&self, what: &str, limit: Duration, want: impl Fn(&str) -> bool) -> Vec<String> {
        let start = Instant::now();
        let mut seen = Vec::new();
        loop {
            let left = limit.saturating_sub(start.elapsed());
            match self.recv(left) {
                Some(m) => {
                    let done = want(&m);
                    seen.push(m);
                    if done {
                        return seen;
                    }
                }
                None => panic!("no {what} within {limit:?}; got {seen:?}"),
            }
        }
    }

    /// The control socket answers a status request.
    fn answers(&self) -> bool {
        let Ok(mut s) = UnixStream::connect(self.socket()) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        if s.write_all(b"{\"command\":\"status\"}\n").is_err() {
            return false;
        }
        let mut answer = String::new();
        BufReader::new(s).read_line(&mut answer).is_ok() && answer.contains("\"ok\":true")
    }

    fn signal(&self, signal: Signal) {
        let child = self.child.as_ref().expect("running");
        kill(Pid::from_raw(child.id() as i32), signal).expect("signal");
    }
}

fn is(line: &'static str) -> impl Fn(&str) -> bool {
    move |m| m.lines().any(|l| l == line)
}

#[test]
fn ready_after_the_control_socket_then_watchdog_and_status() {
    need_root!();
    let node = Node::start("w", &[("WATCHDOG_USEC", "200000")]);
    let before = node.expect("READY=1", Duration::from_secs(10), is("READY=1"));
    // Nothing claims readiness twice or early.
    assert_eq!(
        before.iter().filter(|m| is("READY=1")(m)).count(),
        1,
        "{before:?}"
    );
    assert!(
        node.answers(),
        "READY=1 came before the control socket answered"
    );

    // At 200 ms the watchdog wants a ping at least every 100 ms.
    let start = Instant::now();
    let mut pings = 0;
    let mut statuses = Vec::new();
    while start.elapsed() < Duration::from_secs(1) {
        match node.recv(Duration::from_secs(1).saturating_sub(start.elapsed())) {
            Some(m) if is("WATCHDOG=1")(&m) => pings += 1,
            Some(m) => statuses.extend(m.strip_prefix("STATUS=").map(str::to_string)),
            // Nothing within the time left: the loop's own bound ends it.
            None => continue,
        }
    }
    assert!(pings >= 3, "{pings} WATCHDOG=1 in 1 s");

    // Alone on its link it becomes active and takes the VIP: `systemctl status`
    // says so (the line is sent when it changes).
    let active = |s: &str| s.starts_with("active") && s.contains("1/1 VIPs held");
    if !statuses.iter().any(|s| active(s)) {
        let seen = node.expect(
            "STATUS= naming the active role",
            Duration::from_secs(10),
            |m| m.strip_prefix("STATUS=").is_some_and(active),
        );
        statuses.extend(
            seen.iter()
                .filter_map(|m| m.strip_prefix("STATUS=").map(str::to_string)),
        );
    }
    assert!(
        statuses.iter().all(|s| s.contains("VIPs held")),
        "{statuses:?}"
    );
}

#[test]
fn sighup_reloads_and_sigterm_stops() {
    need_root!();
    let mut node = Node::start("r", &[]);
    node.expect("READY=1", Duration::from_secs(10), is("READY=1"));

    node.signal(Signal::SIGHUP);
    let seen = node.expect("RELOADING=1", Duration::from_secs(5), is("RELOADING=1"));
    let reloading = seen.last().expect("message");
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"))
        .parse()
        .expect("MONOTONIC_USEC is a number");
    assert!(usec > 0);
    node.expect(
        "READY=1 after the reload",
        Duration::from_secs(10),
        is("READY=1"),
    );
    assert!(node.answers(), "still running after the reload");

    node.signal(Signal::SIGTERM);
    node.expect("STOPPING=1", Duration::from_secs(5), is("STOPPING=1"));
    let mut child = node.child.take().expect("running");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "directord did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn logs_go_to_stderr_outside_the_journal() {
    need_root!();
    // A JOURNAL_STREAM that is not stderr (inherited by a child whose stderr was
    // redirected) must not divert the logs either.
    for (tag, env) in [("l", &[][..]), ("j", &[("JOURNAL_STREAM", "1:1")][..])] {
        let node = Node::start(tag, env);
        node.expect("READY=1", Duration::from_secs(10), is("READY=1"));
        let log = node.log();
        assert!(
            log.contains("directord starting") && log.contains("node=solo"),
            "{env:?}: {log}"
        );
    }
}

#[test]
fn stderr_that_is_the_journal_without_journald_falls_back_to_stderr() {
    need_root!();
    if Path::new("/run/systemd/journal/socket").exists() {
        eprintln!("skipped: journald runs here (this test needs it absent)");
        return;
    }
    // stderr is what JOURNAL_STREAM names, but no journald listens: directord says
    // so and logs to stderr.
    let node = Node::start("f", &[("JOURNAL_STREAM", "LOG")]);
    node.expect("READY=1", Duration::from_secs(10), is("READY=1"));
    let log = node.log();
    assert!(
        log.contains("cannot log to the journal") && log.contains("directord starting"),
        "{log}"
    );
}

/// The shipped unit with its binaries pointed at the ones just built
/// (`systemd-analyze verify` checks that each Exec*= program exists).
fn unit_for_verify(dir: &Path) -> PathBuf {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc/directord.service");
    let text = std::fs::read_to_string(&unit).expect("etc/directord.service");
    for binary in ["/usr/sbin/directord", "/usr/bin/directorctl"] {
        assert!(text.contains(binary), "the unit runs {binary}");
    }
    let text = text
        .replace("/usr/sbin/directord", env!("CARGO_BIN_EXE_directord"))
        .replace("/usr/bin/directorctl", env!("CARGO_BIN_EXE_directorctl"));
    let path = dir.join("directord.service");
    std::fs::write(&path, text).expect("write unit");
    path
}

fn systemd_analyze(args: &[&str]) -> Output {
    match Command::new("systemd-analyze")
        .args(args)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!("systemd-analyze: {e} (apt-get install systemd)"),
    }
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_for_verify(dir.path());
    let unit = unit.to_str().expect("utf-8 path");
    // --man=no: the man pages come with the package, not with this tree.
    let out = systemd_analyze(&["verify", "--man=no", unit]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    // A misspelt or unknown setting is only a warning: none is allowed.
    assert!(stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");

    let text = std::fs::read_to_string(unit).expect("unit");
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=",
        "ExecReload=",
        "Restart=on-failure",
        "CapabilityBoundingSet=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(line)),
            "the unit lacks {line}"
        );
    }
}
