//! ICMP / ICMPv6 echo.
//!
//! One attempt sends one echo request with a random identifier and waits for the
//! echo reply with that identifier and sequence number from the target, or for an
//! ICMP error (destination unreachable, time exceeded) that quotes our request.
//!
//! A raw ICMP socket sees every ICMP message the host receives, so attempts do not
//! each open one (with many checks in flight every reply would wake every socket).
//! One [`Pinger`] per (network namespace, family, source address) owns a raw socket
//! and a reader thread that hands each reply to the attempt waiting for it. It
//! lives while attempts use it. A thread, not a task: it then belongs to no tokio
//! runtime and serves them all.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::MetadataExt as _;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout_at};

use crate::{Error, Target, Verdict};

/// Sent in every echo request (and so echoed back).
const PAYLOAD: &[u8; 16] = b"directord-check\0";
/// How often an idle reader thread looks whether its pinger is still used.
const READER_TICK: Duration = Duration::from_millis(200);

pub(crate) async fn probe(t: &Target) -> Result<Verdict, Error> {
    let deadline = Instant::now() + t.timeout;
    let socket_error = |source| Error::Socket {
        target: t.addr,
        source,
    };
    let dst = t.addr.ip();
    let pinger = Pinger::get(dst.is_ipv6(), t.bind).map_err(socket_error)?;
    let (waiting, reply) = pinger.register(dst);

    let mut packet = [0; echo::HEADER_LEN + PAYLOAD.len()];
    echo::emit_request(&mut packet, dst.is_ipv6(), waiting.id, waiting.seq, PAYLOAD);
    let mut to = t.addr;
    to.set_port(0);
    if let Err(e) = pinger
        .socket
        .send_to_with_flags(&packet, &to.into(), libc::MSG_DONTWAIT)
    {
        if e.kind() == io::ErrorKind::WouldBlock || crate::tcp::is_local_shortage(&e) {
            return Err(socket_error(e));
        }
        return Ok(Verdict::Down(format!(
            "send echo request to {dst}: {}",
            crate::tcp::io_reason(&e)
        )));
    }

    Ok(match timeout_at(deadline, reply).await {
        Ok(Ok(Reply::Echo)) => Verdict::Up,
        Ok(Ok(Reply::Error(e))) => Verdict::Down(e.describe(dst.is_ipv6())),
        // The reader stopped (it cannot, while we hold the pinger) or the time is up.
        Ok(Err(_)) | Err(_) => Verdict::Down(format!(
            "no echo reply from {dst} within {} ms",
            t.timeout.as_millis()
        )),
    })
    // `waiting` drops here and unregisters.
}

/// What the reader thread hands to a waiting attempt.
#[derive(Debug)]
enum Reply {
    Echo,
    Error(echo::Problem),
}

/// Identifies the socket a pinger may serve: a raw socket is bound to the network
/// namespace that opened it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PingerKey {
    netns: u64,
    v6: bool,
    bind: Option<IpAddr>,
}

/// The pingers in use. A handful at most, so a list.
static PINGERS: Mutex<Vec<(PingerKey, Weak<Pinger>)>> = Mutex::new(Vec::new());

