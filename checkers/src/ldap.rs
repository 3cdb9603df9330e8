//! LDAP check: optionally StartTLS, a simple bind (anonymous, or a DN and its
//! password), a search under `base_dn` that must return an entry, unbind.
//!
//! A small LDAPv3 client written here (RFC 4511 messages in BER, RFC 4515 filters),
//! not the `ldap3` crate. ldap3 0.12.1 decodes a response with `expect()`: a server
//! that answers an empty SEQUENCE (`30 00`) panics its connection task (tried: it
//! dies with "element"), and its codec buffers a message of whatever length it
//! announces. It also runs each connection as a spawned task and folds its errors
//! into a few kinds. A health check facing any server wants one connection per attempt from the bind
//! address, one deadline, the shared TLS connector ([`crate::tls`]), bounded reads
//! and a reason that names the step and quotes the server. The part of LDAP needed
//! for that is four requests (StartTLS, bind, search, unbind) and five responses.
//!
//! - Every request waits for its answer before the next (message ids 1, 2, ...).
//!   A message is at most [`MAX_REPLY`] bytes; the first byte must open a SEQUENCE,
//!   or the answer is "malformed" with what came quoted.
//! - StartTLS (RFC 4511 4.14): a server that refuses it is down; bytes that arrive
//!   after its answer and before the handshake are refused, as with SMTP.
//! - The bind is sent even when anonymous: it is the step that proves the server
//!   authenticates. A DN with an empty password would be an "unauthenticated bind"
//!   (RFC 4513 5.1.2), which many servers accept as anonymous; such a check is a
//!   configuration error.
//! - The search asks for no attributes (`1.1`) and one entry (size limit 1). Up
//!   when an entry came, whatever the final result code (sizeLimitExceeded when
//!   more would match); down when none came: "returned no entry" on success, else
//!   the result code ("noSuchObject (32)").
//! - A Notice of Disconnection (message id 0) ends the attempt with its reason.
//! - The unbind is best effort: once the search answered, the verdict is known.
//! - The password goes only into the bind request; what the server says is quoted
//!   through [`shown`], with the password blotted out should a server echo it.

use std::io;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::time::{Instant, timeout_at};

use crate::session::{Stream, redact, shown};
use crate::spec::{Ldap, LdapScope, MAX_REPLY};
use crate::tcp::{self, io_reason};
use crate::tls::{self, Handshakes};
use crate::{Error, Stop, Target, Verdict, down, verdict};

/// The StartTLS extended operation (RFC 4511 4.14.1).
const STARTTLS_OID: &str = "1.3.6.1.4.1.1466.20037";
/// The Notice of Disconnection (RFC 4511 4.4.1).
const NOTICE_OF_DISCONNECTION_OID: &str = "1.3.6.1.4.1.1466.20036";
/// Nesting bound for `&`, `|`, `!` in a filter.
const MAX_FILTER_DEPTH: usize = 32;

pub(crate) struct Prepared {
    /// The search filter, BER-encoded once.
    filter: Vec<u8>,
    /// With TLS (implicit or StartTLS): the client, built once.
    tls: Option<tls::Client>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("filter_len", &self.filter.len())
            .field("tls", &self.tls)
            .finish()
    }
}

impl Prepared {
    pub(crate) fn new(spec: &Ldap) -> Result<Prepared, Error> {
        let filter = filter::encode(&spec.filter).map_err(|message| Error::Option {
            message: format!("LDAP filter {:?}: {message}", spec.filter),
        })?;
        if let Some(bind) = &spec.bind
            && bind.password.expose().is_empty()
        {
            return Err(Error::Option {
                message: format!(
                    "LDAP bind as {:?} has an empty password: that is an unauthenticated \
                     bind (RFC 4513 5.1.2), which proves nothing; leave out the bind for \
                     an anonymous one",
                    bind.dn
                ),
            });
        }
        let tls = tls::client(spec.tls.tls())?;
        Ok(Prepared { filter, tls })
    }
}

pub(crate) async fn probe(p: &Prepared, spec: &Ldap, t: &Target) -> Result<Verdict, Error> {
    let deadline = Instant::now() + t.timeout;
    verdict(session(p, spec, t, deadline).await)
}

async fn session(p: &Prepared, spec: &Ldap, t: &Target, deadline: Instant) -> Result<(), Stop> {
    let tcp = tcp::connect(t, deadline).await?;
    let secret = spec.bind.as_ref().map_or("", |b| b.password.expose());
    let Handshakes { implicit, starttls } = tls::handshakes(&spec.tls, p.tls.as_ref(), t.addr.ip());
    let mut conn = match (implicit, starttls) {
        (Some(handshake), _) => {
            let tls = tls::handshake(tcp, handshake, deadline, t.timeout).await?;
            Conn::new(Stream::Tls(Box::new(tls)), t, deadline, secret)
        }
        (None, Some(handshake)) => {
            let mut plain = Conn::new(Stream::Plain(tcp), t, deadline, secret);
            plain.start_tls().await?;
            let Stream::Plain(tcp) = plain.io.into_inner() else {
                unreachable!("the connection is plain until the handshake");
            };
            let tls = tls::handshake(tcp, handshake, deadline, t.timeout).await?;
            Conn {
                next_id: plain.next_id,
                ..Conn::new(Stream::Tls(Box::new(tls)), t, deadline, secret)
            }
        }
        (None, None) => Conn::new(Stream::Plain(tcp), t, deadline, secret),
    };
    let outcome = match conn.bind(spec).await {
        Ok(()) => conn.search(p, spec).await,
        Err(stop) => Err(stop),
    };
    if !matches!(outcome, Err(Stop::Checker(_))) {
        conn.unbind().await;
    }
    outcome
}

/// What the server said, for a reason: [`shown`], with the password blotted out
/// should the server echo it.
fn quoted(text: &str, secret: &str) -> String {
    shown(&redact(text, secret))
}

