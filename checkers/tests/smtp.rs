//! The SMTP check against a private postfix instance (Debian package `postfix`)
//! started by the test on a loopback port, and against misbehaving servers written
//! here.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use checkers::Verdict;
use checkers::spec::{Protocol, Smtp, Tls};
use support::check::{check, down, verdict};
use support::daemon::{
    Daemon, chown, free_port, greets, localhost, program, run_tool, set_mode, skip_unless_root,
    user,
};
use support::hostile::{self, scripted, silent};
use support::pki::{Leaf, Pki, acceptor};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const TIMEOUT: Duration = Duration::from_secs(3);

fn plain() -> Smtp {
    Smtp {
        helo: None,
        starttls: None,
    }
}

fn starttls(tls: Tls) -> Smtp {
    Smtp {
        helo: None,
        starttls: Some(tls),
    }
}

async fn run(spec: Smtp, real: SocketAddr) -> Verdict {
    run_within(spec, real, TIMEOUT).await
}

async fn run_within(spec: Smtp, real: SocketAddr, timeout: Duration) -> Verdict {
    verdict(check(Protocol::Smtp(spec), timeout), real).await
}

/// A certificate for mx.lab.test and 127.0.0.1; `expired`: it ended in 2021.
fn mx_leaf(pki: &Pki, file: &str, expired: bool) -> Leaf {
    pki.leaf(file, &["mx.lab.test", "127.0.0.1"], expired)
}

/// A postfix instance of its own: config, queue and data directories in a tempdir,
/// smtpd on 127.0.0.1:`port` offering STARTTLS with `leaf`, its master in the
/// foreground as our child (`master -d -s`, log on stdout).
struct Postfix {
    port: u16,
    _daemon: Daemon,
}

impl Postfix {
    fn start(dir: &Path, leaf: &Leaf) -> Postfix {
        let postfix = program("/usr/sbin/postfix", "postfix");
        let master = program("/usr/lib/postfix/sbin/master", "postfix");
        // Postfix daemons run as the postfix user and must reach the queue.
        set_mode(dir, 0o755);
        let (etc, queue, data) = (dir.join("etc"), dir.join("queue"), dir.join("data"));
        for d in [&etc, &queue, &data] {
            std::fs::create_dir_all(d).expect("create a postfix directory");
        }
        chown(&data, user("postfix", "postfix"));
        let port = free_port();
        std::fs::write(etc.join("main.cf"), main_cf(&queue, &data, leaf)).expect("main.cf");
        std::fs::write(etc.join("master.cf"), master_cf(port)).expect("master.cf");

        // Creates the queue's subdirectories with their owners and modes.
        run_tool(
            Command::new(&postfix).arg("-c").arg(&etc).arg("check"),
            "(postfix check logs to syslog only)",
        );
        let mut cmd = Command::new(master);
        cmd.arg("-c").arg(&etc).args(["-d", "-s"]);
        let mut daemon = Daemon::start(cmd, &dir.join("postfix.log"));
        daemon.wait_until("postfix", || greets(localhost(port), b"220"));
        Postfix {
            port,
            _daemon: daemon,
        }
    }

    fn addr(&self) -> SocketAddr {
        localhost(self.port)
    }
}

fn main_cf(queue: &Path, data: &Path, leaf: &Leaf) -> String {
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
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = may
",
        queue = queue.display(),
        data = data.display(),
        cert = leaf.cert_pem.display(),
        key = leaf.key_pem.display(),
    )
}

/// Only what smtpd needs for a session without mail; nothing chrooted.
fn master_cf(port: u16) -> String {
    format!(
        "127.0.0.1:{port} inet n - n - - smtpd
postlog unix-dgram n - n - 1 postlogd
tlsmgr unix - - n 1000? 1 tlsmgr
anvil unix - - n - 1 anvil
proxymap unix - - n - - proxymap
rewrite unix - - n - - trivial-rewrite
"
    )
}

