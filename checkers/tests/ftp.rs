//! The FTP check against private vsftpd instances (Debian package `vsftpd`)
//! started by the test on loopback ports, and against misbehaving servers written
//! here.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use checkers::Verdict;
use checkers::spec::{Ftp, Login, Pattern, Protocol, Secret, Tls, TlsMode};
use support::check::{assert_down, check, down, verdict};
use support::daemon::{
    Daemon, accepts, free_port, greets, localhost, program, set_mode, skip_unless_root,
};
use support::hostile::{self, scripted, silent};
use support::pki::{Leaf, Pki};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const TIMEOUT: Duration = Duration::from_secs(3);
const CONTENT: &str = "hello from vsftpd\n";

fn anonymous() -> Ftp {
    Ftp {
        tls: TlsMode::None,
        login: None,
        retrieve: None,
        expect: None,
    }
}

fn retrieve(path: &str, expect: Option<&str>) -> Ftp {
    Ftp {
        retrieve: Some(path.into()),
        expect: expect.map(|e| Pattern::new(e).expect("pattern")),
        ..anonymous()
    }
}

async fn run(spec: Ftp, real: SocketAddr) -> Verdict {
    run_within(spec, real, TIMEOUT).await
}

async fn run_within(spec: Ftp, real: SocketAddr, timeout: Duration) -> Verdict {
    verdict(check(Protocol::Ftp(spec), timeout), real).await
}

/// A vsftpd instance of its own on 127.0.0.1: anonymous access to `dir/anon`
/// (`ok.txt`, and `big.bin` of 1.5 MiB starting with "HEAD"), local users, and TLS
/// with `leaf` (AUTH TLS; with `implicit`, FTPS from the first byte). It runs in
/// the foreground as our child.
struct Vsftpd {
    port: u16,
    _daemon: Daemon,
}

impl Vsftpd {
    fn start(dir: &Path, name: &str, pki_leaf: &Leaf, implicit: bool) -> Vsftpd {
        let vsftpd = program("/usr/sbin/vsftpd", "vsftpd");
        set_mode(dir, 0o755);
        let anon = dir.join("anon");
        if !anon.exists() {
            std::fs::create_dir(&anon).expect("create the anonymous root");
            std::fs::write(anon.join("ok.txt"), CONTENT).expect("write ok.txt");
            let mut big = b"HEAD".to_vec();
            big.resize(3 << 19, b'.');
            std::fs::write(anon.join("big.bin"), big).expect("write big.bin");
            // vsftpd refuses a chroot it could write to.
            set_mode(&anon, 0o555);
        }
        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).expect("create secure_chroot_dir");
        let port = free_port();
        let conf = dir.join(format!("{name}.conf"));
        std::fs::write(
            &conf,
            format!(
                "listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port={port}
background=NO
anonymous_enable=YES
anon_root={anon}
no_anon_password=YES
local_enable=YES
write_enable=NO
chroot_local_user=NO
pasv_enable=YES
port_enable=NO
seccomp_sandbox=NO
secure_chroot_dir={empty}
xferlog_enable=NO
vsftpd_log_file={dir}/{name}.log
syslog_enable=NO
delay_failed_login=0
ssl_enable=YES
implicit_ssl={implicit}
rsa_cert_file={cert}
rsa_private_key_file={key}
allow_anon_ssl=YES
force_local_logins_ssl=NO
force_local_data_ssl=NO
force_anon_logins_ssl=NO
force_anon_data_ssl=NO
ssl_ciphers=HIGH
require_ssl_reuse=YES
",
                anon = anon.display(),
                empty = empty.display(),
                dir = dir.display(),
                implicit = if implicit { "YES" } else { "NO" },
                cert = pki_leaf.cert_pem.display(),
                key = pki_leaf.key_pem.display(),
            ),
        )
        .expect("write vsftpd.conf");
        let mut cmd = Command::new(vsftpd);
        cmd.arg(&conf);
        let mut daemon = Daemon::start(cmd, &dir.join(format!("{name}.out")));
        // With implicit FTPS the greeting comes after a handshake.
        daemon.wait_until("vsftpd", || {
            let addr = localhost(port);
            if implicit {
                accepts(addr)
            } else {
                greets(addr, b"220")
            }
        });
        Vsftpd {
            port,
            _daemon: daemon,
        }
    }

    fn addr(&self) -> SocketAddr {
        localhost(self.port)
    }
}