/// The steps that wait for an answer, for the reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    StartTls,
    Bind,
    Search,
}

impl Step {
    /// "the StartTLS request", "the bind", for "no LDAP answer to …".
    fn name(self) -> &'static str {
        match self {
            Step::StartTls => "the StartTLS request",
            Step::Bind => "the bind",
            Step::Search => "the search",
        }
    }
}

/// How reading a message can fail, before it is put as a reason.
enum ReadError {
    Closed,
    Io(io::Error),
    /// The first bytes do not open an LDAP message: what was there.
    NotLdap(Vec<u8>),
    /// A length that LDAP does not allow.
    Malformed(ber::Malformed),
    /// A message announcing this many bytes, over [`MAX_REPLY`].
    TooLong(u64),
}

/// The request/answer exchange over a plain or TLS stream.
struct Conn<'a> {
    io: BufReader<Stream>,
    deadline: Instant,
    timeout_ms: u128,
    next_id: u32,
    /// The bind password ("" when anonymous), kept out of quoted server text.
    secret: &'a str,
}

impl<'a> Conn<'a> {
    fn new(stream: Stream, t: &Target, deadline: Instant, secret: &'a str) -> Conn<'a> {
        Conn {
            io: BufReader::new(stream),
            deadline,
            timeout_ms: t.timeout.as_millis(),
            next_id: 1,
            secret,
        }
    }

    /// A result as a reason, server text quoted.
    fn describe(&self, result: &LdapResult) -> String {
        result.describe(self.secret)
    }

    fn id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    async fn start_tls(&mut self) -> Result<(), Stop> {
        let id = self.id();
        self.send(&ber::starttls_request(id), Step::StartTls)
            .await?;
        let Op::Extended(result) = self.answer(id, Step::StartTls).await? else {
            unreachable!("answer() checks the kind of answer")
        };
        if result.code != 0 {
            return down(format!("StartTLS refused: {}", self.describe(&result)));
        }
        if !self.io.buffer().is_empty() {
            return down(
                "server sent data after its StartTLS answer, before the handshake".to_owned(),
            );
        }
        Ok(())
    }

    async fn bind(&mut self, spec: &Ldap) -> Result<(), Stop> {
        let id = self.id();
        let (dn, password) = match &spec.bind {
            Some(b) => (b.dn.as_str(), b.password.expose()),
            None => ("", ""),
        };
        self.send(&ber::bind_request(id, dn, password), Step::Bind)
            .await?;
        let Op::Bind(result) = self.answer(id, Step::Bind).await? else {
            unreachable!("answer() checks the kind of answer")
        };
        match (result.code, &spec.bind) {
            (0, _) => Ok(()),
            (_, Some(b)) => down(format!(
                "bind as {} rejected: {}",
                shown(&b.dn),
                self.describe(&result)
            )),
            (_, None) => down(format!(
                "anonymous bind rejected: {}",
                self.describe(&result)
            )),
        }
    }

    async fn search(&mut self, p: &Prepared, spec: &Ldap) -> Result<(), Stop> {
        let id = self.id();
        let request = ber::search_request(id, &spec.base_dn, spec.scope, &p.filter);
        self.send(&request, Step::Search).await?;
        let (mut entries, mut references) = (0u64, 0u64);
        let result = loop {
            match self.answer(id, Step::Search).await? {
                Op::Entry => entries += 1,
                Op::Reference => references += 1,
                Op::Done(result) => break result,
                _ => unreachable!("answer() checks the kind of answer"),
            }
        };
        match (entries, result.code) {
            (1.., _) => Ok(()),
            (0, 0) if references > 0 => down(format!(
                "search under {} returned no entry, only {references} referral(s)",
                shown(&spec.base_dn)
            )),
            (0, 0) => down(format!(
                "search under {} returned no entry",
                shown(&spec.base_dn)
            )),
            (0, _) => down(format!("search failed: {}", self.describe(&result))),
        }
    }

    /// Best effort: the verdict is known already.
    async fn unbind(&mut self) {
        let id = self.id();
        let request = ber::unbind_request(id);
        let _ = timeout_at(self.deadline, async {
            let stream = self.io.get_mut();
            stream.write_all(&request).await?;
            stream.shutdown().await
        })
        .await;
    }

    async fn send(&mut self, request: &[u8], step: Step) -> Result<(), Stop> {
        let write = async {
            let stream = self.io.get_mut();
            stream.write_all(request).await?;
            stream.flush().await
        };
        match timeout_at(self.deadline, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => down(format!("sending {}: {}", step.name(), io_reason(&e))),
            Err(_) => down(format!(
                "{} not sent within {} ms",
                step.name(),
                self.timeout_ms
            )),
        }
    }

    /// The next message for request `id`, which must be of a kind that answers
    /// `step`.
    async fn answer(&mut self, id: u32, step: Step) -> Result<Op, Stop> {
        let body = match timeout_at(self.deadline, self.read_message()).await {
            Ok(Ok(body)) => body,
            Ok(Err(ReadError::Closed)) => {
                return down(format!(
                    "connection closed before the answer to {}",
                    step.name()
                ));
            }
            Ok(Err(ReadError::Io(e))) => {
                return down(format!("answer to {}: {}", step.name(), io_reason(&e)));
            }
            Ok(Err(ReadError::NotLdap(bytes))) => {
                let text = String::from_utf8_lossy(&bytes);
                return down(format!(
                    "malformed LDAP response to {}: \"{}\"",
                    step.name(),
                    quoted(text.trim(), self.secret)
                ));
            }
            Ok(Err(ReadError::Malformed(what))) => {
                return down(format!(
                    "malformed LDAP response to {}: {what}",
                    step.name()
                ));
            }
            Ok(Err(ReadError::TooLong(len))) => {
                return down(format!(
                    "LDAP response to {} too long ({len} bytes, over {MAX_REPLY})",
                    step.name()
                ));
            }
            Err(_) => {
                return down(format!(
                    "no LDAP answer to {} within {} ms",
                    step.name(),
                    self.timeout_ms
                ));
            }
        };
        let message = match ber::parse_message(&body) {
            Ok(message) => message,
            Err(what) => {
                return down(format!(
                    "malformed LDAP response to {}: {what}",
                    step.name()
                ));
            }
        };
        if message.id == 0
            && let Op::Extended(result) = &message.op
            && result
                .name
                .as_deref()
                .is_none_or(|n| n == NOTICE_OF_DISCONNECTION_OID)
        {
            return down(format!(
                "server ended the session: {}",
                self.describe(result)
            ));
        }
        if message.id != id {
            return down(format!(
                "malformed LDAP response to {}: message id {}, expected {id}",
                step.name(),
                message.id
            ));
        }
        let fits = match step {
            Step::StartTls => matches!(message.op, Op::Extended(_)),
            Step::Bind => matches!(message.op, Op::Bind(_)),
            Step::Search => matches!(message.op, Op::Entry | Op::Reference | Op::Done(_)),
        };
        if !fits {
            return down(format!(
                "unexpected {} in answer to {}",
                message.op.name(),
                step.name()
            ));
        }
        Ok(message.op)
    }

    /// One LDAPMessage's content (after the SEQUENCE tag and length), at most
    /// [`MAX_REPLY`] bytes.
    async fn read_message(&mut self) -> Result<Vec<u8>, ReadError> {
        let buf = self.io.fill_buf().await.map_err(ReadError::Io)?;
        match buf.first() {
            None => return Err(ReadError::Closed),
            Some(&ber::SEQUENCE) => {}
            // Enough to quote, not the whole buffer.
            Some(_) => return Err(ReadError::NotLdap(buf[..buf.len().min(512)].to_vec())),
        }
        let mut head = vec![ber::SEQUENCE];
        self.io.consume(1);
        let len = loop {
            match ber::length(&head[1..]) {
                Ok(Some((len, _))) => break len,
                Ok(None) => {}
                Err(what) => return Err(ReadError::Malformed(what)),
            }
            match self.io.read_u8().await {
                Ok(b) => head.push(b),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(ReadError::Closed);
                }
                Err(e) => return Err(ReadError::Io(e)),
            }
        };
        if len > MAX_REPLY as u64 {
            return Err(ReadError::TooLong(len));
        }
        let mut body = vec![0; len as usize];
        match self.io.read_exact(&mut body).await {
            Ok(_) => Ok(body),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(ReadError::Closed),
            Err(e) => Err(ReadError::Io(e)),
        }
    }
}

