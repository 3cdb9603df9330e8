//! The NNTP check against a private INN reader server (nnrpd of the Debian
//! package `inn2`, run standalone) started by the test on loopback ports, and
//! against misbehaving servers written here.

mod support;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use checkers::Verdict;
use checkers::spec::{Nntp, Protocol, Tls, TlsMode};
use support::check::{check, down, verdict};
use support::daemon::{
    Daemon, accepts, chown, free_port, greets, localhost, program, run_tool, set_mode,
    skip_unless_root, user,
};
use support::hostile::{scripted, silent};
use support::pki::{Leaf, Pki};

const TIMEOUT: Duration = Duration::from_secs(3);
const NNRPD: &str = "/usr/lib/news/bin/nnrpd";

fn plain(group: Option<&str>) -> Nntp {
    Nntp {
        tls: TlsMode::None,
        group: group.map(str::to_owned),
    }
}

async fn run(spec: Nntp, real: SocketAddr) -> Verdict {
    run_within(spec, real, TIMEOUT).await
}

async fn run_within(spec: Nntp, real: SocketAddr, timeout: Duration) -> Verdict {
    verdict(check(Protocol::Nntp(spec), timeout), real).await
}

/// A news server of its own: inn.conf and the database (active file with the group
/// `lab.test`, an empty tradindexed overview) in a tempdir owned by `news`, and
/// two standalone nnrpd (`-D -f`, in the foreground as our children) on 127.0.0.1:
/// one plain offering STARTTLS with `leaf`, one with TLS from the first byte
/// (`-S`). nnrpd logs to syslog only.
struct Inn {
    plain: u16,
    implicit: u16,
    _daemons: [Daemon; 2],
}

impl Inn {
    fn start(dir: &Path, leaf: &Leaf) -> Inn {
        let nnrpd = program(NNRPD, "inn2");
        let tdx_util = program("/usr/lib/news/bin/tdx-util", "inn2");
        // nnrpd runs as news: it must reach everything here.
        set_mode(dir, 0o755);
        let paths = [
            "etc",
            "db",
            "run",
            "log",
            "tmp",
            "spool/overview",
            "spool/articles",
        ];
        for p in paths {
            std::fs::create_dir_all(dir.join(p)).expect("create an INN directory");
        }
        let d = dir.display();
        let conf = dir.join("etc/inn.conf");
        std::fs::write(
            &conf,
            format!(
                "domain: lab.test
pathhost: news.lab.test
server: 127.0.0.1
mta: \"/bin/true %s\"
ovmethod: tradindexed
hismethod: hisv6
enableoverview: true
nnrpdloadlimit: 0
pathnews: /usr/lib/news
pathbin: /usr/lib/news/bin
pathetc: {d}/etc
pathdb: {d}/db
pathrun: {d}/run
pathlog: {d}/log
pathtmp: {d}/tmp
pathspool: {d}/spool
pathoverview: {d}/spool/overview
patharticles: {d}/spool/articles
tlscertfile: {cert}
tlskeyfile: {key}
",
                cert = leaf.cert_pem.display(),
                key = leaf.key_pem.display(),
            ),
        )
        .expect("write inn.conf");
        std::fs::write(
            dir.join("etc/readers.conf"),
            "auth \"all\" {\n hosts: \"*\"\n default: \"<all>\"\n}\n\
             access \"all\" {\n users: \"<all>\"\n newsgroups: \"*\"\n access: R\n}\n",
        )
        .expect("write readers.conf");
        std::fs::write(
            dir.join("etc/storage.conf"),
            "method tradspool {\n newsgroups: *\n class: 0\n}\n",
        )
        .expect("write storage.conf");
        std::fs::write(dir.join("db/active"), "lab.test 0000000000 0000000001 y\n")
            .expect("write active");
        std::fs::write(
            dir.join("db/newsgroups"),
            "lab.test\tThe lab's test group.\n",
        )
        .expect("write newsgroups");
        let news = user("news", "inn2");
        chown_tree(dir, news);
        chown(&leaf.cert_pem, news);
        chown(&leaf.key_pem, news);
        set_mode(&leaf.key_pem, 0o600);

        // The overview's group index, which nnrpd needs to open the group.
        run_tool(
            Command::new(tdx_util)
                .env("INNCONF", &conf)
                .args(["-c", "-n", "lab.test"])
                .uid(news.0)
                .gid(news.1),
            "",
        );

        let start = |port: u16, tls: bool, name: &str| {
            let mut cmd = Command::new(&nnrpd);
            cmd.env("INNCONF", &conf)
                .args(["-D", "-f", "-n", "-b", "127.0.0.1", "-p"])
                .arg(port.to_string());
            if tls {
                cmd.arg("-S");
            }
            let mut daemon = Daemon::start(cmd, &dir.join(format!("{name}.out")));
            // With TLS the greeting comes after a handshake.
            daemon.wait_until("nnrpd", || {
                let addr = localhost(port);
                if tls {
                    accepts(addr)
                } else {
                    greets(addr, b"20")
                }
            });
            daemon
        };
        let (plain, implicit) = (free_port(), free_port());
        let daemons = [
            start(plain, false, "nnrpd"),
            start(implicit, true, "nnrpd-tls"),
        ];
        Inn {
            plain,
            implicit,
            _daemons: daemons,
        }
    }
}

