//! DNS check: one query to the real server, over UDP, again over TCP when the UDP
//! answer comes back truncated.
//!
//! Messages are built and parsed with hickory-proto; the I/O is done here (a
//! connected UDP socket, then a TCP connection with the two-byte length prefix of
//! RFC 1035 4.2.2), so the whole exchange keeps to the attempt's budget and each way
//! of failing has its own reason.
//!
//! - The query has a random id and RD set, and no EDNS record: a server answers in
//!   512 bytes or sets TC, and the check asks again over TCP.
//! - The connected socket only receives from the real server. A datagram whose id is
//!   not ours (a late answer to an earlier attempt), a query, or an answer to another
//!   question is ignored; one with our id that does not parse is a malformed answer.
//!   An error answer may leave the question section out (RFC 1035 4.1.1), so an empty
//!   question is accepted when the rcode is not NOERROR.
//! - Up means: the rcode is `expect_rcode` and, with `expect_answer`, some answer
//!   record of the query type has that value. NOERROR with no records of the type
//!   (NODATA) is up when `expect_answer` is not set.
//!
//! How `expect_answer` is compared, by query type:
//! - A / AAAA: as an address (`2001:db8::1` equals `2001:DB8:0::1`).
//! - CNAME / NS / PTR: as a domain name, case-insensitively, trailing dot optional.
//!   MX takes either the exchange alone (`mail.example.org`) or preference and
//!   exchange (`10 mail.example.org.`).
//! - TXT: the record's strings joined without separator, exactly (case matters).
//! - other types: the presentation form word by word, case-insensitively, trailing
//!   dots optional (SRV `10 5 443 www.example.org.`).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout_at};

use crate::tcp::{self, ConnectError, io_reason};
use crate::udp::Udp;
use crate::{Error, Stop, Target, Verdict, spec::Dns, spec::QueryType};

/// Header length, and the place of the flag bits read before a full parse.
const HEADER_LEN: usize = 12;
const FLAGS_QR: u8 = 0x80;
const FLAGS_TC: u8 = 0x02;
/// A UDP answer larger than this is cut by `recv` and then fails to parse; without
/// EDNS a server should not send more than 512 bytes anyway.
const MAX_UDP: usize = 4096;
/// How many of the records that came are listed in a "no such record" reason.
const MAX_LISTED: usize = 5;

#[derive(Debug)]
pub(crate) struct Prepared {
    question: Query,
    rcode: ResponseCode,
    expect: Option<Expect>,
    /// `expect_answer` as the reasons show it: as written, TXT in quotes.
    wanted: String,
    /// The query type as the reasons show it: "A", "MX", "TYPE65280".
    type_name: String,
}

/// `expect_answer`, parsed for the query type once.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Addr(IpAddr),
    /// CNAME, NS, PTR target, or an MX exchange given alone.
    Name(Name),
    Txt(String),
    /// Any other type: presentation form split into words, normalised by [`word`].
    Words(Vec<String>),
}

/// What one message from the server means for the attempt.
#[derive(Debug, PartialEq)]
enum Reply {
    /// Not the answer to our query: keep waiting.
    Ignore,
    /// The UDP answer did not fit: ask over TCP.
    Truncated,
    Done(Verdict),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Transport {
    Udp,
    Tcp,
}

impl Prepared {
    pub(crate) fn new(spec: &Dns) -> Result<Prepared, Error> {
        let bad_name = |message: String| Error::DnsName {
            name: spec.name.clone(),
            message,
        };
        let mut name = Name::from_utf8(&spec.name).map_err(|e| bad_name(e.to_string()))?;
        name.set_fqdn(true);
        let query_type = RecordType::from(spec.query_type.code());
        let p = Prepared {
            question: Query::query(name, query_type),
            rcode: <ResponseCode as From<u16>>::from(spec.expect_rcode.code()),
            expect: spec
                .expect_answer
                .as_deref()
                .map(|a| Expect::parse(spec.query_type, a))
                .transpose()?,
            wanted: match (&spec.expect_answer, spec.query_type) {
                (None, _) => String::new(),
                (Some(a), QueryType::Txt) => format!("{a:?}"),
                (Some(a), _) => a.clone(),
            },
            type_name: type_name(query_type),
        };
        // Encoding checks what parsing does not (the name's total length).
        p.query()?;
        Ok(p)
    }

    /// A new query with a random id.
    fn query(&self) -> Result<(u16, Vec<u8>), Error> {
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(self.question.clone());
        let bytes = m.to_vec().map_err(|e| Error::DnsName {
            name: self.question.name().to_string(),
            message: e.to_string(),
        })?;
        Ok((m.metadata.id, bytes))
    }