/// A response, as far as the check needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Bind(LdapResult),
    Entry,
    Reference,
    Done(LdapResult),
    Extended(LdapResult),
    /// Any other operation, by its BER tag.
    Other(u8),
}

impl Op {
    fn name(&self) -> String {
        match self {
            Op::Bind(_) => "BindResponse".into(),
            Op::Entry => "SearchResultEntry".into(),
            Op::Reference => "SearchResultReference".into(),
            Op::Done(_) => "SearchResultDone".into(),
            Op::Extended(_) => "ExtendedResponse".into(),
            Op::Other(tag) => match ber::operation_name(*tag) {
                Some(name) => name.into(),
                None => format!("LDAP operation (tag 0x{tag:02x})"),
            },
        }
    }
}

/// RFC 4511 4.1.9 LDAPResult, with an extended response's name (4.12).
#[derive(Debug, Clone, PartialEq, Eq)]
struct LdapResult {
    code: u32,
    matched_dn: String,
    message: String,
    /// ExtendedResponse only: responseName.
    name: Option<String>,
}

impl LdapResult {
    /// `invalidCredentials (49)`, then the server's diagnostic message quoted
    /// (without `secret`).
    fn describe(&self, secret: &str) -> String {
        let code = match result_code_name(self.code) {
            Some(name) => format!("{name} ({})", self.code),
            None => format!("result code {}", self.code),
        };
        match self.message.trim() {
            "" => code,
            text => format!("{code} \"{}\"", quoted(text, secret)),
        }
    }
}

/// RFC 4511 4.1.9 and appendix A, with the codes of RFC 3909 and 4370/4533 a
/// server may send.
fn result_code_name(code: u32) -> Option<&'static str> {
    Some(match code {
        0 => "success",
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        5 => "compareFalse",
        6 => "compareTrue",
        7 => "authMethodNotSupported",
        8 => "strongerAuthRequired",
        10 => "referral",
        11 => "adminLimitExceeded",
        12 => "unavailableCriticalExtension",
        13 => "confidentialityRequired",
        14 => "saslBindInProgress",
        16 => "noSuchAttribute",
        17 => "undefinedAttributeType",
        18 => "inappropriateMatching",
        19 => "constraintViolation",
        20 => "attributeOrValueExists",
        21 => "invalidAttributeSyntax",
        32 => "noSuchObject",
        33 => "aliasProblem",
        34 => "invalidDNSyntax",
        36 => "aliasDereferencingProblem",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        54 => "loopDetect",
        64 => "namingViolation",
        65 => "objectClassViolation",
        66 => "notAllowedOnNonLeaf",
        67 => "notAllowedOnRDN",
        68 => "entryAlreadyExists",
        69 => "objectClassModsProhibited",
        71 => "affectsMultipleDSAs",
        80 => "other",
        118 => "canceled",
        119 => "noSuchOperation",
        120 => "tooLate",
        121 => "cannotCancel",
        122 => "assertionFailed",
        123 => "authorizationDenied",
        _ => return None,
    })
}

/// One LDAPMessage.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Message {
    id: u32,
    op: Op,
}