fn chown_tree(path: &Path, owner: (u32, u32)) {
    chown(path, owner);
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read_dir") {
            chown_tree(&entry.expect("entry").path(), owner);
        }
    }
}

/// An INN with a certificate for news.lab.test and 127.0.0.1 from a test PKI of
/// its own, all in a tempdir.
struct Lab {
    pki: Pki,
    inn: Inn,
    _dir: tempfile::TempDir,
}

impl Lab {
    /// `None`, after saying why, when not root.
    fn start() -> Option<Lab> {
        if skip_unless_root("nnrpd switches to the news user") {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::new(dir.path());
        let leaf = pki.leaf("news", &["news.lab.test", "127.0.0.1"], false);
        let inn = Inn::start(dir.path(), &leaf);
        Some(Lab {
            pki,
            inn,
            _dir: dir,
        })
    }
}

#[tokio::test]
async fn nnrpd_reader_sessions() {
    let Some(lab) = Lab::start() else {
        return;
    };
    let real = localhost(lab.inn.plain);
    assert_eq!(run(plain(None), real).await, Verdict::Up);
    assert_eq!(run(plain(Some("lab.test")), real).await, Verdict::Up);
    assert_eq!(
        run(plain(Some("nosuch")), real).await,
        down("GROUP nosuch: no such group (411 No such group nosuch)")
    );
}

#[tokio::test]
async fn nnrpd_tls() {
    let Some(lab) = Lab::start() else {
        return;
    };
    let test_ca = lab.pki.tls();
    let with = |tls: TlsMode| Nntp {
        tls,
        group: Some("lab.test".into()),
    };
    let (real, nntps) = (localhost(lab.inn.plain), localhost(lab.inn.implicit));
    assert_eq!(
        run(with(TlsMode::StartTls(test_ca.clone())), real).await,
        Verdict::Up
    );
    assert_eq!(
        run(with(TlsMode::StartTls(Tls::default())), real).await,
        down("TLS: unknown issuer")
    );
    let by_name = Tls {
        server_name: Some("news.lab.test".into()),
        ..test_ca.clone()
    };
    assert_eq!(
        run(with(TlsMode::Implicit(by_name)), nntps).await,
        Verdict::Up
    );
    assert_eq!(
        run(with(TlsMode::Implicit(Tls::default())), nntps).await,
        down("TLS: unknown issuer")
    );
}

#[tokio::test]
async fn nnrpd_stopped() {
    let Some(lab) = Lab::start() else {
        return;
    };
    let real = localhost(lab.inn.plain);
    assert_eq!(run(plain(None), real).await, Verdict::Up);
    drop(lab);
    assert_eq!(
        run(plain(None), real).await,
        down(&format!("connect {real}: connection refused"))
    );
}

// Misbehaving servers.

#[tokio::test]
async fn greeting_502_and_400() {
    let addr = scripted("502 You have no permission to talk.  Goodbye.\r\n", &[]).await;
    assert_eq!(
        run(plain(None), addr).await,
        down("greeting 502 You have no permission to talk.  Goodbye. (expected 200 or 201)")
    );
    let addr = scripted("400 news.lab.test: Server paused\r\n", &[]).await;
    assert_eq!(
        run(plain(None), addr).await,
        down("greeting 400 news.lab.test: Server paused (expected 200 or 201)")
    );
}

#[tokio::test]
async fn garbage_greeting() {
    let addr = scripted("+OK POP3 server ready\r\n", &[]).await;
    assert_eq!(
        run(plain(None), addr).await,
        down("greeting is not NNTP: \"+OK POP3 server ready\"")
    );
}

#[tokio::test(start_paused = true)]
async fn never_greets() {
    let addr = silent().await;
    assert_eq!(
        run_within(plain(None), addr, Duration::from_millis(500)).await,
        down("no greeting within 500 ms")
    );
}

#[tokio::test]
async fn starttls_not_offered() {
    let addr = scripted(
        "200 news.lab.test ready\r\n",
        &[("STARTTLS", "502 Command unavailable\r\n")],
    )
    .await;
    let spec = Nntp {
        tls: TlsMode::StartTls(Tls::default()),
        group: None,
    };
    assert_eq!(
        run(spec, addr).await,
        down("STARTTLS answered 502 Command unavailable (expected 382)")
    );
}

#[tokio::test]
async fn transit_server_refuses_reading() {
    // A server that does not know MODE READER is asked GROUP all the same; one that
    // refuses it is down.
    let old = scripted(
        "200 news.lab.test ready\r\n",
        &[
            ("MODE READER", "500 What?\r\n"),
            ("GROUP", "211 3 1 3 lab.test\r\n"),
            ("QUIT", "205 Bye\r\n"),
        ],
    )
    .await;
    assert_eq!(run(plain(Some("lab.test")), old).await, Verdict::Up);
    let transit = scripted(
        "200 news.lab.test ready\r\n",
        &[("MODE READER", "502 Reading not allowed\r\n")],
    )
    .await;
    assert_eq!(
        run(plain(Some("lab.test")), transit).await,
        down("MODE READER answered 502 Reading not allowed (expected 200 or 201)")
    );
}

#[tokio::test]
async fn quit_answered_otherwise() {
    let addr = scripted(
        "201 news.lab.test ready\r\n",
        &[("QUIT", "400 shutting down\r\n")],
    )
    .await;
    assert_eq!(
        run(plain(None), addr).await,
        down("QUIT answered 400 shutting down (expected 205)")
    );
}