/// A system user for the test (vsftpd's local logins go through PAM), removed
/// when dropped.
struct User {
    name: String,
}

impl User {
    fn add(home: &Path, password: &str) -> User {
        let name = format!("dftp{}", std::process::id());
        let _ = Command::new("userdel").arg(&name).status();
        let status = Command::new("useradd")
            .args(["--no-create-home", "--shell", "/bin/sh", "--home-dir"])
            .arg(home)
            .arg(&name)
            .status()
            .expect("run useradd");
        assert!(status.success(), "useradd {name} failed ({status})");
        let user = User { name };
        let mut chpasswd = Command::new("chpasswd")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("run chpasswd");
        {
            use std::io::Write;
            let stdin = chpasswd.stdin.as_mut().expect("chpasswd stdin");
            writeln!(stdin, "{}:{password}", user.name).expect("write to chpasswd");
        }
        assert!(chpasswd.wait().expect("chpasswd").success(), "chpasswd");
        std::fs::create_dir_all(home).expect("create the home");
        let status = Command::new("chown")
            .arg(&user.name)
            .arg(home)
            .status()
            .expect("chown");
        assert!(status.success());
        std::fs::write(home.join("mine.txt"), "private file\n").expect("write mine.txt");
        user
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

/// A plain vsftpd with a certificate for ftp.lab.test and 127.0.0.1 from a test
/// PKI of its own, all in a tempdir.
struct Lab {
    dir: tempfile::TempDir,
    pki: Pki,
    plain: Vsftpd,
}

impl Lab {
    /// `None`, after saying why, when not root.
    fn start() -> Option<Lab> {
        if skip_unless_root("vsftpd starts as root to chroot and switch users") {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::new(dir.path());
        let leaf = pki.leaf("ftp", &["ftp.lab.test", "127.0.0.1"], false);
        let plain = Vsftpd::start(dir.path(), "plain", &leaf, false);
        Some(Lab { dir, pki, plain })
    }
}

#[tokio::test]
async fn vsftpd_anonymous_and_retrieve() {
    let Some(lab) = Lab::start() else {
        return;
    };
    let real = lab.plain.addr();
    assert_eq!(run(anonymous(), real).await, Verdict::Up);
    assert_eq!(
        run(retrieve("/ok.txt", Some("^hello from")), real).await,
        Verdict::Up
    );
    assert_eq!(run(retrieve("ok.txt", None), real).await, Verdict::Up);
    assert_eq!(
        run(retrieve("/ok.txt", Some("^goodbye")), real).await,
        down("file did not match /^goodbye/ (got 18 bytes: \"hello from vsftpd\\n\")")
    );
    assert_eq!(
        run(retrieve("/missing.txt", None), real).await,
        down("RETR /missing.txt: 550 Failed to open file.")
    );
    // Over MAX_BODY: matched on the first MiB, the rest not waited for.
    assert_eq!(
        run(retrieve("/big.bin", Some("^HEAD")), real).await,
        Verdict::Up
    );
    let v = run(retrieve("/big.bin", Some("TAIL")), real).await;
    assert_down(&v, "(got the first 1048576 bytes: \"HEAD....");
}

#[tokio::test]
async fn vsftpd_local_login() {
    let Some(lab) = Lab::start() else {
        return;
    };
    let real = lab.plain.addr();
    let password = "Corr3ct-horse";
    let user = User::add(&lab.dir.path().join("home"), password);
    let login = |password: &str| Ftp {
        login: Some(Login {
            user: user.name.clone(),
            password: Secret::inline(password),
        }),
        ..retrieve("mine.txt", Some("^private"))
    };
    assert_eq!(run(login(password), real).await, Verdict::Up);
    let wrong = "Wr0ng-battery-staple";
    // PAM (pam_unix) holds a failed login for about 2 s.
    let v = run_within(login(wrong), real, Duration::from_secs(10)).await;
    let reason = assert_down(&v, "login rejected: 530 Login incorrect.");
    assert!(!reason.contains(wrong), "{reason}");
    assert!(!reason.contains(password), "{reason}");
}

#[tokio::test]
async fn vsftpd_auth_tls() {
    let Some(lab) = Lab::start() else {
        return;
    };
    let real = lab.plain.addr();
    let auth_tls = |tls: Tls| Ftp {
        tls: TlsMode::StartTls(tls),
        ..anonymous()
    };
    assert_eq!(run(auth_tls(lab.pki.tls()), real).await, Verdict::Up);
    // The file over a TLS data connection resuming the control session (vsftpd's
    // require_ssl_reuse).
    let over_tls = Ftp {
        tls: TlsMode::StartTls(lab.pki.tls()),
        ..retrieve("/ok.txt", Some("(?m)^hello from vsftpd$"))
    };
    assert_eq!(run(over_tls, real).await, Verdict::Up);
    let by_name = Tls {
        server_name: Some("ftp.lab.test".into()),
        ..lab.pki.tls()
    };
    assert_eq!(run(auth_tls(by_name), real).await, Verdict::Up);
    assert_eq!(
        run(auth_tls(Tls::default()), real).await,
        down("TLS: unknown issuer")
    );
}

#[tokio::test]
async fn vsftpd_implicit_ftps() {
    let Some(lab) = Lab::start() else {
        return;
    };
    let leaf = lab.pki.leaf("ftps", &["ftp.lab.test", "127.0.0.1"], false);
    let ftps = Vsftpd::start(lab.dir.path(), "implicit", &leaf, true);
    let implicit = Ftp {
        tls: TlsMode::Implicit(lab.pki.tls()),
        ..retrieve("/ok.txt", Some("^hello"))
    };
    assert_eq!(run(implicit.clone(), ftps.addr()).await, Verdict::Up);
    let unverified = Ftp {
        tls: TlsMode::Implicit(Tls::default()),
        ..implicit
    };
    assert_eq!(
        run(unverified, ftps.addr()).await,
        down("TLS: unknown issuer")
    );
}

#[tokio::test]
async fn vsftpd_stopped() {
    let Some(lab) = Lab::start() else {
        return;
    };
    let real = lab.plain.addr();
    assert_eq!(run(anonymous(), real).await, Verdict::Up);
    drop(lab);
    assert_eq!(
        run(anonymous(), real).await,
        down(&format!("connect {real}: connection refused"))
    );
}

// Misbehaving servers.

const LOGIN: [(&str, &str); 3] = [
    ("USER", "331 Please specify the password.\r\n"),
    ("PASS", "230 Login successful.\r\n"),
    ("QUIT", "221 Goodbye.\r\n"),
];

#[tokio::test]
async fn multi_line_greeting() {
    let addr = scripted(
        "220-Welcome to the lab\r\n   (indented, not the end)\r\n220-still going\r\n220 ready\r\n",
        &LOGIN,
    )
    .await;
    assert_eq!(run(anonymous(), addr).await, Verdict::Up);
}

#[tokio::test]
async fn garbage_greeting() {
    let addr = scripted("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", &[]).await;
    assert_eq!(
        run(anonymous(), addr).await,
        down("greeting is not FTP: \"SSH-2.0-OpenSSH_9.2p1 Debian-2\"")
    );
    let endless = scripted(&format!("220-{}", "x".repeat(100 << 10)), &[]).await;
    let v = run(anonymous(), endless).await;
    assert_down(&v, "greeting too long");
}

#[tokio::test]
async fn greeting_421() {
    let addr = scripted("421 Too many connections (8) from this IP\r\n", &[]).await;
    assert_eq!(
        run(anonymous(), addr).await,
        down("greeting 421 Too many connections (8) from this IP (expected 220)")
    );
}

#[tokio::test(start_paused = true)]
async fn never_greets() {
    let addr = silent().await;
    assert_eq!(
        run_within(anonymous(), addr, Duration::from_millis(500)).await,
        down("no greeting within 500 ms")
    );
}

#[tokio::test]
async fn password_echoed_by_the_server_is_not_shown() {
    let addr = scripted(
        "220 ready\r\n",
        &[
            ("USER", "331 Password please.\r\n"),
            ("PASS HUNTER2", "530 Wrong password hunter2 for web\r\n"),
        ],
    )
    .await;
    let spec = Ftp {
        login: Some(Login {
            user: "web".into(),
            password: Secret::inline("hunter2"),
        }),
        ..anonymous()
    };
    assert_eq!(
        run(spec, addr).await,
        down("login rejected: 530 Wrong password <password> for web")
    );
}

#[tokio::test]
async fn auth_tls_not_offered() {
    let addr = scripted("220 ready\r\n", &[("AUTH TLS", "500 Unknown command.\r\n")]).await;
    let spec = Ftp {
        tls: TlsMode::StartTls(Tls::default()),
        ..anonymous()
    };
    assert_eq!(
        run(spec, addr).await,
        down("AUTH TLS answered 500 Unknown command. (expected 234)")
    );
}

/// A server whose PASV reply names another host (`claimed`) while it listens for
/// the data connection on 127.0.0.1 only: the check must connect to the control
/// connection's peer, not where the reply points.
async fn pasv_elsewhere(claimed: Ipv4Addr) -> SocketAddr {
    hostile::tcp(move |stream| async move {
        let data = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind data");
        let port = data.local_addr().expect("data addr").port();
        let [a, b, c, d] = claimed.octets();
        let pasv = format!(
            "227 Entering Passive Mode ({a},{b},{c},{d},{},{}).\r\n",
            port >> 8,
            port & 0xff
        );
        let mut io = BufReader::new(stream);
        let _ = io.get_mut().write_all(b"220 ready\r\n").await;
        let mut line = String::new();
        while matches!(io.read_line(&mut line).await, Ok(n) if n > 0) {
            let command = line.trim_end().to_ascii_uppercase();
            let reply = match command.split(' ').next().unwrap_or("") {
                "USER" => "331 Password please.\r\n".to_owned(),
                "PASS" => "230 Login successful.\r\n".to_owned(),
                "TYPE" => "200 Switching to Binary mode.\r\n".to_owned(),
                "EPSV" => "502 EPSV not implemented.\r\n".to_owned(),
                "PASV" => pasv.clone(),
                "RETR" => {
                    let Ok(Ok((mut conn, _))) =
                        tokio::time::timeout(Duration::from_secs(2), data.accept()).await
                    else {
                        let _ = io.get_mut().write_all(b"425 No data connection.\r\n").await;
                        return;
                    };
                    let _ = io.get_mut().write_all(b"150 Here it comes.\r\n").await;
                    let _ = conn.write_all(b"data from the right host\n").await;
                    drop(conn);
                    "226 Transfer complete.\r\n".to_owned()
                }
                "QUIT" => "221 Goodbye.\r\n".to_owned(),
                _ => return,
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
async fn pasv_address_is_not_followed() {
    // A loopback address the data listener is not on: if the check followed the
    // reply its connection would be refused. (An address off this host is not
    // used: a test sends nothing beyond the loopback.)
    let addr = pasv_elsewhere(Ipv4Addr::new(127, 0, 0, 2)).await;
    assert_eq!(
        run(retrieve("/file", Some("right host")), addr).await,
        Verdict::Up
    );
}

#[tokio::test]
async fn data_connection_refused() {
    let addr = scripted(
        "220 ready\r\n",
        &[
            ("USER", "230 Logged in without a password.\r\n"),
            ("TYPE", "200 Binary.\r\n"),
            ("EPSV", "229 Entering Extended Passive Mode (|||1|)\r\n"),
        ],
    )
    .await;
    let v = run(retrieve("/file", None), addr).await;
    assert_down(&v, "data connection to 127.0.0.1:1: connection refused");
}