    /// Judges one message that came from the server in answer to query `id`.
    fn reply(&self, id: u16, bytes: &[u8], transport: Transport) -> Reply {
        if bytes.len() < HEADER_LEN {
            return Reply::Done(malformed(format!(
                "{} bytes, shorter than a header",
                bytes.len()
            )));
        }
        if u16::from_be_bytes([bytes[0], bytes[1]]) != id || bytes[2] & FLAGS_QR == 0 {
            return Reply::Ignore;
        }
        // A truncated answer may be cut anywhere: do not parse the rest.
        if transport == Transport::Udp && bytes[2] & FLAGS_TC != 0 {
            return Reply::Truncated;
        }
        let m = match Message::from_vec(bytes) {
            Ok(m) => m,
            Err(e) => return Reply::Done(malformed(e.to_string())),
        };
        let rcode = m.metadata.response_code;
        let ours = match m.queries.as_slice() {
            [q] => *q == self.question,
            [] => rcode != ResponseCode::NoError,
            _ => false,
        };
        if m.metadata.message_type != MessageType::Response || !ours {
            return Reply::Ignore;
        }
        Reply::Done(self.judge(&m))
    }

    fn judge(&self, m: &Message) -> Verdict {
        let rcode = m.metadata.response_code;
        if rcode != self.rcode {
            return Verdict::Down(format!(
                "rcode {}, expected {}",
                rcode_name(rcode),
                rcode_name(self.rcode)
            ));
        }
        let Some(expect) = &self.expect else {
            return Verdict::Up;
        };
        let of_type: Vec<&RData> = m
            .answers
            .iter()
            .filter(|r| r.record_type() == self.question.query_type())
            .map(|r| &r.data)
            .collect();
        if of_type.iter().any(|d| expect.matches(d)) {
            return Verdict::Up;
        }
        let got = if of_type.is_empty() {
            format!("got no {} record", self.type_name)
        } else {
            // Sorted: servers rotate record order, the reason should not change with it.
            let mut shown: Vec<String> = of_type.iter().map(|d| show(d)).collect();
            shown.sort();
            shown.truncate(MAX_LISTED);
            if of_type.len() > MAX_LISTED {
                shown.push(format!("and {} more", of_type.len() - MAX_LISTED));
            }
            format!("got {}", shown.join(", "))
        };
        Verdict::Down(format!(
            "no {} record {} in the answer ({got})",
            self.type_name, self.wanted
        ))
    }
}

impl Expect {
    fn parse(query_type: QueryType, answer: &str) -> Result<Expect, Error> {
        let bad = |what: &str| Error::Option {
            message: format!("expect_answer {answer:?} is not {what}"),
        };
        let name = |s: &str| {
            let mut n = Name::from_utf8(s).map_err(|_| bad("a domain name"))?;
            n.set_fqdn(true);
            Ok::<_, Error>(n)
        };
        Ok(match query_type {
            QueryType::A => Expect::Addr(IpAddr::V4(
                answer
                    .parse::<Ipv4Addr>()
                    .map_err(|_| bad("an IPv4 address"))?,
            )),
            QueryType::Aaaa => Expect::Addr(IpAddr::V6(
                answer
                    .parse::<Ipv6Addr>()
                    .map_err(|_| bad("an IPv6 address"))?,
            )),
            QueryType::Cname | QueryType::Ns | QueryType::Ptr => Expect::Name(name(answer)?),
            QueryType::Mx if answer.split_whitespace().count() == 1 => {
                Expect::Name(name(answer.trim())?)
            }
            QueryType::Txt => Expect::Txt(answer.to_owned()),
            _ => Expect::Words(answer.split_whitespace().map(word).collect()),
        })
    }

