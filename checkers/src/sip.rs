//! SIP check: one OPTIONS request (RFC 3261 11) over UDP or TCP; up when the final
//! response to it is `SIP/2.0 200`.
//!
//! - The Request-URI is `uri`, default `sip:<connect address>:<port>`. Via carries
//!   the socket's local address and a fresh branch (`z9hG4bK` and random hex, RFC
//!   3261 8.1.1.7) with `rport` (RFC 3581), so that the answer comes back to the
//!   socket even through NAT; From has a random tag, Call-ID is `<random>@directord`,
//!   CSeq `1 OPTIONS`.
//! - The response that counts is the first final one (200-699) whose Call-ID and
//!   CSeq are ours. Provisional ones (1xx) are skipped, and so are responses with
//!   another Call-ID or CSeq (late answers to an earlier attempt) and requests the
//!   server sends. A response without Call-ID or CSeq, or bytes that are not SIP,
//!   make the real server down ("malformed SIP response: ...").
//! - 200 is up; any other final status is down with the status line.
//! - UDP: a message is one datagram; CRLF keep-alives (RFC 5626 3.5.1) are skipped.
//!   The request is not retransmitted within the attempt (the check's `retry` is
//!   that).
//! - TCP: a message ends after its header and its Content-Length of body (0 when
//!   missing). A body is skipped without being kept, and all that is read from the
//!   connection is bounded to [`MAX_REPLY`] bytes.

use std::net::{IpAddr, SocketAddr};

use tokio::time::Instant;

use crate::session::{Session, shown_bytes};
use crate::spec::{MAX_REPLY, Sip, SipTransport};
use crate::udp::Udp;
use crate::{Error, Stop, Target, Verdict, down, verdict};

/// What is awaited, for the reasons ("no response to OPTIONS within 500 ms").
const AWAITED: &str = "response to OPTIONS";
const CSEQ: u32 = 1;
const METHOD: &str = "OPTIONS";

#[derive(Debug)]
pub(crate) struct Prepared {
    uri: Option<String>,
}

impl Prepared {
    pub(crate) fn new(spec: &Sip) -> Result<Prepared, Error> {
        if let Some(uri) = &spec.uri {
            let scheme_ok = uri.get(..4).is_some_and(|s| s.eq_ignore_ascii_case("sip:"));
            let clean = uri
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>');
            if !scheme_ok || uri.len() <= 4 || !clean {
                return Err(Error::Option {
                    message: format!(
                        "SIP uri {uri:?} is not a sip: URI (\"sip:user@host:port\", no spaces)"
                    ),
                });
            }
        }
        Ok(Prepared {
            uri: spec.uri.clone(),
        })
    }

    /// The Request-URI for a server at `addr`.
    fn uri(&self, addr: SocketAddr) -> String {
        match &self.uri {
            Some(uri) => uri.clone(),
            None => format!("sip:{}:{}", host(addr.ip()), addr.port()),
        }
    }

    /// The OPTIONS request, from `local` to `addr`.
    fn request(
        &self,
        sent: &Sent,
        transport: SipTransport,
        local: SocketAddr,
        addr: SocketAddr,
    ) -> String {
        let uri = self.uri(addr);
        let via = match transport {
            SipTransport::Udp => "UDP",
            SipTransport::Tcp => "TCP",
        };
        let me = host(local.ip());
        format!(
            "{METHOD} {uri} SIP/2.0\r\n\
             Via: SIP/2.0/{via} {me}:{port};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:directord@{me}>;tag={tag}\r\n\
             To: <{uri}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {CSEQ} {METHOD}\r\n\
             User-Agent: directord\r\n\
             Content-Length: 0\r\n\
             \r\n",
            port = local.port(),
            branch = sent.branch,
            tag = sent.tag,
            call_id = sent.call_id,
        )
    }
}

/// An address as the host part of a SIP URI or Via: IPv6 in brackets.
fn host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// What identifies our request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    call_id: String,
    branch: String,
    tag: String,
}

impl Sent {
    fn random() -> Result<Sent, Error> {
        let mut random = [0u8; 20];
        getrandom::getrandom(&mut random).map_err(|e| Error::Random {
            message: e.to_string(),
        })?;
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        Ok(Sent {
            call_id: format!("{}@directord", hex(&random[..8])),
            branch: format!("z9hG4bK{}", hex(&random[8..16])),
            tag: hex(&random[16..]),
        })
    }
}