/// The BER of RFC 4511 section 5.1: definite lengths, one-byte tags.
mod ber {
    use super::{LdapResult, LdapScope, Message, Op, STARTTLS_OID};

    pub(super) const SEQUENCE: u8 = 0x30;
    const BOOLEAN: u8 = 0x01;
    const INTEGER: u8 = 0x02;
    pub(super) const OCTET_STRING: u8 = 0x04;
    const ENUMERATED: u8 = 0x0a;

    // [APPLICATION n], constructed unless said.
    const BIND_REQUEST: u8 = 0x60;
    const BIND_RESPONSE: u8 = 0x61;
    /// Primitive: NULL.
    const UNBIND_REQUEST: u8 = 0x42;
    const SEARCH_REQUEST: u8 = 0x63;
    const SEARCH_RESULT_ENTRY: u8 = 0x64;
    const SEARCH_RESULT_DONE: u8 = 0x65;
    const SEARCH_RESULT_REFERENCE: u8 = 0x73;
    const EXTENDED_REQUEST: u8 = 0x77;
    const EXTENDED_RESPONSE: u8 = 0x78;

    /// BindRequest authentication: simple [0], primitive.
    const AUTH_SIMPLE: u8 = 0x80;
    /// ExtendedRequest requestName [0], primitive.
    const REQUEST_NAME: u8 = 0x80;
    /// ExtendedResponse responseName [10], primitive.
    const RESPONSE_NAME: u8 = 0x8a;

    /// A structural problem in a message, for "malformed LDAP response to …: …".
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct Malformed(pub(crate) &'static str);

    impl std::fmt::Display for Malformed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    pub(super) fn operation_name(tag: u8) -> Option<&'static str> {
        Some(match tag {
            0x60 => "BindRequest",
            0x42 => "UnbindRequest",
            0x63 => "SearchRequest",
            0x66 => "ModifyRequest",
            0x67 => "ModifyResponse",
            0x68 => "AddRequest",
            0x69 => "AddResponse",
            0x4a => "DelRequest",
            0x6b => "DelResponse",
            0x6c => "ModifyDNRequest",
            0x6d => "ModifyDNResponse",
            0x6e => "CompareRequest",
            0x6f => "CompareResponse",
            0x50 => "AbandonRequest",
            0x77 => "ExtendedRequest",
            0x79 => "IntermediateResponse",
            _ => return None,
        })
    }