    fn matches(&self, data: &RData) -> bool {
        match (self, data) {
            (Expect::Addr(IpAddr::V4(want)), RData::A(a)) => a.0 == *want,
            (Expect::Addr(IpAddr::V6(want)), RData::AAAA(a)) => a.0 == *want,
            (Expect::Name(want), RData::CNAME(n)) => n.0 == *want,
            (Expect::Name(want), RData::NS(n)) => n.0 == *want,
            (Expect::Name(want), RData::PTR(n)) => n.0 == *want,
            (Expect::Name(want), RData::MX(mx)) => mx.exchange == *want,
            (Expect::Txt(want), RData::TXT(txt)) => txt.txt_data.concat() == want.as_bytes(),
            (Expect::Words(want), data) => {
                let got: Vec<String> = data.to_string().split_whitespace().map(word).collect();
                got == *want
            }
            _ => false,
        }
    }
}

/// One word of a presentation form, for comparison: lowercase, no trailing dot.
fn word(w: &str) -> String {
    let w = w.to_ascii_lowercase();
    match w.strip_suffix('.') {
        Some(stripped) if !stripped.is_empty() => stripped.to_owned(),
        _ => w,
    }
}

/// A record's value as the reasons show it.
fn show(data: &RData) -> String {
    match data {
        RData::TXT(txt) => format!("{:?}", String::from_utf8_lossy(&txt.txt_data.concat())),
        other => other.to_string(),
    }
}

fn type_name(t: RecordType) -> String {
    match t {
        RecordType::Unknown(n) => format!("TYPE{n}"),
        known => known.to_string(),
    }
}

fn rcode_name(rcode: ResponseCode) -> String {
    let code = u16::from(rcode);
    let name = match code {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        _ => return format!("RCODE{code}"),
    };
    name.to_owned()
}

fn malformed(what: String) -> Verdict {
    Verdict::Down(format!("malformed DNS response: {what}"))
}

pub(crate) async fn probe(p: &Prepared, spec: &Dns, t: &Target) -> Result<Verdict, Error> {
    let _ = spec; // everything needed was prepared
    attempt(p, t).await.or_else(Stop::into_verdict)
}

async fn attempt(p: &Prepared, t: &Target) -> Result<Verdict, Stop> {
    let deadline = Instant::now() + t.timeout;
    let udp = Udp::connect(t).await?;
    let (id, query) = p.query()?;
    let no_answer = || format!("no DNS answer within {} ms", t.timeout.as_millis());
    // `Some(None)`: truncated, asked again over TCP.
    let answer = udp
        .exchange(&query, MAX_UDP, deadline, no_answer, |datagram| {
            match p.reply(id, datagram, Transport::Udp) {
                Reply::Ignore => None,
                Reply::Done(v) => Some(Some(v)),
                Reply::Truncated => Some(None),
            }
        })
        .await?;
    match answer {
        Some(v) => Ok(v),
        None => {
            drop(udp);
            over_tcp(p, t, deadline).await
        }
    }
}

/// The query again over TCP, after a truncated UDP answer.
async fn over_tcp(p: &Prepared, t: &Target, deadline: Instant) -> Result<Verdict, Stop> {
    let failed = |what: String| Ok(Verdict::Down(format!("truncated, and TCP failed: {what}")));
    let no_answer = || {
        Ok(Verdict::Down(format!(
            "truncated, and no TCP answer within {} ms",
            t.timeout.as_millis()
        )))
    };
    let mut stream = match tcp::connect_from(t.addr, t.bind, deadline).await {
        Ok(s) => s,
        Err(ConnectError::Local(e)) => return Err(Stop::Checker(e)),
        Err(ConnectError::Failed(e)) => return failed(io_reason(&e)),
        Err(ConnectError::TimedOut) => return no_answer(),
    };
    let (id, query) = p.query()?;
    // The query is a few hundred bytes at most: its length fits the prefix.
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    let exchange = async {
        stream.write_all(&framed).await?;
        loop {
            let len = stream.read_u16().await?;
            let mut msg = vec![0u8; usize::from(len)];
            stream.read_exact(&mut msg).await?;
            match p.reply(id, &msg, Transport::Tcp) {
                Reply::Ignore => continue,
                Reply::Done(v) => return Ok::<_, io::Error>(v),
                Reply::Truncated => unreachable!("TC is not looked at over TCP"),
            }
        }
    };
    match timeout_at(deadline, exchange).await {
        Err(_) => no_answer(),
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            failed("connection closed before the answer".to_owned())
        }
        Ok(Err(e)) => failed(io_reason(&e)),
        Ok(Ok(v)) => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::rr::Record;
    use hickory_proto::rr::rdata::{A, AAAA, MX, SRV, TXT};

    use super::*;
    use crate::spec::Rcode;

    fn spec(name: &str, query_type: QueryType, expect_answer: Option<&str>) -> Dns {
        Dns {
            name: name.to_owned(),
            query_type,
            expect_rcode: Rcode::NoError,
            expect_answer: expect_answer.map(str::to_owned),
        }
    }

    fn prepared(query_type: QueryType, expect_answer: Option<&str>) -> Prepared {
        Prepared::new(&spec("www.lab.test", query_type, expect_answer)).expect("valid spec")
    }

    /// An answer to `p`'s question with id 7 and the given records.
    fn answer(p: &Prepared, rcode: ResponseCode, records: Vec<RData>) -> Vec<u8> {
        let mut m = Message::response(7, hickory_proto::op::OpCode::Query);
        m.metadata.response_code = rcode;
        m.add_query(p.question.clone());
        for data in records {
            m.add_answer(Record::from_rdata(p.question.name().clone(), 300, data));
        }
        m.to_vec().expect("encodes")
    }

    fn verdict(p: &Prepared, bytes: &[u8]) -> Reply {
        p.reply(7, bytes, Transport::Udp)
    }

    fn a(s: &str) -> RData {
        RData::A(A(s.parse().expect("IPv4")))
    }

    #[test]
    fn bad_names_are_errors() {
        for name in [
            "a..b",
            &"x".repeat(64),
            &format!("{}.test", "abcdefghij.".repeat(25)),
        ] {
            let e = Prepared::new(&spec(name, QueryType::A, None)).expect_err(name);
            assert!(matches!(e, Error::DnsName { .. }), "{name}: {e}");
        }
        assert!(Prepared::new(&spec(".", QueryType::Ns, None)).is_ok());
    }

    #[test]
    fn expect_answer_must_fit_the_type() {
        for (t, answer) in [
            (QueryType::A, "2001:db8::1"),
            (QueryType::Aaaa, "192.0.2.1"),
        ] {
            let e = Prepared::new(&spec("x.test", t, Some(answer))).expect_err(answer);
            assert!(matches!(e, Error::Option { .. }), "{e}");
        }
    }

    #[test]
    fn rcode_and_answer() {
        let p = prepared(QueryType::A, Some("192.0.2.2"));
        let ok = answer(
            &p,
            ResponseCode::NoError,
            vec![a("192.0.2.1"), a("192.0.2.2")],
        );
        assert_eq!(verdict(&p, &ok), Reply::Done(Verdict::Up));

        let other = answer(
            &p,
            ResponseCode::NoError,
            vec![a("192.0.2.1"), a("192.0.2.3")],
        );
        assert_eq!(
            verdict(&p, &other),
            Reply::Done(Verdict::Down(
                "no A record 192.0.2.2 in the answer (got 192.0.2.1, 192.0.2.3)".into()
            ))
        );
        let empty = answer(&p, ResponseCode::NoError, vec![]);
        assert_eq!(
            verdict(&p, &empty),
            Reply::Done(Verdict::Down(
                "no A record 192.0.2.2 in the answer (got no A record)".into()
            ))
        );
        let servfail = answer(&p, ResponseCode::ServFail, vec![]);
        assert_eq!(
            verdict(&p, &servfail),
            Reply::Done(Verdict::Down("rcode SERVFAIL, expected NOERROR".into()))
        );
    }

    #[test]
    fn long_lists_are_cut() {
        let p = prepared(QueryType::A, Some("192.0.2.99"));
        let many = (1..=8).map(|i| a(&format!("192.0.2.{i}"))).collect();
        let Reply::Done(Verdict::Down(reason)) =
            verdict(&p, &answer(&p, ResponseCode::NoError, many))
        else {
            panic!("expected down");
        };
        assert!(reason.ends_with("192.0.2.5, and 3 more)"), "{reason}");
    }

    #[test]
    fn comparison_by_type() {
        let aaaa = prepared(QueryType::Aaaa, Some("2001:DB8:0::1"));
        let data = RData::AAAA(AAAA("2001:db8::1".parse().expect("IPv6")));
        assert!(aaaa.expect.as_ref().is_some_and(|e| e.matches(&data)));

        let mx = RData::MX(MX::new(
            10,
            Name::from_ascii("Mail.Lab.Test.").expect("name"),
        ));
        for want in [
            "mail.lab.test",
            "MAIL.lab.test.",
            "10 mail.lab.test",
            "10 mail.lab.test.",
        ] {
            let p = prepared(QueryType::Mx, Some(want));
            assert!(p.expect.as_ref().is_some_and(|e| e.matches(&mx)), "{want}");
        }
        let p = prepared(QueryType::Mx, Some("20 mail.lab.test"));
        assert!(!p.expect.as_ref().is_some_and(|e| e.matches(&mx)));

        let txt = RData::TXT(TXT::new(vec!["v=spf1 ".into(), "-all".into()]));
        assert!(
            prepared(QueryType::Txt, Some("v=spf1 -all"))
                .expect
                .is_some_and(|e| e.matches(&txt))
        );
        assert!(
            !prepared(QueryType::Txt, Some("V=SPF1 -all"))
                .expect
                .is_some_and(|e| e.matches(&txt))
        );

        let srv = RData::SRV(SRV::new(
            10,
            5,
            443,
            Name::from_ascii("www.lab.test.").expect("name"),
        ));
        assert!(
            prepared(QueryType::Srv, Some("10 5 443 WWW.lab.test"))
                .expect
                .is_some_and(|e| e.matches(&srv))
        );
    }

    #[test]
    fn what_is_ignored() {
        let p = prepared(QueryType::A, None);
        let ok = answer(&p, ResponseCode::NoError, vec![a("192.0.2.1")]);
        assert_eq!(p.reply(8, &ok, Transport::Udp), Reply::Ignore, "another id");

        let mut query = ok.clone();
        query[2] &= !FLAGS_QR;
        assert_eq!(verdict(&p, &query), Reply::Ignore, "a query");

        let other = Prepared::new(&spec("mail.lab.test", QueryType::A, None)).expect("valid");
        assert_eq!(
            verdict(&p, &answer(&other, ResponseCode::NoError, vec![])),
            Reply::Ignore,
            "another question"
        );

        // An error without the question section is ours.
        let mut m = Message::response(7, hickory_proto::op::OpCode::Query);
        m.metadata.response_code = ResponseCode::FormErr;
        let bytes = m.to_vec().expect("encodes");
        assert_eq!(
            verdict(&p, &bytes),
            Reply::Done(Verdict::Down("rcode FORMERR, expected NOERROR".into()))
        );
    }

    #[test]
    fn truncated_and_malformed() {
        let p = prepared(QueryType::A, None);
        let mut tc = answer(&p, ResponseCode::NoError, vec![a("192.0.2.1")]);
        tc[2] |= FLAGS_TC;
        assert_eq!(verdict(&p, &tc), Reply::Truncated);
        assert_eq!(p.reply(7, &tc, Transport::Tcp), Reply::Done(Verdict::Up));
        // Cut in the middle of a record: still asks over TCP.
        assert_eq!(verdict(&p, &tc[..tc.len() - 3]), Reply::Truncated);

        let ok = answer(&p, ResponseCode::NoError, vec![a("192.0.2.1")]);
        let Reply::Done(Verdict::Down(reason)) = verdict(&p, &ok[..ok.len() - 3]) else {
            panic!("expected down");
        };
        assert!(reason.starts_with("malformed DNS response: "), "{reason}");
        assert_eq!(
            verdict(&p, b"\x00\x07"),
            Reply::Done(Verdict::Down(
                "malformed DNS response: 2 bytes, shorter than a header".into()
            ))
        );
    }

    /// The answer of unbound 1.17.1 (Debian 12) to `www.lab.test A` with id 0x1234,
    /// from the zone the integration test sets up.
    const UNBOUND_ANSWER: &str = "12348580000100020000000003777777036c616204746573740000010001\
        c00c000100010000012c0004c0000201c00c000100010000012c0004c0000202";

    fn unhex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| {
                let pair = std::str::from_utf8(pair).expect("ascii");
                u8::from_str_radix(pair, 16).expect("hex")
            })
            .collect()
    }

    #[test]
    fn answer_captured_from_unbound() {
        let bytes = unhex(UNBOUND_ANSWER);
        let p = prepared(QueryType::A, Some("192.0.2.2"));
        assert_eq!(
            p.reply(0x1234, &bytes, Transport::Udp),
            Reply::Done(Verdict::Up)
        );
        let p = prepared(QueryType::A, Some("192.0.2.9"));
        assert_eq!(
            p.reply(0x1234, &bytes, Transport::Udp),
            Reply::Done(Verdict::Down(
                "no A record 192.0.2.9 in the answer (got 192.0.2.1, 192.0.2.2)".into()
            ))
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let p = prepared(QueryType::Mx, Some("10 mail.lab.test"));
            let id = bytes.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
            let _ = p.reply(id, &bytes, Transport::Udp);
            let _ = p.reply(id, &bytes, Transport::Tcp);
        }
    }

    #[test]
    fn names() {
        assert_eq!(rcode_name(ResponseCode::NXDomain), "NXDOMAIN");
        assert_eq!(rcode_name(<ResponseCode as From<u16>>::from(23)), "RCODE23");
        assert_eq!(type_name(RecordType::from(65280)), "TYPE65280");
        assert_eq!(type_name(RecordType::from(28)), "AAAA");
    }
}
