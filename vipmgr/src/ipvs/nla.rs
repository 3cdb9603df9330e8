//! Netlink attributes (`struct nlattr`): the type-length-value framing every IPVS
//! message is made of, and the fixed-width payload readers.
//!
//! An attribute is a 4-byte header (`nla_len` covering header and payload, then
//! `nla_type`) followed by the payload, padded with zeros to a multiple of 4.
//! The two top bits of `nla_type` are flags: `NLA_F_NESTED` (the payload is an
//! attribute list) and `NLA_F_NET_BYTEORDER`.

use std::fmt;

use super::malformed;
use crate::error::Error;

/// `NLA_F_NESTED`: set by libnl (and vipmgr) on nested attributes; the kernel's
/// IPVS replies do not set it.
pub(crate) const F_NESTED: u16 = 0x8000;
/// `NLA_TYPE_MASK`: the type without its flag bits.
pub(crate) const TYPE_MASK: u16 = 0x3fff;
const HEADER_LEN: usize = 4;

/// Rounds up to the 4-byte netlink alignment (`NLA_ALIGN`).
pub(crate) const fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// An attribute that vipmgr does not interpret, kept whole so that it survives a
/// parse / emit round trip.
#[derive(Clone, PartialEq, Eq)]
pub struct RawAttribute {
    /// `nla_type` as it was on the wire, flag bits included.
    pub kind: u16,
    pub payload: Vec<u8>,
}

impl fmt::Debug for RawAttribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawAttribute({:#06x}, ", self.kind)?;
        for byte in &self.payload {
            write!(f, "{byte:02x}")?;
        }
        write!(f, ")")
    }
}

/// One attribute read from a buffer: its type (flags masked off), whether it
/// carried `NLA_F_NESTED`, its full `nla_type` and its payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attr<'a> {
    pub(crate) kind: u16,
    pub(crate) nested_flag: bool,
    pub(crate) raw_kind: u16,
    pub(crate) payload: &'a [u8],
}

impl<'a> Attr<'a> {
    pub(crate) fn raw(&self) -> RawAttribute {
        RawAttribute {
            kind: self.raw_kind,
            payload: self.payload.to_vec(),
        }
    }

    fn exact<const N: usize>(&self, what: &'static str) -> Result<[u8; N], Error> {
        <[u8; N]>::try_from(self.payload).map_err(|_| {
            malformed(
                what,
                format!("{} byte(s), expected {N}", self.payload.len()),
            )
        })
    }

    pub(crate) fn u8(&self, what: &'static str) -> Result<u8, Error> {
        Ok(self.exact::<1>(what)?[0])
    }

    pub(crate) fn u16(&self, what: &'static str) -> Result<u16, Error> {
        Ok(u16::from_ne_bytes(self.exact(what)?))
    }

    /// A `__be16` (ports).
    pub(crate) fn be16(&self, what: &'static str) -> Result<u16, Error> {
        Ok(u16::from_be_bytes(self.exact(what)?))
    }

    pub(crate) fn u32(&self, what: &'static str) -> Result<u32, Error> {
        Ok(u32::from_ne_bytes(self.exact(what)?))
    }

    pub(crate) fn u64(&self, what: &'static str) -> Result<u64, Error> {
        Ok(u64::from_ne_bytes(self.exact(what)?))
    }

    pub(crate) fn array<const N: usize>(&self, what: &'static str) -> Result<[u8; N], Error> {
        self.exact(what)
    }

    /// A NUL-terminated string (`nla_put_string`); the terminator is not kept.
    pub(crate) fn string(&self, what: &'static str) -> Result<String, Error> {
        let text = self.payload.split(|b| *b == 0).next().unwrap_or_default();
        String::from_utf8(text.to_vec()).map_err(|_| malformed(what, "not UTF-8"))
    }
}

/// The attributes in `buf`, in order. A truncated or overlong attribute is an
/// error; trailing padding is not.
pub(crate) fn parse<'a>(buf: &'a [u8], what: &'static str) -> Result<Vec<Attr<'a>>, Error> {
    let mut attrs = Vec::new();
    let mut rest = buf;
    while rest.len() >= HEADER_LEN {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let raw_kind = u16::from_ne_bytes([rest[2], rest[3]]);
        if len < HEADER_LEN || len > rest.len() {
            return Err(malformed(
                what,
                format!(
                    "attribute {raw_kind:#06x} says {len} bytes, {} left",
                    rest.len()
                ),
            ));
        }
        attrs.push(Attr {
            kind: raw_kind & TYPE_MASK,
            nested_flag: raw_kind & F_NESTED != 0,
            raw_kind,
            payload: &rest[HEADER_LEN..len],
        });
        rest = &rest[align(len).min(rest.len())..];
    }
    if rest.iter().any(|b| *b != 0) {
        return Err(malformed(
            what,
            format!("{} stray byte(s) after the last attribute", rest.len()),
        ));
    }
    Ok(attrs)
}

