//! The MySQL check against a private MariaDB (Debian package `mariadb-server`)
//! started by the test on a loopback port, and against fake servers written here:
//! a MySQL 8 speaking `caching_sha2_password` (which Debian does not ship), and
//! misbehaving ones.
//!
//! `mariadb/rsa_test_key.pem` is a throw-away RSA key (made with `openssl genpkey`)
//! for the fake MySQL 8: the check encrypts the password with its public half.

mod sql;
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use checkers::spec::{Login, Protocol, Secret, Sql, Tls};
use checkers::{Probe, Verdict};
use sha2::{Digest, Sha256};
use sql::{PASSWORD, assert_down_with};
use support::check::{check, down, verdict};
use support::daemon::{Daemon, accepts, free_port, localhost, program, run_tool, skip_unless_root};
use support::hostile::{self, silent};
use support::pki::{Leaf, Pki};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(3);

fn sql(query: &str) -> Sql {
    Sql {
        login: Login {
            user: "monitor".into(),
            password: Secret::inline(PASSWORD),
        },
        database: None,
        query: query.into(),
        tls: None,
    }
}

fn with_db(db: &str, query: &str) -> Sql {
    Sql {
        database: Some(db.into()),
        ..sql(query)
    }
}

fn with_tls(tls: Tls) -> Sql {
    Sql {
        tls: Some(tls),
        ..sql("SELECT 1")
    }
}

async fn run(spec: Sql, real: SocketAddr) -> Verdict {
    run_within(spec, real, TIMEOUT).await
}

async fn run_within(spec: Sql, real: SocketAddr, timeout: Duration) -> Verdict {
    verdict(check(Protocol::Mysql(spec), timeout), real).await
}

/// A private mariadbd in the foreground, on a loopback port and a socket in `dir`,
/// with TLS from `leaf`.
struct Mariadb {
    daemon: Daemon,
    sock: PathBuf,
    port: u16,
}

impl Mariadb {
    fn start(dir: &Path, leaf: &Leaf) -> Mariadb {
        let install = program("/usr/bin/mariadb-install-db", "mariadb-server");
        let mariadbd = program("/usr/sbin/mariadbd", "mariadb-server");
        program("/usr/bin/mariadb", "mariadb-client");
        let data = dir.join("data");
        run_tool(
            Command::new(install)
                .args(["--no-defaults", "--auth-root-authentication-method=normal"])
                .args(["--skip-test-db", "--user=root"])
                .arg(format!("--datadir={}", data.display())),
            "",
        );
        let port = free_port();
        let sock = dir.join("sock");
        let mut cmd = Command::new(mariadbd);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", sock.display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg(format!("--port={port}"))
            .args(["--bind-address=127.0.0.1", "--user=root"])
            // No reverse DNS for 127.0.0.1; a small server.
            .args(["--skip-name-resolve", "--innodb-buffer-pool-size=16M"])
            .args(["--performance-schema=OFF", "--skip-log-bin"])
            .arg(format!("--ssl-cert={}", leaf.cert_pem.display()))
            .arg(format!("--ssl-key={}", leaf.key_pem.display()));
        let mut daemon = Daemon::start(cmd, &dir.join("mariadbd.log"));
        daemon.wait_until("mariadbd", || accepts(localhost(port)) && sock.exists());
        let db = Mariadb { daemon, sock, port };
        db.sql(&format!(
            "CREATE USER monitor@'%' IDENTIFIED BY '{PASSWORD}';
             CREATE DATABASE app;
             CREATE TABLE app.health (ok INT);
             INSERT INTO app.health VALUES (1);
             CREATE TABLE app.empty (ok INT);
             GRANT SELECT ON app.* TO monitor@'%';"
        ));
        db
    }

    /// Runs `statements` as root over the socket.
    fn sql(&self, statements: &str) {
        run_tool(
            Command::new("/usr/bin/mariadb")
                .arg("--no-defaults")
                .arg(format!("--socket={}", self.sock.display()))
                .args(["--user=root", "--batch", "-e", statements]),
            &self.daemon.log(),
        );
    }