#[tokio::test]
async fn postfix_plain_session() {
    if skip_unless_root("postfix's master starts its daemons as root") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let postfix = Postfix::start(dir.path(), &mx_leaf(&pki, "mx", false));
    assert_eq!(run(plain(), postfix.addr()).await, Verdict::Up);
    let named = Smtp {
        helo: Some("checker.lab.test".into()),
        ..plain()
    };
    assert_eq!(run(named, postfix.addr()).await, Verdict::Up);
}

#[tokio::test]
async fn postfix_starttls_verification() {
    if skip_unless_root("postfix's master starts its daemons as root") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let postfix = Postfix::start(dir.path(), &mx_leaf(&pki, "mx", false));
    let real = postfix.addr();
    let test_ca = pki.tls();
    // The certificate names 127.0.0.1 too: the connect address verifies.
    assert_eq!(run(starttls(test_ca.clone()), real).await, Verdict::Up);
    let by_name = Tls {
        server_name: Some("mx.lab.test".into()),
        ..test_ca.clone()
    };
    assert_eq!(run(starttls(by_name), real).await, Verdict::Up);
    let other_name = Tls {
        server_name: Some("smtp.example.org".into()),
        ..test_ca
    };
    let Verdict::Down(reason) = run(starttls(other_name), real).await else {
        panic!("a certificate for another name is down");
    };
    assert!(
        reason.starts_with("TLS: certificate not valid for name \"smtp.example.org\""),
        "{reason}"
    );
    assert_eq!(
        run(starttls(Tls::default()), real).await,
        down("TLS: unknown issuer")
    );
    let unverified = Tls {
        verify: false,
        ..Tls::default()
    };
    assert_eq!(run(starttls(unverified), real).await, Verdict::Up);
}

// Misbehaving servers.

const EHLO_PLAIN: &str = "250-mx.lab.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n";
const EHLO_TLS: &str = "250-mx.lab.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n";

#[tokio::test]
async fn multi_line_replies_and_no_221() {
    // A server that closes without answering QUIT still served the session.
    let addr = scripted(
        "220-mx.lab.test ESMTP\r\n220 welcome\r\n",
        &[("EHLO", EHLO_PLAIN)],
    )
    .await;
    assert_eq!(run(plain(), addr).await, Verdict::Up);
}

#[tokio::test]
async fn greeting_554() {
    let addr = scripted("554 5.3.2 mx.lab.test busy\r\n", &[]).await;
    assert_eq!(
        run(plain(), addr).await,
        down("greeting 554 5.3.2 mx.lab.test busy (expected 220)")
    );
}

#[tokio::test(start_paused = true)]
async fn never_greets() {
    let addr = silent().await;
    assert_eq!(
        run_within(plain(), addr, Duration::from_millis(500)).await,
        down("no greeting within 500 ms")
    );
}

#[tokio::test]
async fn garbage_greeting() {
    let addr = scripted("HTTP/1.1 400 Bad Request\r\n\r\n", &[]).await;
    assert_eq!(
        run(plain(), addr).await,
        down("greeting is not SMTP: \"HTTP/1.1 400 Bad Request\"")
    );
    let endless = hostile::tcp(|mut stream| async move {
        let line = vec![b'2'; 64 << 10];
        let _ = stream.write_all(&line).await;
        std::future::pending::<()>().await;
    })
    .await;
    let Verdict::Down(reason) = run(plain(), endless).await else {
        panic!("an endless line is down");
    };
    assert!(reason.starts_with("greeting too long"), "{reason}");
}

#[tokio::test]
async fn closes_after_greeting() {
    let addr = hostile::tcp(|mut stream| async move {
        let _ = stream.write_all(b"220 mx.lab.test ESMTP\r\n").await;
    })
    .await;
    assert_eq!(
        run(plain(), addr).await,
        down("connection closed before the reply to EHLO")
    );
}

