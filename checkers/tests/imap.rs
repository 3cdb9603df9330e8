//! The IMAP check against a private dovecot (Debian package `dovecot-imapd`)
//! started by the test on loopback ports, and against misbehaving servers written
//! here.

mod dovecot;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use checkers::Verdict;
use checkers::spec::{Imap, Login, Protocol, Secret, Tls, TlsMode};
use dovecot::{Dovecot, PASSWORD, USER};
use support::check::{check, down, verdict};
use support::daemon::skip_unless_root;
use support::hostile::{self, recording, silent};
use support::pki::Pki;
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(3);
const SHORT: Duration = Duration::from_millis(400);

fn imap(tls: TlsMode, password: Option<&str>) -> Imap {
    Imap {
        tls,
        login: password.map(|p| Login {
            user: USER.into(),
            password: Secret::inline(p),
        }),
    }
}

async fn run_within(spec: Imap, real: SocketAddr, timeout: Duration) -> Verdict {
    verdict(check(Protocol::Imap(spec), timeout), real).await
}

async fn run(spec: Imap, real: SocketAddr) -> Verdict {
    run_within(spec, real, TIMEOUT).await
}

#[tokio::test]
async fn dovecot_sessions() {
    if skip_unless_root("dovecot's master starts its services as root") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let leaf = pki.leaf("imap", &["127.0.0.1", "imap.lab.test"], false);
    let dovecot = Dovecot::start(dir.path(), &leaf);
    let log = || dovecot.log(dir.path());
    let (plain, implicit) = (dovecot.imap, dovecot.imaps);
    let ca = pki.tls();

    assert_eq!(run(imap(TlsMode::None, None), plain).await, Verdict::Up);
    assert_eq!(
        run(imap(TlsMode::None, Some(PASSWORD)), plain).await,
        Verdict::Up,
        "{}",
        log()
    );
    assert_eq!(
        run(imap(TlsMode::StartTls(ca.clone()), Some(PASSWORD)), plain).await,
        Verdict::Up,
        "{}",
        log()
    );
    assert_eq!(
        run(
            imap(TlsMode::Implicit(ca.clone()), Some(PASSWORD)),
            implicit
        )
        .await,
        Verdict::Up,
        "{}",
        log()
    );
    assert_eq!(
        run(imap(TlsMode::Implicit(ca.clone()), None), implicit).await,
        Verdict::Up
    );

    let wrong = "wrong-Kd81";
    let Verdict::Down(reason) = run(imap(TlsMode::StartTls(ca), Some(wrong)), plain).await else {
        panic!("a wrong password is down");
    };
    assert_eq!(
        reason,
        "LOGIN rejected: NO [AUTHENTICATIONFAILED] Authentication failed."
    );
    assert!(!reason.contains(wrong) && !reason.contains(PASSWORD));

    assert_eq!(
        run(imap(TlsMode::StartTls(Tls::default()), None), plain).await,
        down("TLS: unknown issuer")
    );
    assert_eq!(
        run(imap(TlsMode::Implicit(Tls::default()), None), implicit).await,
        down("TLS: unknown issuer")
    );
    // Plain text to the implicit TLS port: dovecot waits for a ClientHello.
    assert_eq!(
        run_within(imap(TlsMode::None, None), implicit, SHORT).await,
        down("no greeting within 400 ms")
    );

    drop(dovecot);
    assert_eq!(
        run(imap(TlsMode::None, None), plain).await,
        down(&format!("connect {plain}: connection refused"))
    );
}

const CAPS: &str = "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\nTAG OK done\r\n";
const BYE: &str = "* BYE bye\r\nTAG OK Logout completed.\r\n";

#[tokio::test]
async fn hostile_greetings() {
    let (ssh, _) = recording("SSH-2.0-OpenSSH_9.2p1\r\n", &[], true).await;
    assert_eq!(
        run(imap(TlsMode::None, None), ssh).await,
        down("greeting is not IMAP: \"SSH-2.0-OpenSSH_9.2p1\"")
    );
    let (bye, _) = recording("* BYE Too many connections\tfrom your IP\r\n", &[], true).await;
    assert_eq!(
        run(imap(TlsMode::None, None), bye).await,
        down("greeting: * BYE Too many connections\\tfrom your IP")
    );
    let mute = silent().await;
    assert_eq!(
        run_within(imap(TlsMode::None, None), mute, SHORT).await,
        down("no greeting within 400 ms")
    );
    let closes = hostile::tcp(|stream: TcpStream| async move { drop(stream) }).await;
    assert_eq!(
        run(imap(TlsMode::None, None), closes).await,
        down("connection closed before the greeting")
    );
}

