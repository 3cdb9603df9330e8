//! RADIUS check: one Access-Request (PAP) to the real server over UDP, whose answer
//! must be signed with the shared secret.
//!
//! The wire format (RFC 2865 3 and 5, RFC 3579 3.2) is written here: [`Packet`] is a
//! view over bytes, [`Repr`] the plain value, [`Attribute`] keeps the attributes it
//! does not know. One attempt:
//!
//! - The request has a random identifier and a random Request Authenticator, and
//!   carries Message-Authenticator (first, as the BlastRADIUS advice of 2024 says;
//!   HMAC-MD5 over the packet, RFC 3579 3.2), User-Name, User-Password (hidden with
//!   the shared secret, RFC 2865 5.2), NAS-Identifier (`nas_identifier`, default
//!   `directord`) and, when the check binds to an IPv4 source, NAS-IP-Address.
//! - The connected socket only receives from the real server. A datagram with
//!   another identifier (a late answer to an earlier attempt) is ignored; one with
//!   ours must parse, and its Response Authenticator (and Message-Authenticator,
//!   when present) must verify with the secret, else the real server is down: an
//!   answer that is not signed with our secret says nothing.
//! - Access-Accept is up. Access-Reject is up with `accept_reject` (the server
//!   answered, properly signed), else down with its Reply-Message. Access-Challenge
//!   is down: the server wants more than a password.
//! - Servers drop a request signed with the wrong secret without a word, so the
//!   reason for no answer says so.
//! - One request per attempt, no retransmission: the check's `retry` is that.
//! - Neither the password nor the secret ever appears in a reason.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;

use hmac::{Hmac, Mac as _};
use md5::{Digest as _, Md5};
use tokio::time::Instant;

use crate::session::shown_bytes;
use crate::spec::Radius;
use crate::udp::Udp;
use crate::{Error, Stop, Target, Verdict};

type HmacMd5 = Hmac<Md5>;

mod field {
    use std::ops::Range;

    pub(super) const CODE: usize = 0;
    pub(super) const IDENTIFIER: usize = 1;
    pub(super) const LENGTH: Range<usize> = 2..4;
    pub(super) const AUTHENTICATOR: Range<usize> = 4..20;
    pub(super) const ATTRIBUTES: usize = 20;

    /// Within one attribute.
    pub(super) const ATTR_TYPE: usize = 0;
    pub(super) const ATTR_LENGTH: usize = 1;
    pub(super) const ATTR_VALUE: usize = 2;
}

/// Attribute types (RFC 2865 5, RFC 3579 3.2).
mod kind {
    pub(super) const USER_NAME: u8 = 1;
    pub(super) const USER_PASSWORD: u8 = 2;
    pub(super) const NAS_IP_ADDRESS: u8 = 4;
    pub(super) const REPLY_MESSAGE: u8 = 18;
    pub(super) const NAS_IDENTIFIER: u8 = 32;
    pub(super) const MESSAGE_AUTHENTICATOR: u8 = 80;
}

/// Code, Identifier, Length and Authenticator.
pub const HEADER_LEN: usize = field::ATTRIBUTES;
/// The largest packet (RFC 2865 3).
pub const MAX_LEN: usize = 4096;
/// The largest attribute value (its length is one octet, counting the type and
/// itself).
pub const MAX_VALUE: usize = 253;
/// The longest password PAP can carry (RFC 2865 5.2).
pub const MAX_PASSWORD: usize = 128;
/// Request and Response Authenticators, Message-Authenticator.
pub const AUTHENTICATOR_LEN: usize = 16;

/// The packet type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    AccessRequest,
    AccessAccept,
    AccessReject,
    AccountingRequest,
    AccountingResponse,
    AccessChallenge,
    StatusServer,
    Unknown(u8),
}

impl From<u8> for Code {
    fn from(value: u8) -> Code {
        match value {
            1 => Code::AccessRequest,
            2 => Code::AccessAccept,
            3 => Code::AccessReject,
            4 => Code::AccountingRequest,
            5 => Code::AccountingResponse,
            11 => Code::AccessChallenge,
            12 => Code::StatusServer,
            other => Code::Unknown(other),
        }
    }
}

impl From<Code> for u8 {
    fn from(code: Code) -> u8 {
        match code {
            Code::AccessRequest => 1,
            Code::AccessAccept => 2,
            Code::AccessReject => 3,
            Code::AccountingRequest => 4,
            Code::AccountingResponse => 5,
            Code::AccessChallenge => 11,
            Code::StatusServer => 12,
            Code::Unknown(other) => other,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Code::AccessRequest => "Access-Request",
            Code::AccessAccept => "Access-Accept",
            Code::AccessReject => "Access-Reject",
            Code::AccountingRequest => "Accounting-Request",
            Code::AccountingResponse => "Accounting-Response",
            Code::AccessChallenge => "Access-Challenge",
            Code::StatusServer => "Status-Server",
            Code::Unknown(other) => return write!(f, "code {other}"),
        })
    }
}