#[tokio::test]
async fn ehlo_refused() {
    let addr = scripted(
        "220 mx.lab.test ESMTP\r\n",
        &[("EHLO", "502 5.5.2 Error: command not recognized\r\n")],
    )
    .await;
    assert_eq!(
        run(plain(), addr).await,
        down("EHLO answered 502 5.5.2 Error: command not recognized (expected 250)")
    );
}

#[tokio::test]
async fn quit_answered_421() {
    let addr = scripted(
        "220 mx.lab.test ESMTP\r\n",
        &[
            ("EHLO", EHLO_PLAIN),
            ("QUIT", "421 4.3.2 shutting down\r\n"),
        ],
    )
    .await;
    assert_eq!(
        run(plain(), addr).await,
        down("QUIT answered 421 4.3.2 shutting down (expected 221)")
    );
}

#[tokio::test]
async fn starttls_not_offered() {
    let addr = scripted("220 mx.lab.test ESMTP\r\n", &[("EHLO", EHLO_PLAIN)]).await;
    assert_eq!(
        run(starttls(Tls::default()), addr).await,
        down("server does not offer STARTTLS")
    );
}

#[tokio::test]
async fn starttls_refused() {
    let addr = scripted(
        "220 mx.lab.test ESMTP\r\n",
        &[
            ("EHLO", EHLO_TLS),
            ("STARTTLS", "454 4.7.0 TLS not available\r\n"),
        ],
    )
    .await;
    assert_eq!(
        run(starttls(Tls::default()), addr).await,
        down("STARTTLS answered 454 4.7.0 TLS not available (expected 220)")
    );
}

#[tokio::test]
async fn data_injected_before_the_handshake() {
    let addr = scripted(
        "220 mx.lab.test ESMTP\r\n",
        &[
            ("EHLO", EHLO_TLS),
            ("STARTTLS", "220 go ahead\r\n250 injected\r\n"),
        ],
    )
    .await;
    assert_eq!(
        run(starttls(Tls::default()), addr).await,
        down("server sent data after its STARTTLS reply, before the handshake")
    );
}

/// A STARTTLS server presenting `leaf`, answering EHLO over TLS and QUIT.
async fn tls_server(leaf: &Leaf) -> SocketAddr {
    let acceptor = acceptor(leaf);
    hostile::tcp(move |stream| {
        let acceptor = acceptor.clone();
        async move {
            let mut io = BufReader::new(stream);
            let mut line = String::new();
            let _ = io.get_mut().write_all(b"220 mx.lab.test ESMTP\r\n").await;
            let _ = io.read_line(&mut line).await;
            let _ = io.get_mut().write_all(EHLO_TLS.as_bytes()).await;
            line.clear();
            let _ = io.read_line(&mut line).await;
            let _ = io
                .get_mut()
                .write_all(b"220 2.0.0 Ready to start TLS\r\n")
                .await;
            let Ok(tls) = acceptor.accept(io.into_inner()).await else {
                return;
            };
            let mut io = BufReader::new(tls);
            for reply in ["250 mx.lab.test\r\n", "221 2.0.0 Bye\r\n"] {
                line.clear();
                if !matches!(io.read_line(&mut line).await, Ok(n) if n > 0) {
                    return;
                }
                let _ = io.get_mut().write_all(reply.as_bytes()).await;
            }
        }
    })
    .await
}

#[tokio::test]
async fn expired_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let test_ca = pki.tls();
    let good = tls_server(&mx_leaf(&pki, "good", false)).await;
    assert_eq!(run(starttls(test_ca.clone()), good).await, Verdict::Up);

    let expired = tls_server(&mx_leaf(&pki, "expired", true)).await;
    let Verdict::Down(reason) = run(starttls(test_ca), expired).await else {
        panic!("an expired certificate is down");
    };
    assert!(reason.starts_with("TLS: certificate expired"), "{reason}");
}
