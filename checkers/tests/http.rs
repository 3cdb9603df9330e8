//! http/https checks against a real nginx on loopback (Debian package
//! `nginx-light`). Without nginx these tests fail and say which package to install.

mod nginx;
mod support;

use std::net::SocketAddr;

use checkers::Verdict;
use checkers::spec::{BasicAuth, Method, Pattern, Tls};
use md5::{Digest, Md5};
use nginx::Nginx;
use support::check::{assert_down, http_check, verdict};
use support::daemon::{free_port, set_mode};
use support::pki::Pki;

const OK_BODY: &str = "directord says ok\n";

/// nginx with a plain port (default site, two name-based sites) and a TLS port
/// whose certificate the test CA signed for 127.0.0.1 and localhost.
struct Site {
    plain: SocketAddr,
    tls: SocketAddr,
    pki: Pki,
    _nginx: Nginx,
    _dir: tempfile::TempDir,
}

fn site() -> Site {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::create_dir_all(d.join("www/private")).expect("www");
    std::fs::write(d.join("www/ok.txt"), OK_BODY).expect("ok.txt");
    std::fs::write(d.join("www/private/index.html"), "private ok\n").expect("private");
    std::fs::write(d.join("htpasswd"), "checker:{PLAIN}s3cret\n").expect("htpasswd");
    for sub in ["www", "www/private"] {
        set_mode(&d.join(sub), 0o755);
    }
    let pki = Pki::new(d);
    let leaf = pki.leaf("server", &["127.0.0.1", "localhost"], false);
    let plain: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let tls: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let dd = d.display();
    let http = format!(
        r#"
        server {{
            listen {plain} default_server;
            server_name _;
            root {dd}/www;
            location = /moved {{ return 301 /ok.txt; }}
            location = /fail {{ return 503; }}
            location /private/ {{
                auth_basic "directord test";
                auth_basic_user_file {dd}/htpasswd;
            }}
        }}
        server {{
            listen {plain};
            server_name alpha.test;
            location / {{ return 200 "alpha site\n"; }}
        }}
        server {{
            listen {plain};
            server_name beta.test;
            location / {{ return 200 "beta site\n"; }}
        }}
        server {{
            listen {tls} ssl;
            server_name _;
            ssl_certificate {cert};
            ssl_certificate_key {key};
            root {dd}/www;
        }}
        "#,
        cert = leaf.cert_pem.display(),
        key = leaf.key_pem.display(),
    );
    let nginx = Nginx::start(d, 1, &http, &[plain, tls]);
    Site {
        plain,
        tls,
        pki,
        _nginx: nginx,
        _dir: dir,
    }
}

#[tokio::test]
async fn nginx_serving_the_path_is_up() {
    let s = site();
    let check = http_check(|h, _| h.path = "/ok.txt".into());
    assert_eq!(verdict(check, s.plain).await, Verdict::Up);

    let head = http_check(|h, _| {
        h.path = "/ok.txt".into();
        h.method = Method::Head;
    });
    assert_eq!(verdict(head, s.plain).await, Verdict::Up);
}

#[tokio::test]
async fn body_must_match_the_pattern() {
    let s = site();
    let good = http_check(|h, _| {
        h.path = "/ok.txt".into();
        h.expect_body = Some(Pattern::new("^directord says ok").expect("regex"));
    });
    assert_eq!(verdict(good, s.plain).await, Verdict::Up);

    let bad = http_check(|h, _| {
        h.path = "/ok.txt".into();
        h.expect_body = Some(Pattern::new("healthy").expect("regex"));
    });
    let v = verdict(bad, s.plain).await;
    assert_eq!(v, Verdict::Down("body did not match /healthy/".into()));
}

#[tokio::test]
async fn body_digest_is_the_md5_of_the_whole_body() {
    let s = site();
    let md5: [u8; 16] = Md5::digest(OK_BODY.as_bytes()).into();
    let good = http_check(|h, _| {
        h.path = "/ok.txt".into();
        h.expect_digest = Some(md5);
    });
    assert_eq!(verdict(good, s.plain).await, Verdict::Up);

    let bad = http_check(|h, _| {
        h.path = "/ok.txt".into();
        h.expect_digest = Some([0xab; 16]);
    });
    let hex: String = md5.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        verdict(bad, s.plain).await,
        Verdict::Down(format!(
            "body MD5 {hex}, expected abababababababababababababababab"
        ))
    );
}

