//! The POP3 check against a private dovecot (Debian package `dovecot-pop3d`)
//! started by the test on loopback ports, and against misbehaving servers written
//! here.

mod dovecot;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use checkers::Verdict;
use checkers::spec::{Login, Pop, Protocol, Secret, Tls, TlsMode};
use dovecot::{Dovecot, PASSWORD, USER};
use support::check::{check, down, verdict};
use support::daemon::skip_unless_root;
use support::hostile::{self, recording, silent};
use support::pki::Pki;
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(3);
const SHORT: Duration = Duration::from_millis(400);

fn pop(tls: TlsMode, password: Option<&str>) -> Pop {
    Pop {
        tls,
        login: password.map(|p| Login {
            user: USER.into(),
            password: Secret::inline(p),
        }),
    }
}

async fn run_within(spec: Pop, real: SocketAddr, timeout: Duration) -> Verdict {
    verdict(check(Protocol::Pop(spec), timeout), real).await
}

async fn run(spec: Pop, real: SocketAddr) -> Verdict {
    run_within(spec, real, TIMEOUT).await
}

#[tokio::test]
async fn dovecot_sessions() {
    if skip_unless_root("dovecot's master starts its services as root") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let leaf = pki.leaf("pop", &["127.0.0.1", "pop.lab.test"], false);
    let dovecot = Dovecot::start(dir.path(), &leaf);
    let log = || dovecot.log(dir.path());
    let (plain, implicit) = (dovecot.pop3, dovecot.pop3s);
    let ca = pki.tls();

    assert_eq!(run(pop(TlsMode::None, None), plain).await, Verdict::Up);
    assert_eq!(
        run(pop(TlsMode::None, Some(PASSWORD)), plain).await,
        Verdict::Up,
        "{}",
        log()
    );
    assert_eq!(
        run(pop(TlsMode::StartTls(ca.clone()), Some(PASSWORD)), plain).await,
        Verdict::Up,
        "{}",
        log()
    );
    assert_eq!(
        run(pop(TlsMode::Implicit(ca.clone()), Some(PASSWORD)), implicit).await,
        Verdict::Up,
        "{}",
        log()
    );
    let by_name = Tls {
        server_name: Some("pop.lab.test".into()),
        ..ca.clone()
    };
    assert_eq!(
        run(pop(TlsMode::Implicit(by_name), None), implicit).await,
        Verdict::Up
    );

    let wrong = "wrong-Kd81";
    let Verdict::Down(reason) = run(pop(TlsMode::Implicit(ca), Some(wrong)), implicit).await else {
        panic!("a wrong password is down");
    };
    assert_eq!(reason, "PASS rejected: -ERR [AUTH] Authentication failed.");
    assert!(!reason.contains(wrong) && !reason.contains(PASSWORD));

    assert_eq!(
        run(pop(TlsMode::StartTls(Tls::default()), None), plain).await,
        down("TLS: unknown issuer")
    );
    assert_eq!(
        run(pop(TlsMode::Implicit(Tls::default()), None), implicit).await,
        down("TLS: unknown issuer")
    );

    drop(dovecot);
    assert_eq!(
        run(pop(TlsMode::None, None), plain).await,
        down(&format!("connect {plain}: connection refused"))
    );
}

#[tokio::test]
async fn hostile_greetings() {
    let (imap, _) = recording("* OK IMAP4rev1 ready\r\n", &[], false).await;
    assert_eq!(
        run(pop(TlsMode::None, None), imap).await,
        down("greeting is not POP3: \"* OK IMAP4rev1 ready\"")
    );
    let (busy, _) = recording("-ERR [SYS/TEMP] busy, try later\r\n", &[], false).await;
    assert_eq!(
        run(pop(TlsMode::None, None), busy).await,
        down("greeting: -ERR [SYS/TEMP] busy, try later")
    );
    let mute = silent().await;
    assert_eq!(
        run_within(pop(TlsMode::None, None), mute, SHORT).await,
        down("no greeting within 400 ms")
    );
    let closes = hostile::tcp(|stream: TcpStream| async move { drop(stream) }).await;
    assert_eq!(
        run(pop(TlsMode::None, None), closes).await,
        down("connection closed before the greeting")
    );
}

#[tokio::test]
async fn stls_not_offered() {
    let (addr, received) = recording(
        "+OK ready\r\n",
        &[("STLS", "-ERR Unknown command: STLS\r\n")],
        false,
    )
    .await;
    assert_eq!(
        run(pop(TlsMode::StartTls(Tls::default()), Some(PASSWORD)), addr).await,
        down("server does not offer STLS: STLS answered -ERR Unknown command: STLS")
    );
    assert_eq!(*received.lock().expect("log"), ["STLS"]);

    let (injected, _) = recording(
        "+OK ready\r\n",
        &[("STLS", "+OK begin TLS\r\n+OK injected\r\n")],
        false,
    )
    .await;
    assert_eq!(
        run(pop(TlsMode::StartTls(Tls::default()), None), injected).await,
        down("server sent data after its STARTTLS reply, before the handshake")
    );
}

#[tokio::test]
async fn login_and_quit() {
    let (addr, received) = recording(
        "+OK ready <1896.697170952@dbc.mtview.ca.us>\r\n",
        &[
            ("USER", "+OK\r\n"),
            ("PASS", "+OK maildrop has 0 messages\r\n"),
        ],
        false,
    )
    .await;
    // No reply to QUIT (the server closes): the session went well, still up.
    assert_eq!(
        run(pop(TlsMode::None, Some(PASSWORD)), addr).await,
        Verdict::Up
    );
    assert_eq!(
        *received.lock().expect("log"),
        [
            format!("USER {USER}"),
            format!("PASS {PASSWORD}"),
            "QUIT".to_owned()
        ]
    );

    let (no_user, _) = recording(
        "+OK ready\r\n",
        &[(
            "USER",
            "-ERR [AUTH] Plaintext authentication disallowed\r\n",
        )],
        false,
    )
    .await;
    assert_eq!(
        run(pop(TlsMode::None, Some(PASSWORD)), no_user).await,
        down("USER rejected: -ERR [AUTH] Plaintext authentication disallowed")
    );

    let (quit_err, _) = recording(
        "+OK ready\r\n",
        &[("QUIT", "-ERR some deleted messages not removed\r\n")],
        false,
    )
    .await;
    assert_eq!(
        run(pop(TlsMode::None, None), quit_err).await,
        down("QUIT answered -ERR some deleted messages not removed")
    );

    let (garbage, _) = recording(
        "+OK ready\r\n",
        &[("USER", "HTTP/1.1 400 Bad Request\r\n")],
        false,
    )
    .await;
    assert_eq!(
        run(pop(TlsMode::None, Some(PASSWORD)), garbage).await,
        down("reply to USER is not POP3: \"HTTP/1.1 400 Bad Request\"")
    );
}