/// A message's start line and the headers the check reads.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Message {
    /// The server sent a request (not an answer).
    Request,
    Response(Response),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Response {
    status: u16,
    /// As it came, for the reasons.
    status_line: Vec<u8>,
    call_id: Option<Vec<u8>>,
    cseq: Option<Vec<u8>>,
    content_length: Option<usize>,
}

/// Parses a message's start line and header lines (line ends removed, up to the
/// empty line).
fn parse<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Result<Message, String> {
    let mut lines = lines.into_iter();
    let Some(start) = lines.next() else {
        return Err("empty message".to_owned());
    };
    // SIP-Version is case-insensitive (RFC 3261 7.1).
    let status = match start.split_at_checked(8) {
        Some((version, rest)) if version.eq_ignore_ascii_case(b"SIP/2.0 ") => match rest {
            [a @ b'1'..=b'6', b @ b'0'..=b'9', c @ b'0'..=b'9']
            | [a @ b'1'..=b'6', b @ b'0'..=b'9', c @ b'0'..=b'9', b' ', ..] => [a, b, c]
                .iter()
                .fold(0u16, |n, d| n * 10 + u16::from(*d - b'0')),
            _ => return Err(format!("bad status line \"{}\"", shown_bytes(start))),
        },
        _ if is_request_line(start) => return Ok(Message::Request),
        _ => return Err(format!("not SIP: \"{}\"", shown_bytes(start))),
    };

    // Header lines; a line starting with white space continues the previous one.
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for line in lines {
        if let (Some(b' ' | b'\t'), Some((_, value))) = (line.first(), headers.last_mut()) {
            value.push(b' ');
            value.extend_from_slice(line.trim_ascii());
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(format!(
                "header line without a colon: \"{}\"",
                shown_bytes(line)
            ));
        };
        headers.push((
            line[..colon].trim_ascii().to_ascii_lowercase(),
            line[colon + 1..].trim_ascii().to_vec(),
        ));
    }
    // The first of each, by its full or compact name (RFC 3261 7.3.3).
    let header = |names: &[&[u8]]| {
        headers
            .iter()
            .find(|(name, _)| names.contains(&name.as_slice()))
            .map(|(_, value)| value.clone())
    };
    let content_length = match header(&[b"content-length", b"l"]) {
        None => None,
        Some(value) => Some(
            std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or_else(|| format!("bad Content-Length \"{}\"", shown_bytes(&value)))?,
        ),
    };
    Ok(Message::Response(Response {
        status,
        status_line: start.to_vec(),
        call_id: header(&[b"call-id", b"i"]),
        cseq: header(&[b"cseq"]),
        content_length,
    }))
}

/// `METHOD Request-URI SIP/2.0`.
fn is_request_line(line: &[u8]) -> bool {
    let mut words = line.split(|&b| b == b' ');
    let method = words.next().unwrap_or_default();
    let rest: Vec<&[u8]> = words.collect();
    !method.is_empty()
        && method.iter().all(u8::is_ascii_alphabetic)
        && rest.len() == 2
        && rest[1].eq_ignore_ascii_case(b"SIP/2.0")
}

/// What one message from the server means for the attempt.
#[derive(Debug, PartialEq)]
enum Reply {
    /// Not the final response to our request: keep waiting.
    Ignore,
    Done(Verdict),
}

fn malformed(what: &str) -> Reply {
    Reply::Done(Verdict::Down(format!("malformed SIP response: {what}")))
}

