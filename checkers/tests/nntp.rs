//! The NNTP check against a private INN reader server (nnrpd of the Debian
//! package `inn2`, run standalone) started by the test on loopback ports, and
//! against misbehaving servers written here.

mod daemon;
mod http_support;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use checkers::spec::{Nntp, Protocol, Tls, TlsMode};
use checkers::{Probe, Verdict};
use daemon::{Daemon, check, free_port, is_root, localhost, program};
use http_support::{Leaf, Pki, hostile, set_mode};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

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
    let probe = Probe::new(check(Protocol::Nntp(spec), timeout)).expect("valid check");
    probe.run(real).await.expect("the checker works")
}

fn down(reason: &str) -> Verdict {
    Verdict::Down(reason.to_owned())
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
        let news = news_uid();
        chown_tree(dir, news);
        let (cert, key) = (&leaf.cert_pem, &leaf.key_pem);
        std::os::unix::fs::chown(cert, Some(news), Some(news)).expect("chown the certificate");
        std::os::unix::fs::chown(key, Some(news), Some(news)).expect("chown the key");
        set_mode(key, 0o600);

        // The overview's group index, which nnrpd needs to open the group.
        let status = Command::new(tdx_util)
            .env("INNCONF", &conf)
            .args(["-c", "-n", "lab.test"])
            .uid(news)
            .gid(news)
            .status()
            .expect("run tdx-util");
        assert!(
            status.success(),
            "tdx-util -c -n lab.test failed ({status})"
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
            daemon.wait_until("nnrpd", || greets(port, !tls));
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

fn news_uid() -> u32 {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"news")).then(|| fields.get(2)?.parse().ok())?
        })
        .expect("no news user: install the Debian package `inn2`")
}

fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).expect("chown");
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read_dir") {
            chown_tree(&entry.expect("entry").path(), uid);
        }
    }
}

/// Whether 127.0.0.1:`port` accepts (and, with `greeting`, answers 20x).
fn greets(port: u16, greeting: bool) -> bool {
    use std::io::Read;
    let Ok(mut stream) = std::net::TcpStream::connect(localhost(port)) else {
        return false;
    };
    if !greeting {
        return true;
    }
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 2];
    stream.read_exact(&mut buf).is_ok() && &buf == b"20"
}

fn skip_unless_root() -> bool {
    if is_root() {
        return false;
    }
    eprintln!("skipped: needs root (nnrpd switches to the news user)");
    true
}

#[tokio::test]
async fn nnrpd_reader_sessions() {
    if skip_unless_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let inn = Inn::start(
        dir.path(),
        &pki.leaf("news", &["news.lab.test", "127.0.0.1"], false),
    );
    let real = localhost(inn.plain);
    assert_eq!(run(plain(None), real).await, Verdict::Up);
    assert_eq!(run(plain(Some("lab.test")), real).await, Verdict::Up);
    assert_eq!(
        run(plain(Some("nosuch")), real).await,
        down("GROUP nosuch: no such group (411 No such group nosuch)")
    );
}

#[tokio::test]
async fn nnrpd_tls() {
    if skip_unless_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let inn = Inn::start(
        dir.path(),
        &pki.leaf("news", &["news.lab.test", "127.0.0.1"], false),
    );
    let test_ca = Tls {
        ca_file: Some(pki.ca_file()),
        ..Tls::default()
    };
    let with = |tls: TlsMode| Nntp {
        tls,
        group: Some("lab.test".into()),
    };
    let (real, nntps) = (localhost(inn.plain), localhost(inn.implicit));
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
    if skip_unless_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let inn = Inn::start(dir.path(), &pki.leaf("news", &["127.0.0.1"], false));
    let real = localhost(inn.plain);
    assert_eq!(run(plain(None), real).await, Verdict::Up);
    drop(inn);
    assert_eq!(
        run(plain(None), real).await,
        down(&format!("connect {real}: connection refused"))
    );
}

// Misbehaving servers.

/// Sends `greeting`, then answers each command line with the reply for the first
/// matching prefix; closes on an unknown command.
async fn scripted(
    greeting: &'static str,
    replies: &'static [(&'static str, &'static str)],
) -> SocketAddr {
    hostile(move |stream| async move {
        let mut io = BufReader::new(stream);
        if io.get_mut().write_all(greeting.as_bytes()).await.is_err() {
            return;
        }
        let mut line = String::new();
        while matches!(io.read_line(&mut line).await, Ok(n) if n > 0) {
            let command = line.trim_end().to_ascii_uppercase();
            let Some((_, reply)) = replies.iter().find(|(p, _)| command.starts_with(p)) else {
                return;
            };
            if io.get_mut().write_all(reply.as_bytes()).await.is_err() {
                return;
            }
            line.clear();
        }
    })
    .await
}

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
    let addr = hostile(|stream| async move {
        std::future::pending::<()>().await;
        drop(stream);
    })
    .await;
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
