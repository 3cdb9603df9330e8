//! The LDAP check against a private slapd (Debian package `slapd`) started by the
//! test on loopback ports with a throw-away config and directory, and against
//! misbehaving servers written here.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use checkers::Verdict;
use checkers::spec::{Ldap, LdapBind, LdapScope, Protocol, Secret, Tls, TlsMode};
use support::check::{check, down, verdict};
use support::daemon::{Daemon, accepts, free_port, localhost, program, run_tool};
use support::hostile::{self, silent};
use support::pki::{Leaf, Pki};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(3);
const SUFFIX: &str = "dc=lab,dc=test";
const MONITOR_DN: &str = "cn=monitor,dc=lab,dc=test";
const MONITOR_PASSWORD: &str = "monitor-Secret-7";

fn anonymous(base_dn: &str, filter: &str) -> Ldap {
    Ldap {
        tls: TlsMode::None,
        bind: None,
        base_dn: base_dn.to_owned(),
        filter: filter.to_owned(),
        scope: LdapScope::Sub,
    }
}

fn as_monitor(password: &str, spec: Ldap) -> Ldap {
    Ldap {
        bind: Some(LdapBind {
            dn: MONITOR_DN.to_owned(),
            password: Secret::inline(password),
        }),
        ..spec
    }
}

fn with_tls(tls: TlsMode, spec: Ldap) -> Ldap {
    Ldap { tls, ..spec }
}

async fn run(spec: Ldap, real: SocketAddr) -> Verdict {
    run_within(spec, real, TIMEOUT).await
}

async fn run_within(spec: Ldap, real: SocketAddr, timeout: Duration) -> Verdict {
    verdict(check(Protocol::Ldap(spec), timeout), real).await
}

/// A slapd of its own: slapd.conf, the mdb directory and the log in `dir`, the test
/// tree loaded with slapadd, LDAP on one loopback port and, with a certificate,
/// LDAPS on another (and StartTLS on the first).
struct Slapd {
    ldap: SocketAddr,
    ldaps: SocketAddr,
    _daemon: Daemon,
}

impl Slapd {
    fn start(dir: &Path, leaf: Option<&Leaf>) -> Slapd {
        let slapd = program("/usr/sbin/slapd", "slapd");
        let slapadd = program("/usr/sbin/slapadd", "slapd");
        let db = dir.join("db");
        std::fs::create_dir_all(&db).expect("create the mdb directory");
        let conf = dir.join("slapd.conf");
        std::fs::write(&conf, slapd_conf(dir, leaf)).expect("write slapd.conf");
        let ldif = dir.join("tree.ldif");
        std::fs::write(&ldif, TREE).expect("write the tree");
        run_tool(
            Command::new(slapadd)
                .arg("-f")
                .arg(&conf)
                .arg("-l")
                .arg(&ldif),
            "",
        );

        let (ldap, ldaps) = (localhost(free_port()), localhost(free_port()));
        let mut urls = format!("ldap://{ldap}/");
        if leaf.is_some() {
            urls.push_str(&format!(" ldaps://{ldaps}/"));
        }
        let mut cmd = Command::new(slapd);
        // -d 0: in the foreground, no debug output.
        cmd.arg("-f")
            .arg(&conf)
            .arg("-h")
            .arg(urls)
            .args(["-d", "0"]);
        let mut daemon = Daemon::start(cmd, &dir.join("slapd.log"));
        let ports = if leaf.is_some() {
            vec![ldap, ldaps]
        } else {
            vec![ldap]
        };
        daemon.wait_until("slapd", || ports.iter().all(|&a| accepts(a)));
        Slapd {
            ldap,
            ldaps,
            _daemon: daemon,
        }
    }
}

/// Anonymous users may read everything but passwords and `ou=hidden`, which only
/// bound users see.
fn slapd_conf(dir: &Path, leaf: Option<&Leaf>) -> String {
    let tls = leaf.map_or(String::new(), |leaf| {
        format!(
            "TLSCertificateFile {}\nTLSCertificateKeyFile {}\n",
            leaf.cert_pem.display(),
            leaf.key_pem.display()
        )
    });
    format!(
        "include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {dir}/slapd.pid
argsfile {dir}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
{tls}
database mdb
maxsize 10485760
suffix \"{SUFFIX}\"
rootdn \"cn=admin,{SUFFIX}\"
rootpw admin-Secret-1
directory {dir}/db
access to attrs=userPassword by anonymous auth by * none
access to dn.subtree=\"ou=hidden,{SUFFIX}\" by users read by * none
access to * by * read
",
        dir = dir.display(),
    )
}

const TREE: &str = "dn: dc=lab,dc=test
objectClass: dcObject
objectClass: organization
dc: lab
o: lab