#[tokio::test]
async fn starttls_not_offered() {
    let (addr, received) = recording("* OK ready\r\n", &[("CAPABILITY", CAPS)], true).await;
    assert_eq!(
        run(
            imap(TlsMode::StartTls(Tls::default()), Some(PASSWORD)),
            addr
        )
        .await,
        down("server does not offer STARTTLS")
    );
    assert_eq!(*received.lock().expect("log"), ["a1 CAPABILITY"]);

    let (refused, _) = recording(
        "* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n",
        &[("STARTTLS", "TAG BAD TLS not available\r\n")],
        true,
    )
    .await;
    assert_eq!(
        run(imap(TlsMode::StartTls(Tls::default()), None), refused).await,
        down("STARTTLS answered BAD TLS not available")
    );

    let (injected, _) = recording(
        "* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n",
        &[("STARTTLS", "TAG OK go ahead\r\n* OK injected\r\n")],
        true,
    )
    .await;
    assert_eq!(
        run(imap(TlsMode::StartTls(Tls::default()), None), injected).await,
        down("server sent data after its STARTTLS reply, before the handshake")
    );
}

#[tokio::test]
async fn login_disabled_keeps_the_password() {
    let (addr, received) = recording(
        "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready\r\n",
        &[("LOGIN", "TAG OK logged in\r\n"), ("LOGOUT", BYE)],
        true,
    )
    .await;
    assert_eq!(
        run(imap(TlsMode::None, Some(PASSWORD)), addr).await,
        down("server refuses LOGIN over plain text (LOGINDISABLED): use TLS")
    );
    assert!(received.lock().expect("log").is_empty());
}

#[tokio::test]
async fn untagged_lines_literals_and_logout() {
    // Untagged lines and a literal before the tagged reply; LOGIN's reply carries
    // the capabilities; the server closes without answering LOGOUT: still up.
    let (addr, received) = recording(
        "* OK ready\r\n",
        &[
            (
                "CAPABILITY",
                "* OK [ALERT] {12}\r\nline1\r\nline2 and more\r\n* CAPABILITY IMAP4rev1\r\nTAG OK done\r\n",
            ),
            ("LOGIN", "TAG OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"),
        ],
        true,
    )
    .await;
    assert_eq!(
        run(imap(TlsMode::None, Some(r#"p"w\"#)), addr).await,
        Verdict::Up
    );
    assert_eq!(
        *received.lock().expect("log"),
        ["a1 CAPABILITY", r#"a2 LOGIN "alice" "p\"w\\""#, "a3 LOGOUT"]
    );

    // PREAUTH: already logged in, no LOGIN sent.
    let (preauth, received) = recording("* PREAUTH welcome\r\n", &[("LOGOUT", BYE)], true).await;
    assert_eq!(
        run(imap(TlsMode::None, Some(PASSWORD)), preauth).await,
        Verdict::Up
    );
    assert_eq!(*received.lock().expect("log"), ["a1 LOGOUT"]);

    let (no_logout, _) = recording("* OK ready\r\n", &[("LOGOUT", "TAG BAD no\r\n")], true).await;
    assert_eq!(
        run(imap(TlsMode::None, None), no_logout).await,
        down("LOGOUT answered BAD no")
    );
}

#[tokio::test]
async fn bad_replies() {
    let (bye, _) = recording(
        "* OK ready\r\n",
        &[("CAPABILITY", "* BYE shutting down\r\n")],
        true,
    )
    .await;
    assert_eq!(
        run(imap(TlsMode::None, Some(PASSWORD)), bye).await,
        down("reply to CAPABILITY: * BYE shutting down")
    );
    let (garbage, _) = recording(
        "* OK ready\r\n",
        &[("CAPABILITY", "HTTP/1.1 400 Bad Request\r\n")],
        true,
    )
    .await;
    assert_eq!(
        run(imap(TlsMode::None, Some(PASSWORD)), garbage).await,
        down("reply to CAPABILITY is not IMAP: \"HTTP/1.1 400 Bad Request\"")
    );
    let (huge, _) = recording(
        "* OK ready\r\n",
        &[("CAPABILITY", "* OK {999999999}\r\n")],
        true,
    )
    .await;
    assert_eq!(
        run(imap(TlsMode::None, Some(PASSWORD)), huge).await,
        down("reply to CAPABILITY too long (over 65536 bytes with its literals)")
    );
}
