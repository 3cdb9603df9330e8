//! Alerts as an operator sees them: mail in a real postfix's mailbox (STARTTLS,
//! verified against a test CA) for a failover and a real server going down, a
//! flapping real server summed up in one digest, and notify scripts with
//! keepalived's arguments, killed at their timeout.
//!
//! The namespace tests (as root) run directord alone on a veth in a network
//! namespace of its own, with a private postfix (Debian package `postfix`) started
//! in the same namespace on 127.0.0.1: its config, queue and a Maildir for
//! ops@lab.test (a virtual domain) live in the test's tempdir.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use directord::events::Event;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

const SMTP_PORT: u16 = 2525;

mod common;

use common::{need_root, wait};

fn program(path: &str, package: &str) -> PathBuf {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install the Debian package `{package}` (apt-get install {package})"
    );
    PathBuf::from(path)
}

fn write_executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A test CA (`ca.pem`) and a certificate for 127.0.0.1 (`mx.crt`, `mx.key`).
fn pki(dir: &Path) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "directord alerts test CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write CA");
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "mx.lab.test".to_string()])
            .expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, "mx.lab.test");
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca).expect("sign");
    std::fs::write(dir.join("mx.crt"), cert.pem()).expect("write cert");
    std::fs::write(dir.join("mx.key"), key.serialize_pem()).expect("write key");
}

/// A postfix instance of its own inside the namespace: smtpd on
/// 127.0.0.1:SMTP_PORT offering STARTTLS, delivering ops@lab.test to a Maildir.
struct Postfix {
    master: Child,
    log: PathBuf,
    maildir: PathBuf,
}