    fn addr(&self) -> SocketAddr {
        localhost(self.port)
    }
}

/// Every case against one server (it starts in about a second), then stopped.
#[tokio::test]
async fn mariadb() {
    if skip_unless_root("mariadbd runs as root with --user=root here") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let leaf = sql::server_leaf(&pki);
    let db = Mariadb::start(dir.path(), &leaf);
    let real = db.addr();

    assert_eq!(run(sql("SELECT 1"), real).await, Verdict::Up);
    assert_eq!(
        run(with_db("app", "SELECT ok FROM health"), real).await,
        Verdict::Up
    );
    assert_eq!(
        run(sql("SELECT ok FROM app.health WHERE ok = 1"), real).await,
        Verdict::Up
    );
    assert_eq!(
        run(with_db("app", "SELECT ok FROM empty"), real).await,
        down("query returned no row")
    );
    assert_eq!(
        run(sql("DO 1"), real).await,
        down("query returned no row (no result set)")
    );
    assert_eq!(
        run(with_db("app", "SELECT * FROM nope"), real).await,
        down("query failed: 1146 Table 'app.nope' doesn't exist")
    );
    let wrong = Sql {
        login: Login {
            user: "monitor".into(),
            password: Secret::inline("not-the-password"),
        },
        ..sql("SELECT 1")
    };
    let v = run(wrong, real).await;
    assert_down_with(
        &v,
        "login as monitor rejected: 1045 Access denied for user 'monitor'@",
    );
    assert!(!format!("{v:?}").contains("not-the-password"));
    assert_down_with(
        &run(with_db("secret_db", "SELECT 1"), real).await,
        "login as monitor rejected: 1044 Access denied for user 'monitor'@'%' to database 'secret_db'",
    );

    // From a source address, as a director on a VIP would.
    let mut bound = check(Protocol::Mysql(sql("SELECT 1")), TIMEOUT);
    bound.connect.bind = Some("127.0.0.1".parse().expect("ip"));
    let probe = Probe::new(bound).expect("valid check");
    assert_eq!(probe.run(real).await.expect("works"), Verdict::Up);

    // TLS, verified against the test CA.
    sql::tls_verification(&pki, |tls| run(with_tls(tls), real)).await;
    let ca = pki.tls();
    // A user that must use TLS is refused without it and let in with it.
    db.sql(&format!(
        "CREATE USER tlsonly@'%' IDENTIFIED BY '{PASSWORD}' REQUIRE SSL;"
    ));
    let tls_user = |tls: Option<Tls>| Sql {
        login: Login {
            user: "tlsonly".into(),
            password: Secret::inline(PASSWORD),
        },
        tls,
        ..sql("SELECT 1")
    };
    assert_down_with(
        &run(tls_user(None), real).await,
        "login as tlsonly rejected: 1045 Access denied",
    );
    assert_eq!(run(tls_user(Some(ca)), real).await, Verdict::Up);

    drop(db);
    assert_eq!(
        run(sql("SELECT 1"), real).await,
        down(&format!("connect {real}: connection refused"))
    );
}

// Fake servers.

async fn write_packet(s: &mut TcpStream, seq: u8, payload: &[u8]) {
    let len = payload.len();
    let mut p = vec![len as u8, (len >> 8) as u8, (len >> 16) as u8, seq];
    p.extend_from_slice(payload);
    let _ = s.write_all(&p).await;
}

/// One packet: its sequence number and payload; `None` when the client closed.
async fn read_packet(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).await.ok()?;
    let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
    let mut payload = vec![0; len];
    s.read_exact(&mut payload).await.ok()?;
    Some((h[3], payload))
}

const NONCE: &[u8; 20] = b"0123456789abcdefghij";
const PROTOCOL_41: u32 = 0x200;
const SECURE_CONNECTION: u32 = 0x8000;
const PLUGIN_AUTH: u32 = 0x8_0000;
const PLUGIN_AUTH_LENENC: u32 = 0x20_0000;

