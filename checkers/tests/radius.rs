//! The RADIUS check against a real FreeRADIUS (Debian package `freeradius`) with a
//! throw-away config on loopback, and against misbehaving servers written here.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use checkers::spec::{Login, Protocol, Radius, Secret};
use checkers::{Probe, Verdict};
use hmac::{Hmac, Mac as _};
use md5::{Digest as _, Md5};
use support::check::{check, down, verdict};
use support::daemon::{Daemon, free_port, localhost, program};
use support::hostile;

const SECRET: &str = "testing123-lab";
const PASSWORD: &str = "wonder-land-7";
const TIMEOUT: Duration = Duration::from_millis(2000);

fn radius(user: &str, password: &str, secret: &str) -> Radius {
    Radius {
        secret: Secret::inline(secret),
        login: Login {
            user: user.to_owned(),
            password: Secret::inline(password),
        },
        nas_identifier: None,
        accept_reject: false,
    }
}

async fn run(spec: Radius, real: SocketAddr) -> Verdict {
    run_within(spec, real, TIMEOUT).await
}

async fn run_within(spec: Radius, real: SocketAddr, timeout: Duration) -> Verdict {
    verdict(check(Protocol::Radius(spec), timeout), real).await
}

/// FreeRADIUS on 127.0.0.1:`port` with its whole config in a tempdir: one client
/// (127.0.0.1, secret [`SECRET`]), PAP against a users file.
struct FreeRadius {
    port: u16,
    daemon: Option<Daemon>,
    _dir: tempfile::TempDir,
}

impl FreeRadius {
    fn start() -> FreeRadius {
        let freeradius = program("/usr/sbin/freeradius", "freeradius");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        std::fs::write(
            dir.path().join("radiusd.conf"),
            radiusd_conf(dir.path(), port),
        )
        .expect("write radiusd.conf");
        std::fs::write(dir.path().join("users"), USERS).expect("write users");
        let mut cmd = std::process::Command::new(freeradius);
        // -f: foreground; -l stdout: log to the daemon log; -d: our config only.
        cmd.args(["-f", "-l", "stdout", "-d"]).arg(dir.path());
        let mut daemon = Daemon::start(cmd, &dir.path().join("radiusd.log"));
        let log = dir.path().join("radiusd.log");
        daemon.wait_until("freeradius", || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Ready to process requests"))
        });
        FreeRadius {
            port,
            daemon: Some(daemon),
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        localhost(self.port)
    }

    fn stop(&mut self) {
        self.daemon = None;
    }
}

/// alice logs in with [`PASSWORD`]; bob is refused with a message, whatever his
/// password.
const USERS: &str = r#"alice	Cleartext-Password := "wonder-land-7"
bob	Auth-Type := Reject
	Reply-Message := "Account disabled"
"#;

fn radiusd_conf(dir: &Path, port: u16) -> String {
    let dir = dir.display();
    format!(
        r#"prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = {dir}
sbindir = /usr/sbin
logdir = {dir}
raddbdir = {dir}
radacctdir = {dir}
name = freeradius
confdir = {dir}
modconfdir = {dir}
run_dir = {dir}
db_dir = {dir}
libdir = /usr/lib/freeradius
pidfile = {dir}/radiusd.pid
max_request_time = 5
cleanup_delay = 1
max_requests = 1024
hostname_lookups = no
log {{
	destination = stdout
	colourise = no
}}
security {{
	allow_core_dumps = no
	max_attributes = 200
	# The default delays each Access-Reject by a second.
	reject_delay = 0
	status_server = yes
}}
thread pool {{
	start_servers = 2
	max_servers = 4
	min_spare_servers = 1
	max_spare_servers = 2
}}
client lab {{
	ipaddr = 127.0.0.1
	secret = {SECRET}
}}
modules {{
	pap {{
	}}
	files {{
		filename = {dir}/users
	}}
}}
server default {{
	listen {{
		type = auth
		ipaddr = 127.0.0.1
		port = {port}
	}}
	authorize {{
		files
		pap
	}}
	authenticate {{
		Auth-Type PAP {{
			pap
		}}
	}}
}}
"#
    )
}