/// A raw ICMP socket shared by the attempts in flight, with its reader thread.
#[derive(Debug)]
struct Pinger {
    socket: Socket,
    waiters: Arc<Waiters>,
    /// Tells the reader thread to stop: set when the last attempt is done.
    stop: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
struct Waiters {
    by_echo: Mutex<HashMap<(u16, u16), Waiter>>,
}

#[derive(Debug)]
struct Waiter {
    dst: IpAddr,
    tx: oneshot::Sender<Reply>,
}

impl Waiters {
    fn lock(&self) -> MutexGuard<'_, HashMap<(u16, u16), Waiter>> {
        self.by_echo.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands `reply` to the attempt that sent echo `(id, seq)` to `dst`, if any.
    fn deliver(&self, id: u16, seq: u16, dst: IpAddr, reply: Reply) {
        let mut waiters = self.lock();
        if waiters.get(&(id, seq)).is_some_and(|w| w.dst == dst)
            && let Some(w) = waiters.remove(&(id, seq))
        {
            let _ = w.tx.send(reply);
        }
    }
}

impl Pinger {
    /// The pinger for this thread's network namespace, family and source address;
    /// opened when none is in use.
    fn get(v6: bool, bind: Option<IpAddr>) -> io::Result<Arc<Pinger>> {
        let key = PingerKey {
            netns: std::fs::metadata("/proc/thread-self/ns/net").map_or(0, |m| m.ino()),
            v6,
            bind,
        };
        let mut pingers = PINGERS.lock().unwrap_or_else(PoisonError::into_inner);
        pingers.retain(|(_, p)| p.strong_count() > 0);
        if let Some(p) = pingers
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, p)| p.upgrade())
        {
            return Ok(p);
        }
        let pinger = Arc::new(Pinger::open(v6, bind)?);
        pingers.push((key, Arc::downgrade(&pinger)));
        Ok(pinger)
    }

    fn open(v6: bool, bind: Option<IpAddr>) -> io::Result<Pinger> {
        let socket = if v6 {
            Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?
        } else {
            Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?
        };
        if let Some(ip) = bind {
            socket.bind(&SocketAddr::new(ip, 0).into())?;
        }
        // Replies to many checks may arrive together; best effort.
        let _ = socket.set_recv_buffer_size(1 << 20);
        socket.set_read_timeout(Some(READER_TICK))?;
        // The reader's own descriptor of the socket, as a UdpSocket only for its
        // safe `recv_from` (a plain recvfrom(2), like on any datagram socket).
        let reader = UdpSocket::from(socket.try_clone()?);
        let waiters = Arc::new(Waiters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (w, s) = (Arc::clone(&waiters), Arc::clone(&stop));
        std::thread::Builder::new()
            .name(if v6 { "icmpv6-echo" } else { "icmp-echo" }.into())
            .spawn(move || read_replies(&reader, v6, &w, &s))?;
        Ok(Pinger {
            socket,
            waiters,
            stop,
        })
    }

    /// Picks a free (random identifier, sequence number) for an echo to `dst`.
    fn register(&self, dst: IpAddr) -> (Waiting<'_>, oneshot::Receiver<Reply>) {
        static SEQ: AtomicU16 = AtomicU16::new(0);
        let (tx, rx) = oneshot::channel();
        let mut waiters = self.waiters.lock();
        let (id, seq) = loop {
            let seq = SEQ.fetch_add(1, Ordering::Relaxed);
            // RandomState is randomly seeded: a random number without a dependency.
            let id = RandomState::new().hash_one(seq) as u16;
            if !waiters.contains_key(&(id, seq)) {
                break (id, seq);
            }
        };
        waiters.insert((id, seq), Waiter { dst, tx });
        let waiting = Waiting {
            waiters: &self.waiters,
            id,
            seq,
        };
        (waiting, rx)
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// An echo request waiting for its answer; unregisters when dropped.
struct Waiting<'a> {
    waiters: &'a Waiters,
    id: u16,
    seq: u16,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.waiters.lock().remove(&(self.id, self.seq));
    }
}

/// The reader thread: hands each reply to its waiter until the pinger is dropped.
fn read_replies(socket: &UdpSocket, v6: bool, waiters: &Waiters, stop: &AtomicBool) {
    let mut buf = [0; 2048];
    while !stop.load(Ordering::Relaxed) {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Nothing to hand to anyone; the attempts will time out. Do not spin.
                tracing::warn!(error = %e, "cannot read ICMP replies");
                std::thread::sleep(READER_TICK);
                continue;
            }
        };
        let message = if v6 {
            echo::parse_v6(&buf[..n])
        } else {
            echo::parse_v4(&buf[..n])
        };
        match message {
            echo::Message::Reply { id, seq } => {
                waiters.deliver(id, seq, from.ip(), Reply::Echo);
            }
            echo::Message::Error { id, seq, dst, kind } => {
                let problem = echo::Problem {
                    kind,
                    from: from.ip(),
                };
                waiters.deliver(id, seq, dst, Reply::Error(problem));
            }
            echo::Message::Other => {}
        }
    }
}

/// Echo messages and the ICMP errors that quote one: building a request, reading
/// what comes back. IPv4 raw sockets receive the IP header too; IPv6 ones do not.
mod echo {
    use super::*;

    /// ICMP header: type, code, checksum, then for echo identifier and sequence.
    pub(super) const HEADER_LEN: usize = 8;

    mod field {
        use std::ops::Range;
        pub const TYPE: usize = 0;
        pub const CODE: usize = 1;
        pub const CHECKSUM: Range<usize> = 2..4;
        pub const IDENT: Range<usize> = 4..6;
        pub const SEQ: Range<usize> = 6..8;
    }