    /// Appends tag, length and `content`.
    pub(crate) fn tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
        out.push(tag);
        match u32::try_from(content.len()) {
            Ok(len @ 0..0x80) => out.push(len as u8),
            Ok(len) => {
                let bytes = len.to_be_bytes();
                let skip = bytes.iter().take_while(|&&b| b == 0).count();
                out.push(0x80 | (4 - skip) as u8);
                out.extend_from_slice(&bytes[skip..]);
            }
            Err(_) => unreachable!("requests are built from config values, far below 4 GiB"),
        }
        out.extend_from_slice(content);
    }

    /// Appends a constructed element whose content `build` writes.
    pub(crate) fn nested(out: &mut Vec<u8>, tag: u8, build: impl FnOnce(&mut Vec<u8>)) {
        let mut content = Vec::new();
        build(&mut content);
        tlv(out, tag, &content);
    }

    /// A non-negative INTEGER or ENUMERATED, minimally encoded.
    fn integer(out: &mut Vec<u8>, tag: u8, value: u32) {
        let bytes = value.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count().min(3);
        let mut content = Vec::with_capacity(5);
        if bytes[skip] & 0x80 != 0 {
            content.push(0);
        }
        content.extend_from_slice(&bytes[skip..]);
        tlv(out, tag, &content);
    }

    fn message(id: u32, op: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        nested(&mut out, SEQUENCE, |m| {
            integer(m, INTEGER, id);
            op(m);
        });
        out
    }

    /// A simple bind, LDAPv3. The result holds the password: send it, drop it.
    pub(super) fn bind_request(id: u32, dn: &str, password: &str) -> Vec<u8> {
        message(id, |m| {
            nested(m, BIND_REQUEST, |b| {
                integer(b, INTEGER, 3);
                tlv(b, OCTET_STRING, dn.as_bytes());
                tlv(b, AUTH_SIMPLE, password.as_bytes());
            })
        })
    }

    /// A search for at most one entry and no attributes; `filter` is encoded.
    pub(super) fn search_request(id: u32, base: &str, scope: LdapScope, filter: &[u8]) -> Vec<u8> {
        let scope = match scope {
            LdapScope::Base => 0,
            LdapScope::One => 1,
            LdapScope::Sub => 2,
        };
        message(id, |m| {
            nested(m, SEARCH_REQUEST, |s| {
                tlv(s, OCTET_STRING, base.as_bytes());
                integer(s, ENUMERATED, scope);
                // derefAliases: neverDerefAliases, as ldapsearch.
                integer(s, ENUMERATED, 0);
                // sizeLimit 1, timeLimit none (the check's deadline bounds it).
                integer(s, INTEGER, 1);
                integer(s, INTEGER, 0);
                // typesOnly FALSE.
                tlv(s, BOOLEAN, &[0]);
                s.extend_from_slice(filter);
                // "1.1": no attributes (RFC 4511 4.5.1.8).
                nested(s, SEQUENCE, |a| tlv(a, OCTET_STRING, b"1.1"));
            })
        })
    }

    pub(super) fn starttls_request(id: u32) -> Vec<u8> {
        message(id, |m| {
            nested(m, EXTENDED_REQUEST, |x| {
                tlv(x, REQUEST_NAME, STARTTLS_OID.as_bytes());
            })
        })
    }

    pub(super) fn unbind_request(id: u32) -> Vec<u8> {
        message(id, |m| tlv(m, UNBIND_REQUEST, &[]))
    }

    /// A definite length at the start of `bytes` → (length, bytes it took);
    /// `None` when more bytes are needed.
    pub(super) fn length(bytes: &[u8]) -> Result<Option<(u64, usize)>, Malformed> {
        let Some(&first) = bytes.first() else {
            return Ok(None);
        };
        if first < 0x80 {
            return Ok(Some((u64::from(first), 1)));
        }
        let n = usize::from(first & 0x7f);
        if n == 0 {
            return Err(Malformed("indefinite length"));
        }
        if n > 8 {
            return Err(Malformed("length of more than 8 bytes"));
        }
        let Some(digits) = bytes.get(1..=n) else {
            return Ok(None);
        };
        let len = digits
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        Ok(Some((len, 1 + n)))
    }

    /// A reader over the elements of one constructed value.
    pub(crate) struct Reader<'a>(&'a [u8]);

    impl<'a> Reader<'a> {
        pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
            Reader(bytes)
        }

        pub(crate) fn is_empty(&self) -> bool {
            self.0.is_empty()
        }

        /// The next element: its tag and content.
        pub(crate) fn next(&mut self) -> Result<(u8, &'a [u8]), Malformed> {
            let (&tag, rest) = self.0.split_first().ok_or(Malformed("truncated"))?;
            if tag & 0x1f == 0x1f {
                return Err(Malformed("multi-byte tag"));
            }
            let (len, used) = length(rest)?.ok_or(Malformed("truncated"))?;
            let rest = &rest[used..];
            let len = usize::try_from(len)
                .ok()
                .filter(|&l| l <= rest.len())
                .ok_or(Malformed("element longer than its message"))?;
            let (content, rest) = rest.split_at(len);
            self.0 = rest;
            Ok((tag, content))
        }

        /// The next element, which must have `tag`; `what` names it.
        pub(crate) fn expect(
            &mut self,
            tag: u8,
            what: &'static str,
        ) -> Result<&'a [u8], Malformed> {
            match self.next() {
                Ok((t, content)) if t == tag => Ok(content),
                _ => Err(Malformed(what)),
            }
        }
    }

    /// A non-negative INTEGER or ENUMERATED that fits 32 bits.
    fn uint(content: &[u8], what: &'static str) -> Result<u32, Malformed> {
        match content {
            [] => Err(Malformed(what)),
            [first, ..] if first & 0x80 != 0 => Err(Malformed(what)),
            _ => {
                let digits = content.strip_prefix(&[0]).unwrap_or(content);
                if digits.len() > 4 {
                    return Err(Malformed(what));
                }
                Ok(digits.iter().fold(0, |acc, &b| (acc << 8) | u32::from(b)))
            }
        }
    }

    /// An LDAPMessage from its SEQUENCE content; controls after the operation are
    /// ignored.
    pub(super) fn parse_message(content: &[u8]) -> Result<Message, Malformed> {
        let mut m = Reader::new(content);
        let id = uint(m.expect(INTEGER, "bad message id")?, "bad message id")?;
        let (tag, op) = m.next().map_err(|_| Malformed("no operation"))?;
        let op = match tag {
            BIND_RESPONSE => Op::Bind(parse_result(op, None)?),
            SEARCH_RESULT_ENTRY => Op::Entry,
            SEARCH_RESULT_REFERENCE => Op::Reference,
            SEARCH_RESULT_DONE => Op::Done(parse_result(op, None)?),
            EXTENDED_RESPONSE => Op::Extended(parse_result(op, Some(RESPONSE_NAME))?),
            other => Op::Other(other),
        };
        Ok(Message { id, op })
    }

    /// An LDAPResult; with `name_tag`, the optional name element after it.
    fn parse_result(content: &[u8], name_tag: Option<u8>) -> Result<LdapResult, Malformed> {
        let what = "bad LDAPResult";
        let mut r = Reader::new(content);
        let code = uint(r.expect(ENUMERATED, what)?, what)?;
        let matched_dn = String::from_utf8_lossy(r.expect(OCTET_STRING, what)?).into_owned();
        let message = String::from_utf8_lossy(r.expect(OCTET_STRING, what)?).into_owned();
        let mut name = None;
        while !r.is_empty() {
            let (tag, value) = r.next()?;
            if Some(tag) == name_tag {
                name = Some(String::from_utf8_lossy(value).into_owned());
            }
        }
        Ok(LdapResult {
            code,
            matched_dn,
            message,
            name,
        })
    }
}

/// RFC 4515 string filters, encoded as RFC 4511 4.5.1.7 Filter.
mod filter {
    use super::MAX_FILTER_DEPTH;
    use super::ber::{OCTET_STRING, SEQUENCE, nested, tlv};

    const AND: u8 = 0xa0;
    const OR: u8 = 0xa1;
    const NOT: u8 = 0xa2;
    const EQUALITY: u8 = 0xa3;
    const SUBSTRINGS: u8 = 0xa4;
    const GREATER_OR_EQUAL: u8 = 0xa5;
    const LESS_OR_EQUAL: u8 = 0xa6;
    /// Primitive: the attribute description.
    const PRESENT: u8 = 0x87;
    const APPROX: u8 = 0xa8;
    const EXTENSIBLE: u8 = 0xa9;

    const SUB_INITIAL: u8 = 0x80;
    const SUB_ANY: u8 = 0x81;
    const SUB_FINAL: u8 = 0x82;
    const RULE: u8 = 0x81;
    const RULE_TYPE: u8 = 0x82;
    const RULE_VALUE: u8 = 0x83;
    const RULE_DN: u8 = 0x84;

