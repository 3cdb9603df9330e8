//! The DNS check against a real unbound (Debian package `unbound`) serving a static
//! zone on loopback, and against misbehaving servers written here.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use checkers::spec::{Dns, Protocol, QueryType, Rcode};
use checkers::{Probe, Verdict};
use hickory_proto::op::{Message, OpCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record};
use support::check::{check, down, verdict};
use support::daemon::{Daemon, free_port, localhost, program};
use support::hostile;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

const TIMEOUT: Duration = Duration::from_millis(2000);

fn dns(name: &str, query_type: QueryType, expect_answer: Option<&str>) -> Dns {
    Dns {
        name: name.to_owned(),
        query_type,
        expect_rcode: Rcode::NoError,
        expect_answer: expect_answer.map(str::to_owned),
    }
}

async fn run(spec: Dns, real: SocketAddr) -> Verdict {
    run_within(spec, real, TIMEOUT).await
}

async fn run_within(spec: Dns, real: SocketAddr, timeout: Duration) -> Verdict {
    verdict(check(Protocol::Dns(spec), timeout), real).await
}

/// unbound answering for the static zone `lab.test.` on 127.0.0.1:`port`.
struct Unbound {
    port: u16,
    _daemon: Daemon,
    _dir: tempfile::TempDir,
}

impl Unbound {
    fn start() -> Unbound {
        let unbound = program("/usr/sbin/unbound", "unbound");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let conf = dir.path().join("unbound.conf");
        std::fs::write(&conf, unbound_conf(dir.path(), port)).expect("write unbound.conf");
        let mut cmd = std::process::Command::new(unbound);
        cmd.arg("-d").arg("-c").arg(&conf);
        let mut daemon = Daemon::start(cmd, &dir.path().join("unbound.log"));
        daemon.wait_until("unbound", || answers(port));
        Unbound {
            port,
            _daemon: daemon,
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        localhost(self.port)
    }
}

fn unbound_conf(dir: &Path, port: u16) -> String {
    let dir = dir.display();
    format!(
        r#"server:
    interface: 127.0.0.1@{port}
    port: {port}
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{dir}"
    pidfile: "{dir}/unbound.pid"
    use-syslog: no
    logfile: ""
    do-ip6: no
    module-config: "iterator"
    access-control: 127.0.0.0/8 allow
    local-zone: "lab.test." static
    local-data: "lab.test. 300 IN SOA ns.lab.test. hostmaster.lab.test. 1 3600 600 86400 300"
    local-data: "www.lab.test. 300 IN A 192.0.2.1"
    local-data: "www.lab.test. 300 IN A 192.0.2.2"
    local-data: "www.lab.test. 300 IN AAAA 2001:db8::1"
    local-data: "lab.test. 300 IN MX 10 mail.lab.test."
    local-data: 'lab.test. 300 IN TXT "v=spf1 -all"'
    local-data: "alias.lab.test. 300 IN CNAME www.lab.test."
    local-zone: "refused.test." refuse
remote-control:
    control-enable: no
"#
    )
}

/// Whether something answers a DNS query on 127.0.0.1:`port` (readiness probe).
fn answers(port: u16) -> bool {
    let Ok(socket) = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
        return false;
    };
    let mut query = Message::query();
    query.add_query(hickory_proto::op::Query::query(
        Name::from_ascii("www.lab.test.").expect("name"),
        hickory_proto::rr::RecordType::A,
    ));
    let bytes = query.to_vec().expect("encode");
    let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 512];
    socket.send_to(&bytes, localhost(port)).is_ok() && socket.recv(&mut buf).is_ok()
}

#[tokio::test]
async fn unbound_records() {
    let unbound = Unbound::start();
    let real = unbound.addr();
    assert_eq!(
        run(dns("www.lab.test", QueryType::A, None), real).await,
        Verdict::Up
    );
    assert_eq!(
        run(dns("WWW.Lab.Test.", QueryType::A, Some("192.0.2.2")), real).await,
        Verdict::Up
    );
    assert_eq!(
        run(dns("www.lab.test", QueryType::A, Some("192.0.2.9")), real).await,
        down("no A record 192.0.2.9 in the answer (got 192.0.2.1, 192.0.2.2)")
    );
    assert_eq!(
        run(
            dns("www.lab.test", QueryType::Aaaa, Some("2001:DB8:0::1")),
            real
        )
        .await,
        Verdict::Up
    );
    assert_eq!(
        run(dns("lab.test", QueryType::Mx, Some("Mail.Lab.Test")), real).await,
        Verdict::Up
    );
    assert_eq!(
        run(
            dns("lab.test", QueryType::Mx, Some("20 mail.lab.test.")),
            real
        )
        .await,
        down("no MX record 20 mail.lab.test. in the answer (got 10 mail.lab.test.)")
    );
    assert_eq!(
        run(dns("lab.test", QueryType::Txt, Some("v=spf1 -all")), real).await,
        Verdict::Up
    );
    assert_eq!(
        run(
            dns("alias.lab.test", QueryType::Cname, Some("www.lab.test")),
            real
        )
        .await,
        Verdict::Up
    );
}