impl Postfix {
    fn start(ns: &str, dir: &Path) -> Postfix {
        let postfix = program("/usr/sbin/postfix", "postfix");
        let master = program("/usr/lib/postfix/sbin/master", "postfix");
        let user = nix::unistd::User::from_name("postfix")
            .expect("look up postfix")
            .expect("no postfix user: install the Debian package `postfix`");
        let dir = dir.join("postfix");
        let (etc, queue, data, mail) = (
            dir.join("etc"),
            dir.join("queue"),
            dir.join("data"),
            dir.join("mail"),
        );
        for d in [&etc, &queue, &data, &mail] {
            std::fs::create_dir_all(d).expect("create a postfix directory");
        }
        for d in [&data, &mail] {
            nix::unistd::chown(d.as_path(), Some(user.uid), Some(user.gid)).expect("chown");
        }
        pki(&etc);
        std::fs::write(
            etc.join("main.cf"),
            format!(
                "compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = /dev/stdout
myhostname = mx.lab.test
mydestination =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
virtual_mailbox_domains = lab.test
virtual_mailbox_base = {mail}
virtual_mailbox_maps = inline:{{ ops@lab.test=ops/ }}
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1
smtpd_tls_cert_file = {etc}/mx.crt
smtpd_tls_key_file = {etc}/mx.key
smtpd_tls_security_level = may
smtpd_tls_loglevel = 1
",
                queue = queue.display(),
                data = data.display(),
                mail = mail.display(),
                etc = etc.display(),
                uid = user.uid,
                gid = user.gid,
            ),
        )
        .expect("main.cf");
        // What a delivery to a virtual mailbox needs; nothing chrooted.
        std::fs::write(
            etc.join("master.cf"),
            format!(
                "127.0.0.1:{SMTP_PORT} inet n - n - - smtpd
postlog unix-dgram n - n - 1 postlogd
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
virtual unix - n n - - virtual
"
            ),
        )
        .expect("master.cf");
        // The postfix user must reach its queue.
        for d in [dir.as_path(), dir.parent().expect("tempdir")] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let check = Command::new(&postfix)
            .arg("-c")
            .arg(&etc)
            .arg("check")
            .output()
            .expect("postfix check");
        assert!(
            check.status.success(),
            "postfix check: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let log = dir.join("postfix.log");
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(master)
            .arg("-c")
            .arg(&etc)
            .args(["-d", "-s"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("start postfix");
        let mut p = Postfix {
            master: child,
            log,
            maildir: mail.join("ops"),
        };
        wait(Duration::from_secs(10), "postfix's master", || {
            if let Ok(Some(s)) = p.master.try_wait() {
                panic!("postfix exited ({s}):\n{}", p.log());
            }
            p.log().contains("daemon started")
        });
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The delivered mails as (subject, body), oldest first.
    fn mails(&self) -> Vec<(String, String)> {
        let Ok(dir) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        let mut files: Vec<(SystemTime, PathBuf)> = dir
            .filter_map(|e| e.ok())
            .map(|e| {
                let t = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                (t, e.path())
            })
            .collect();
        // Maildir names start with the delivery time in seconds and microseconds.
        files.sort_by_key(|(t, p)| (*t, p.clone()));
        files
            .iter()
            .filter_map(|(_, p)| std::fs::read_to_string(p).ok())
            .map(|text| parse_mail(&text))
            .collect()
    }

    fn wait_mail(&self, what: &str, pred: impl Fn(&str) -> bool) -> (String, String) {
        let mut found = None;
        let limit = Duration::from_secs(15);
        let start = Instant::now();
        while found.is_none() {
            found = self.mails().into_iter().find(|(s, _)| pred(s));
            if found.is_none() {
                assert!(
                    start.elapsed() < limit,
                    "no mail {what} within 15 s; mailbox: {:?}\n--- postfix log ---\n{}",
                    self.mails(),
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        found.expect("found")
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(-(self.master.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.master.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.master.wait();
    }
}

/// Subject (unfolded) and body of a delivered message.
fn parse_mail(text: &str) -> (String, String) {
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let head = head.replace("\n ", " ").replace("\n\t", " ");
    let subject = head
        .lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or_default()
        .to_string();
    (subject, body.replace("\r\n", "\n"))
}

/// A namespace with a veth pair, a postfix, and one directord; removed on drop.
struct Lab {
    node: common::Node,
    postfix: Option<Postfix>,
}

const CONFIG: &str = r#"[node]
name = "lvs1"

[failover]
protocol = "vrrp"
interface = "eth0"
priority = 100

[failover.vrrp]
router_id = 9
advert_interval = "50ms"

[announce]
count = 1
spacing = "10ms"

[control]
socket = "DIR/ctl.sock"

[[vip]]
address = "198.51.100.10/24"

[[service]]
name = "app"
address = "198.51.100.10:8080"
forward = "nat"
check = { type = "external", command = ["/bin/sh", "-c", "test -e DIR/up"], interval = "50ms", timeout = "50ms", rise = 1, fall = 1 }

[[service.real]]
address = "10.0.1.11:8080"

[alerts]
smtp_server = "127.0.0.1"
smtp_port = PORT
smtp_tls = "starttls"
smtp_tls_verify = true
smtp_ca_file = "DIR/postfix/etc/ca.pem"
email_from = "directord@lab.test"
email_to = ["ops@lab.test"]
notify_role = "DIR/notify"
notify_real = "DIR/notify"
notify_timeout = "5s"
"#;

impl Lab {
    /// `alerts`: more `[alerts]` keys.
    fn start(tag: &str, alerts: &str) -> Lab {
        Lab::start_edited(tag, alerts, |c| c)
    }

    /// `edit`: changes the config text.
    fn start_edited(tag: &str, alerts: &str, edit: impl Fn(String) -> String) -> Lab {
        let node = common::Node::new("dalert", tag);
        let dir = node.dir.path().to_path_buf();
        let postfix = Some(Postfix::start(&node.ns, &dir));
        let d = dir.display().to_string();
        write_executable(
            &dir.join("notify"),
            &format!("#!/bin/sh\necho \"$* $DIRECTORD_EVENT\" >> {d}/notified\n",),
        );
        std::fs::write(dir.join("up"), "").expect("flag");
        let config = edit(CONFIG.to_string())
            .replace("DIR", &d)
            .replace("PORT", &SMTP_PORT.to_string())
            + alerts;
        std::fs::write(node.config(), config).expect("config");
        let mut lab = Lab { node, postfix };
        lab.node.start("info,directord=debug");
        lab
    }

    fn postfix(&self) -> &Postfix {
        self.postfix.as_ref().expect("postfix")
    }

    fn set_up(&self, up: bool) {
        let flag = self.node.dir.path().join("up");
        if up {
            std::fs::write(flag, "").expect("flag");
        } else {
            std::fs::remove_file(flag).expect("remove flag");
        }
    }

    fn notified(&self) -> String {
        std::fs::read_to_string(self.node.dir.path().join("notified")).unwrap_or_default()
    }

    fn log(&self) -> String {
        self.node.log()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // directord first, then postfix; the node's own drop prints directord's
        // log and removes the namespace.
        self.node.kill();
        if std::thread::panicking()
            && let Some(p) = &self.postfix
        {
            eprintln!("--- postfix log ---\n{}", p.log());
        }
        self.postfix = None;
    }
}

#[test]
fn failover_and_real_down_are_mailed_over_starttls_and_run_the_scripts() {
    need_root!();
    let lab = Lab::start("a", "");
    let (subject, body) = lab.postfix().wait_mail("for the failover", |s| {
        s == "[directord] lvs1 is now ACTIVE"
    });
    assert_eq!(subject, "[directord] lvs1 is now ACTIVE");
    assert!(body.contains("node:     lvs1\n"), "{body}");
    assert!(body.contains("role:     ACTIVE\n"), "{body}");
    assert!(body.contains("time:     "), "{body}");
    assert!(body.contains("reason:   "), "{body}");
    // The relay took it over TLS (postfix logs the TLS session).
    assert!(
        lab.postfix()
            .log()
            .contains("Anonymous TLS connection established from"),
        "{}",
        lab.postfix().log()
    );

    lab.set_up(false);
    let (subject, body) = lab.postfix().wait_mail("for the real server", |s| {
        s.starts_with("[directord] app 10.0.1.11:8080 is DOWN")
    });
    assert!(
        subject.starts_with("[directord] app 10.0.1.11:8080 is DOWN: "),
        "{subject}"
    );
    assert!(body.contains("service:  app\n"), "{body}");
    assert!(body.contains("real:     10.0.1.11:8080\n"), "{body}");

    wait(Duration::from_secs(5), "the notify scripts", || {
        let n = lab.notified();
        n.contains("MASTER lvs1 100 role\n") && n.contains("DOWN app 10.0.1.11:8080 real\n")
    });
}

#[test]
fn a_flapping_real_server_makes_limit_mails_and_one_digest() {
    need_root!();
    let lab = Lab::start("b", "email_limit = 2\nemail_window = \"4s\"\n");
    lab.postfix()
        .wait_mail("for the failover", |s| s.ends_with("is now ACTIVE"));
    // Ten changes well within the window.
    for i in 0..10 {
        lab.set_up(i % 2 == 1);
        std::thread::sleep(Duration::from_millis(150));
    }
    let (subject, body) = lab
        .postfix()
        .wait_mail("with the digest", |s| s.contains("more events"));
    assert!(
        subject.starts_with("[directord] lvs1: ")
            && subject.ends_with("more events in the last 4 s"),
        "{subject}"
    );
    assert!(body.contains("app 10.0.1.11:8080 is DOWN"), "{body}");
    assert!(body.contains("app 10.0.1.11:8080 is UP"), "{body}");
    // Nothing after the digest: the flapping stopped.
    std::thread::sleep(Duration::from_secs(2));
    let mails = lab.postfix().mails();
    let subjects: Vec<&str> = mails.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(mails.len(), 3, "{subjects:#?}");
    assert_eq!(
        subjects
            .iter()
            .filter(|s| s.contains("more events"))
            .count(),
        1,
        "{subjects:#?}"
    );
    // Scripts are not rate limited: each change ran the script.
    let downs = lab.notified().matches("DOWN app 10.0.1.11:8080").count();
    assert!(downs >= 4, "{}", lab.notified());
}

#[test]
fn a_relay_with_an_untrusted_certificate_gets_no_mail_and_the_log_says_why() {
    need_root!();
    // A CA of its own, which did not sign postfix's certificate.
    let stranger = tempfile::tempdir().expect("tempdir");
    pki(stranger.path());
    let ca = stranger.path().join("ca.pem").display().to_string();
    let lab = Lab::start_edited("c", "", |c| c.replace("DIR/postfix/etc/ca.pem", &ca));
    wait(
        Duration::from_secs(15),
        "the refused mail in the log",
        || {
            lab.log()
                .contains("alert mail not sent; trying again in 30 s")
        },
    );
    let log = lab.log();
    let line = log
        .lines()
        .find(|l| l.contains("alert mail not sent"))
        .expect("line");
    assert!(line.contains("subject=[directord] "), "{line}");
    assert!(line.contains("invalid peer certificate"), "{line}");
    assert!(line.contains("relay=127.0.0.1:2525"), "{line}");
    assert!(lab.postfix().mails().is_empty());
    // The failover itself went on.
    wait(Duration::from_secs(5), "the notify script", || {
        lab.notified().contains("MASTER lvs1 100 role")
    });
}

fn role_event(role: heartbeat::Role) -> Event {
    Event::Role {
        node: "lvs1".into(),
        role,
        state: "master".into(),
        reason: "test".into(),
        priority: 100,
        at: SystemTime::now(),
    }
}

/// Whether `pid` is gone (or only a zombie waiting for its reaper).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn a_script_past_its_timeout_is_killed_with_its_children_and_the_next_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display().to_string();
    let script = dir.path().join("notify");
    // The first run hangs (with a child of its own); the second returns at once.
    write_executable(
        &script,
        &format!(
            "#!/bin/sh
echo \"$*\" >> {d}/notified
if [ \"$1\" = MASTER ]; then
  sleep 60 &
  echo $$ $! > {d}/pids
  echo hanging >&2
  wait
fi
"
        ),
    );
    let alerts = directord::config::Alerts {
        notify_role: Some(script),
        notify_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let events = directord::events::Events::new();
    let _handle = directord::alert::spawn(alerts, events.subscribe());
    events.publish(role_event(heartbeat::Role::Active));
    events.publish(role_event(heartbeat::Role::Standby));
    let start = Instant::now();
    let notified = dir.path().join("notified");
    loop {
        let text = std::fs::read_to_string(&notified).unwrap_or_default();
        if text.lines().count() == 2 {
            assert_eq!(text, "MASTER lvs1 100\nBACKUP lvs1 100\n");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{text:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // In order: the second ran only once the first was killed at its timeout.
    assert!(start.elapsed() >= Duration::from_millis(450));
    let pids = std::fs::read_to_string(dir.path().join("pids")).expect("pids");
    for pid in pids.split_whitespace() {
        let pid: i32 = pid.parse().expect("pid");
        let start = Instant::now();
        while !gone(pid) {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "process {pid} left running after the timeout"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