#[tokio::test]
async fn freeradius_accepts_the_right_password() {
    let server = FreeRadius::start();
    let real = server.addr();
    assert_eq!(
        run(radius("alice", PASSWORD, SECRET), real).await,
        Verdict::Up
    );
    let named = Radius {
        nas_identifier: Some("lb-1.lab".to_owned()),
        ..radius("alice", PASSWORD, SECRET)
    };
    assert_eq!(run(named, real).await, Verdict::Up);
    // Bound to a source: NAS-IP-Address goes along.
    let mut c = check(Protocol::Radius(radius("alice", PASSWORD, SECRET)), TIMEOUT);
    c.connect.bind = Some(Ipv4Addr::LOCALHOST.into());
    let probe = Probe::new(c).expect("valid check");
    assert_eq!(probe.run(real).await.expect("works"), Verdict::Up);
}

#[tokio::test]
async fn freeradius_rejects_a_wrong_password() {
    let server = FreeRadius::start();
    let real = server.addr();
    let verdict = run(radius("alice", "not-the-password", SECRET), real).await;
    assert_eq!(verdict, down("Access-Reject"));
    let Verdict::Down(reason) = verdict else {
        unreachable!()
    };
    assert!(!reason.contains("not-the-password"), "{reason}");
    assert!(!reason.contains(SECRET), "{reason}");

    assert_eq!(
        run(radius("bob", PASSWORD, SECRET), real).await,
        down("Access-Reject: Account disabled")
    );
    assert_eq!(
        run(radius("nobody", PASSWORD, SECRET), real).await,
        down("Access-Reject")
    );
    // The server answered, properly signed: alive, if that is all that is asked.
    let lenient = Radius {
        accept_reject: true,
        ..radius("alice", "not-the-password", SECRET)
    };
    assert_eq!(run(lenient, real).await, Verdict::Up);
}

#[tokio::test]
async fn freeradius_drops_a_wrong_secret() {
    let server = FreeRadius::start();
    let verdict = run_within(
        radius("alice", PASSWORD, "not-the-secret"),
        server.addr(),
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(
        verdict,
        down("no RADIUS answer within 500 ms (a wrong shared secret is silently dropped)")
    );
}

#[tokio::test]
async fn freeradius_stopped() {
    let mut server = FreeRadius::start();
    let real = server.addr();
    assert_eq!(
        run(radius("alice", PASSWORD, SECRET), real).await,
        Verdict::Up
    );
    server.stop();
    assert_eq!(
        run(radius("alice", PASSWORD, SECRET), real).await,
        down(&format!("UDP port {} unreachable", real.port()))
    );
}

// Misbehaving servers. Time is paused: waiting for an answer that never comes costs
// nothing, and the reason shows the timeout.

/// An answer to `request` with `code`, `identifier` and `attributes`, signed with
/// `secret` (RFC 2865 3).
fn signed(request: &[u8], code: u8, identifier: u8, attributes: &[u8], secret: &str) -> Vec<u8> {
    let mut bytes = vec![code, identifier];
    bytes.extend_from_slice(&(20 + attributes.len() as u16).to_be_bytes());
    bytes.extend_from_slice(&request[4..20]);
    bytes.extend_from_slice(attributes);
    let auth = Md5::new()
        .chain_update(&bytes)
        .chain_update(secret)
        .finalize();
    bytes[4..20].copy_from_slice(&auth);
    bytes
}

fn accept(request: &[u8]) -> Vec<u8> {
    signed(request, 2, request[1], &[], SECRET)
}

#[tokio::test]
async fn the_request_is_what_the_rfcs_say() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = hostile::udp(move |request| {
        let _ = tx.send(request.to_vec());
        vec![accept(request)]
    })
    .await;
    assert_eq!(
        run(radius("alice", PASSWORD, SECRET), addr).await,
        Verdict::Up
    );
    let request = rx.recv().await.expect("the request");
    assert_eq!(request[0], 1, "Access-Request");
    assert_eq!(
        usize::from(u16::from_be_bytes([request[2], request[3]])),
        request.len()
    );
    // Message-Authenticator first: HMAC-MD5 over the packet with itself zeroed.
    assert_eq!(&request[20..22], &[80, 18]);
    let mut zeroed = request.clone();
    zeroed[22..38].fill(0);
    let mut mac = Hmac::<Md5>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(&zeroed);
    assert!(mac.verify_slice(&request[22..38]).is_ok());
    // The password is not in the clear.
    assert!(
        !request
            .windows(PASSWORD.len())
            .any(|w| w == PASSWORD.as_bytes())
    );
    assert!(request.windows(9).any(|w| w == b"directord"));
}