/// Judges one message (already parsed, or the parse error) in answer to `sent`.
fn judge(sent: &Sent, message: Result<Message, String>) -> Reply {
    let response = match message {
        Err(what) => return malformed(&what),
        Ok(Message::Request) => return Reply::Ignore,
        Ok(Message::Response(r)) => r,
    };
    let Some(call_id) = &response.call_id else {
        return malformed("no Call-ID");
    };
    let Some(cseq) = &response.cseq else {
        return malformed("no CSeq");
    };
    // Call-IDs compare byte by byte (RFC 3261 20.8), methods are case-sensitive.
    let mut words = cseq
        .split(u8::is_ascii_whitespace)
        .filter(|w| !w.is_empty());
    let ours = call_id.as_slice() == sent.call_id.as_bytes()
        && words.next() == Some(CSEQ.to_string().as_bytes())
        && words.next() == Some(METHOD.as_bytes())
        && words.next().is_none();
    if !ours || response.status < 200 {
        return Reply::Ignore;
    }
    Reply::Done(if response.status == 200 {
        Verdict::Up
    } else {
        Verdict::Down(format!(
            "OPTIONS answered {}",
            shown_bytes(&response.status_line)
        ))
    })
}

/// The lines of a message's header in one datagram: leading CRLFs dropped (RFC 3261
/// 7.5), up to the empty line or the end, line ends removed.
fn datagram_lines(datagram: &[u8]) -> Vec<&[u8]> {
    let start = datagram
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(datagram.len());
    let mut lines = Vec::new();
    for line in datagram[start..].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        lines.push(line);
    }
    lines
}

/// Judges one datagram.
fn judge_datagram(sent: &Sent, datagram: &[u8]) -> Reply {
    if datagram.iter().all(u8::is_ascii_whitespace) {
        return Reply::Ignore;
    }
    judge(sent, parse(datagram_lines(datagram)))
}

pub(crate) async fn probe(p: &Prepared, spec: &Sip, t: &Target) -> Result<Verdict, Error> {
    let sent = Sent::random()?;
    match spec.transport {
        SipTransport::Udp => over_udp(p, &sent, t).await.or_else(Stop::into_verdict),
        SipTransport::Tcp => verdict(over_tcp(p, &sent, t).await),
    }
}

async fn over_udp(p: &Prepared, sent: &Sent, t: &Target) -> Result<Verdict, Stop> {
    let deadline = Instant::now() + t.timeout;
    let udp = Udp::connect(t).await?;
    let request = p.request(sent, SipTransport::Udp, udp.local_addr()?, t.addr);
    let no_answer = || format!("no {AWAITED} within {} ms", t.timeout.as_millis());
    udp.exchange(
        request.as_bytes(),
        MAX_REPLY,
        deadline,
        no_answer,
        |datagram| match judge_datagram(sent, datagram) {
            Reply::Ignore => None,
            Reply::Done(v) => Some(v),
        },
    )
    .await
}