/// Why bytes are not a RADIUS packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Malformed {
    /// Fewer bytes than a header.
    Truncated { len: usize },
    /// The Length field is below a header, above [`MAX_LEN`], or more than came.
    Length { length: usize, len: usize },
    /// The attribute at `offset` has a length below 2 or runs past the packet.
    Attribute { offset: usize },
    /// A known attribute whose value has a size its type does not allow.
    Value { kind: u8, len: usize },
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::Truncated { len } => write!(f, "{len} bytes, shorter than a header"),
            Malformed::Length { length, len } => {
                write!(f, "length field {length} in a datagram of {len} bytes")
            }
            Malformed::Attribute { offset } => {
                write!(f, "attribute at offset {offset} has a bad length")
            }
            Malformed::Value { kind, len } => {
                write!(f, "attribute {kind} has a {len}-byte value")
            }
        }
    }
}

/// A view over the bytes of a RADIUS packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

/// One attribute as it lies in a packet: its type, and where its value is (offsets
/// from the start of the packet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeSpan {
    pub kind: u8,
    pub value: Range<usize>,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// A view whose getters do not panic: a header is there, and the Length field
    /// covers it and no more than the buffer. Octets past Length are padding
    /// (RFC 2865 3) and ignored.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Malformed> {
        let packet = Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    pub fn check_len(&self) -> Result<(), Malformed> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Malformed::Truncated { len });
        }
        let length = usize::from(self.length());
        if !(HEADER_LEN..=MAX_LEN).contains(&length) || length > len {
            return Err(Malformed::Length { length, len });
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn code(&self) -> Code {
        Code::from(self.buffer.as_ref()[field::CODE])
    }

    pub fn identifier(&self) -> u8 {
        self.buffer.as_ref()[field::IDENTIFIER]
    }

    pub fn length(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::LENGTH];
        u16::from_be_bytes([b[0], b[1]])
    }

    pub fn authenticator(&self) -> [u8; AUTHENTICATOR_LEN] {
        let mut a = [0; AUTHENTICATOR_LEN];
        a.copy_from_slice(&self.buffer.as_ref()[field::AUTHENTICATOR]);
        a
    }

    /// The packet up to its Length.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[..usize::from(self.length())]
    }

    /// The attributes' bytes, up to Length.
    pub fn attributes(&self) -> &[u8] {
        &self.as_bytes()[field::ATTRIBUTES..]
    }

    /// The attributes in order; the first that does not fit ends the walk with an
    /// error.
    pub fn attribute_spans(&self) -> impl Iterator<Item = Result<AttributeSpan, Malformed>> {
        let attributes = self.attributes();
        let mut at = 0;
        let mut failed = false;
        std::iter::from_fn(move || {
            if failed || at == attributes.len() {
                return None;
            }
            let offset = field::ATTRIBUTES + at;
            let rest = &attributes[at..];
            let len = rest.get(field::ATTR_LENGTH).map_or(0, |&l| usize::from(l));
            if len < field::ATTR_VALUE || len > rest.len() {
                failed = true;
                return Some(Err(Malformed::Attribute { offset }));
            }
            at += len;
            Some(Ok(AttributeSpan {
                kind: rest[field::ATTR_TYPE],
                value: offset + field::ATTR_VALUE..offset + len,
            }))
        })
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_code(&mut self, code: Code) {
        self.buffer.as_mut()[field::CODE] = code.into();
    }

    pub fn set_identifier(&mut self, identifier: u8) {
        self.buffer.as_mut()[field::IDENTIFIER] = identifier;
    }

    pub fn set_length(&mut self, length: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&length.to_be_bytes());
    }

    pub fn set_authenticator(&mut self, authenticator: &[u8; AUTHENTICATOR_LEN]) {
        self.buffer.as_mut()[field::AUTHENTICATOR].copy_from_slice(authenticator);
    }

    /// The attributes' bytes, up to Length.
    pub fn attributes_mut(&mut self) -> &mut [u8] {
        let length = usize::from(self.length());
        &mut self.buffer.as_mut()[field::ATTRIBUTES..length]
    }
}

/// An attribute. Those the check does not use are kept as they came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    UserName(Vec<u8>),
    /// The password hidden as RFC 2865 5.2 says: 16 to 128 bytes, a multiple of 16.
    UserPassword(Vec<u8>),
    NasIpAddress(Ipv4Addr),
    ReplyMessage(Vec<u8>),
    NasIdentifier(Vec<u8>),
    MessageAuthenticator([u8; AUTHENTICATOR_LEN]),
    /// Any other type (never one of the above), and its value.
    Other(u8, Vec<u8>),
}