dn: cn=monitor,dc=lab,dc=test
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: monitor
userPassword: monitor-Secret-7

dn: ou=people,dc=lab,dc=test
objectClass: organizationalUnit
ou: people

dn: uid=alice,ou=people,dc=lab,dc=test
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: Liddell

dn: uid=bob,ou=people,dc=lab,dc=test
objectClass: inetOrgPerson
uid: bob
cn: Bob
sn: Builder

dn: ou=hidden,dc=lab,dc=test
objectClass: organizationalUnit
ou: hidden

dn: cn=backup,ou=hidden,dc=lab,dc=test
objectClass: organizationalRole
cn: backup
";

#[tokio::test]
async fn slapd_bind_and_search() {
    let dir = tempfile::tempdir().expect("tempdir");
    let slapd = Slapd::start(dir.path(), None);
    let real = slapd.ldap;

    // Two people match; the size limit of 1 makes slapd end with
    // sizeLimitExceeded after the first, which is up.
    let people = anonymous("ou=people,dc=lab,dc=test", "(objectClass=inetOrgPerson)");
    assert_eq!(run(people.clone(), real).await, Verdict::Up);
    assert_eq!(
        run(anonymous(SUFFIX, "(objectClass=*)"), real).await,
        Verdict::Up
    );
    let base = Ldap {
        scope: LdapScope::Base,
        ..anonymous(SUFFIX, "objectClass=*")
    };
    assert_eq!(run(base, real).await, Verdict::Up);
    let one = Ldap {
        scope: LdapScope::One,
        ..anonymous(SUFFIX, "(&(uid=*)(cn=Alice))")
    };
    assert_eq!(
        run(one.clone(), real).await,
        down("search under dc=lab,dc=test returned no entry"),
        "alice is two levels down"
    );
    let one_people = Ldap {
        base_dn: "ou=people,dc=lab,dc=test".into(),
        ..one
    };
    assert_eq!(run(one_people, real).await, Verdict::Up);

    assert_eq!(
        run(anonymous(SUFFIX, "(uid=carol)"), real).await,
        down("search under dc=lab,dc=test returned no entry")
    );
    assert_eq!(
        run(
            anonymous("ou=nowhere,dc=lab,dc=test", "(objectClass=*)"),
            real
        )
        .await,
        down("search failed: noSuchObject (32)")
    );

    // ou=hidden is invisible to anonymous users, readable once bound.
    let hidden = anonymous(SUFFIX, "(cn=backup)");
    assert_eq!(
        run(hidden.clone(), real).await,
        down("search under dc=lab,dc=test returned no entry")
    );
    assert_eq!(
        run(as_monitor(MONITOR_PASSWORD, hidden), real).await,
        Verdict::Up
    );
    assert_eq!(
        run(as_monitor(MONITOR_PASSWORD, people), real).await,
        Verdict::Up
    );
}

#[tokio::test]
async fn slapd_wrong_password_is_down_without_the_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let slapd = Slapd::start(dir.path(), None);
    let wrong = "Wrong-Horse-Battery-9";
    let verdict = run(
        as_monitor(wrong, anonymous(SUFFIX, "(objectClass=*)")),
        slapd.ldap,
    )
    .await;
    assert_eq!(
        verdict,
        down("bind as cn=monitor,dc=lab,dc=test rejected: invalidCredentials (49)")
    );
    let Verdict::Down(reason) = verdict else {
        unreachable!()
    };
    assert!(!reason.contains(wrong), "{reason}");

    let nobody = Ldap {
        bind: Some(LdapBind {
            dn: "cn=nobody,dc=lab,dc=test".into(),
            password: Secret::inline(MONITOR_PASSWORD),
        }),
        ..anonymous(SUFFIX, "(objectClass=*)")
    };
    let Verdict::Down(reason) = run(nobody, slapd.ldap).await else {
        panic!("an unknown DN does not bind");
    };
    assert_eq!(
        reason,
        "bind as cn=nobody,dc=lab,dc=test rejected: invalidCredentials (49)"
    );
    assert!(!reason.contains(MONITOR_PASSWORD), "{reason}");
}