/// A protocol-10 handshake as MySQL 8 sends it.
fn greeting(capabilities: u32, plugin: &str) -> Vec<u8> {
    let mut p = vec![10];
    p.extend_from_slice(b"8.0.36\0");
    p.extend_from_slice(&7u32.to_le_bytes());
    p.extend_from_slice(&NONCE[..8]);
    p.push(0);
    p.extend_from_slice(&(capabilities as u16).to_le_bytes());
    p.push(255);
    p.extend_from_slice(&2u16.to_le_bytes());
    p.extend_from_slice(&((capabilities >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0; 10]);
    p.extend_from_slice(&NONCE[8..]);
    p.push(0);
    p.extend_from_slice(plugin.as_bytes());
    p.push(0);
    p
}

/// The user and auth response of a HandshakeResponse41.
fn parse_response(p: &[u8]) -> (String, Vec<u8>) {
    let rest = &p[32..];
    let end = rest.iter().position(|&b| b == 0).expect("user NUL");
    let user = String::from_utf8_lossy(&rest[..end]).into_owned();
    let rest = &rest[end + 1..];
    let len = usize::from(rest[0]);
    (user, rest[1..1 + len].to_vec())
}

fn ok_packet() -> Vec<u8> {
    vec![0, 0, 0, 2, 0, 0, 0]
}

fn err_packet(code: u16, state: &str, message: &str) -> Vec<u8> {
    let mut p = vec![0xff];
    p.extend_from_slice(&code.to_le_bytes());
    p.push(b'#');
    p.extend_from_slice(state.as_bytes());
    p.extend_from_slice(message.as_bytes());
    p
}

fn lenenc_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(s.len() as u8);
    out.extend_from_slice(s);
}

/// After the login: answers one COM_QUERY with a one-column result set of `rows`,
/// then waits for COM_QUIT.
async fn serve_query(s: &mut TcpStream, rows: &[Vec<u8>]) {
    let Some((_, query)) = read_packet(s).await else {
        return;
    };
    assert_eq!(query[0], 3, "COM_QUERY");
    write_packet(s, 1, &[1]).await;
    let mut column = Vec::new();
    for part in [&b"def"[..], b"", b"", b"", b"1", b""] {
        lenenc_str(&mut column, part);
    }
    column.extend_from_slice(&[0x0c, 63, 0, 1, 0, 0, 0, 8, 0x81, 0, 0, 0, 0]);
    write_packet(s, 2, &column).await;
    write_packet(s, 3, &[0xfe, 0, 0, 2, 0]).await;
    let mut seq = 4;
    for row in rows {
        write_packet(s, seq, row).await;
        seq += 1;
    }
    write_packet(s, seq, &[0xfe, 0, 0, 2, 0]).await;
    let _ = read_packet(s).await;
}

fn sha256_scramble(password: &[u8]) -> Vec<u8> {
    let stage1 = Sha256::digest(password);
    let stage2 = Sha256::digest(stage1);
    let mix = Sha256::new()
        .chain_update(stage2)
        .chain_update(NONCE)
        .finalize();
    stage1.iter().zip(mix.iter()).map(|(a, b)| a ^ b).collect()
}