impl Attribute {
    pub fn kind(&self) -> u8 {
        match self {
            Attribute::UserName(_) => kind::USER_NAME,
            Attribute::UserPassword(_) => kind::USER_PASSWORD,
            Attribute::NasIpAddress(_) => kind::NAS_IP_ADDRESS,
            Attribute::ReplyMessage(_) => kind::REPLY_MESSAGE,
            Attribute::NasIdentifier(_) => kind::NAS_IDENTIFIER,
            Attribute::MessageAuthenticator(_) => kind::MESSAGE_AUTHENTICATOR,
            Attribute::Other(kind, _) => *kind,
        }
    }

    pub fn value(&self) -> Cow<'_, [u8]> {
        match self {
            Attribute::UserName(v)
            | Attribute::UserPassword(v)
            | Attribute::ReplyMessage(v)
            | Attribute::NasIdentifier(v)
            | Attribute::Other(_, v) => Cow::Borrowed(v),
            Attribute::NasIpAddress(ip) => Cow::Owned(ip.octets().to_vec()),
            Attribute::MessageAuthenticator(mac) => Cow::Borrowed(mac),
        }
    }

    pub fn parse(kind: u8, value: &[u8]) -> Result<Attribute, Malformed> {
        let bad = || Malformed::Value {
            kind,
            len: value.len(),
        };
        Ok(match kind {
            kind::USER_NAME => Attribute::UserName(value.to_vec()),
            kind::USER_PASSWORD => {
                let len = value.len();
                if len == 0 || len > MAX_PASSWORD || !len.is_multiple_of(AUTHENTICATOR_LEN) {
                    return Err(bad());
                }
                Attribute::UserPassword(value.to_vec())
            }
            kind::NAS_IP_ADDRESS => {
                let octets: [u8; 4] = value.try_into().map_err(|_| bad())?;
                Attribute::NasIpAddress(Ipv4Addr::from(octets))
            }
            kind::REPLY_MESSAGE => Attribute::ReplyMessage(value.to_vec()),
            kind::NAS_IDENTIFIER => Attribute::NasIdentifier(value.to_vec()),
            kind::MESSAGE_AUTHENTICATOR => {
                Attribute::MessageAuthenticator(value.try_into().map_err(|_| bad())?)
            }
            other => Attribute::Other(other, value.to_vec()),
        })
    }

    fn buffer_len(&self) -> usize {
        field::ATTR_VALUE + self.value().len()
    }
}

/// A RADIUS packet as a plain value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repr {
    pub code: Code,
    pub identifier: u8,
    pub authenticator: [u8; AUTHENTICATOR_LEN],
    pub attributes: Vec<Attribute>,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Malformed> {
        packet.check_len()?;
        let bytes = packet.as_bytes();
        let attributes = packet
            .attribute_spans()
            .map(|span| {
                let span = span?;
                Attribute::parse(span.kind, &bytes[span.value])
            })
            .collect::<Result<_, _>>()?;
        Ok(Repr {
            code: packet.code(),
            identifier: packet.identifier(),
            authenticator: packet.authenticator(),
            attributes,
        })
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + self
                .attributes
                .iter()
                .map(Attribute::buffer_len)
                .sum::<usize>()
    }

    /// Writes the packet into a buffer of at least [`Repr::buffer_len`] bytes, which
    /// must be at most [`MAX_LEN`], with values of at most [`MAX_VALUE`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        let length = self.buffer_len();
        debug_assert!(length <= MAX_LEN, "RADIUS packet of {length} bytes");
        packet.set_code(self.code);
        packet.set_identifier(self.identifier);
        packet.set_length(length as u16);
        packet.set_authenticator(&self.authenticator);
        let mut out = packet.attributes_mut();
        for attribute in &self.attributes {
            let value = attribute.value();
            debug_assert!(value.len() <= MAX_VALUE, "attribute value too long");
            let (this, rest) = out.split_at_mut(field::ATTR_VALUE + value.len());
            this[field::ATTR_TYPE] = attribute.kind();
            this[field::ATTR_LENGTH] = this.len() as u8;
            this[field::ATTR_VALUE..].copy_from_slice(&value);
            out = rest;
        }
    }

    /// The packet as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = vec![0; self.buffer_len()];
        self.emit(&mut Packet::new_unchecked(&mut bytes[..]));
        bytes
    }
}

/// User-Password hidden with the secret and the Request Authenticator (RFC 2865
/// 5.2): padded with zeros to a multiple of 16, each block XORed with
/// MD5(secret + the previous hidden block, the authenticator for the first).
fn hide_password(
    password: &[u8],
    secret: &[u8],
    authenticator: &[u8; AUTHENTICATOR_LEN],
) -> Vec<u8> {
    let len = password.len().div_ceil(AUTHENTICATOR_LEN).max(1) * AUTHENTICATOR_LEN;
    let mut hidden = password.to_vec();
    hidden.resize(len, 0);
    let mut previous = *authenticator;
    for block in hidden.chunks_mut(AUTHENTICATOR_LEN) {
        let key = Md5::new()
            .chain_update(secret)
            .chain_update(previous)
            .finalize();
        for (b, k) in block.iter_mut().zip(key) {
            *b ^= k;
        }
        previous.copy_from_slice(block);
    }
    hidden
}