    mod v4 {
        pub const ECHO_REPLY: u8 = 0;
        pub const UNREACHABLE: u8 = 3;
        pub const ECHO_REQUEST: u8 = 8;
        pub const TIME_EXCEEDED: u8 = 11;
        pub const PROTO_ICMP: u8 = 1;
    }

    mod v6 {
        pub const UNREACHABLE: u8 = 1;
        pub const TIME_EXCEEDED: u8 = 3;
        pub const ECHO_REQUEST: u8 = 128;
        pub const ECHO_REPLY: u8 = 129;
        pub const NEXT_ICMPV6: u8 = 58;
        pub const HEADER_LEN: usize = 40;
    }

    /// Writes an echo request into `buf` (`HEADER_LEN + payload.len()` bytes). The
    /// kernel fills in the ICMPv6 checksum (it needs the source address).
    pub(super) fn emit_request(buf: &mut [u8], is_v6: bool, id: u16, seq: u16, payload: &[u8]) {
        buf[field::TYPE] = if is_v6 {
            v6::ECHO_REQUEST
        } else {
            v4::ECHO_REQUEST
        };
        buf[field::CODE] = 0;
        buf[field::CHECKSUM].fill(0);
        buf[field::IDENT].copy_from_slice(&id.to_be_bytes());
        buf[field::SEQ].copy_from_slice(&seq.to_be_bytes());
        buf[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(payload);
        if !is_v6 {
            let sum = checksum(&buf[..HEADER_LEN + payload.len()]);
            buf[field::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
        }
    }

    /// The Internet checksum (RFC 1071); 0 over a message that carries a correct one.
    pub(super) fn checksum(data: &[u8]) -> u16 {
        let mut sum: u32 = data
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum ErrorKind {
        Unreachable(u8),
        TimeExceeded(u8),
    }

    /// An ICMP error about one of our echo requests.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) struct Problem {
        pub kind: ErrorKind,
        /// Who sent the error (a router, or the target's own host).
        pub from: IpAddr,
    }

    impl Problem {
        /// "destination unreachable (code 1, host unreachable) from 10.0.0.254".
        pub(super) fn describe(&self, is_v6: bool) -> String {
            let (what, code, meaning) = match self.kind {
                ErrorKind::Unreachable(code) => {
                    ("destination unreachable", code, unreachable(is_v6, code))
                }
                ErrorKind::TimeExceeded(code) => (
                    "time exceeded",
                    code,
                    match code {
                        0 => Some("hop limit exceeded in transit"),
                        1 => Some("fragment reassembly time exceeded"),
                        _ => None,
                    },
                ),
            };
            match meaning {
                Some(m) => format!("{what} (code {code}, {m}) from {}", self.from),
                None => format!("{what} (code {code}) from {}", self.from),
            }
        }
    }

    fn unreachable(is_v6: bool, code: u8) -> Option<&'static str> {
        Some(match (is_v6, code) {
            (false, 0) => "net unreachable",
            (false, 1) => "host unreachable",
            (false, 2) => "protocol unreachable",
            (false, 3) => "port unreachable",
            (false, 4) => "fragmentation needed",
            (false, 5) => "source route failed",
            (false, 6) => "destination network unknown",
            (false, 7) => "destination host unknown",
            (false, 9 | 10 | 13) => "administratively prohibited",
            (true, 0) => "no route to destination",
            (true, 1) => "administratively prohibited",
            (true, 2) => "beyond scope of source address",
            (true, 3) => "address unreachable",
            (true, 4) => "port unreachable",
            (true, 5) => "source address failed policy",
            (true, 6) => "reject route to destination",
            _ => return None,
        })
    }

    /// A received message, as far as echo checks care.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Message {
        Reply {
            id: u16,
            seq: u16,
        },
        /// An error quoting an echo request `(id, seq)` that was sent to `dst`.
        Error {
            id: u16,
            seq: u16,
            dst: IpAddr,
            kind: ErrorKind,
        },
        Other,
    }

    fn ident_seq(icmp: &[u8]) -> (u16, u16) {
        (
            u16::from_be_bytes([icmp[4], icmp[5]]),
            u16::from_be_bytes([icmp[6], icmp[7]]),
        )
    }