    /// The BER of `source`. Like ldapsearch, a filter without the outer parentheses
    /// (`objectClass=*`) is taken as if it had them.
    pub(crate) fn encode(source: &str) -> Result<Vec<u8>, String> {
        let trimmed = source.trim();
        let wrapped;
        let text = if trimmed.starts_with('(') {
            trimmed
        } else {
            wrapped = format!("({trimmed})");
            &wrapped
        };
        let mut parser = Parser {
            s: text.as_bytes(),
            pos: 0,
        };
        let mut out = Vec::new();
        parser.filter(&mut out, 0)?;
        if parser.pos != parser.s.len() {
            return Err(parser.error("text after the filter"));
        }
        Ok(out)
    }

    struct Parser<'a> {
        s: &'a [u8],
        pos: usize,
    }

    impl Parser<'_> {
        fn error(&self, what: &str) -> String {
            format!("{what} at offset {}", self.pos)
        }

        fn peek(&self) -> Option<u8> {
            self.s.get(self.pos).copied()
        }

        fn eat(&mut self, b: u8) -> bool {
            let found = self.peek() == Some(b);
            if found {
                self.pos += 1;
            }
            found
        }

        fn expect(&mut self, b: u8) -> Result<(), String> {
            if self.eat(b) {
                Ok(())
            } else {
                Err(self.error(&format!("expected '{}'", b as char)))
            }
        }

        /// `( filtercomp )`
        fn filter(&mut self, out: &mut Vec<u8>, depth: usize) -> Result<(), String> {
            if depth > MAX_FILTER_DEPTH {
                return Err(self.error(&format!("nested deeper than {MAX_FILTER_DEPTH}")));
            }
            self.expect(b'(')?;
            match self.peek() {
                Some(b'&') => {
                    self.pos += 1;
                    self.list(out, AND, depth)?;
                }
                Some(b'|') => {
                    self.pos += 1;
                    self.list(out, OR, depth)?;
                }
                Some(b'!') => {
                    self.pos += 1;
                    let mut inner = Vec::new();
                    self.filter(&mut inner, depth + 1)?;
                    tlv(out, NOT, &inner);
                }
                _ => self.item(out)?,
            }
            self.expect(b')')
        }

        /// The filters of `&` or `|`; none is allowed (RFC 4526 absolute true/false).
        fn list(&mut self, out: &mut Vec<u8>, tag: u8, depth: usize) -> Result<(), String> {
            let mut inner = Vec::new();
            while self.peek() == Some(b'(') {
                self.filter(&mut inner, depth + 1)?;
            }
            tlv(out, tag, &inner);
            Ok(())
        }

        /// An attribute description or matching rule: letters, digits, `-`, `.`,
        /// `;` (options).
        fn word(&mut self) -> &str {
            let start = self.pos;
            while self
                .peek()
                .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b';'))
            {
                self.pos += 1;
            }
            // Only ASCII was taken.
            std::str::from_utf8(&self.s[start..self.pos]).unwrap_or_default()
        }

        /// simple, present, substring or extensible item.
        fn item(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
            let attr = self.word().to_owned();
            if self.peek() == Some(b':') {
                return self.extensible(out, attr);
            }
            if attr.is_empty() {
                return Err(self.error("expected an attribute"));
            }
            let tag = match self.peek() {
                Some(b'~') => APPROX,
                Some(b'>') => GREATER_OR_EQUAL,
                Some(b'<') => LESS_OR_EQUAL,
                Some(b'=') => EQUALITY,
                _ => return Err(self.error("expected '=', '~=', '>=' or '<='")),
            };
            if tag != EQUALITY {
                self.pos += 1;
            }
            self.expect(b'=')?;
            let pieces = self.value(tag == EQUALITY)?;
            match pieces.as_slice() {
                [value] => assertion(out, tag, &attr, value),
                [initial, any @ .., last] => {
                    if initial.is_empty() && last.is_empty() && any.is_empty() {
                        tlv(out, PRESENT, attr.as_bytes());
                        return Ok(());
                    }
                    let mut subs = Vec::new();
                    if !initial.is_empty() {
                        tlv(&mut subs, SUB_INITIAL, initial);
                    }
                    for piece in any.iter().filter(|p| !p.is_empty()) {
                        tlv(&mut subs, SUB_ANY, piece);
                    }
                    if !last.is_empty() {
                        tlv(&mut subs, SUB_FINAL, last);
                    }
                    if subs.is_empty() {
                        return Err(self.error("substring filter without a substring"));
                    }
                    nested(out, SUBSTRINGS, |s| {
                        tlv(s, OCTET_STRING, attr.as_bytes());
                        tlv(s, SEQUENCE, &subs);
                    });
                }
                [] => unreachable!("value() returns at least one piece"),
            }
            Ok(())
        }

        /// `attr [":dn"] [":" rule] ":=" value`, or without attr with a rule.
        fn extensible(&mut self, out: &mut Vec<u8>, attr: String) -> Result<(), String> {
            let (mut dn, mut rule) = (false, None);
            loop {
                self.expect(b':')?;
                if self.eat(b'=') {
                    break;
                }
                let word = self.word().to_owned();
                match word {
                    w if w.eq_ignore_ascii_case("dn") && !dn && rule.is_none() => dn = true,
                    w if !w.is_empty() && rule.is_none() => rule = Some(w),
                    _ => return Err(self.error("expected ':dn', ':rule' or ':='")),
                }
            }
            if attr.is_empty() && rule.is_none() {
                return Err(self.error("extensible match without attribute or rule"));
            }
            let value = match self.value(false)?.as_slice() {
                [value] => value.clone(),
                _ => unreachable!("no pieces without wildcards"),
            };
            nested(out, EXTENSIBLE, |m| {
                if let Some(rule) = &rule {
                    tlv(m, RULE, rule.as_bytes());
                }
                if !attr.is_empty() {
                    tlv(m, RULE_TYPE, attr.as_bytes());
                }
                tlv(m, RULE_VALUE, &value);
                if dn {
                    tlv(m, RULE_DN, &[0xff]);
                }
            });
            Ok(())
        }

        /// An assertion value up to the closing parenthesis, `\XX` escapes decoded;
        /// with `wildcards`, split at each unescaped `*`.
        fn value(&mut self, wildcards: bool) -> Result<Vec<Vec<u8>>, String> {
            let mut pieces = vec![Vec::new()];
            loop {
                match self.peek() {
                    None => return Err(self.error("expected ')'")),
                    Some(b')') => return Ok(pieces),
                    Some(b'*') if wildcards => {
                        self.pos += 1;
                        pieces.push(Vec::new());
                    }
                    Some(b'(' | b'*' | 0) => {
                        return Err(self.error("unescaped '(', '*' or NUL in a value"));
                    }
                    Some(b'\\') => {
                        let hex = self.s.get(self.pos + 1..self.pos + 3);
                        let byte = hex
                            .and_then(|h| std::str::from_utf8(h).ok())
                            .and_then(|h| u8::from_str_radix(h, 16).ok())
                            .ok_or_else(|| self.error("'\\' not followed by two hex digits"))?;
                        self.pos += 3;
                        pieces.last_mut().expect("one piece at least").push(byte);
                    }
                    Some(b) => {
                        self.pos += 1;
                        pieces.last_mut().expect("one piece at least").push(b);
                    }
                }
            }
        }
    }

    fn assertion(out: &mut Vec<u8>, tag: u8, attr: &str, value: &[u8]) {
        nested(out, tag, |a| {
            tlv(a, OCTET_STRING, attr.as_bytes());
            tlv(a, OCTET_STRING, value);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::spec::TlsMode;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    // Bytes captured between ldapsearch and slapd 2.5.13 (Debian 12) through a
    // logging proxy.

    #[test]
    fn requests_match_openldap() {
        assert_eq!(
            ber::bind_request(1, "", ""),
            hex("300c020101600702010304008000")
        );
        assert_eq!(
            ber::bind_request(1, "cn=monitor,dc=lab,dc=test", "wrong"),
            hex(concat!(
                "302a02010160250201030419636e3d6d6f6e69746f722c64633d6c61622c64",
                "633d74657374800577726f6e67"
            ))
        );
        // ldapsearch -z 1 -b dc=lab,dc=test FILTER 1.1
        let filter = filter::encode(OPENLDAP_FILTER).expect("filter");
        assert_eq!(
            ber::search_request(2, "dc=lab,dc=test", LdapScope::Sub, &filter),
            hex(&format!(
                "{}{OPENLDAP_FILTER_BER}{}",
                "3081c20201026381bc040e64633d6c61622c64633d746573740a01020a0100020101020100010100",
                "30050403312e31"
            ))
        );
        assert_eq!(
            ber::starttls_request(1),
            hex("301d02010177188016312e332e362e312e342e312e313436362e3230303337")
        );
        assert_eq!(ber::unbind_request(3), hex("30050201034200"));
    }

    /// Every kind of filter item, and its BER as ldapsearch sent it.
    const OPENLDAP_FILTER: &str = r"(&(objectClass=inetOrgPerson)(|(uid=al*ce)(cn~=Alice)(!(sn>=M))(sn<=Z)(cn:caseExactMatch:=Alice)(:dn:2.5.13.5:=lab)(uid=\2a\28x)(cn=*)))";
    const OPENLDAP_FILTER_BER: &str = concat!(
        "a08193a31c040b6f626a656374436c617373040d696e65744f7267506572736f",
        "6ea173a40f040375696430088002616c82026365a80b0402636e0405416c6963",
        "65a209a5070402736e04014da6070402736e04015aa91b810e63617365457861",
        "63744d617463688202636e8305416c696365a9128108322e352e31332e358303",
        "6c61628401ffa30a040375696404032a28788702636e"
    );

    #[test]
    fn filters_match_openldap() {
        assert_eq!(
            filter::encode(OPENLDAP_FILTER).expect("filter"),
            hex(OPENLDAP_FILTER_BER)
        );
        // Without the outer parentheses, as ldapsearch takes it.
        assert_eq!(
            filter::encode("objectClass=*").expect("filter"),
            filter::encode("(objectClass=*)").expect("filter")
        );
        // Empty pieces between stars are left out.
        assert_eq!(
            filter::encode("(cn=*a**b*)").expect("filter"),
            hex("a40c0402636e3006810161810162")
        );
        assert_eq!(filter::encode("(&)").expect("absolute true"), hex("a000"));
    }

    #[test]
    fn bad_filters_are_config_errors() {
        for (bad, why) in [
            ("(cn=a", "expected ')' at offset 5"),
            ("(cn=a))", "text after the filter at offset 6"),
            ("(=a)", "expected an attribute at offset 1"),
            ("(cn~a)", "expected '=' at offset 4"),
            (
                "(cn=a(b)",
                "unescaped '(', '*' or NUL in a value at offset 5",
            ),
            (
                "(cn=\\4)",
                "'\\' not followed by two hex digits at offset 4",
            ),
            (
                "(cn=**)",
                "substring filter without a substring at offset 6",
            ),
            (
                "(cn:=a*)",
                "unescaped '(', '*' or NUL in a value at offset 6",
            ),
            (
                "(:=a)",
                "extensible match without attribute or rule at offset 3",
            ),
            (
                "(cn:dn:r1:r2:=a)",
                "expected ':dn', ':rule' or ':=' at offset 12",
            ),
            ("(!(a=b)(c=d))", "expected ')' at offset 7"),
        ] {
            assert_eq!(filter::encode(bad), Err(why.to_owned()), "{bad}");
        }
        let deep = format!("{}(a=b){}", "(!".repeat(40), ")".repeat(40));
        assert!(filter::encode(&deep).is_err());
    }

    #[test]
    fn responses_from_slapd() {
        let parse = |h: &str| {
            let bytes = hex(h);
            let mut r = ber::Reader::new(&bytes);
            let (tag, content) = r.next().expect("element");
            assert_eq!(tag, ber::SEQUENCE);
            ber::parse_message(content)
        };
        let ok = LdapResult {
            code: 0,
            matched_dn: String::new(),
            message: String::new(),
            name: None,
        };
        assert_eq!(
            parse("300c02010161070a010004000400"),
            Ok(Message {
                id: 1,
                op: Op::Bind(ok.clone())
            })
        );
        let Ok(Message {
            id: 1,
            op: Op::Bind(rejected),
        }) = parse("300c02010161070a013104000400")
        else {
            panic!("a BindResponse");
        };
        assert_eq!(rejected.describe(""), "invalidCredentials (49)");
        assert_eq!(
            parse(
                "302b020102642604227569643d616c6963652c6f753d70656f706c652c64633d6c61622c64633d746573743000"
            ),
            Ok(Message {
                id: 2,
                op: Op::Entry
            })
        );
        let Ok(Message {
            id: 2,
            op: Op::Done(missing),
        }) = parse("301a02010265150a0120040e64633d6c61622c64633d746573740400")
        else {
            panic!("a SearchResultDone");
        };
        assert_eq!(missing.matched_dn, "dc=lab,dc=test");
        assert_eq!(missing.describe(""), "noSuchObject (32)");
        assert_eq!(
            parse("300c02010178070a010004000400"),
            Ok(Message {
                id: 1,
                op: Op::Extended(ok)
            })
        );
    }

    #[test]
    fn malformed_responses_are_reasons_not_panics() {
        for bad in [
            &[][..],
            &[0x02, 0x00],
            &[0x02, 0x01, 0x80, 0x61, 0x00],
            &[0x02, 0x05, 1, 2, 3, 4, 5, 0x61, 0x00],
            &[0x02, 0x01, 0x01],
            &[0x02, 0x01, 0x01, 0x61, 0x03, 0x0a, 0x01, 0x00],
            &[0x02, 0x01, 0x01, 0x61, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x02, 0x01, 0x01, 0x61, 0x80],
            &[0x02, 0x01, 0x01, 0x7f, 0x00],
        ] {
            assert!(ber::parse_message(bad).is_err(), "{bad:02x?}");
        }
        assert_eq!(
            ber::parse_message(&[0x02, 0x01, 0x05, 0x67, 0x00]),
            Ok(Message {
                id: 5,
                op: Op::Other(0x67)
            })
        );
        assert_eq!(Op::Other(0x67).name(), "ModifyResponse");
    }

    #[test]
    fn lengths() {
        assert_eq!(ber::length(&[0x05]), Ok(Some((5, 1))));
        assert_eq!(ber::length(&[0x82, 0x01]), Ok(None));
        assert_eq!(ber::length(&[0x82, 0x01, 0x00]), Ok(Some((256, 3))));
        assert!(ber::length(&[0x80]).is_err());
        assert!(ber::length(&[0x89]).is_err());
        let mut long = Vec::new();
        ber::tlv(&mut long, 0x04, &[7; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
    }

    #[test]
    fn diagnostics_are_quoted_without_the_password() {
        let result = LdapResult {
            code: 53,
            matched_dn: String::new(),
            message: "unauthenticated bind (DN with no password) disallowed\n".into(),
            name: None,
        };
        assert_eq!(
            result.describe(""),
            "unwillingToPerform (53) \"unauthenticated bind (DN with no password) disallowed\""
        );
        let echo = LdapResult {
            code: 49,
            message: "bad password s3cret".into(),
            ..result.clone()
        };
        assert_eq!(
            echo.describe("s3cret"),
            "invalidCredentials (49) \"bad password <password>\""
        );
        let odd = LdapResult {
            code: 4242,
            message: String::new(),
            ..result
        };
        assert_eq!(odd.describe(""), "result code 4242");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            let _ = ber::parse_message(&bytes);
            let _ = ber::length(&bytes);
        }

        #[test]
        fn arbitrary_filters_never_panic(source in r"[()&|!=*~<>:;.\\a-f0-9 \x00é]{0,40}") {
            let _ = filter::encode(&source);
        }

        /// What we emit reads back: one SEQUENCE spanning the request, our id first.
        #[test]
        fn requests_read_back(id in 1u32.., base in ".{0,300}") {
            let request = ber::search_request(id, &base, LdapScope::Sub, &[0x87, 0x01, b'a']);
            let mut outer = ber::Reader::new(&request);
            let (tag, content) = outer.next().expect("a SEQUENCE");
            proptest::prop_assert_eq!(tag, ber::SEQUENCE);
            proptest::prop_assert!(outer.is_empty());
            let mut message = ber::Reader::new(content);
            let (tag, id_bytes) = message.next().expect("the id");
            proptest::prop_assert_eq!(tag, 0x02);
            let parsed = ber::parse_message(content).expect("parses");
            proptest::prop_assert_eq!(parsed.id, id, "{:02x?}", id_bytes);
            proptest::prop_assert_eq!(parsed.op, Op::Other(0x63));
        }
    }

    #[test]
    fn prepared_rejects_bad_options() {
        let spec = |filter: &str, bind| Ldap {
            tls: TlsMode::None,
            bind,
            base_dn: "dc=lab,dc=test".into(),
            filter: filter.into(),
            scope: LdapScope::Sub,
        };
        let err = Prepared::new(&spec("(cn=a", None)).expect_err("bad filter");
        assert!(
            err.to_string()
                .contains("LDAP filter \"(cn=a\": expected ')'"),
            "{err}"
        );
        let empty = crate::spec::LdapBind {
            dn: "cn=monitor,dc=lab,dc=test".into(),
            password: crate::spec::Secret::inline(""),
        };
        let err = Prepared::new(&spec("(objectClass=*)", Some(empty))).expect_err("empty");
        assert!(err.to_string().contains("unauthenticated bind"), "{err}");
    }
}