async fn over_tcp(p: &Prepared, sent: &Sent, t: &Target) -> Result<(), Stop> {
    let mut session = Session::connect(t, None).await?;
    let request = p.request(sent, SipTransport::Tcp, session.local_addr(), t.addr);
    // `send` ends the last line; the request's own last CRLF is that.
    let request = request.strip_suffix("\r\n").unwrap_or(&request);
    session.send(request, METHOD).await?;
    let too_much = || {
        down(format!(
            "no final {AWAITED} in the first {} KiB",
            MAX_REPLY >> 10
        ))
    };
    let mut read = 0usize;
    loop {
        // Header lines up to the empty line; empty lines before the start line are
        // keep-alives.
        let mut lines: Vec<Vec<u8>> = Vec::new();
        loop {
            let line = session.line(AWAITED).await?;
            read += line.len() + 2;
            if read > MAX_REPLY {
                return too_much();
            }
            match (line.is_empty(), lines.is_empty()) {
                (true, true) => continue,
                (true, false) => break,
                (false, _) => lines.push(line),
            }
        }
        let message = parse(lines.iter().map(Vec::as_slice));
        let body = match &message {
            Ok(Message::Response(r)) => r.content_length.unwrap_or(0),
            _ => 0,
        };
        match judge(sent, message) {
            Reply::Done(Verdict::Up) => return Ok(()),
            Reply::Done(Verdict::Down(reason)) => return down(reason),
            Reply::Ignore => {}
        }
        read = read.saturating_add(body);
        if read > MAX_REPLY {
            return too_much();
        }
        if let Err(e) = session.skip(body).await {
            return down(session.read_reason(e, AWAITED));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent() -> Sent {
        Sent {
            call_id: "a84b4c76e66710@directord".to_owned(),
            branch: "z9hG4bK776asdhds".to_owned(),
            tag: "1928301774".to_owned(),
        }
    }

    fn response(status_line: &str, call_id: &str, cseq: &str) -> String {
        format!(
            "{status_line}\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK776asdhds\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
        )
    }

    fn judged(datagram: &str) -> Reply {
        judge_datagram(&sent(), datagram.as_bytes())
    }

    fn down(reason: &str) -> Reply {
        Reply::Done(Verdict::Down(reason.to_owned()))
    }

    /// The answer of kamailio 5.6.3 (Debian 12) with `sl_send_reply("200", "OK")`
    /// to an OPTIONS over UDP from 127.0.0.1:48015.
    const KAMAILIO_200: &str = "SIP/2.0 200 OK\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:48015;branch=z9hG4bKabc;rport=48015;received=127.0.0.1\r\n\
        From: <sip:directord@127.0.0.1>;tag=1\r\n\
        To: <sip:127.0.0.1:15060>;tag=a45363010201c12697c26728a1ea42a4.3d84af2b\r\n\
        Call-ID: x@directord\r\n\
        CSeq: 1 OPTIONS\r\n\
        Server: kamailio (5.6.3 (x86_64/linux))\r\n\
        Content-Length: 0\r\n\r\n";

    #[test]
    fn answer_captured_from_kamailio() {
        let mut s = sent();
        s.call_id = "x@directord".to_owned();
        assert_eq!(
            judge_datagram(&s, KAMAILIO_200.as_bytes()),
            Reply::Done(Verdict::Up)
        );
        let Ok(Message::Response(r)) = parse(datagram_lines(KAMAILIO_200.as_bytes())) else {
            panic!("parses");
        };
        assert_eq!(r.status, 200);
        assert_eq!(r.content_length, Some(0));
        // Another attempt's Call-ID.
        assert_eq!(judged(KAMAILIO_200), Reply::Ignore);
    }

    #[test]
    fn final_statuses() {
        let id = "a84b4c76e66710@directord";
        assert_eq!(
            judged(&response("SIP/2.0 200 OK", id, "1 OPTIONS")),
            Reply::Done(Verdict::Up)
        );
        assert_eq!(
            judged(&response("SIP/2.0 404 Not Found", id, "1 OPTIONS")),
            down("OPTIONS answered SIP/2.0 404 Not Found")
        );
        assert_eq!(
            judged(&response("SIP/2.0 483 Too Many Hops", id, "1   OPTIONS")),
            down("OPTIONS answered SIP/2.0 483 Too Many Hops")
        );
        assert_eq!(
            judged(&response("SIP/2.0 202", id, "1 OPTIONS")),
            down("OPTIONS answered SIP/2.0 202")
        );
        assert_eq!(
            judged(&response("SIP/2.0 503 \u{7}Busy\tnow", id, "1 OPTIONS")),
            down("OPTIONS answered SIP/2.0 503 \\u{7}Busy\\tnow")
        );
    }

    #[test]
    fn what_is_skipped() {
        let id = "a84b4c76e66710@directord";
        for (datagram, why) in [
            (
                response("SIP/2.0 100 Trying", id, "1 OPTIONS"),
                "provisional",
            ),
            (
                response("SIP/2.0 200 OK", "other@directord", "1 OPTIONS"),
                "Call-ID",
            ),
            (
                response("SIP/2.0 200 OK", &id.to_uppercase(), "1 OPTIONS"),
                "case",
            ),
            (response("SIP/2.0 200 OK", id, "2 OPTIONS"), "CSeq number"),
            (response("SIP/2.0 200 OK", id, "1 INVITE"), "CSeq method"),
            (response("SIP/2.0 200 OK", id, "1 options"), "method case"),
            (
                "OPTIONS sip:lb@127.0.0.1 SIP/2.0\r\nCall-ID: x\r\n\r\n".to_owned(),
                "request",
            ),
            ("\r\n\r\n".to_owned(), "keep-alive"),
        ] {
            assert_eq!(judged(&datagram), Reply::Ignore, "{why}");
        }
    }

    #[test]
    fn header_forms() {
        // Compact names, folded lines, LF line ends, leading CRLF, no final blank line.
        let datagram = "\r\nsip/2.0 200 OK\nv: SIP/2.0/UDP 127.0.0.1\ni: a84b4c76e66710@directord\n\
                        CSeq: 1\n  OPTIONS\nl: 0";
        assert_eq!(judged(datagram), Reply::Done(Verdict::Up));
    }

    #[test]
    fn malformed_responses() {
        let id = "a84b4c76e66710@directord";
        assert_eq!(
            judged("HTTP/1.1 400 Bad Request\r\n\r\n"),
            down("malformed SIP response: not SIP: \"HTTP/1.1 400 Bad Request\"")
        );
        assert_eq!(
            judged("SIP/2.0 2000 OK\r\n\r\n"),
            down("malformed SIP response: bad status line \"SIP/2.0 2000 OK\"")
        );
        assert_eq!(
            judged("SIP/2.0 200 OK\r\nCSeq: 1 OPTIONS\r\n\r\n"),
            down("malformed SIP response: no Call-ID")
        );
        assert_eq!(
            judged(&format!("SIP/2.0 200 OK\r\nCall-ID: {id}\r\n\r\n")),
            down("malformed SIP response: no CSeq")
        );
        assert_eq!(
            judged(&format!(
                "SIP/2.0 200 OK\r\nCall-ID: {id}\r\nbroken\r\n\r\n"
            )),
            down("malformed SIP response: header line without a colon: \"broken\"")
        );
        assert_eq!(
            judged(&format!(
                "SIP/2.0 200 OK\r\nCall-ID: {id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: x\r\n\r\n"
            )),
            down("malformed SIP response: bad Content-Length \"x\"")
        );
    }

    #[test]
    fn the_request() {
        let p = Prepared::new(&Sip {
            transport: SipTransport::Udp,
            uri: None,
        })
        .expect("valid");
        let request = p.request(
            &sent(),
            SipTransport::Tcp,
            "[2001:db8::2]:40000".parse().expect("address"),
            "[2001:db8::1]:5060".parse().expect("address"),
        );
        assert_eq!(
            request,
            "OPTIONS sip:[2001:db8::1]:5060 SIP/2.0\r\n\
             Via: SIP/2.0/TCP [2001:db8::2]:40000;branch=z9hG4bK776asdhds;rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:directord@[2001:db8::2]>;tag=1928301774\r\n\
             To: <sip:[2001:db8::1]:5060>\r\n\
             Call-ID: a84b4c76e66710@directord\r\n\
             CSeq: 1 OPTIONS\r\n\
             User-Agent: directord\r\n\
             Content-Length: 0\r\n\
             \r\n"
        );
        // The request parses as one, and our own answer format as ours.
        assert_eq!(
            parse(datagram_lines(request.as_bytes())),
            Ok(Message::Request)
        );

        let s = Sent::random().expect("random");
        assert!(s.branch.starts_with("z9hG4bK") && s.branch.len() == 23);
        assert!(s.call_id.ends_with("@directord"));
        assert_ne!(s, Sent::random().expect("random"));
    }

    #[test]
    fn uri_option() {
        for bad in ["http://x", "sip:", "sip:a b", "sip:<x>", "tel:+123"] {
            let e = Prepared::new(&Sip {
                transport: SipTransport::Udp,
                uri: Some(bad.to_owned()),
            })
            .expect_err(bad);
            assert!(matches!(e, Error::Option { .. }), "{bad}: {e}");
        }
        let p = Prepared::new(&Sip {
            transport: SipTransport::Udp,
            uri: Some("SIP:nobody@127.0.0.1".to_owned()),
        })
        .expect("valid");
        assert_eq!(
            p.uri("127.0.0.1:5060".parse().expect("address")),
            "SIP:nobody@127.0.0.1"
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = judge_datagram(&sent(), &bytes);
        }

        #[test]
        fn arbitrary_headers_never_panic(
            status in 100u16..700,
            headers in proptest::collection::vec("[ -~]{0,40}", 0..8),
        ) {
            let mut datagram = format!("SIP/2.0 {status} X\r\n");
            for h in headers {
                datagram.push_str(&h);
                datagram.push_str("\r\n");
            }
            let _ = judged(&datagram);
        }
    }
}