/// A MySQL 8 with caching_sha2_password and an empty cache: every login goes
/// through the full exchange, the password RSA-encrypted (no TLS here). Records
/// each password it decrypted.
async fn mysql8(seen: Arc<Mutex<Vec<String>>>, fast: bool) -> SocketAddr {
    use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};

    let key = rsa::RsaPrivateKey::from_pkcs8_pem(include_str!("mariadb/rsa_test_key.pem"))
        .expect("test key");
    let public = key
        .to_public_key()
        .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
        .expect("public PEM");
    hostile::tcp(move |mut s| {
        let key = key.clone();
        let public = public.clone();
        let seen = seen.clone();
        async move {
            let caps = PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH | PLUGIN_AUTH_LENENC;
            write_packet(&mut s, 0, &greeting(caps, "caching_sha2_password")).await;
            let Some((1, response)) = read_packet(&mut s).await else {
                return;
            };
            let (user, scramble) = parse_response(&response);
            assert_eq!(user, "monitor");
            if fast {
                // A warm cache: the scramble alone decides.
                if scramble == sha256_scramble(PASSWORD.as_bytes()) {
                    write_packet(&mut s, 2, &[1, 3]).await;
                    write_packet(&mut s, 3, &ok_packet()).await;
                    serve_query(&mut s, &[vec![1, b'1']]).await;
                } else {
                    let denied =
                        "Access denied for user 'monitor'@'localhost' (using password: YES)";
                    write_packet(&mut s, 2, &err_packet(1045, "28000", denied)).await;
                }
                return;
            }
            write_packet(&mut s, 2, &[1, 4]).await;
            let Some((3, request)) = read_packet(&mut s).await else {
                return;
            };
            assert_eq!(request, [2], "public key request");
            let mut more = vec![1];
            more.extend_from_slice(public.as_bytes());
            write_packet(&mut s, 4, &more).await;
            let Some((5, encrypted)) = read_packet(&mut s).await else {
                return;
            };
            let plain = key
                .decrypt(rsa::Oaep::new::<sha1::Sha1>(), &encrypted)
                .expect("OAEP with SHA-1");
            let password: Vec<u8> = plain
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ NONCE[i % NONCE.len()])
                .collect();
            let password = password.strip_suffix(&[0]).expect("NUL-terminated");
            let password = String::from_utf8_lossy(password).into_owned();
            let good = password == PASSWORD;
            seen.lock().expect("lock").push(password);
            if good {
                write_packet(&mut s, 6, &ok_packet()).await;
                serve_query(&mut s, &[vec![1, b'1']]).await;
            } else {
                let denied = "Access denied for user 'monitor'@'localhost' (using password: YES)";
                write_packet(&mut s, 6, &err_packet(1045, "28000", denied)).await;
            }
        }
    })
    .await
}

#[tokio::test]
async fn mysql8_caching_sha2_full_exchange_over_rsa() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let real = mysql8(seen.clone(), false).await;
    assert_eq!(run(sql("SELECT 1"), real).await, Verdict::Up);
    assert_eq!(*seen.lock().expect("lock"), [PASSWORD]);

    let wrong = Sql {
        login: Login {
            user: "monitor".into(),
            password: Secret::inline("guess"),
        },
        ..sql("SELECT 1")
    };
    assert_down_with(
        &run(wrong, real).await,
        "login as monitor rejected: 1045 Access denied for user 'monitor'@'localhost' (using password: YES)",
    );
}

#[tokio::test]
async fn mysql8_caching_sha2_fast_path() {
    let real = mysql8(Arc::default(), true).await;
    assert_eq!(run(sql("SELECT 1"), real).await, Verdict::Up);
    let wrong = Sql {
        login: Login {
            user: "monitor".into(),
            password: Secret::inline("guess"),
        },
        ..sql("SELECT 1")
    };
    assert_down_with(&run(wrong, real).await, "login as monitor rejected: 1045");
}