#[tokio::test]
async fn slapd_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let leaf = pki.leaf("slapd", &["ldap.lab.test", "127.0.0.1"], false);
    let slapd = Slapd::start(dir.path(), Some(&leaf));
    let spec = as_monitor(MONITOR_PASSWORD, anonymous(SUFFIX, "(cn=backup)"));
    let test_ca = pki.tls();

    let starttls = with_tls(TlsMode::StartTls(test_ca.clone()), spec.clone());
    assert_eq!(run(starttls, slapd.ldap).await, Verdict::Up);
    let ldaps = with_tls(TlsMode::Implicit(test_ca.clone()), spec.clone());
    assert_eq!(run(ldaps, slapd.ldaps).await, Verdict::Up);
    let by_name = Tls {
        server_name: Some("ldap.lab.test".into()),
        ..test_ca.clone()
    };
    let ldaps = with_tls(TlsMode::Implicit(by_name), spec.clone());
    assert_eq!(run(ldaps, slapd.ldaps).await, Verdict::Up);

    for (mode, real) in [
        (TlsMode::StartTls(Tls::default()), slapd.ldap),
        (TlsMode::Implicit(Tls::default()), slapd.ldaps),
    ] {
        assert_eq!(
            run(with_tls(mode, spec.clone()), real).await,
            down("TLS: unknown issuer")
        );
    }
    let other_name = Tls {
        server_name: Some("ldap.example.org".into()),
        ..test_ca
    };
    let Verdict::Down(reason) = run(
        with_tls(TlsMode::StartTls(other_name), spec.clone()),
        slapd.ldap,
    )
    .await
    else {
        panic!("a certificate for another name is down");
    };
    assert!(
        reason.starts_with("TLS: certificate not valid for name \"ldap.example.org\""),
        "{reason}"
    );
    let unverified = Tls {
        verify: false,
        ..Tls::default()
    };
    assert_eq!(
        run(with_tls(TlsMode::StartTls(unverified), spec), slapd.ldap).await,
        Verdict::Up
    );
    // Plain LDAP to the LDAPS port: slapd waits for a TLS ClientHello.
    let Verdict::Down(reason) = run_within(
        anonymous(SUFFIX, "(objectClass=*)"),
        slapd.ldaps,
        Duration::from_millis(500),
    )
    .await
    else {
        panic!("plain LDAP to the LDAPS port is down");
    };
    assert!(
        reason == "connection closed before the answer to the bind"
            || reason == "answer to the bind: connection reset by peer",
        "{reason}"
    );
}

#[tokio::test]
async fn slapd_without_tls_and_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let slapd = Slapd::start(dir.path(), None);
    let real = slapd.ldap;
    let spec = anonymous(SUFFIX, "(objectClass=*)");
    // slapd without a certificate does not offer StartTLS.
    assert_eq!(
        run(
            with_tls(TlsMode::StartTls(Tls::default()), spec.clone()),
            real
        )
        .await,
        down("StartTLS refused: protocolError (2) \"unsupported extended operation\"")
    );

    assert_eq!(run(spec.clone(), real).await, Verdict::Up);
    drop(slapd);
    assert_eq!(
        run(spec, real).await,
        down(&format!("connect {real}: connection refused"))
    );
}

// Misbehaving servers.

