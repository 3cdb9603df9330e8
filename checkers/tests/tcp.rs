//! The tcp check against listeners the tests open on loopback.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use checkers::spec::{Check, Pattern, Protocol, Tcp};
use checkers::{Error, Probe, Verdict};
use support::hostile;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const TIMEOUT: Duration = Duration::from_millis(300);

fn check(send: Option<&[u8]>, expect: Option<&str>, bind: Option<IpAddr>) -> Check {
    let tcp = Tcp {
        send: send.map(<[u8]>::to_vec),
        expect: expect.map(|p| Pattern::new(p).expect("pattern")),
    };
    let mut check = support::check::check(Protocol::Tcp(tcp), TIMEOUT);
    check.connect.bind = bind;
    check
}

async fn run(check: Check, real: SocketAddr) -> Result<Verdict, Error> {
    Probe::new(check).expect("prepare").run(real).await
}

async fn down(check: Check, real: SocketAddr) -> String {
    match run(check, real).await {
        Ok(Verdict::Down(reason)) => reason,
        other => panic!("expected down, got {other:?}"),
    }
}

/// Accepts and holds the connection open without a word.
async fn silent(mut s: TcpStream) {
    let mut sink = [0; 64];
    while s.read(&mut sink).await.is_ok_and(|n| n > 0) {}
}

#[tokio::test]
async fn connect_to_a_listener_is_up_v4_and_v6() {
    let real = hostile::tcp(silent).await;
    assert_eq!(
        run(check(None, None, None), real).await.expect("run"),
        Verdict::Up
    );
    let real = hostile::tcp_on("[::1]:0", silent).await;
    assert_eq!(
        run(check(None, None, None), real).await.expect("run"),
        Verdict::Up
    );
}

#[tokio::test]
async fn a_closed_port_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let real = listener.local_addr().expect("addr");
    drop(listener);
    assert_eq!(
        down(check(None, None, None), real).await,
        format!("connect {real}: connection refused")
    );
}

#[tokio::test]
async fn connect_port_overrides_the_real_servers_port() {
    let up = hostile::tcp(silent).await;
    let mut c = check(None, None, None);
    c.connect.port = Some(up.port());
    // The real server's own port (1) is closed; the check goes to connect_port.
    let real = SocketAddr::from(([127, 0, 0, 1], 1));
    assert_eq!(run(c, real).await.expect("run"), Verdict::Up);
}

#[tokio::test]
async fn a_syn_that_gets_no_answer_times_out() {
    // A listener with a full accept queue drops further SYNs: the connect hangs.
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    socket.listen(0).expect("listen");
    let real = socket
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet");
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(real)).await
        {
            fillers.push(s);
        }
    }
    let start = Instant::now();
    let reason = down(check(None, None, None), real).await;
    assert_eq!(reason, format!("connect {real}: no answer within 300 ms"));
    assert!(start.elapsed() >= TIMEOUT);
    assert!(start.elapsed() < TIMEOUT + Duration::from_secs(1));
}

#[tokio::test]
async fn send_and_expect_a_matching_reply_is_up() {
    let real = hostile::tcp(|mut s: TcpStream| async move {
        let mut buf = [0; 6];
        if s.read_exact(&mut buf).await.is_ok() && &buf == b"PING\r\n" {
            let _ = s.write_all(b"+PONG\r\n").await;
        }
        silent(s).await;
    })
    .await;
    let c = check(Some(b"PING\r\n"), Some(r"^\+PONG\r\n"), None);
    assert_eq!(run(c, real).await.expect("run"), Verdict::Up);
}

#[tokio::test]
async fn a_reply_in_pieces_is_put_together() {
    let real = hostile::tcp(|mut s: TcpStream| async move {
        for piece in [&b"220 mail"[..], b".example", b" ESMTP\r\n"] {
            let _ = s.write_all(piece).await;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        silent(s).await;
    })
    .await;
    let c = check(None, Some(r"^220 .* ESMTP"), None);
    assert_eq!(run(c, real).await.expect("run"), Verdict::Up);
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_with_nothing() {
    let real = hostile::tcp(silent).await;
    let start = Instant::now();
    let reason = down(check(Some(b"HELLO\n"), Some("^OK"), None), real).await;
    assert_eq!(
        reason,
        "reply did not match /^OK/ within 300 ms (got nothing)"
    );
    assert!(start.elapsed() >= TIMEOUT);
}

#[tokio::test]
async fn garbage_is_shown_escaped() {
    let real = hostile::tcp(|mut s: TcpStream| async move {
        let _ = s.write_all(b"ERR unknown\r\n\x01").await;
        silent(s).await;
    })
    .await;
    assert_eq!(
        down(check(None, Some("^OK"), None), real).await,
        r#"reply did not match /^OK/ within 300 ms (got 14 bytes: "ERR unknown\r\n\x01")"#
    );
}

#[tokio::test]
async fn a_peer_that_closes_before_matching() {
    let real = hostile::tcp(|mut s: TcpStream| async move {
        let _ = s.write_all(b"bye\n").await;
    })
    .await;
    assert_eq!(
        down(check(None, Some("^OK"), None), real).await,
        r#"peer closed before matching /^OK/ (got 4 bytes: "bye\n")"#
    );
}

#[tokio::test]
async fn an_endless_reply_is_cut_at_max_reply() {
    let real = hostile::tcp(|mut s: TcpStream| async move {
        let chunk = vec![b'x'; 16 << 10];
        while s.write_all(&chunk).await.is_ok() {}
    })
    .await;
    let reason = down(check(None, Some("^OK"), None), real).await;
    assert!(
        reason.starts_with(
            "reply did not match /^OK/ in its first 65536 bytes (got 65536 bytes: \"xxxx"
        ),
        "{reason}"
    );
    assert!(reason.ends_with("\"...)"), "{reason}");
}

#[tokio::test]
async fn the_check_connects_from_the_bind_address() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let real = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, peer)) = listener.accept().await {
            let _ = tx.send(peer.ip());
            tokio::spawn(silent(s));
        }
    });
    let bind = IpAddr::from([127, 0, 0, 2]);
    assert_eq!(
        run(check(None, None, Some(bind)), real).await.expect("run"),
        Verdict::Up
    );
    assert_eq!(rx.recv().await, Some(bind));
}

#[tokio::test]
async fn a_bind_address_that_is_not_ours_is_a_checker_error() {
    let real = hostile::tcp(silent).await;
    let bind = IpAddr::from([192, 0, 2, 77]);
    match run(check(None, None, Some(bind)), real).await {
        Err(Error::Socket { target, source }) => {
            assert_eq!(target, real);
            assert_eq!(source.raw_os_error(), Some(libc::EADDRNOTAVAIL));
        }
        other => panic!("expected a socket error, got {other:?}"),
    }
}