/// Appends attributes to a message buffer.
#[derive(Debug)]
pub(crate) struct Writer<'a> {
    buf: &'a mut Vec<u8>,
    /// Whether nested attributes get `NLA_F_NESTED`.
    nested_flag: bool,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut Vec<u8>, nested_flag: bool) -> Self {
        Writer { buf, nested_flag }
    }

    pub(crate) fn bytes(&mut self, kind: u16, payload: &[u8]) {
        let len = HEADER_LEN + payload.len();
        // An attribute longer than 64 KiB cannot be framed; nothing vipmgr builds
        // comes close (the longest is a 16-byte address).
        let wire_len = u16::try_from(len).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&wire_len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(self.buf.len() + align(len) - len, 0);
    }

    pub(crate) fn raw(&mut self, attr: &RawAttribute) {
        self.bytes(attr.kind, &attr.payload);
    }

    pub(crate) fn u8(&mut self, kind: u16, value: u8) {
        self.bytes(kind, &[value]);
    }

    pub(crate) fn u16(&mut self, kind: u16, value: u16) {
        self.bytes(kind, &value.to_ne_bytes());
    }

    pub(crate) fn be16(&mut self, kind: u16, value: u16) {
        self.bytes(kind, &value.to_be_bytes());
    }

    pub(crate) fn u32(&mut self, kind: u16, value: u32) {
        self.bytes(kind, &value.to_ne_bytes());
    }

    pub(crate) fn u64(&mut self, kind: u16, value: u64) {
        self.bytes(kind, &value.to_ne_bytes());
    }

    pub(crate) fn string(&mut self, kind: u16, value: &str) {
        let mut payload = Vec::with_capacity(value.len() + 1);
        payload.extend_from_slice(value.as_bytes());
        payload.push(0);
        self.bytes(kind, &payload);
    }

    /// A nested attribute whose payload `body` writes.
    pub(crate) fn nested(&mut self, kind: u16, body: impl FnOnce(&mut Writer<'_>)) {
        let start = self.buf.len();
        let kind = if self.nested_flag {
            kind | F_NESTED
        } else {
            kind
        };
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        let nested_flag = self.nested_flag;
        body(&mut Writer::new(self.buf, nested_flag));
        let len = u16::try_from(self.buf.len() - start).unwrap_or(u16::MAX);
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_and_parses_back() {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf, true);
        w.u8(13, 1);
        w.string(6, "wlc");
        w.nested(1, |w| w.be16(4, 80));
        assert_eq!(
            buf,
            [
                5, 0, 13, 0, 1, 0, 0, 0, // u8, padded
                8, 0, 6, 0, b'w', b'l', b'c', 0, // string with its NUL
                12, 0, 1, 0x80, 6, 0, 4, 0, 0, 80, 0, 0, // nested, flagged
            ]
        );
        let attrs = parse(&buf, "test").unwrap();
        assert_eq!(attrs.len(), 3);
        assert_eq!(attrs[0].u8("x").unwrap(), 1);
        assert_eq!(attrs[1].string("x").unwrap(), "wlc");
        assert!(attrs[2].nested_flag);
        assert_eq!(attrs[2].kind, 1);
        let inner = parse(attrs[2].payload, "test").unwrap();
        assert_eq!(inner[0].be16("x").unwrap(), 80);
    }

    #[test]
    fn rejects_overlong_and_wrong_width() {
        assert!(parse(&[8, 0, 1, 0, 0], "test").is_err());
        assert!(parse(&[2, 0, 1, 0], "test").is_err());
        let attrs = parse(&[6, 0, 1, 0, 1, 2, 0, 0], "test").unwrap();
        assert!(attrs[0].u32("x").is_err());
        assert_eq!(attrs[0].u16("x").unwrap(), u16::from_ne_bytes([1, 2]));
    }
}