/// A server that takes any login, then answers the query with `rows`.
async fn any_login(rows: Vec<Vec<u8>>) -> SocketAddr {
    hostile::tcp(move |mut s| {
        let rows = rows.clone();
        async move {
            let caps = PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH;
            write_packet(&mut s, 0, &greeting(caps, "mysql_native_password")).await;
            if read_packet(&mut s).await.is_none() {
                return;
            }
            write_packet(&mut s, 2, &ok_packet()).await;
            serve_query(&mut s, &rows).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_large_row_is_read_past_not_kept() {
    // One 4 MiB row: up, with the packet cut to the bound and the rest dropped.
    let mut row = vec![0xfd];
    let len = 4usize << 20;
    row.extend_from_slice(&[len as u8, (len >> 8) as u8, (len >> 16) as u8]);
    row.resize(4 + len, b'x');
    let real = any_login(vec![row]).await;
    assert_eq!(run(sql("SELECT blob FROM t"), real).await, Verdict::Up);
    let empty = any_login(Vec::new()).await;
    assert_eq!(
        run(sql("SELECT 1 FROM t"), empty).await,
        down("query returned no row")
    );
}

#[tokio::test]
async fn tls_required_but_not_offered() {
    let real = any_login(vec![vec![1, b'1']]).await;
    let tls = Tls {
        verify: false,
        ..Tls::default()
    };
    assert_eq!(
        run(with_tls(tls), real).await,
        down("server does not offer TLS")
    );
}

#[tokio::test]
async fn clear_text_password_refused_without_tls() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    let real = hostile::tcp(move |mut s| {
        let seen = seen.clone();
        async move {
            let caps = PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH;
            write_packet(&mut s, 0, &greeting(caps, "mysql_native_password")).await;
            let Some(_) = read_packet(&mut s).await else {
                return;
            };
            write_packet(&mut s, 2, b"\xfemysql_clear_password\0").await;
            if let Some((_, p)) = read_packet(&mut s).await {
                seen.lock().expect("lock").push(p);
            }
        }
    })
    .await;
    assert_eq!(
        run(sql("SELECT 1"), real).await,
        down(
            "server asks for the password in clear text (mysql_clear_password) without TLS; refused"
        )
    );
    assert!(got.lock().expect("lock").is_empty(), "nothing sent after");
}

#[tokio::test]
async fn unsupported_auth_plugin_is_named() {
    let real = hostile::tcp(|mut s| async move {
        let caps = PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH;
        write_packet(&mut s, 0, &greeting(caps, "mysql_native_password")).await;
        if read_packet(&mut s).await.is_some() {
            write_packet(&mut s, 2, b"\xfeclient_ed25519\0abc\0").await;
            let _ = read_packet(&mut s).await;
        }
    })
    .await;
    assert_down_with(
        &run(sql("SELECT 1"), real).await,
        "server asks for auth plugin client_ed25519, which the check does not support",
    );
}

#[tokio::test]
async fn handshake_error_is_quoted() {
    let real = hostile::tcp(|mut s| async move {
        let mut p = vec![0xff];
        p.extend_from_slice(&1040u16.to_le_bytes());
        p.extend_from_slice(b"Too many connections");
        write_packet(&mut s, 0, &p).await;
    })
    .await;
    assert_eq!(
        run(sql("SELECT 1"), real).await,
        down("handshake: 1040 Too many connections")
    );
}

#[tokio::test]
async fn garbage_handshake() {
    let real = hostile::tcp(|mut s| async move {
        let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n").await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    assert_eq!(
        run(sql("SELECT 1"), real).await,
        down("malformed handshake: \"SSH-2.0-OpenSSH_9.2p1 Debian-2\"")
    );
    // A packet of the right shape whose content is not a handshake.
    let real = hostile::tcp(|mut s| async move {
        write_packet(&mut s, 0, b"HTTP/1.1 400 Bad Request").await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    assert_eq!(
        run(sql("SELECT 1"), real).await,
        down("malformed handshake: \"HTTP/1.1 400 Bad Request\"")
    );
}

#[tokio::test]
async fn silent_server_times_out() {
    let real = silent().await;
    let timeout = Duration::from_millis(300);
    assert_eq!(
        run_within(sql("SELECT 1"), real, timeout).await,
        down("no handshake within 300 ms")
    );
    // Logged in, then silent on the query.
    let real = hostile::tcp(|mut s| async move {
        let caps = PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH;
        write_packet(&mut s, 0, &greeting(caps, "mysql_native_password")).await;
        if read_packet(&mut s).await.is_some() {
            write_packet(&mut s, 2, &ok_packet()).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    })
    .await;
    assert_eq!(
        run_within(sql("SELECT 1"), real, timeout).await,
        down("query: no answer within 300 ms")
    );
}

#[tokio::test]
async fn closed_before_the_handshake() {
    let real = hostile::tcp(|s| async move { drop(s) }).await;
    assert_eq!(
        run(sql("SELECT 1"), real).await,
        down("connection closed before the handshake")
    );
}
