//! http/https checks against servers that misbehave on purpose (written here with
//! tokio on loopback): the check must come back Down, in time, saying how far it got.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use checkers::Verdict;
use checkers::spec::{Pattern, Tls};
use support::check::{assert_down, http_check, verdict};
use support::hostile::{self, read_head, silent};
use support::pki::{Pki, acceptor};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn silent_server_is_down_within_the_timeout() {
    let addr = hostile::tcp(|mut s| async move {
        let _ = read_head(&mut s).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
    })
    .await;
    let check = http_check(|_, c| c.timeout = Duration::from_millis(300));
    let started = Instant::now();
    let v = verdict(check, addr).await;
    let took = started.elapsed();
    assert_eq!(
        v,
        Verdict::Down("connected, no response headers within 300 ms".into())
    );
    assert!(took < Duration::from_millis(600), "took {took:?}");
}

#[tokio::test]
async fn unknown_http_version_is_a_malformed_response() {
    let addr = hostile::tcp(|mut s| async move {
        let _ = read_head(&mut s).await;
        let _ = s.write_all(b"HTTP/9 lol\r\nWhat: ever\r\n\r\n").await;
    })
    .await;
    let v = verdict(http_check(|_, _| {}), addr).await;
    eprintln!("{v:?}");
    assert_down(&v, "malformed response");
}

#[tokio::test]
async fn random_bytes_are_a_malformed_response() {
    let addr = hostile::tcp(|mut s| async move {
        let _ = read_head(&mut s).await;
        // Fixed "random" bytes (a simple LCG) so a failure can be reproduced.
        let mut x: u32 = 0x1234_5678;
        let junk: Vec<u8> = (0..4096)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (x >> 16) as u8
            })
            .collect();
        let _ = s.write_all(&junk).await;
    })
    .await;
    let v = verdict(http_check(|_, _| {}), addr).await;
    eprintln!("{v:?}");
    assert_down(&v, "malformed response");
}

#[tokio::test]
async fn close_before_headers_says_so() {
    let addr = hostile::tcp(|mut s| async move {
        let _ = read_head(&mut s).await;
    })
    .await;
    assert_eq!(
        verdict(http_check(|_, _| {}), addr).await,
        Verdict::Down("connected, connection closed before response headers".into())
    );
}

#[tokio::test]
async fn close_mid_body_is_down_with_the_bytes_read() {
    let addr = hostile::tcp(|mut s| async move {
        let _ = read_head(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
            .await;
        let _ = s.flush().await;
    })
    .await;
    let check = http_check(|h, _| h.expect_body = Some(Pattern::new("ok").expect("regex")));
    assert_eq!(
        verdict(check, addr).await,
        Verdict::Down("connection closed mid-body after 10 bytes".into())
    );
}

/// Answers 200 with `Content-Length: 1 GiB` and streams zeros for as long as the
/// client reads, counting what it sent.
async fn endless(sent: Arc<AtomicU64>) -> std::net::SocketAddr {
    hostile::tcp(move |mut s| {
        let sent = sent.clone();
        async move {
            let _ = read_head(&mut s).await;
            let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n";
            if s.write_all(head).await.is_err() {
                return;
            }
            let zeros = vec![0u8; 64 << 10];
            while s.write_all(&zeros).await.is_ok() {
                sent.fetch_add(zeros.len() as u64, Ordering::Relaxed);
            }
        }
    })
    .await
}

#[tokio::test]
async fn huge_body_is_not_read_without_body_expectations() {
    let sent = Arc::new(AtomicU64::new(0));
    let addr = endless(sent.clone()).await;
    let started = Instant::now();
    assert_eq!(verdict(http_check(|_, _| {}), addr).await, Verdict::Up);
    assert!(started.elapsed() < Duration::from_millis(500));
    // Let the server notice the closed connection, then see how much it got out:
    // socket buffers' worth, not the gigabyte.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent < 64 << 20, "the server sent {sent} bytes");
}

#[tokio::test]
async fn huge_body_with_a_digest_is_not_checked() {
    let sent = Arc::new(AtomicU64::new(0));
    let addr = endless(sent).await;
    let check = http_check(|h, _| h.expect_digest = Some([0; 16]));
    assert_eq!(
        verdict(check, addr).await,
        Verdict::Down("body larger than 1 MiB, digest not checked".into())
    );
}

#[tokio::test]
async fn expired_certificate_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let tls = acceptor(&pki.leaf("expired", &["127.0.0.1"], true));
    let addr = tls_server(tls).await;
    let check = http_check(|h, _| h.tls = Some(pki.tls()));
    assert_down(&verdict(check, addr).await, "TLS: certificate expired");
}

#[tokio::test]
async fn certificate_for_another_name_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let tls = acceptor(&pki.leaf("other", &["other.test"], false));
    let addr = tls_server(tls).await;
    let check = http_check(|h, _| {
        h.host = Some("www.example.test".into());
        h.tls = Some(pki.tls())
    });
    assert_down(
        &verdict(check, addr).await,
        "TLS: certificate not valid for name \"www.example.test\"",
    );
}

#[tokio::test]
async fn tls_server_that_never_handshakes_times_out() {
    let addr = silent().await;
    let check = http_check(|h, c| {
        c.timeout = Duration::from_millis(300);
        h.tls = Some(Tls {
            verify: false,
            ..Tls::default()
        });
    });
    assert_eq!(
        verdict(check, addr).await,
        Verdict::Down("TLS: no handshake within 300 ms".into())
    );
}

/// A TLS server answering 200 "ok" to whatever it is asked.
async fn tls_server(tls: tokio_rustls::TlsAcceptor) -> std::net::SocketAddr {
    hostile::tcp(move |s| {
        let tls = tls.clone();
        async move {
            let Ok(mut s) = tls.accept(s).await else {
                return;
            };
            let _ = read_head(&mut s).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
            let _ = s.shutdown().await;
        }
    })
    .await
}