/// Reads one LDAP request (a SEQUENCE with a definite length); `None` at EOF.
async fn read_request(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(total) = message_len(&buf)
            && buf.len() >= total
        {
            return Some(buf.drain(..total).collect());
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The length of the whole message at the start of `buf`, once its header is in.
fn message_len(buf: &[u8]) -> Option<usize> {
    let first = *buf.get(1)?;
    if first < 0x80 {
        return Some(2 + usize::from(first));
    }
    let n = usize::from(first & 0x7f);
    let digits = buf.get(2..2 + n)?;
    Some(2 + n + digits.iter().fold(0, |acc, &b| (acc << 8) | usize::from(b)))
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    assert!(content.len() < 0x80, "short form only");
    let mut out = vec![tag, content.len() as u8];
    out.extend_from_slice(content);
    out
}

/// An LDAPMessage with `op` (tag, LDAPResult fields and any extra elements).
fn response(id: u8, tag: u8, code: u8, text: &str, extra: &[u8]) -> Vec<u8> {
    let mut result = tlv(0x0a, &[code]);
    result.extend(tlv(0x04, b""));
    result.extend(tlv(0x04, text.as_bytes()));
    result.extend_from_slice(extra);
    let mut message = tlv(0x02, &[id]);
    message.extend(tlv(tag, &result));
    tlv(0x30, &message)
}

const BIND_RESPONSE: u8 = 0x61;
const EXTENDED_RESPONSE: u8 = 0x78;

/// A server that reads each request and answers with the next of `replies` (raw
/// bytes), then holds the connection open.
async fn scripted(replies: Vec<Vec<u8>>) -> SocketAddr {
    let replies = Arc::new(replies);
    hostile::tcp(move |mut stream| {
        let replies = replies.clone();
        async move {
            for reply in replies.iter() {
                if read_request(&mut stream).await.is_none() {
                    return;
                }
                if stream.write_all(reply).await.is_err() {
                    return;
                }
            }
            std::future::pending::<()>().await;
        }
    })
    .await
}

fn any_entry() -> Ldap {
    anonymous(SUFFIX, "(objectClass=*)")
}

#[tokio::test]
async fn garbage_answers() {
    let http = scripted(vec![b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()]).await;
    assert_eq!(
        run(any_entry(), http).await,
        down("malformed LDAP response to the bind: \"HTTP/1.1 400 Bad Request\"")
    );
    // An empty SEQUENCE (this one panics ldap3 0.12's connection task).
    let empty = scripted(vec![vec![0x30, 0x00]]).await;
    assert_eq!(
        run(any_entry(), empty).await,
        down("malformed LDAP response to the bind: bad message id")
    );
    let indefinite = scripted(vec![vec![0x30, 0x80, 0x02, 0x01, 0x01]]).await;
    assert_eq!(
        run(any_entry(), indefinite).await,
        down("malformed LDAP response to the bind: indefinite length")
    );
    // A message of 2 GiB announced: refused before anything is buffered.
    let huge = scripted(vec![vec![0x30, 0x84, 0x7f, 0xff, 0xff, 0xff, 0x02]]).await;
    assert_eq!(
        run(any_entry(), huge).await,
        down("LDAP response to the bind too long (2147483647 bytes, over 65536)")
    );
}

#[tokio::test]
async fn wrong_answers() {
    let bind_ok = response(1, BIND_RESPONSE, 0, "", &[]);
    let other_id = scripted(vec![response(7, BIND_RESPONSE, 0, "", &[])]).await;
    assert_eq!(
        run(any_entry(), other_id).await,
        down("malformed LDAP response to the bind: message id 7, expected 1")
    );
    // The answer to the bind again, for the search.
    let confused = scripted(vec![bind_ok.clone(), bind_ok]).await;
    assert_eq!(
        run(any_entry(), confused).await,
        down("malformed LDAP response to the search: message id 1, expected 2")
    );
    let search_bind = scripted(vec![
        response(1, BIND_RESPONSE, 0, "", &[]),
        response(2, BIND_RESPONSE, 0, "", &[]),
    ])
    .await;
    assert_eq!(
        run(any_entry(), search_bind).await,
        down("unexpected BindResponse in answer to the search")
    );
    let notice_name = tlv(0x8a, b"1.3.6.1.4.1.1466.20036");
    let notice = response(0, EXTENDED_RESPONSE, 52, "shutting down", &notice_name);
    let leaving = scripted(vec![notice]).await;
    assert_eq!(
        run(any_entry(), leaving).await,
        down("server ended the session: unavailable (52) \"shutting down\"")
    );
}

#[tokio::test]
async fn a_server_echoing_the_password_does_not_get_it_into_the_reason() {
    let password = "Echo-Me-Not-3";
    let text = format!("password {password} is wrong");
    let echo = scripted(vec![response(1, BIND_RESPONSE, 49, &text, &[])]).await;
    assert_eq!(
        run(as_monitor(password, any_entry()), echo).await,
        down(
            "bind as cn=monitor,dc=lab,dc=test rejected: invalidCredentials (49) \
             \"password <password> is wrong\""
        )
    );
}

#[tokio::test]
async fn starttls_answers() {
    let spec = with_tls(TlsMode::StartTls(Tls::default()), any_entry());
    let refused = response(
        1,
        EXTENDED_RESPONSE,
        2,
        "unsupported extended operation",
        &[],
    );
    let server = scripted(vec![refused]).await;
    assert_eq!(
        run(spec.clone(), server).await,
        down("StartTLS refused: protocolError (2) \"unsupported extended operation\"")
    );
    let mut injected = response(1, EXTENDED_RESPONSE, 0, "", &[]);
    injected.extend(response(2, BIND_RESPONSE, 0, "", &[]));
    let server = scripted(vec![injected]).await;
    assert_eq!(
        run(spec, server).await,
        down("server sent data after its StartTLS answer, before the handshake")
    );
}

#[tokio::test]
async fn closes_at_once() {
    // Closes once the bind came (closing with it unread would be a reset).
    let addr = hostile::tcp(|mut stream| async move {
        let _ = read_request(&mut stream).await;
    })
    .await;
    assert_eq!(
        run(any_entry(), addr).await,
        down("connection closed before the answer to the bind")
    );
}

#[tokio::test(start_paused = true)]
async fn never_answers() {
    let half_second = Duration::from_millis(500);
    let silent = silent().await;
    assert_eq!(
        run_within(any_entry(), silent, half_second).await,
        down("no LDAP answer to the bind within 500 ms")
    );
    // Binds, then never answers the search.
    let binds_only = scripted(vec![response(1, BIND_RESPONSE, 0, "", &[])]).await;
    assert_eq!(
        run_within(any_entry(), binds_only, half_second).await,
        down("no LDAP answer to the search within 500 ms")
    );
}
