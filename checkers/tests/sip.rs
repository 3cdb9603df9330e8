//! The SIP check against a real kamailio (Debian package `kamailio`) with a
//! throw-away config on loopback, and against misbehaving servers written here.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use checkers::spec::{Protocol, Sip, SipTransport};
use checkers::{Probe, Verdict};
use support::check::{check, down, verdict};
use support::daemon::{Daemon, accepts, free_port, localhost, program};
use support::hostile::{self, read_head};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_millis(2000);

fn sip(transport: SipTransport, uri: Option<&str>) -> Sip {
    Sip {
        transport,
        uri: uri.map(str::to_owned),
    }
}

async fn run(spec: Sip, real: SocketAddr) -> Verdict {
    run_within(spec, real, TIMEOUT).await
}

async fn run_within(spec: Sip, real: SocketAddr, timeout: Duration) -> Verdict {
    verdict(check(Protocol::Sip(spec), timeout), real).await
}

/// kamailio on 127.0.0.1:`port`, UDP and TCP, answering OPTIONS with 200, requests
/// for user `nobody` with 404 and for user `loop` with 483.
struct Kamailio {
    port: u16,
    daemon: Option<Daemon>,
    _dir: tempfile::TempDir,
}

impl Kamailio {
    fn start() -> Kamailio {
        let kamailio = program("/usr/sbin/kamailio", "kamailio");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let cfg = dir.path().join("kamailio.cfg");
        std::fs::write(&cfg, kamailio_cfg(port)).expect("write kamailio.cfg");
        let mut cmd = std::process::Command::new(kamailio);
        // -DD: foreground; -E: log to stderr; modules from the compiled-in path.
        cmd.arg("-f")
            .arg(&cfg)
            .args(["-DD", "-E", "-m", "32", "-M", "4"])
            .arg("-P")
            .arg(dir.path().join("kamailio.pid"))
            .arg("-Y")
            .arg(dir.path())
            .arg("-w")
            .arg(dir.path());
        let mut daemon = Daemon::start(cmd, &dir.path().join("kamailio.log"));
        daemon.wait_until("kamailio", || answers(port));
        Kamailio {
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

fn kamailio_cfg(port: u16) -> String {
    format!(
        r#"#!KAMAILIO
debug=2
log_stderror=yes
children=1
tcp_children=1
auto_aliases=no
listen=udp:127.0.0.1:{port}
listen=tcp:127.0.0.1:{port}
loadmodule "sl.so"
loadmodule "pv.so"
request_route {{
	if ($rU == "nobody") {{
		sl_send_reply("404", "Not Found");
		exit;
	}}
	if ($rU == "loop") {{
		sl_send_reply("483", "Too Many Hops");
		exit;
	}}
	if (method == "OPTIONS") {{
		sl_send_reply("200", "OK");
		exit;
	}}
	sl_send_reply("404", "Not Found");
}}
"#
    )
}

/// Whether something answers an OPTIONS over UDP and accepts TCP on 127.0.0.1:`port`
/// (readiness probe).
fn answers(port: u16) -> bool {
    let Ok(socket) = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
        return false;
    };
    let Ok(me) = socket.local_addr() else {
        return false;
    };
    let request = format!(
        "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKready\r\n\
         From: <sip:test@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: ready\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 2048];
    socket.send_to(request.as_bytes(), localhost(port)).is_ok()
        && socket.recv(&mut buf).is_ok()
        && accepts(localhost(port))
}

#[tokio::test]
async fn kamailio_answers_options() {
    let server = Kamailio::start();
    let real = server.addr();
    assert_eq!(run(sip(SipTransport::Udp, None), real).await, Verdict::Up);
    assert_eq!(run(sip(SipTransport::Tcp, None), real).await, Verdict::Up);
    let uri = format!("sip:lb@127.0.0.1:{}", real.port());
    assert_eq!(
        run(sip(SipTransport::Udp, Some(&uri)), real).await,
        Verdict::Up
    );
    // From a bound source address.
    let mut c = check(Protocol::Sip(sip(SipTransport::Udp, None)), TIMEOUT);
    c.connect.bind = Some(Ipv4Addr::LOCALHOST.into());
    let probe = Probe::new(c).expect("valid check");
    assert_eq!(probe.run(real).await.expect("works"), Verdict::Up);
}

#[tokio::test]
async fn kamailio_refuses_a_user() {
    let server = Kamailio::start();
    let real = server.addr();
    for transport in [SipTransport::Udp, SipTransport::Tcp] {
        assert_eq!(
            run(sip(transport, Some("sip:nobody@127.0.0.1")), real).await,
            down("OPTIONS answered SIP/2.0 404 Not Found"),
            "{transport:?}"
        );
    }
    assert_eq!(
        run(sip(SipTransport::Udp, Some("sip:loop@127.0.0.1")), real).await,
        down("OPTIONS answered SIP/2.0 483 Too Many Hops")
    );
}

#[tokio::test]
async fn kamailio_stopped() {
    let mut server = Kamailio::start();
    let real = server.addr();
    assert_eq!(run(sip(SipTransport::Tcp, None), real).await, Verdict::Up);
    server.stop();
    assert_eq!(
        run(sip(SipTransport::Udp, None), real).await,
        down(&format!("UDP port {} unreachable", real.port()))
    );
    assert_eq!(
        run(sip(SipTransport::Tcp, None), real).await,
        down(&format!("connect {real}: connection refused"))
    );
}

#[tokio::test]
async fn nothing_listening() {
    let real = localhost(free_port());
    assert_eq!(
        run(sip(SipTransport::Udp, None), real).await,
        down(&format!("UDP port {} unreachable", real.port()))
    );
}

#[test]
fn bad_uri_is_a_checker_error() {
    let spec = sip(SipTransport::Udp, Some("http://lb.lab.test/"));
    let e = Probe::new(check(Protocol::Sip(spec), TIMEOUT)).expect_err("not a sip: URI");
    assert!(e.to_string().contains("http://lb.lab.test/"), "{e}");
}

// Misbehaving servers. Time is paused: waiting for an answer that never comes costs
// nothing, and the reason shows the timeout.

/// The Call-ID of a request.
fn call_id(request: &str) -> &str {
    request
        .lines()
        .find_map(|l| l.strip_prefix("Call-ID: "))
        .expect("a Call-ID")
}

/// A response to `request` with `status`, for `call_id`, with a body.
fn answer(status: &str, call_id: &str, body: &str) -> String {
    format!(
        "SIP/2.0 {status}\r\nVia: SIP/2.0/UDP 127.0.0.1\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A UDP server on loopback that answers each request with the datagrams of
/// `reply(request)`.
async fn udp_server(reply: impl Fn(&str) -> Vec<String> + Send + 'static) -> SocketAddr {
    hostile::udp(move |request| {
        let datagrams = reply(&String::from_utf8_lossy(request));
        datagrams.into_iter().map(String::into_bytes).collect()
    })
    .await
}

/// A TCP server on loopback that reads one request per connection and writes
/// `reply(request)`, then keeps the connection open until the client closes it.
async fn tcp_server(reply: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> SocketAddr {
    let reply = Arc::new(reply);
    hostile::tcp(move |mut stream| {
        let reply = reply.clone();
        async move {
            let Some(request) = read_head(&mut stream).await else {
                return;
            };
            let bytes = reply(&String::from_utf8_lossy(&request));
            let _ = stream.write_all(&bytes).await;
            let _ = stream.read(&mut [0u8; 1024]).await;
        }
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn provisional_then_final() {
    let addr = udp_server(|r| {
        vec![
            answer("100 Trying", call_id(r), ""),
            answer("200 OK", call_id(r), ""),
        ]
    })
    .await;
    assert_eq!(run(sip(SipTransport::Udp, None), addr).await, Verdict::Up);

    // Over TCP, with bodies to step over, and a keep-alive CRLF between messages.
    let addr = tcp_server(|r| {
        let id = call_id(r);
        format!(
            "{}\r\n\r\n{}",
            answer("180 Ringing", id, "v=0\r\n\r\nSIP/2.0 500 in a body\r\n"),
            answer("200 OK", id, "")
        )
        .into_bytes()
    })
    .await;
    assert_eq!(run(sip(SipTransport::Tcp, None), addr).await, Verdict::Up);
}

#[tokio::test(start_paused = true)]
async fn answers_to_another_call_are_ignored() {
    let addr = udp_server(|_| vec![answer("200 OK", "other@directord", "")]).await;
    assert_eq!(
        run_within(
            sip(SipTransport::Udp, None),
            addr,
            Duration::from_millis(400)
        )
        .await,
        down("no response to OPTIONS within 400 ms")
    );
    let addr = tcp_server(|_| answer("200 OK", "other@directord", "").into_bytes()).await;
    assert_eq!(
        run_within(
            sip(SipTransport::Tcp, None),
            addr,
            Duration::from_millis(400)
        )
        .await,
        down("no response to OPTIONS within 400 ms")
    );
}

#[tokio::test(start_paused = true)]
async fn garbage() {
    let addr = udp_server(|_| vec!["HTTP/1.1 400 Bad Request\r\n\r\n".to_owned()]).await;
    assert_eq!(
        run(sip(SipTransport::Udp, None), addr).await,
        down("malformed SIP response: not SIP: \"HTTP/1.1 400 Bad Request\"")
    );
    let addr = tcp_server(|_| b"\x16\x03\x01\x00\x05hello\r\n\r\n".to_vec()).await;
    let Verdict::Down(reason) = run(sip(SipTransport::Tcp, None), addr).await else {
        panic!("garbage is not up");
    };
    assert!(
        reason.starts_with("malformed SIP response: not SIP: "),
        "{reason}"
    );
    // No Call-ID: not a SIP response one can match.
    let addr = tcp_server(|_| b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec()).await;
    assert_eq!(
        run(sip(SipTransport::Tcp, None), addr).await,
        down("malformed SIP response: no Call-ID")
    );
}

#[tokio::test(start_paused = true)]
async fn tcp_silence_close_and_flood() {
    let addr = tcp_server(|_| Vec::new()).await;
    assert_eq!(
        run_within(
            sip(SipTransport::Tcp, None),
            addr,
            Duration::from_millis(300)
        )
        .await,
        down("no response to OPTIONS within 300 ms")
    );

    let addr = hostile::tcp(|mut stream| async move {
        let _ = stream.read(&mut [0u8; 2048]).await;
        let _ = stream.write_all(b"SIP/2.0 100 Trying\r\n").await;
    })
    .await;
    assert_eq!(
        run(sip(SipTransport::Tcp, None), addr).await,
        down("connection closed before the response to OPTIONS")
    );

    // Provisional responses without end, each with a large body.
    let addr = tcp_server(|r| {
        let id = call_id(r);
        answer("183 Session Progress", id, &"x".repeat(30_000))
            .repeat(3)
            .into_bytes()
    })
    .await;
    assert_eq!(
        run(sip(SipTransport::Tcp, None), addr).await,
        down("no final response to OPTIONS in the first 64 KiB")
    );
}

#[tokio::test]
async fn the_request_is_what_rfc_3261_says() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = udp_server(move |r| {
        let _ = tx.send(r.to_owned());
        vec![answer("200 OK", call_id(r), "")]
    })
    .await;
    assert_eq!(run(sip(SipTransport::Udp, None), addr).await, Verdict::Up);
    let request = rx.recv().await.expect("the request");
    let port = addr.port();
    assert!(
        request.starts_with(&format!("OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n")),
        "{request}"
    );
    assert!(
        request.ends_with("\r\nContent-Length: 0\r\n\r\n"),
        "{request}"
    );
    for header in [
        "\r\nVia: SIP/2.0/UDP 127.0.0.1:",
        ";branch=z9hG4bK",
        "\r\nMax-Forwards: 70\r\n",
        "\r\nFrom: <sip:directord@127.0.0.1>;tag=",
        &format!("\r\nTo: <sip:127.0.0.1:{port}>\r\n"),
        "@directord\r\n",
        "\r\nCSeq: 1 OPTIONS\r\n",
        "\r\nUser-Agent: directord\r\n",
    ] {
        assert!(request.contains(header), "{header:?} in {request}");
    }
}