/// HMAC-MD5 keyed with the secret over `packet` with `request_authenticator` in
/// the Authenticator field and the Message-Authenticator value at `at` zeroed
/// (RFC 3579 3.2). For a request, `request_authenticator` is its own.
fn message_authenticator(
    packet: &[u8],
    at: &Range<usize>,
    secret: &[u8],
    request_authenticator: &[u8; AUTHENTICATOR_LEN],
) -> HmacMd5 {
    let Ok(mut mac) = HmacMd5::new_from_slice(secret) else {
        unreachable!("HMAC takes keys of any length");
    };
    mac.update(&packet[..field::AUTHENTICATOR.start]);
    mac.update(request_authenticator);
    mac.update(&packet[field::ATTRIBUTES..at.start]);
    mac.update(&[0; AUTHENTICATOR_LEN]);
    mac.update(&packet[at.end..]);
    mac
}

/// MD5(Code + Identifier + Length + Request Authenticator + Attributes + secret),
/// what the Response Authenticator must be (RFC 2865 3).
fn response_authenticator(
    packet: &[u8],
    secret: &[u8],
    request_authenticator: &[u8; AUTHENTICATOR_LEN],
) -> [u8; AUTHENTICATOR_LEN] {
    Md5::new()
        .chain_update(&packet[..field::AUTHENTICATOR.start])
        .chain_update(request_authenticator)
        .chain_update(&packet[field::ATTRIBUTES..])
        .chain_update(secret)
        .finalize()
        .into()
}

/// Equality that takes as long whatever the contents.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug)]
pub(crate) struct Prepared {
    user: Vec<u8>,
    nas_identifier: Vec<u8>,
}

impl Prepared {
    pub(crate) fn new(spec: &Radius) -> Result<Prepared, Error> {
        let bad = |message: String| Err(Error::Option { message });
        if spec.secret.expose().is_empty() {
            return bad("the RADIUS shared secret is empty".to_owned());
        }
        let user = spec.login.user.as_bytes();
        if user.is_empty() || user.len() > MAX_VALUE {
            return bad(format!(
                "the RADIUS user name must be 1 to {MAX_VALUE} bytes, not {}",
                user.len()
            ));
        }
        if spec.login.password.expose().len() > MAX_PASSWORD {
            return bad(format!(
                "the RADIUS password is longer than {MAX_PASSWORD} bytes (the PAP limit)"
            ));
        }
        let nas_identifier = spec.nas_identifier.as_deref().unwrap_or("directord");
        if nas_identifier.is_empty() || nas_identifier.len() > MAX_VALUE {
            return bad(format!(
                "nas_identifier must be 1 to {MAX_VALUE} bytes, not {}",
                nas_identifier.len()
            ));
        }
        Ok(Prepared {
            user: user.to_vec(),
            nas_identifier: nas_identifier.as_bytes().to_vec(),
        })
    }

    /// The signed Access-Request with this identifier and Request Authenticator.
    fn request(&self, spec: &Radius, sent: &Sent, nas_ip: Option<Ipv4Addr>) -> Vec<u8> {
        let secret = spec.secret.expose().as_bytes();
        let password = spec.login.password.expose().as_bytes();
        let mut attributes = vec![
            Attribute::MessageAuthenticator([0; AUTHENTICATOR_LEN]),
            Attribute::UserName(self.user.clone()),
            Attribute::UserPassword(hide_password(password, secret, &sent.authenticator)),
            Attribute::NasIdentifier(self.nas_identifier.clone()),
        ];
        attributes.extend(nas_ip.map(Attribute::NasIpAddress));
        let mut bytes = Repr {
            code: Code::AccessRequest,
            identifier: sent.identifier,
            authenticator: sent.authenticator,
            attributes,
        }
        .to_bytes();
        // The Message-Authenticator is the first attribute.
        let at = HEADER_LEN + field::ATTR_VALUE..HEADER_LEN + field::ATTR_VALUE + AUTHENTICATOR_LEN;
        let mac = message_authenticator(&bytes, &at, secret, &sent.authenticator);
        bytes[at].copy_from_slice(&mac.finalize().into_bytes());
        bytes
    }
}

/// What identifies our request.
#[derive(Debug, Clone, Copy)]
struct Sent {
    identifier: u8,
    authenticator: [u8; AUTHENTICATOR_LEN],
}

/// What one datagram from the server means for the attempt.
#[derive(Debug, PartialEq)]
enum Reply {
    /// Not the answer to our request: keep waiting.
    Ignore,
    Done(Verdict),
}