#[tokio::test(start_paused = true)]
async fn garbage_answers() {
    let addr = hostile::udp(|_| vec![b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()]).await;
    assert_eq!(
        run(radius("alice", PASSWORD, SECRET), addr).await,
        down("malformed RADIUS answer: length field 21584 in a datagram of 28 bytes")
    );
    let addr = hostile::udp(|_| vec![b"no".to_vec()]).await;
    assert_eq!(
        run(radius("alice", PASSWORD, SECRET), addr).await,
        down("malformed RADIUS answer: 2 bytes, shorter than a header")
    );
    // Our identifier, an attribute running past the end.
    let addr = hostile::udp(|request| {
        let mut bytes = signed(request, 2, request[1], &[18, 9, b'x'], SECRET);
        bytes.truncate(23);
        vec![bytes]
    })
    .await;
    assert_eq!(
        run(radius("alice", PASSWORD, SECRET), addr).await,
        down("malformed RADIUS answer: attribute at offset 20 has a bad length")
    );
}

#[tokio::test(start_paused = true)]
async fn answer_signed_with_another_secret() {
    let addr = hostile::udp(|request| vec![signed(request, 2, request[1], &[], "guess")]).await;
    let verdict = run(radius("alice", PASSWORD, SECRET), addr).await;
    assert_eq!(
        verdict,
        down("response authenticator does not verify (wrong shared secret?)")
    );
}

#[tokio::test(start_paused = true)]
async fn answers_with_another_identifier_are_ignored() {
    let addr =
        hostile::udp(|request| vec![signed(request, 2, request[1].wrapping_add(1), &[], SECRET)])
            .await;
    assert_eq!(
        run_within(
            radius("alice", PASSWORD, SECRET),
            addr,
            Duration::from_millis(400)
        )
        .await,
        down("no RADIUS answer within 400 ms (a wrong shared secret is silently dropped)")
    );
    // A stale answer, then ours.
    let addr = hostile::udp(|request| {
        vec![
            signed(request, 3, request[1].wrapping_add(1), &[], SECRET),
            accept(request),
        ]
    })
    .await;
    assert_eq!(
        run(radius("alice", PASSWORD, SECRET), addr).await,
        Verdict::Up
    );
}

#[tokio::test(start_paused = true)]
async fn silent_server_and_challenge() {
    let addr = hostile::udp(|_| vec![]).await;
    assert_eq!(
        run_within(
            radius("alice", PASSWORD, SECRET),
            addr,
            Duration::from_millis(300)
        )
        .await,
        down("no RADIUS answer within 300 ms (a wrong shared secret is silently dropped)")
    );
    let addr = hostile::udp(|request| {
        let mut message = vec![18, 2 + 9];
        message.extend_from_slice(b"Enter OTP");
        vec![signed(request, 11, request[1], &message, SECRET)]
    })
    .await;
    assert_eq!(
        run(radius("alice", PASSWORD, SECRET), addr).await,
        down("Access-Challenge (the server asks for more than a password): Enter OTP")
    );
}

#[tokio::test]
async fn nothing_listening() {
    let port = free_port();
    assert_eq!(
        run(radius("alice", PASSWORD, SECRET), localhost(port)).await,
        down(&format!("UDP port {port} unreachable"))
    );
}

#[test]
fn bad_options_are_checker_errors() {
    let e = Probe::new(check(
        Protocol::Radius(radius("alice", PASSWORD, "")),
        TIMEOUT,
    ))
    .expect_err("empty secret");
    assert!(e.to_string().contains("secret is empty"), "{e}");
    let long = "x".repeat(200);
    let e = Probe::new(check(
        Protocol::Radius(radius("alice", &long, SECRET)),
        TIMEOUT,
    ))
    .expect_err("long password");
    assert!(!e.to_string().contains(&long), "{e}");
}