    /// The ICMP message inside an IPv4 packet, if it is one.
    fn ipv4_payload(packet: &[u8]) -> Option<(&[u8], Ipv4Addr)> {
        let ihl = usize::from(*packet.first()? & 0x0f) * 4;
        if packet[0] >> 4 != 4 || ihl < 20 || packet.len() < ihl + HEADER_LEN {
            return None;
        }
        if packet[9] != v4::PROTO_ICMP {
            return None;
        }
        let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
        Some((&packet[ihl..], dst))
    }

    /// A packet read from an IPv4 raw ICMP socket (IP header included).
    pub(super) fn parse_v4(packet: &[u8]) -> Message {
        let Some((icmp, _)) = ipv4_payload(packet) else {
            return Message::Other;
        };
        let kind = match icmp[field::TYPE] {
            v4::ECHO_REPLY => {
                if checksum(icmp) != 0 {
                    return Message::Other;
                }
                let (id, seq) = ident_seq(icmp);
                return Message::Reply { id, seq };
            }
            v4::UNREACHABLE => ErrorKind::Unreachable(icmp[field::CODE]),
            v4::TIME_EXCEEDED => ErrorKind::TimeExceeded(icmp[field::CODE]),
            _ => return Message::Other,
        };
        // The error quotes the IP header and first 8 bytes of our request.
        match ipv4_payload(&icmp[HEADER_LEN..]) {
            Some((quoted, dst)) if quoted[field::TYPE] == v4::ECHO_REQUEST => {
                let (id, seq) = ident_seq(quoted);
                Message::Error {
                    id,
                    seq,
                    dst: dst.into(),
                    kind,
                }
            }
            _ => Message::Other,
        }
    }