#[tokio::test]
async fn wrong_status_is_down_with_the_status() {
    let s = site();
    let check = http_check(|h, _| h.path = "/fail".into());
    assert_eq!(
        verdict(check, s.plain).await,
        Verdict::Down("status 503, expected 200-299".into())
    );
    let missing = http_check(|h, _| {
        h.path = "/nothing-here".into();
        h.expect_status = vec![200..=200, 204..=204];
    });
    assert_eq!(
        verdict(missing, s.plain).await,
        Verdict::Down("status 404, expected 200, 204".into())
    );
}

#[tokio::test]
async fn redirect_is_not_followed() {
    let s = site();
    // /moved redirects to /ok.txt, which would pass: following it would hide the 301.
    let check = http_check(|h, _| h.path = "/moved".into());
    assert_down(&verdict(check, s.plain).await, "status 301");

    let expecting_redirect = http_check(|h, _| {
        h.path = "/moved".into();
        h.expect_status = vec![301..=302];
    });
    assert_eq!(verdict(expecting_redirect, s.plain).await, Verdict::Up);
}

#[tokio::test]
async fn host_picks_the_virtual_host() {
    let s = site();
    let for_host = |host: &str| {
        let host = host.to_string();
        http_check(move |h, _| {
            h.host = Some(host);
            h.expect_body = Some(Pattern::new("^alpha site").expect("regex"));
        })
    };
    assert_eq!(verdict(for_host("alpha.test"), s.plain).await, Verdict::Up);
    assert_eq!(
        verdict(for_host("beta.test"), s.plain).await,
        Verdict::Down("body did not match /^alpha site/".into())
    );
}

#[tokio::test]
async fn basic_auth_is_sent() {
    let s = site();
    let with = |auth: Option<(&str, &str)>| {
        let auth = auth.map(|(user, password)| BasicAuth {
            user: user.into(),
            password: checkers::spec::Secret::inline(password),
        });
        http_check(move |h, _| {
            h.path = "/private/".into();
            h.basic_auth = auth;
        })
    };
    assert_eq!(
        verdict(with(Some(("checker", "s3cret"))), s.plain).await,
        Verdict::Up
    );
    assert_down(&verdict(with(None), s.plain).await, "status 401");
    assert_down(
        &verdict(with(Some(("checker", "wrong"))), s.plain).await,
        "status 401",
    );
}

#[tokio::test]
async fn https_with_the_test_ca_is_up() {
    let s = site();
    let check = http_check(|h, _| {
        h.path = "/ok.txt".into();
        h.expect_body = Some(Pattern::new("says ok").expect("regex"));
        h.tls = Some(s.pki.tls());
    });
    assert_eq!(verdict(check, s.tls).await, Verdict::Up);

    // The name comes from `host` when given; the certificate also names localhost.
    let by_name = http_check(|h, _| {
        h.path = "/ok.txt".into();
        h.host = Some("localhost".into());
        h.tls = Some(s.pki.tls());
    });
    assert_eq!(verdict(by_name, s.tls).await, Verdict::Up);
}

#[tokio::test]
async fn https_against_the_system_store_is_an_unknown_issuer() {
    let s = site();
    let check = http_check(|h, _| {
        h.path = "/ok.txt".into();
        h.tls = Some(Tls::default());
    });
    assert_eq!(
        verdict(check, s.tls).await,
        Verdict::Down("TLS: unknown issuer".into())
    );
}

#[tokio::test]
async fn https_without_verification_is_up() {
    let s = site();
    let check = http_check(|h, _| {
        h.path = "/ok.txt".into();
        h.host = Some("not-the-certificate-name.test".into());
        h.tls = Some(Tls {
            verify: false,
            ..Tls::default()
        });
    });
    assert_eq!(verdict(check, s.tls).await, Verdict::Up);
}

#[tokio::test]
async fn plain_http_to_the_tls_port_is_down() {
    let s = site();
    let check = http_check(|h, _| h.path = "/ok.txt".into());
    // nginx answers plain HTTP on an ssl port with 400.
    assert_down(&verdict(check, s.tls).await, "status 400");
}

#[tokio::test]
async fn closed_port_is_connection_refused() {
    let port = free_port();
    let check = http_check(|_, _| {});
    assert_eq!(
        verdict(check, ([127, 0, 0, 1], port).into()).await,
        Verdict::Down("connect: connection refused".into())
    );
}