#[tokio::test]
async fn unbound_rcodes() {
    let unbound = Unbound::start();
    let real = unbound.addr();
    assert_eq!(
        run(dns("missing.lab.test", QueryType::A, None), real).await,
        down("rcode NXDOMAIN, expected NOERROR")
    );
    let nxdomain = Dns {
        expect_rcode: Rcode::NxDomain,
        ..dns("missing.lab.test", QueryType::A, None)
    };
    assert_eq!(run(nxdomain, real).await, Verdict::Up);
    assert_eq!(
        run(dns("www.refused.test", QueryType::A, None), real).await,
        down("rcode REFUSED, expected NOERROR")
    );
    // NODATA: the name exists, the type does not.
    assert_eq!(
        run(dns("www.lab.test", QueryType::Mx, None), real).await,
        Verdict::Up
    );
    assert_eq!(
        run(
            dns("www.lab.test", QueryType::Mx, Some("mail.lab.test")),
            real
        )
        .await,
        down("no MX record mail.lab.test in the answer (got no MX record)")
    );
}

#[tokio::test]
async fn nothing_listening() {
    let port = free_port();
    assert_eq!(
        run(dns("www.lab.test", QueryType::A, None), localhost(port)).await,
        down(&format!("UDP port {port} unreachable"))
    );
}

#[test]
fn bad_name_is_a_checker_error() {
    let spec = dns("www..lab.test", QueryType::A, None);
    let e = Probe::new(check(Protocol::Dns(spec), TIMEOUT)).expect_err("bad name");
    assert!(e.to_string().contains("www..lab.test"), "{e}");
}

// Misbehaving servers. Time is paused: waiting for an answer that never comes costs
// nothing, and the reason shows the timeout.

/// A UDP server on loopback that answers each query with `answer(query)`.
async fn udp_server(answer: impl Fn(&Message) -> Vec<u8> + Send + 'static) -> SocketAddr {
    hostile::udp(move |query| {
        let query = Message::from_vec(query).expect("a query from the checker");
        vec![answer(&query)]
    })
    .await
}

/// A proper answer with one A record 192.0.2.7.
fn good_answer(query: &Message) -> Message {
    let mut m = Message::response(query.metadata.id, OpCode::Query);
    m.add_queries(query.queries.clone());
    let name = query.queries[0].name().clone();
    m.add_answer(Record::from_rdata(
        name,
        60,
        RData::A(A(Ipv4Addr::new(192, 0, 2, 7))),
    ));
    m
}

#[tokio::test(start_paused = true)]
async fn garbage_answer() {
    let addr = udp_server(|q| {
        let mut bytes = q.metadata.id.to_be_bytes().to_vec();
        bytes.extend_from_slice(b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00garbage");
        bytes
    })
    .await;
    let Verdict::Down(reason) = run(dns("www.lab.test", QueryType::A, None), addr).await else {
        panic!("garbage is not up");
    };
    assert!(reason.starts_with("malformed DNS response: "), "{reason}");
}

#[tokio::test(start_paused = true)]
async fn answer_with_another_id_is_ignored() {
    let addr = udp_server(|q| {
        let mut m = good_answer(q);
        m.metadata.id = q.metadata.id.wrapping_add(1);
        m.to_vec().expect("encode")
    })
    .await;
    assert_eq!(
        run_within(
            dns("www.lab.test", QueryType::A, None),
            addr,
            Duration::from_millis(500)
        )
        .await,
        down("no DNS answer within 500 ms")
    );
}

#[tokio::test(start_paused = true)]
async fn truncated_answer_is_asked_again_over_tcp() {
    let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let port = tcp.local_addr().expect("address").port();
    let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, port))
        .await
        .expect("bind UDP");
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            let query = Message::from_vec(&buf[..n]).expect("query");
            let mut m = Message::response(query.metadata.id, OpCode::Query);
            m.add_queries(query.queries.clone());
            m.metadata.truncation = true;
            let _ = udp.send_to(&m.to_vec().expect("encode"), from).await;
        }
    });
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            let len = stream.read_u16().await.expect("length");
            let mut buf = vec![0u8; usize::from(len)];
            stream.read_exact(&mut buf).await.expect("query");
            let query = Message::from_vec(&buf).expect("query");
            let answer = good_answer(&query).to_vec().expect("encode");
            let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&answer);
            stream.write_all(&framed).await.expect("answer");
        }
    });
    assert_eq!(
        run(
            dns("www.lab.test", QueryType::A, Some("192.0.2.7")),
            localhost(port)
        )
        .await,
        Verdict::Up
    );
}

#[tokio::test(start_paused = true)]
async fn truncated_answer_and_no_tcp() {
    let addr = udp_server(|q| {
        let mut m = Message::response(q.metadata.id, OpCode::Query);
        m.add_queries(q.queries.clone());
        m.metadata.truncation = true;
        m.to_vec().expect("encode")
    })
    .await;
    assert_eq!(
        run(dns("www.lab.test", QueryType::A, None), addr).await,
        down("truncated, and TCP failed: connection refused")
    );
}