    /// A message read from an IPv6 raw ICMPv6 socket (no IP header).
    pub(super) fn parse_v6(icmp: &[u8]) -> Message {
        if icmp.len() < HEADER_LEN {
            return Message::Other;
        }
        let kind = match icmp[field::TYPE] {
            v6::ECHO_REPLY => {
                let (id, seq) = ident_seq(icmp);
                return Message::Reply { id, seq };
            }
            v6::UNREACHABLE => ErrorKind::Unreachable(icmp[field::CODE]),
            v6::TIME_EXCEEDED => ErrorKind::TimeExceeded(icmp[field::CODE]),
            _ => return Message::Other,
        };
        // The error quotes as much of our packet as fits: its IPv6 header, then (no
        // extension headers on our requests) the ICMPv6 echo request.
        let ip = &icmp[HEADER_LEN..];
        if ip.len() < v6::HEADER_LEN + HEADER_LEN || ip[0] >> 4 != 6 || ip[6] != v6::NEXT_ICMPV6 {
            return Message::Other;
        }
        let quoted = &ip[v6::HEADER_LEN..];
        if quoted[field::TYPE] != v6::ECHO_REQUEST {
            return Message::Other;
        }
        let mut dst = [0; 16];
        dst.copy_from_slice(&ip[24..40]);
        let (id, seq) = ident_seq(quoted);
        Message::Error {
            id,
            seq,
            dst: Ipv6Addr::from(dst).into(),
            kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::echo::{ErrorKind, Message, Problem, checksum, emit_request, parse_v4, parse_v6};
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    // Captured on Linux 6.x from a raw socket: an echo request (id 0x1234, seq 7,
    // our payload) to 127.0.0.1 / ::1 and the kernel's replies; then, from a network
    // namespace routed through another one holding `unreachable` routes, the errors
    // that namespace sent back for 203.0.113.5 / 2001:db8:99::5.
    const V4_REQUEST: &str =
        "4500002cfb6140004001416d7f0000017f0000010800a415123400076469726563746f72642d636865636b00";
    const V4_REPLY: &str =
        "4500002cfb6200004001816c7f0000017f0000010000ac15123400076469726563746f72642d636865636b00";
    const V6_REQUEST: &str = "80002bc1123400076469726563746f72642d636865636b00";
    const V6_REPLY: &str = "81002ac1123400076469726563746f72642d636865636b00";
    const V4_UNREACHABLE: &str = "45c000483a92000040012a9b0a6300020a6300010301fcfe000000004500002cab3b40004001492c0a630001cb0071050800a415123400076469726563746f72642d636865636b00";
    const V6_UNREACHABLE: &str = "01006961000000006002ffdc00183a40fd99000000000000000000000000000120010db80099000000000000000000058000ffd0123400076469726563746f72642d636865636b00";
    const V6_NEIGHBOR_ADVERT: &str =
        "88003f00e0000000fd99000000000000000000000000000202011ab802b9405f";

    #[test]
    fn emit_matches_the_captured_requests() {
        let mut buf = [0; 24];
        emit_request(&mut buf, false, 0x1234, 7, PAYLOAD);
        assert_eq!(buf[..], hex(V4_REQUEST)[20..]);
        emit_request(&mut buf, true, 0x1234, 7, PAYLOAD);
        let mut expected = hex(V6_REQUEST);
        expected[2..4].fill(0); // the kernel's checksum
        assert_eq!(buf[..], expected[..]);
    }

    #[test]
    fn parse_captured_replies() {
        let reply = Message::Reply { id: 0x1234, seq: 7 };
        assert_eq!(parse_v4(&hex(V4_REPLY)), reply);
        assert_eq!(parse_v6(&hex(V6_REPLY)), reply);
        // Our own requests, which a raw socket sees on loopback, are not replies.
        assert_eq!(parse_v4(&hex(V4_REQUEST)), Message::Other);
        assert_eq!(parse_v6(&hex(V6_REQUEST)), Message::Other);
        assert_eq!(parse_v6(&hex(V6_NEIGHBOR_ADVERT)), Message::Other);
    }

    #[test]
    fn a_v4_reply_with_a_bad_checksum_is_ignored() {
        let mut reply = hex(V4_REPLY);
        reply[30] ^= 1;
        assert_eq!(parse_v4(&reply), Message::Other);
        assert_eq!(checksum(&hex(V4_REPLY)[20..]), 0);
    }

    #[test]
    fn parse_captured_unreachables() {
        let m = parse_v4(&hex(V4_UNREACHABLE));
        assert_eq!(
            m,
            Message::Error {
                id: 0x1234,
                seq: 7,
                dst: "203.0.113.5".parse().expect("ip"),
                kind: ErrorKind::Unreachable(1),
            }
        );
        let p = Problem {
            kind: ErrorKind::Unreachable(1),
            from: "10.99.0.2".parse().expect("ip"),
        };
        assert_eq!(
            p.describe(false),
            "destination unreachable (code 1, host unreachable) from 10.99.0.2"
        );

        let m = parse_v6(&hex(V6_UNREACHABLE));
        assert_eq!(
            m,
            Message::Error {
                id: 0x1234,
                seq: 7,
                dst: "2001:db8:99::5".parse().expect("ip"),
                kind: ErrorKind::Unreachable(0),
            }
        );
        let p = Problem {
            kind: ErrorKind::Unreachable(0),
            from: "fd99::2".parse().expect("ip"),
        };
        assert_eq!(
            p.describe(true),
            "destination unreachable (code 0, no route to destination) from fd99::2"
        );
        let p = Problem {
            kind: ErrorKind::TimeExceeded(0),
            from: "fd99::2".parse().expect("ip"),
        };
        assert_eq!(
            p.describe(true),
            "time exceeded (code 0, hop limit exceeded in transit) from fd99::2"
        );
    }

    #[test]
    fn emit_then_parse_round_trips() {
        for (id, seq) in [(0, 0), (0xffff, 0xffff), (0x0102, 0x0304)] {
            let mut buf = [0; 24];
            emit_request(&mut buf, false, id, seq, PAYLOAD);
            // As the kernel would echo it back: type 0, checksum adjusted.
            buf[0] = 0;
            buf[2..4].fill(0);
            let sum = checksum(&buf);
            buf[2..4].copy_from_slice(&sum.to_be_bytes());
            let mut packet = hex(V4_REPLY)[..20].to_vec();
            packet.extend_from_slice(&buf);
            assert_eq!(parse_v4(&packet), Message::Reply { id, seq });
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = parse_v4(&bytes);
            let _ = parse_v6(&bytes);
        }

        #[test]
        fn truncated_captures_never_panic(cut in 0usize..90) {
            for capture in [V4_REPLY, V4_UNREACHABLE, V6_REPLY, V6_UNREACHABLE] {
                let bytes = hex(capture);
                let _ = parse_v4(&bytes[..cut.min(bytes.len())]);
                let _ = parse_v6(&bytes[..cut.min(bytes.len())]);
            }
        }
    }
}