/// Judges one datagram that came from the server in answer to `sent`.
fn judge(spec: &Radius, sent: &Sent, bytes: &[u8]) -> Reply {
    let malformed =
        |m: Malformed| Reply::Done(Verdict::Down(format!("malformed RADIUS answer: {m}")));
    // Bytes that are not RADIUS are reported whatever their second byte says; a
    // packet with another identifier is a late answer to an earlier attempt.
    let packet = match Packet::new_checked(bytes) {
        Ok(packet) => packet,
        Err(m) => return malformed(m),
    };
    if packet.identifier() != sent.identifier {
        return Reply::Ignore;
    }
    let repr = match Repr::parse(&packet) {
        Ok(repr) => repr,
        Err(m) => return malformed(m),
    };
    let secret = spec.secret.expose().as_bytes();
    let bytes = packet.as_bytes();
    let expected = response_authenticator(bytes, secret, &sent.authenticator);
    if !same(&expected, &repr.authenticator) {
        return Reply::Done(Verdict::Down(
            "response authenticator does not verify (wrong shared secret?)".to_owned(),
        ));
    }
    for span in packet.attribute_spans().flatten() {
        if span.kind == kind::MESSAGE_AUTHENTICATOR {
            let mac = message_authenticator(bytes, &span.value, secret, &sent.authenticator);
            if mac.verify_slice(&bytes[span.value]).is_err() {
                return Reply::Done(Verdict::Down(
                    "Message-Authenticator does not verify (wrong shared secret?)".to_owned(),
                ));
            }
        }
    }
    let messages: Vec<&[u8]> = repr
        .attributes
        .iter()
        .filter_map(|a| match a {
            Attribute::ReplyMessage(m) => Some(m.as_slice()),
            _ => None,
        })
        .collect();
    // Reply-Messages are to be shown together, in order (RFC 2865 5.18).
    let with_message = |what: String| {
        let message = shown_bytes(&messages.join(&b' '));
        Verdict::Down(if message.is_empty() {
            what
        } else {
            format!("{what}: {message}")
        })
    };
    Reply::Done(match repr.code {
        Code::AccessAccept => Verdict::Up,
        Code::AccessReject if spec.accept_reject => Verdict::Up,
        Code::AccessReject => with_message("Access-Reject".to_owned()),
        Code::AccessChallenge => {
            with_message("Access-Challenge (the server asks for more than a password)".to_owned())
        }
        other => Verdict::Down(format!("unexpected {other} in answer to an Access-Request")),
    })
}

pub(crate) async fn probe(p: &Prepared, spec: &Radius, t: &Target) -> Result<Verdict, Error> {
    attempt(p, spec, t).await.or_else(Stop::into_verdict)
}

