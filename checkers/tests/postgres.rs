//! The PostgreSQL check against a private PostgreSQL 15 (Debian package
//! `postgresql`) started by the test on a loopback port as the `postgres` user,
//! and against misbehaving servers written here.

mod sql;
mod support;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use checkers::spec::{Login, Protocol, Secret, Sql, Tls};
use checkers::{Probe, Verdict};
use sql::{PASSWORD, assert_down_with};
use support::check::{check, down, verdict};
use support::daemon::{
    Daemon, accepts, chown, free_port, localhost, program, run_tool, set_mode, skip_unless_root,
    user,
};
use support::hostile::{self, silent};
use support::pki::Pki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(3);
const BIN: &str = "/usr/lib/postgresql/15/bin";

fn login(user: &str, password: &str) -> Login {
    Login {
        user: user.into(),
        password: Secret::inline(password),
    }
}

fn sql(query: &str) -> Sql {
    Sql {
        login: login("monitor", PASSWORD),
        database: Some("app".into()),
        query: query.into(),
        tls: None,
    }
}

fn as_user(user: &str, tls: Option<Tls>) -> Sql {
    Sql {
        login: login(user, PASSWORD),
        tls,
        ..sql("SELECT 1")
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
    verdict(check(Protocol::Postgres(spec), timeout), real).await
}

/// pg_hba.conf: trust on the socket (for the setup), and per role over TCP.
const HBA: &str = "\
local all all trust
hostssl all tlsonly 127.0.0.1/32 scram-sha-256
hostnossl all tlsonly 127.0.0.1/32 reject
host all md5user 127.0.0.1/32 md5
host all cleartext 127.0.0.1/32 password
host all all 127.0.0.1/32 scram-sha-256
";

/// A private postgres in the foreground, on a loopback port and a socket in `dir`,
/// with TLS from the test PKI.
struct Postgres {
    daemon: Daemon,
    dir: PathBuf,
    port: u16,
}

impl Postgres {
    fn start(dir: &Path, cert: &Path, key: &Path) -> Postgres {
        let initdb = program(&format!("{BIN}/initdb"), "postgresql");
        let postgres = program(&format!("{BIN}/postgres"), "postgresql");
        program(&format!("{BIN}/psql"), "postgresql-client");
        // PostgreSQL refuses to run as root.
        let owner = user("postgres", "postgresql");
        chown(dir, owner);
        chown(cert, owner);
        chown(key, owner);
        set_mode(key, 0o600);
        let data = dir.join("data");
        run_tool(
            Command::new(initdb)
                .uid(owner.0)
                .gid(owner.1)
                .env("LC_ALL", "C.UTF-8")
                .args(["--no-sync", "-U", "postgres", "--auth=trust", "-D"])
                .arg(&data),
            "",
        );
        let hba = data.join("pg_hba.conf");
        std::fs::write(&hba, HBA).expect("write pg_hba.conf");
        chown(&hba, owner);

        let port = free_port();
        let mut cmd = Command::new(postgres);
        cmd.uid(owner.0)
            .gid(owner.1)
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(dir)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args([
                "-c",
                "ssl=on",
                "-c",
                "fsync=off",
                "-c",
                "shared_buffers=16MB",
            ])
            .arg("-c")
            .arg(format!("ssl_cert_file={}", cert.display()))
            .arg("-c")
            .arg(format!("ssl_key_file={}", key.display()));
        let mut daemon = Daemon::start(cmd, &dir.join("postgres.log"));
        let sock = dir.join(format!(".s.PGSQL.{port}"));
        daemon.wait_until("postgres", || sock.exists() && accepts(localhost(port)));
        let pg = Postgres {
            daemon,
            dir: dir.to_owned(),
            port,
        };
        pg.psql(
            "postgres",
            &format!(
                "CREATE ROLE monitor LOGIN PASSWORD '{PASSWORD}';
                 CREATE ROLE tlsonly LOGIN PASSWORD '{PASSWORD}';
                 CREATE ROLE cleartext LOGIN PASSWORD '{PASSWORD}';
                 SET password_encryption = 'md5';
                 CREATE ROLE md5user LOGIN PASSWORD '{PASSWORD}';"
            ),
        );
        // Not in a transaction: a statement of its own.
        pg.psql("postgres", "CREATE DATABASE app");
        pg.psql(
            "app",
            "CREATE TABLE health (ok int);
             INSERT INTO health VALUES (1);
             CREATE TABLE empty (ok int);
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO PUBLIC;",
        );
        pg
    }

    /// Runs `statements` as postgres over the socket.
    fn psql(&self, db: &str, statements: &str) {
        run_tool(
            Command::new(format!("{BIN}/psql"))
                .arg("-h")
                .arg(&self.dir)
                .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
                .args(["-v", "ON_ERROR_STOP=1", "-X", "-q", "-c", statements]),
            &self.daemon.log(),
        );
    }

    fn addr(&self) -> SocketAddr {
        localhost(self.port)
    }
}

/// Every case against one server, then stopped.
#[tokio::test]
async fn postgresql() {
    if skip_unless_root("postgres runs as the postgres user") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // The postgres user must reach its data directory, certificate and key.
    set_mode(dir.path(), 0o755);
    let pki_dir = dir.path().join("pki");
    std::fs::create_dir(&pki_dir).expect("pki dir");
    set_mode(&pki_dir, 0o755);
    let pki = Pki::new(&pki_dir);
    let leaf = sql::server_leaf(&pki);
    let pg_dir = dir.path().join("pg");
    std::fs::create_dir(&pg_dir).expect("pg dir");
    let pg = Postgres::start(&pg_dir, &leaf.cert_pem, &leaf.key_pem);
    let real = pg.addr();

    assert_eq!(run(sql("SELECT 1"), real).await, Verdict::Up);
    assert_eq!(run(sql("SELECT ok FROM health"), real).await, Verdict::Up);
    assert_eq!(
        run(sql("SELECT ok FROM empty"), real).await,
        down("query returned no row")
    );
    assert_eq!(
        run(sql("SET search_path = public"), real).await,
        down("query returned no row")
    );
    assert_eq!(
        run(sql("SELECT * FROM nope"), real).await,
        down("query failed: 42P01 relation \"nope\" does not exist")
    );
    let wrong = Sql {
        login: login("monitor", "not-the-password"),
        ..sql("SELECT 1")
    };
    let v = run(wrong, real).await;
    assert_eq!(
        v,
        down(
            "login as monitor rejected: 28P01 password authentication failed for user \"monitor\""
        )
    );
    assert!(!format!("{v:?}").contains("not-the-password"));
    let no_db = Sql {
        database: Some("nope".into()),
        ..sql("SELECT 1")
    };
    assert_eq!(
        run(no_db, real).await,
        down("login as monitor rejected: 3D000 database \"nope\" does not exist")
    );
    // The database defaults to the user's name.
    let default_db = Sql {
        database: None,
        ..sql("SELECT 1")
    };
    assert_eq!(
        run(default_db, real).await,
        down("login as monitor rejected: 3D000 database \"monitor\" does not exist")
    );
    assert_eq!(run(as_user("md5user", None), real).await, Verdict::Up);

    // From a source address, as a director on a VIP would.
    let mut bound = check(Protocol::Postgres(sql("SELECT 1")), TIMEOUT);
    bound.connect.bind = Some("127.0.0.1".parse().expect("ip"));
    let probe = Probe::new(bound).expect("valid check");
    assert_eq!(probe.run(real).await.expect("works"), Verdict::Up);

    // TLS, verified against the test CA.
    sql::tls_verification(&pki, |tls| run(with_tls(tls), real)).await;
    let ca = pki.tls();
    // A role only allowed over TLS.
    assert_down_with(
        &run(as_user("tlsonly", None), real).await,
        "login as tlsonly rejected: 28000 pg_hba.conf rejects connection for host \"127.0.0.1\", user \"tlsonly\"",
    );
    assert_eq!(
        run(as_user("tlsonly", Some(ca.clone())), real).await,
        Verdict::Up
    );
    // A server asking for the password in clear text gets it only over TLS.
    assert_eq!(
        run(as_user("cleartext", None), real).await,
        down("server asks for the password in clear text without TLS; refused")
    );
    assert_eq!(run(as_user("cleartext", Some(ca)), real).await, Verdict::Up);

    drop(pg);
    assert_eq!(
        run(sql("SELECT 1"), real).await,
        down(&format!("connect {real}: connection refused"))
    );
}

// Misbehaving servers.

/// The client's first message (StartupMessage or SSLRequest): length-prefixed.
async fn read_startup(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.ok()?;
    let len = u32::from_be_bytes(len) as usize;
    let mut body = vec![0; len.checked_sub(4)?];
    s.read_exact(&mut body).await.ok()?;
    Some(body)
}

/// A backend message.
fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

#[tokio::test]
async fn garbage_handshake() {
    let real = hostile::tcp(|mut s| async move {
        let _ = read_startup(&mut s).await;
        let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n").await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    assert_eq!(
        run(sql("SELECT 1"), real).await,
        down("malformed handshake: \"SSH-2.0-OpenSSH_9.2p1 Debian-2\"")
    );
    // With TLS the first answer is one byte: 'S' or 'N'.
    let tls = Tls {
        verify: false,
        ..Tls::default()
    };
    assert_eq!(
        run(with_tls(tls), real).await,
        down("malformed handshake: \"SSH-2.0-OpenSSH_9.2p1 Debian-2\"")
    );
}

#[tokio::test]
async fn tls_required_but_refused() {
    let real = hostile::tcp(|mut s| async move {
        let _ = read_startup(&mut s).await;
        let _ = s.write_all(b"N").await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
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
async fn clear_text_request_gets_no_password() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    let real = hostile::tcp(move |mut s| {
        let seen = seen.clone();
        async move {
            let _ = read_startup(&mut s).await;
            let _ = s.write_all(&message(b'R', &3u32.to_be_bytes())).await;
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
            seen.lock().expect("lock").push(rest);
        }
    })
    .await;
    assert_eq!(
        run(sql("SELECT 1"), real).await,
        down("server asks for the password in clear text without TLS; refused")
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = got.lock().expect("lock");
    assert!(
        got.iter().all(|bytes| !bytes
            .windows(PASSWORD.len())
            .any(|w| w == PASSWORD.as_bytes())),
        "the password was sent: {got:?}"
    );
}

/// Takes any login (AuthenticationOk, ReadyForQuery) and reads the query, then
/// runs `after`.
async fn logged_in<F, Fut>(after: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + Copy + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    hostile::tcp(move |mut s| async move {
        let _ = read_startup(&mut s).await;
        let mut hello = message(b'R', &0u32.to_be_bytes());
        hello.extend(message(b'K', &[0, 0, 0, 1, 0, 0, 0, 2]));
        hello.extend(message(b'Z', b"I"));
        let _ = s.write_all(&hello).await;
        let mut head = [0u8; 5];
        if s.read_exact(&mut head).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut query = vec![0; len.saturating_sub(4)];
        if s.read_exact(&mut query).await.is_err() {
            return;
        }
        after(s).await;
    })
    .await
}

#[tokio::test]
async fn endless_answer_is_cut() {
    // A DataRow claiming 1 GiB, streamed until the client gives up.
    let real = logged_in(|mut s| async move {
        let mut head = vec![b'T'];
        let desc = b"\0\x01x\0\0\0\0\0\0\0\0\0\0\x19\xff\xff\xff\xff\xff\xff\0\0";
        head.extend_from_slice(&(desc.len() as u32 + 4).to_be_bytes());
        head.extend_from_slice(desc);
        head.push(b'D');
        head.extend_from_slice(&(1u32 << 30).to_be_bytes());
        let _ = s.write_all(&head).await;
        let chunk = vec![b'x'; 64 << 10];
        for _ in 0..(1 << 14) {
            if s.write_all(&chunk).await.is_err() {
                return;
            }
        }
    })
    .await;
    assert_eq!(
        run(sql("SELECT x FROM big"), real).await,
        down("answer too long (over 1048576 bytes)")
    );
}

#[tokio::test]
async fn silent_server_times_out() {
    let timeout = Duration::from_millis(300);
    let real = silent().await;
    assert_eq!(
        run_within(sql("SELECT 1"), real, timeout).await,
        down("no handshake within 300 ms")
    );
    let real = logged_in(|s| async move {
        let _held = s;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    assert_eq!(
        run_within(sql("SELECT 1"), real, timeout).await,
        down("query: no answer within 300 ms")
    );
}

#[tokio::test]
async fn closed_before_the_handshake() {
    let real = hostile::tcp(|mut s| async move {
        let _ = read_startup(&mut s).await;
    })
    .await;
    assert_eq!(
        run(sql("SELECT 1"), real).await,
        down("connection closed before the handshake")
    );
}