async fn attempt(p: &Prepared, spec: &Radius, t: &Target) -> Result<Verdict, Stop> {
    let deadline = Instant::now() + t.timeout;
    let udp = Udp::connect(t).await?;
    let mut random = [0u8; 1 + AUTHENTICATOR_LEN];
    getrandom::getrandom(&mut random).map_err(|e| Error::Random {
        message: e.to_string(),
    })?;
    let mut sent = Sent {
        identifier: random[0],
        authenticator: [0; AUTHENTICATOR_LEN],
    };
    sent.authenticator.copy_from_slice(&random[1..]);
    let nas_ip = match t.bind {
        Some(IpAddr::V4(ip)) => Some(ip),
        _ => None,
    };
    let request = p.request(spec, &sent, nas_ip);
    let no_answer = || {
        format!(
            "no RADIUS answer within {} ms (a wrong shared secret is silently dropped)",
            t.timeout.as_millis()
        )
    };
    udp.exchange(
        &request,
        MAX_LEN,
        deadline,
        no_answer,
        |datagram| match judge(spec, &sent, datagram) {
            Reply::Ignore => None,
            Reply::Done(v) => Some(v),
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::spec::{Login, Secret};

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

    fn spec(user: &str, password: &str, secret: &str) -> Radius {
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

    // RFC 2865 7.1, "User Telnet to Specified Host": user nemo, password arctangent,
    // secret xyzzy5461, from NAS 192.168.1.16 port 3.
    const RFC_REQUEST: &str = "01 00 00 38 0f 40 3f 94 73 97 80 57 bd 83 d5 cb
        98 f4 22 7a 01 06 6e 65 6d 6f 02 12 0d be 70 8d
        93 d4 13 ce 31 96 e4 3f 78 2a 0a ee 04 06 c0 a8
        01 10 05 06 00 00 00 03";
    const RFC_ACCEPT: &str = "02 00 00 26 86 fe 22 0e 76 24 ba 2a 10 05 f6 bf
        9b 55 e0 b2 06 06 00 00 00 01 0f 06 00 00 00 00
        0e 06 c0 a8 01 03";
    const RFC_AUTHENTICATOR: &str = "0f 40 3f 94 73 97 80 57 bd 83 d5 cb 98 f4 22 7a";

    fn rfc_sent() -> Sent {
        let mut authenticator = [0; AUTHENTICATOR_LEN];
        authenticator.copy_from_slice(&unhex(RFC_AUTHENTICATOR));
        Sent {
            identifier: 0,
            authenticator,
        }
    }

    #[test]
    fn parse_and_emit_the_rfc_example() {
        let bytes = unhex(RFC_REQUEST);
        let packet = Packet::new_checked(&bytes[..]).expect("valid");
        let repr = Repr::parse(&packet).expect("parses");
        let sent = rfc_sent();
        assert_eq!(
            repr,
            Repr {
                code: Code::AccessRequest,
                identifier: 0,
                authenticator: sent.authenticator,
                attributes: vec![
                    Attribute::UserName(b"nemo".to_vec()),
                    Attribute::UserPassword(hide_password(
                        b"arctangent",
                        b"xyzzy5461",
                        &sent.authenticator
                    )),
                    Attribute::NasIpAddress(Ipv4Addr::new(192, 168, 1, 16)),
                    // NAS-Port: not known here, kept as it came.
                    Attribute::Other(5, vec![0, 0, 0, 3]),
                ],
            }
        );
        assert_eq!(repr.to_bytes(), bytes);

        let accept = unhex(RFC_ACCEPT);
        let repr = Repr::parse(&Packet::new_checked(&accept[..]).expect("valid")).expect("parses");
        assert_eq!(repr.code, Code::AccessAccept);
        assert_eq!(repr.attributes.len(), 3);
        assert_eq!(repr.to_bytes(), accept);
    }

    #[test]
    fn the_rfc_accept_verifies() {
        let accept = unhex(RFC_ACCEPT);
        let sent = rfc_sent();
        let s = spec("nemo", "arctangent", "xyzzy5461");
        assert_eq!(judge(&s, &sent, &accept), Reply::Done(Verdict::Up));
        let wrong = spec("nemo", "arctangent", "xyzzy5462");
        assert_eq!(
            judge(&wrong, &sent, &accept),
            Reply::Done(Verdict::Down(
                "response authenticator does not verify (wrong shared secret?)".into()
            ))
        );
        let other = Sent {
            identifier: 1,
            ..sent
        };
        assert_eq!(judge(&s, &other, &accept), Reply::Ignore);
    }

    /// The answers of FreeRADIUS 3.2.1 (Debian 12), secret `testing123-lab`, to an
    /// Access-Request with identifier 42 and Request Authenticator 00 01 .. 0f, for
    /// the right and a wrong password; the users file gives a Reply-Message
    /// "Hello, %{User-Name}". It signs no Message-Authenticator of its own.
    const FREERADIUS_ACCEPT: &str =
        "022a0022ed62c910719a0f044597fad9bd3067be120e48656c6c6f2c20616c696365";
    const FREERADIUS_REJECT: &str =
        "032a00222d6ebe1aa9c8485a977905b4b3ce5aa9120e48656c6c6f2c20616c696365";

    #[test]
    fn answers_captured_from_freeradius() {
        let s = spec("alice", "wonderland", "testing123-lab");
        let mut authenticator = [0; 16];
        for (i, b) in authenticator.iter_mut().enumerate() {
            *b = i as u8;
        }
        let sent = Sent {
            identifier: 42,
            authenticator,
        };
        let accept = unhex(FREERADIUS_ACCEPT);
        assert_eq!(judge(&s, &sent, &accept), Reply::Done(Verdict::Up));
        let repr = Repr::parse(&Packet::new_checked(&accept[..]).expect("valid")).expect("parses");
        assert_eq!(
            repr.attributes,
            vec![Attribute::ReplyMessage(b"Hello, alice".to_vec())]
        );
        assert_eq!(repr.to_bytes(), accept);
        assert_eq!(
            judge(&s, &sent, &unhex(FREERADIUS_REJECT)),
            Reply::Done(Verdict::Down("Access-Reject: Hello, alice".into()))
        );
    }

    /// Reveals a hidden password, as a server does.
    fn reveal(hidden: &[u8], secret: &[u8], authenticator: &[u8; 16]) -> Vec<u8> {
        let mut previous = authenticator.to_vec();
        let mut out = Vec::new();
        for block in hidden.chunks(16) {
            let key = Md5::new()
                .chain_update(secret)
                .chain_update(&previous)
                .finalize();
            out.extend(block.iter().zip(key).map(|(b, k)| b ^ k));
            previous = block.to_vec();
        }
        while out.last() == Some(&0) {
            out.pop();
        }
        out
    }

    #[test]
    fn our_request_is_signed_and_hides_the_password() {
        let s = spec("alice", "a password longer than sixteen bytes", "s3cret");
        let p = Prepared::new(&s).expect("valid");
        let sent = Sent {
            identifier: 42,
            authenticator: [7; 16],
        };
        let bytes = p.request(&s, &sent, Some(Ipv4Addr::new(192, 0, 2, 9)));
        let packet = Packet::new_checked(&bytes[..]).expect("valid");
        let repr = Repr::parse(&packet).expect("parses");
        assert_eq!(repr.code, Code::AccessRequest);
        assert_eq!(repr.identifier, 42);
        let Attribute::MessageAuthenticator(mac) = repr.attributes[0] else {
            panic!("Message-Authenticator first: {repr:?}");
        };
        let at = 22..38;
        assert!(
            message_authenticator(&bytes, &at, b"s3cret", &[7; 16])
                .verify_slice(&mac)
                .is_ok()
        );
        let Attribute::UserPassword(hidden) = &repr.attributes[2] else {
            panic!("User-Password third: {repr:?}");
        };
        assert_eq!(hidden.len(), 48);
        assert_eq!(
            reveal(hidden, b"s3cret", &[7; 16]),
            b"a password longer than sixteen bytes"
        );
        assert!(!bytes.windows(8).any(|w| w == b"password"));
        assert_eq!(
            &repr.attributes[1..],
            &[
                Attribute::UserName(b"alice".to_vec()),
                Attribute::UserPassword(hidden.clone()),
                Attribute::NasIdentifier(b"directord".to_vec()),
                Attribute::NasIpAddress(Ipv4Addr::new(192, 0, 2, 9)),
            ]
        );
        // An empty password is one block of zeros, hidden.
        assert_eq!(hide_password(b"", b"s", &[0; 16]).len(), 16);
    }

    /// A response to `sent` signed with `secret`, optionally with a
    /// Message-Authenticator.
    fn response(
        code: Code,
        sent: &Sent,
        secret: &[u8],
        mut attributes: Vec<Attribute>,
        with_mac: bool,
    ) -> Vec<u8> {
        if with_mac {
            attributes.insert(0, Attribute::MessageAuthenticator([0; 16]));
        }
        let mut bytes = Repr {
            code,
            identifier: sent.identifier,
            authenticator: sent.authenticator,
            attributes,
        }
        .to_bytes();
        if with_mac {
            let at = 22..38;
            let mac = message_authenticator(&bytes, &at, secret, &sent.authenticator);
            bytes[at].copy_from_slice(&mac.finalize().into_bytes());
        }
        let auth = response_authenticator(&bytes, secret, &sent.authenticator);
        bytes[4..20].copy_from_slice(&auth);
        bytes
    }

    #[test]
    fn verdicts_by_code() {
        let s = spec("alice", "pw", "s3cret");
        let sent = Sent {
            identifier: 9,
            authenticator: [3; 16],
        };
        let reply = |code, attributes, with_mac| {
            judge(
                &s,
                &sent,
                &response(code, &sent, b"s3cret", attributes, with_mac),
            )
        };
        assert_eq!(
            reply(Code::AccessAccept, vec![], true),
            Reply::Done(Verdict::Up)
        );
        assert_eq!(
            reply(Code::AccessAccept, vec![], false),
            Reply::Done(Verdict::Up)
        );
        let messages = vec![
            Attribute::ReplyMessage(b"Wrong\npassword".to_vec()),
            Attribute::ReplyMessage(b"for alice".to_vec()),
        ];
        assert_eq!(
            reply(Code::AccessReject, messages, true),
            Reply::Done(Verdict::Down(
                "Access-Reject: Wrong\\npassword for alice".into()
            ))
        );
        assert_eq!(
            reply(Code::AccessReject, vec![], false),
            Reply::Done(Verdict::Down("Access-Reject".into()))
        );
        let lenient = Radius {
            accept_reject: true,
            ..s.clone()
        };
        let reject = response(Code::AccessReject, &sent, b"s3cret", vec![], true);
        assert_eq!(judge(&lenient, &sent, &reject), Reply::Done(Verdict::Up));
        assert_eq!(
            reply(Code::AccessChallenge, vec![], true),
            Reply::Done(Verdict::Down(
                "Access-Challenge (the server asks for more than a password)".into()
            ))
        );
        assert_eq!(
            reply(Code::AccountingResponse, vec![], false),
            Reply::Done(Verdict::Down(
                "unexpected Accounting-Response in answer to an Access-Request".into()
            ))
        );
    }

    #[test]
    fn bad_signatures() {
        let s = spec("alice", "pw", "s3cret");
        let sent = Sent {
            identifier: 9,
            authenticator: [3; 16],
        };
        let forged = response(Code::AccessAccept, &sent, b"guess", vec![], true);
        assert_eq!(
            judge(&s, &sent, &forged),
            Reply::Done(Verdict::Down(
                "response authenticator does not verify (wrong shared secret?)".into()
            ))
        );
        // A good Response Authenticator over a bad Message-Authenticator.
        let mut bytes = response(Code::AccessAccept, &sent, b"s3cret", vec![], true);
        bytes[30] ^= 1;
        bytes[4..20].copy_from_slice(&[3; 16]);
        let auth = response_authenticator(&bytes, b"s3cret", &sent.authenticator);
        bytes[4..20].copy_from_slice(&auth);
        assert_eq!(
            judge(&s, &sent, &bytes),
            Reply::Done(Verdict::Down(
                "Message-Authenticator does not verify (wrong shared secret?)".into()
            ))
        );
    }

    #[test]
    fn malformed_and_ignored() {
        let s = spec("alice", "pw", "s3cret");
        let sent = Sent {
            identifier: 9,
            authenticator: [3; 16],
        };
        let down = |reason: &str| Reply::Done(Verdict::Down(reason.to_owned()));
        assert_eq!(
            judge(&s, &sent, b"hello"),
            down("malformed RADIUS answer: 5 bytes, shorter than a header")
        );
        let mut bytes = response(Code::AccessAccept, &sent, b"s3cret", vec![], false);
        bytes[1] = 10;
        assert_eq!(
            judge(&s, &sent, &bytes),
            Reply::Ignore,
            "another identifier"
        );
        bytes[3] = 200;
        assert_eq!(
            judge(&s, &sent, &bytes),
            down("malformed RADIUS answer: length field 200 in a datagram of 20 bytes")
        );
        let mut bytes = response(Code::AccessAccept, &sent, b"s3cret", vec![], false);
        bytes.extend_from_slice(&[18, 1]);
        bytes[3] = 22;
        assert_eq!(
            judge(&s, &sent, &bytes),
            down("malformed RADIUS answer: attribute at offset 20 has a bad length")
        );
        // Padding past Length is ignored.
        let mut bytes = response(Code::AccessAccept, &sent, b"s3cret", vec![], true);
        bytes.extend_from_slice(b"padding");
        assert_eq!(judge(&s, &sent, &bytes), Reply::Done(Verdict::Up));
    }

    #[test]
    fn options_are_checked() {
        let bad = |s: Radius| match Prepared::new(&s) {
            Err(Error::Option { message }) => message,
            other => panic!("expected an option error, got {other:?}"),
        };
        assert_eq!(
            bad(spec("alice", "pw", "")),
            "the RADIUS shared secret is empty"
        );
        assert!(bad(spec("", "pw", "s")).contains("user name"));
        let long = "p".repeat(129);
        let message = bad(spec("alice", &long, "s"));
        assert!(!message.contains(&long), "{message}");
        let s = Radius {
            nas_identifier: Some(String::new()),
            ..spec("alice", "pw", "s")
        };
        assert!(bad(s).contains("nas_identifier"));
        assert!(Prepared::new(&spec("alice", &"p".repeat(128), "s")).is_ok());
    }

    fn attribute() -> impl Strategy<Value = Attribute> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..=MAX_VALUE);
        prop_oneof![
            bytes().prop_map(Attribute::UserName),
            (1..=8usize, any::<[u8; 16]>()).prop_map(|(n, b)| Attribute::UserPassword(b.repeat(n))),
            any::<[u8; 4]>().prop_map(|o| Attribute::NasIpAddress(Ipv4Addr::from(o))),
            bytes().prop_map(Attribute::ReplyMessage),
            bytes().prop_map(Attribute::NasIdentifier),
            any::<[u8; 16]>().prop_map(Attribute::MessageAuthenticator),
            (any::<u8>(), bytes())
                .prop_filter("not a known type", |(k, _)| !matches!(
                    *k,
                    kind::USER_NAME
                        | kind::USER_PASSWORD
                        | kind::NAS_IP_ADDRESS
                        | kind::REPLY_MESSAGE
                        | kind::NAS_IDENTIFIER
                        | kind::MESSAGE_AUTHENTICATOR
                ))
                .prop_map(|(k, v)| Attribute::Other(k, v)),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(
            code in any::<u8>(),
            identifier in any::<u8>(),
            authenticator in any::<[u8; 16]>(),
            attributes in proptest::collection::vec(attribute(), 0..12),
        ) {
            let repr = Repr { code: Code::from(code), identifier, authenticator, attributes };
            prop_assume!(repr.buffer_len() <= MAX_LEN);
            let bytes = repr.to_bytes();
            let parsed = Repr::parse(&Packet::new_checked(&bytes[..]).expect("valid"));
            prop_assert_eq!(parsed, Ok(repr));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(packet) = Packet::new_checked(&bytes[..]) {
                let _ = (packet.code(), packet.identifier(), packet.authenticator());
                if let Ok(repr) = Repr::parse(&packet) {
                    // Whatever parses emits back to the same bytes.
                    prop_assert_eq!(repr.to_bytes(), packet.as_bytes());
                }
            }
            let s = spec("alice", "pw", "s3cret");
            let sent = Sent {
                identifier: bytes.get(1).copied().unwrap_or(0),
                authenticator: [3; 16],
            };
            let _ = judge(&s, &sent, &bytes);
        }
    }
}
