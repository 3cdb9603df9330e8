//! Linux-HA heartbeat's cluster messages on the wire, in both of heartbeat's text
//! formats.
//!
//! A message is an ordered list of `name=value` fields. `t` gives the type,
//! `src` the sending node, `seq` / `hg` the sequence and generation numbers (hex),
//! and `auth=<key id> <digest>` the signature.
//!
//! Classic (heartbeat 1 and 2; directord sends this one):
//!
//! ```text
//! >>>
//! t=status
//! st=active
//! src=lvs1
//! (1)srcuuid=yk1FjEpHTfmfWov30h40bQ==
//! seq=1f
//! hg=6b06fba9
//! ts=6b06fbb1
//! auth=1 50506ed8a370620a3618d6071ce53579cde40b18
//! <<<
//! ```
//!
//! followed by a NUL byte, as heartbeat's `msg2wirefmt` writes it. A `(N)` before
//! the name gives a field type other than a string: `(1)` is binary, base64-encoded.
//!
//! Netstring (what heartbeat 3 sends on the wire): `###\n`, then every field as a
//! netstring `<len>:(<type>)<name>=<value>,` with binary values raw, `%%%\n`, and a
//! netstring trailer `<len>:<key id> <digest>,` that signs everything before it.
//!
//! Both formats carry the classic `auth` field. Its digest covers the classic text
//! of every other field, `[(N)]name=value\n` each, without `>>>`/`<<<`
//! (heartbeat's `msg2string_buf(.., NOHEAD)`). heartbeat 3 accepts classic messages
//! and checks that field; on netstring messages it checks the trailer.
//!
//! Unknown field names and types are kept, in order.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::linuxha::authkeys::{AuthError, AuthKeys};

/// First line of a classic message.
pub const CLASSIC_START: &[u8] = b">>>\n";
/// Last line of a classic message.
pub const CLASSIC_END: &[u8] = b"<<<\n";
/// First line of a netstring message.
pub const NETSTRING_START: &[u8] = b"###\n";
/// End of the fields of a netstring message (the signature trailer follows).
pub const NETSTRING_END: &[u8] = b"%%%\n";
/// Largest message heartbeat handles (its MAXMSG), and more than a UDP datagram
/// on any link we use.
pub const MAX_LEN: usize = 40_000;

/// Field names heartbeat uses (`F_*` in heartbeat's `ha_msg.h`).
pub mod name {
    /// Message type.
    pub const TYPE: &str = "t";
    /// Node status: init, up, active, dead.
    pub const STATUS: &str = "st";
    /// Sending node.
    pub const SRC: &str = "src";
    /// Sending node's UUID (binary, 16 bytes).
    pub const SRC_UUID: &str = "srcuuid";
    /// Sequence number (hex).
    pub const SEQ: &str = "seq";
    /// Generation: per boot, persisted (hex).
    pub const GENERATION: &str = "hg";
    /// Sender's wall clock, Unix seconds (hex).
    pub const TIME: &str = "ts";
    /// Dead time the sender asks for, milliseconds (hex).
    pub const DEADTIME: &str = "dt";
    /// Hop count left (decimal).
    pub const TTL: &str = "ttl";
    /// Protocol version (decimal); its presence enables flow control (acks).
    pub const PROTOCOL: &str = "protocol";
    /// Load average (informational).
    pub const LOAD: &str = "ld";
    /// Destination node, for messages to one node.
    pub const DEST: &str = "dest";
    /// Destination node's UUID (binary).
    pub const DEST_UUID: &str = "destuuid";
    /// Acknowledged sequence number (hex), in `NS_ackmsg`.
    pub const ACK_SEQ: &str = "ackseq";
    /// First and last sequence number asked for again, in `NS_rexmit`.
    pub const FIRST_SEQ: &str = "firstseq";
    pub const LAST_SEQ: &str = "lastseq";
    /// Node list and deleted-node list (space separated), in `repnodes`.
    pub const NODE_LIST: &str = "nodelist";
    pub const DEL_NODE_LIST: &str = "delnodelist";
    /// Signature: `<key id> <hex digest>`.
    pub const AUTH: &str = "auth";
}

/// The wire format of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `>>>` ... `<<<`, one `name=value` per line.
    Classic,
    /// `###` netstrings `%%%`, then a signature trailer.
    Netstring,
}

/// A field's type, the digit of the `(N)` prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldType {
    /// 0: a string (no newline or NUL).
    String,
    /// 1: binary; base64 in the classic format, raw in netstrings.
    Binary,
    /// 2: a nested message.
    Struct,
    /// 3: a list of strings.
    List,
    /// 4: compressed.
    Compressed,
    /// 5: uncompressed nested message.
    Uncompressed,
    /// 6..=9.
    Unknown(u8),
}

impl FieldType {
    /// The type digit, 0..=9.
    pub const fn digit(self) -> u8 {
        match self {
            FieldType::String => 0,
            FieldType::Binary => 1,
            FieldType::Struct => 2,
            FieldType::List => 3,
            FieldType::Compressed => 4,
            FieldType::Uncompressed => 5,
            FieldType::Unknown(d) => d,
        }
    }

    /// The type of digit `d` (0..=9).
    pub const fn from_digit(d: u8) -> Option<FieldType> {
        Some(match d {
            0 => FieldType::String,
            1 => FieldType::Binary,
            2 => FieldType::Struct,
            3 => FieldType::List,
            4 => FieldType::Compressed,
            5 => FieldType::Uncompressed,
            6..=9 => FieldType::Unknown(d),
            _ => return None,
        })
    }
}

/// Message types (`T_*` in heartbeat) this module names; others are `Other`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Kind {
    /// "status": the keepalive.
    Status,
    /// "shutdone": the sender is leaving the cluster (st=dead).
    Shutdone,
    /// "reqnodes": asks the destination for its node list.
    ReqNodes,
    /// "repnodes": the answer to reqnodes.
    RepNodes,
    /// "NS_ackmsg": acknowledges sequence numbers up to `ackseq`.
    Ack,
    /// "NS_rexmit": asks for sequence numbers `firstseq..=lastseq` again.
    Rexmit,
    /// "NS_nak_rexmit": those cannot be sent again.
    NakRexmit,
    Other(String),
}

impl Kind {
    pub fn as_str(&self) -> &str {
        match self {
            Kind::Status => "status",
            Kind::Shutdone => "shutdone",
            Kind::ReqNodes => "reqnodes",
            Kind::RepNodes => "repnodes",
            Kind::Ack => "NS_ackmsg",
            Kind::Rexmit => "NS_rexmit",
            Kind::NakRexmit => "NS_nak_rexmit",
            Kind::Other(s) => s,
        }
    }

    /// Whether messages of this type carry a sequence number (all but `NS_*`).
    pub fn has_seq(&self) -> bool {
        !self.as_str().starts_with("NS_")
    }
}

impl From<&str> for Kind {
    fn from(s: &str) -> Kind {
        match s {
            "status" => Kind::Status,
            "shutdone" => Kind::Shutdone,
            "reqnodes" => Kind::ReqNodes,
            "repnodes" => Kind::RepNodes,
            "NS_ackmsg" => Kind::Ack,
            "NS_rexmit" => Kind::Rexmit,
            "NS_nak_rexmit" => Kind::NakRexmit,
            other => Kind::Other(other.to_owned()),
        }
    }
}

/// Node status in `st`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NodeStatus {
    Init,
    Up,
    Active,
    /// Leaving: the node stops.
    Dead,
    Other(String),
}

impl NodeStatus {
    pub fn as_str(&self) -> &str {
        match self {
            NodeStatus::Init => "init",
            NodeStatus::Up => "up",
            NodeStatus::Active => "active",
            NodeStatus::Dead => "dead",
            NodeStatus::Other(s) => s,
        }
    }
}

impl From<&str> for NodeStatus {
    fn from(s: &str) -> NodeStatus {
        match s {
            "init" => NodeStatus::Init,
            "up" => NodeStatus::Up,
            "active" => NodeStatus::Active,
            "dead" => NodeStatus::Dead,
            other => NodeStatus::Other(other.to_owned()),
        }
    }
}

/// Why bytes are not a message, or a message lacks what the protocol needs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageError {
    /// Longer than [`MAX_LEN`].
    TooLong { len: usize },
    /// Starts with neither `>>>` nor `###`.
    Start,
    /// No `<<<` / `%%%`, or bytes after the end.
    End,
    /// A classic line that is not `[(N)]name=value`.
    Line,
    /// A netstring that is not `<len>:<data>,`.
    Netstring,
    /// A field name that is empty or holds `=`, `(`, a newline or a NUL.
    Name,
    /// A value that cannot be carried (a newline or NUL in text).
    Value { name: String },
    /// A `(N)` prefix that is not a digit (or `(0)` in the classic format).
    FieldType,
    /// A binary value that is not base64.
    Base64 { name: String },
    /// A field the protocol needs is missing.
    Missing(&'static str),
    /// A field the protocol needs has a bad value.
    Bad(&'static str),
}

impl MessageError {
    /// The counter reason, as shown in [`crate::role::Counters::invalid`].
    pub fn reason(&self) -> &'static str {
        "malformed"
    }
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageError::TooLong { len } => write!(f, "message of {len} bytes is too long"),
            MessageError::Start => f.write_str("no >>> or ### start line"),
            MessageError::End => f.write_str("no <<< or %%% end line, or bytes after it"),
            MessageError::Line => f.write_str("a line is not name=value"),
            MessageError::Netstring => f.write_str("a field is not a netstring"),
            MessageError::Name => f.write_str("bad field name"),
            MessageError::Value { name } => write!(f, "field {name} cannot be carried"),
            MessageError::FieldType => f.write_str("bad field type prefix"),
            MessageError::Base64 { name } => write!(f, "binary field {name} is not base64"),
            MessageError::Missing(name) => write!(f, "no {name} field"),
            MessageError::Bad(name) => write!(f, "bad {name} field"),
        }
    }
}

impl std::error::Error for MessageError {}

/// One field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    name: String,
    kind: FieldType,
    /// Strings: the text. Binary: the decoded bytes. Other types: the value as it
    /// was on the wire.
    value: Vec<u8>,
}

impl Field {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> FieldType {
        self.kind
    }

    pub fn value(&self) -> &[u8] {
        &self.value
    }
}

/// A message: the plain value, with only fields its format can carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    format: Format,
    fields: Vec<Field>,
    /// Netstring: the signature trailer's content (`<id> <digest>`), if any.
    trailer: Option<Vec<u8>>,
    /// Classic: a NUL byte follows `<<<\n`.
    nul: bool,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('(')
        && !name.bytes().any(|b| matches!(b, b'=' | b'\n' | b'\r' | 0))
}

/// Whether `value` of type `kind` can be carried in `format`.
fn valid_value(format: Format, kind: FieldType, value: &[u8]) -> bool {
    let text_safe = || !value.iter().any(|&b| matches!(b, b'\n' | b'\r' | 0));
    match (kind, format) {
        (FieldType::String, _) => text_safe(),
        (FieldType::Binary, _) => true,
        (_, Format::Classic) => text_safe(),
        (_, Format::Netstring) => true,
    }
}

impl Message {
    /// An empty message; the classic one ends with a NUL byte as heartbeat sends it.
    pub fn new(format: Format) -> Message {
        Message {
            format,
            fields: Vec::new(),
            trailer: None,
            nul: format == Format::Classic,
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Every field, in order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// Netstring: the signature trailer's content.
    pub fn trailer(&self) -> Option<&[u8]> {
        self.trailer.as_deref()
    }

    /// Appends a field.
    pub fn push(&mut self, name: &str, kind: FieldType, value: &[u8]) -> Result<(), MessageError> {
        if !valid_name(name) {
            return Err(MessageError::Name);
        }
        if !valid_value(self.format, kind, value) {
            return Err(MessageError::Value {
                name: name.to_owned(),
            });
        }
        self.fields.push(Field {
            name: name.to_owned(),
            kind,
            value: value.to_vec(),
        });
        Ok(())
    }

    /// Appends a string field.
    pub fn push_str(&mut self, name: &str, value: &str) -> Result<(), MessageError> {
        self.push(name, FieldType::String, value.as_bytes())
    }

    /// Replaces the first field called `name` (keeping its place), or appends one.
    pub fn set_str(&mut self, name: &str, value: &str) -> Result<(), MessageError> {
        if !valid_value(self.format, FieldType::String, value.as_bytes()) {
            return Err(MessageError::Value {
                name: name.to_owned(),
            });
        }
        match self.fields.iter_mut().find(|f| f.name == name) {
            Some(field) => {
                field.kind = FieldType::String;
                field.value = value.as_bytes().to_vec();
                Ok(())
            }
            None => self.push_str(name, value),
        }
    }

    /// The value of the first field called `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.value.as_slice())
    }

    /// The first field called `name`, if it is text.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|f| f.name == name && f.kind == FieldType::String)
            .and_then(|f| std::str::from_utf8(&f.value).ok())
    }

    /// A hex number field (`seq`, `hg`, `ts`, `dt`, ...): `Ok(None)` if absent.
    pub fn get_hex(&self, name: &'static str) -> Result<Option<u64>, MessageError> {
        match self.get_str(name) {
            None if self.get(name).is_none() => Ok(None),
            None => Err(MessageError::Bad(name)),
            Some(s) if !s.is_empty() && s.len() <= 16 => u64::from_str_radix(s, 16)
                .map(Some)
                .map_err(|_| MessageError::Bad(name)),
            Some(_) => Err(MessageError::Bad(name)),
        }
    }

    /// The message type (`t`).
    pub fn kind(&self) -> Option<Kind> {
        self.get_str(name::TYPE).map(Kind::from)
    }

    /// The text heartbeat signs: every field but `auth`, `[(N)]name=value\n`.
    pub fn auth_text(&self) -> Vec<u8> {
        let mut text = Vec::new();
        for field in self.fields.iter().filter(|f| f.name != name::AUTH) {
            write_classic_field(&mut text, field);
        }
        text
    }

    /// Signs the message with the sending key: sets `auth` (in place, or last),
    /// and for a netstring message also the trailer.
    pub fn sign(&mut self, keys: &AuthKeys) {
        let auth = keys.sign(&self.auth_text());
        // A key id and a hex digest are always carriable.
        let _ = self.set_str(name::AUTH, &auth);
        if self.format == Format::Netstring {
            self.trailer = None;
            let body = self.to_bytes();
            self.trailer = Some(keys.sign(&body).into_bytes());
        }
    }

    /// Checks the signature as heartbeat does (the `auth` field of a classic
    /// message, the trailer of a netstring one); returns the key id used.
    pub fn verify(&self, keys: &AuthKeys) -> Result<u8, AuthError> {
        match self.format {
            Format::Classic => {
                let auth = self.get(name::AUTH).ok_or(AuthError::Missing)?;
                keys.verify(auth, &self.auth_text())
            }
            Format::Netstring => {
                let trailer = self.trailer.as_deref().ok_or(AuthError::Missing)?;
                let mut unsigned = self.clone();
                unsigned.trailer = None;
                keys.verify(trailer, &unsigned.to_bytes())
            }
        }
    }

    /// Parses a datagram in either format.
    pub fn parse(bytes: &[u8]) -> Result<Message, MessageError> {
        if bytes.len() > MAX_LEN {
            return Err(MessageError::TooLong { len: bytes.len() });
        }
        if bytes.starts_with(CLASSIC_START) {
            parse_classic(bytes)
        } else if bytes.starts_with(NETSTRING_START) {
            parse_netstring(bytes)
        } else {
            Err(MessageError::Start)
        }
    }

    /// The length of [`Message::to_bytes`].
    pub fn buffer_len(&self) -> usize {
        self.to_bytes().len()
    }

    /// The datagram.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        match self.format {
            Format::Classic => {
                out.extend_from_slice(CLASSIC_START);
                for field in &self.fields {
                    write_classic_field(&mut out, field);
                }
                out.extend_from_slice(CLASSIC_END);
                if self.nul {
                    out.push(0);
                }
            }
            Format::Netstring => {
                out.extend_from_slice(NETSTRING_START);
                let mut data = Vec::new();
                for field in &self.fields {
                    data.clear();
                    data.extend_from_slice(format!("({})", field.kind.digit()).as_bytes());
                    data.extend_from_slice(field.name.as_bytes());
                    data.push(b'=');
                    data.extend_from_slice(&field.value);
                    write_netstring(&mut out, &data);
                }
                out.extend_from_slice(NETSTRING_END);
                if let Some(trailer) = &self.trailer {
                    write_netstring(&mut out, trailer);
                }
            }
        }
        out
    }
}

fn write_classic_field(out: &mut Vec<u8>, field: &Field) {
    if field.kind != FieldType::String {
        out.extend_from_slice(format!("({})", field.kind.digit()).as_bytes());
    }
    out.extend_from_slice(field.name.as_bytes());
    out.push(b'=');
    if field.kind == FieldType::Binary {
        out.extend_from_slice(BASE64.encode(&field.value).as_bytes());
    } else {
        out.extend_from_slice(&field.value);
    }
    out.push(b'\n');
}

fn write_netstring(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(data.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(data);
    out.push(b',');
}

/// Splits `[(N)]name=value` into its parts: the classic format writes no `(0)`,
/// netstrings always write the type.
fn split_field(data: &[u8], format: Format) -> Result<(FieldType, &str, &[u8]), MessageError> {
    let explicit_string = format == Format::Netstring;
    let (kind, rest) = match data {
        [b'(', digit, b')', rest @ ..] => {
            let kind = digit
                .checked_sub(b'0')
                .and_then(FieldType::from_digit)
                .ok_or(MessageError::FieldType)?;
            if kind == FieldType::String && !explicit_string {
                return Err(MessageError::FieldType);
            }
            (kind, rest)
        }
        [b'(', ..] => return Err(MessageError::FieldType),
        _ if explicit_string => return Err(MessageError::FieldType),
        _ => (FieldType::String, data),
    };
    let eq = rest
        .iter()
        .position(|&b| b == b'=')
        .ok_or(MessageError::Line)?;
    let name = std::str::from_utf8(&rest[..eq]).map_err(|_| MessageError::Name)?;
    if !valid_name(name) {
        return Err(MessageError::Name);
    }
    Ok((kind, name, &rest[eq + 1..]))
}

fn parse_classic(bytes: &[u8]) -> Result<Message, MessageError> {
    let (bytes, nul) = match bytes.split_last() {
        Some((0, rest)) => (rest, true),
        _ => (bytes, false),
    };
    let body = bytes
        .strip_prefix(CLASSIC_START)
        .ok_or(MessageError::Start)?
        .strip_suffix(CLASSIC_END)
        .ok_or(MessageError::End)?;
    let mut message = Message::new(Format::Classic);
    message.nul = nul;
    if body.is_empty() {
        return Ok(message);
    }
    let lines = body.strip_suffix(b"\n").ok_or(MessageError::Line)?;
    for line in lines.split(|&b| b == b'\n') {
        let (kind, name, value) = split_field(line, Format::Classic)?;
        let value = if kind == FieldType::Binary {
            BASE64.decode(value).map_err(|_| MessageError::Base64 {
                name: name.to_owned(),
            })?
        } else {
            value.to_vec()
        };
        message.push(name, kind, &value)?;
    }
    Ok(message)
}

/// Reads one netstring from the front of `bytes`: its data and the rest.
fn read_netstring(bytes: &[u8]) -> Result<(&[u8], &[u8]), MessageError> {
    let colon = bytes
        .iter()
        .take(7)
        .position(|&b| b == b':')
        .ok_or(MessageError::Netstring)?;
    let digits = &bytes[..colon];
    let canonical = match digits {
        [] => false,
        [b'0'] => true,
        [b'0', ..] => false,
        _ => digits.iter().all(u8::is_ascii_digit),
    };
    if !canonical {
        return Err(MessageError::Netstring);
    }
    let len: usize = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or(MessageError::Netstring)?;
    let rest = &bytes[colon + 1..];
    if rest.len() <= len || rest[len] != b',' {
        return Err(MessageError::Netstring);
    }
    Ok((&rest[..len], &rest[len + 1..]))
}

fn parse_netstring(bytes: &[u8]) -> Result<Message, MessageError> {
    let mut rest = bytes
        .strip_prefix(NETSTRING_START)
        .ok_or(MessageError::Start)?;
    let mut message = Message::new(Format::Netstring);
    loop {
        if let Some(after) = rest.strip_prefix(NETSTRING_END) {
            rest = after;
            break;
        }
        if rest.is_empty() {
            return Err(MessageError::End);
        }
        let (data, after) = read_netstring(rest)?;
        let (kind, name, value) = split_field(data, Format::Netstring)?;
        message.push(name, kind, value)?;
        rest = after;
    }
    if !rest.is_empty() {
        let (trailer, after) = read_netstring(rest)?;
        if !after.is_empty() {
            return Err(MessageError::End);
        }
        message.trailer = Some(trailer.to_vec());
    }
    Ok(message)
}

/// What every protocol message must say about itself, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    /// Sending node.
    pub src: String,
    /// Sequence number; `None` for `NS_*` types.
    pub seq: Option<u64>,
    /// Sender's generation.
    pub generation: u64,
    /// Sender's wall clock, Unix seconds.
    pub time: u64,
    /// Destination node, for messages to one node.
    pub dest: Option<String>,
}

impl Header {
    /// Reads the header fields; heartbeat drops messages without `t`, `src` or
    /// `ts`, and without `seq` unless the type starts with `NS_`. directord also
    /// needs `hg` (replay protection).
    pub fn parse(message: &Message) -> Result<Header, MessageError> {
        let kind = message.kind().ok_or(MessageError::Missing(name::TYPE))?;
        let src = message
            .get_str(name::SRC)
            .filter(|s| !s.is_empty())
            .ok_or(MessageError::Missing(name::SRC))?
            .to_owned();
        let seq = message.get_hex(name::SEQ)?;
        if kind.has_seq() && seq.is_none() {
            return Err(MessageError::Missing(name::SEQ));
        }
        let generation = message
            .get_hex(name::GENERATION)?
            .ok_or(MessageError::Missing(name::GENERATION))?;
        let time = message
            .get_hex(name::TIME)?
            .ok_or(MessageError::Missing(name::TIME))?;
        let dest = message.get_str(name::DEST).map(str::to_owned);
        Ok(Header {
            kind,
            src,
            seq,
            generation,
            time,
            dest,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::linuxha::authkeys::{Key, Method};
    use proptest::prelude::*;

    // Captured with tcpdump on a veth pair from Debian 12's heartbeat 1:3.0.6-13
    // (`ucast` medium, node "hbreal", authkeys `1 sha1 secretkey`, `2 md5
    // secretkey`, `3 crc`), UDP payloads.
    pub(crate) const HB_STATUS_SHA1: &[u8] = b"###\n11:(0)t=status,10:(0)st=init,10:(0)dt=1770,13:(0)protocol=1,13:(0)src=hbreal,27:(1)srcuuid=\xcaDE\x8cJGM\xf9\x9fZ\x8b\xf7\xd2\x1e4m,8:(0)seq=1,14:(0)hg=6b06fba9,14:(0)ts=6b06fba8,32:(0)ld=2.27 1.64 0.96 2/110 22272,8:(0)ttl=3,50:(0)auth=1 7a807a70530874ff9aac5b900c83fbe5d6a14723,%%%\n42:1 c4d385fbb2d4c32a47ecbeae97245839b8c692b4,";
    pub(crate) const HB_ACK_SHA1: &[u8] = b"###\n14:(0)t=NS_ackmsg,14:(0)dest=hbreal,11:(0)ackseq=8,28:(1)destuuid=\xcaDE\x8cJGM\xf9\x9fZ\x8b\xf7\xd2\x1e4m,13:(0)src=hbreal,27:(1)srcuuid=\xcaDE\x8cJGM\xf9\x9fZ\x8b\xf7\xd2\x1e4m,14:(0)hg=6b06fba9,14:(0)ts=6b06fbad,8:(0)ttl=3,50:(0)auth=1 a03e9500d5f829788db3dc55d75c2805e3c8ffc7,%%%\n42:1 4a88aaa11790e9e870a774af79e67d09d3d16738,";
    pub(crate) const HB_STATUS_MD5: &[u8] = b"###\n11:(0)t=status,10:(0)st=init,10:(0)dt=1770,13:(0)protocol=1,13:(0)src=hbreal,27:(1)srcuuid=K\xc4y\x09#pK\xfa\x8c+I\x82\x1eV\xd2\xfe,8:(0)seq=1,14:(0)hg=6b06fc8e,14:(0)ts=6b06fc8d,32:(0)ld=0.48 0.93 0.81 1/117 29707,8:(0)ttl=3,42:(0)auth=2 82424d74abc606996dee060f23923870,%%%\n34:2 1e2b7e0c93b403ba3788558b6526ca25,";
    pub(crate) const HB_STATUS_CRC: &[u8] = b"###\n11:(0)t=status,10:(0)st=init,10:(0)dt=1770,13:(0)protocol=1,13:(0)src=hbreal,27:(1)srcuuid=\x82\xdb\x16\x7fM\x9dF\x84\x99\xca\xbep\xbc^\xe6\x16,8:(0)seq=1,14:(0)hg=6b06fc92,14:(0)ts=6b06fc91,32:(0)ld=0.52 0.93 0.81 1/126 30757,8:(0)ttl=3,18:(0)auth=3 b30cd0db,%%%\n10:3 8d964cfe,";
    /// The same node shutting down, then asking for node "dirtest"'s node list.
    pub(crate) const HB_SHUTDONE: &[u8] = b"###\n13:(0)t=shutdone,10:(0)st=dead,13:(0)src=hbreal,27:(1)srcuuid=\x02\x03s\x15\x01\xb0G\xae\x82\xa1\x8eR^aP\x8c,9:(0)seq=1e,14:(0)hg=6b06fc45,14:(0)ts=6b06fc50,31:(0)ld=0.25 0.99 0.82 1/98 26973,8:(0)ttl=3,50:(0)auth=1 4339b21d071c000a9852799cc74eabaa23ef7a83,%%%\n42:1 d990db74e0ec51bb31c88321b157971df5bec967,";

    fn keys() -> AuthKeys {
        AuthKeys::new(
            1,
            [
                Key::new(1, Method::Sha1, "secretkey"),
                Key::new(2, Method::Md5, "secretkey"),
                Key::new(3, Method::Crc, ""),
            ],
        )
        .expect("keys")
    }

    #[test]
    fn parses_captured_heartbeat_status() {
        let m = Message::parse(HB_STATUS_SHA1).expect("parse");
        assert_eq!(m.format(), Format::Netstring);
        let names: Vec<_> = m.fields().iter().map(Field::name).collect();
        assert_eq!(
            names,
            [
                "t", "st", "dt", "protocol", "src", "srcuuid", "seq", "hg", "ts", "ld", "ttl",
                "auth"
            ]
        );
        assert_eq!(m.kind(), Some(Kind::Status));
        assert_eq!(m.get_str(name::STATUS), Some("init"));
        assert_eq!(m.get_hex(name::DEADTIME), Ok(Some(6000)));
        assert_eq!(m.fields()[5].kind(), FieldType::Binary);
        assert_eq!(m.get(name::SRC_UUID).map(<[u8]>::len), Some(16));
        let h = Header::parse(&m).expect("header");
        assert_eq!(
            h,
            Header {
                kind: Kind::Status,
                src: "hbreal".into(),
                seq: Some(1),
                generation: 0x6b06_fba9,
                time: 0x6b06_fba8,
                dest: None,
            }
        );
        // Emit is the exact inverse of parse.
        assert_eq!(m.to_bytes(), HB_STATUS_SHA1);
        assert_eq!(m.buffer_len(), HB_STATUS_SHA1.len());
    }

    #[test]
    fn verifies_captured_signatures_sha1_md5_crc() {
        let keys = keys();
        for (bytes, id) in [
            (HB_STATUS_SHA1, 1),
            (HB_ACK_SHA1, 1),
            (HB_STATUS_MD5, 2),
            (HB_STATUS_CRC, 3),
            (HB_SHUTDONE, 1),
        ] {
            let m = Message::parse(bytes).expect("parse");
            assert_eq!(m.to_bytes(), bytes);
            // The netstring trailer, as heartbeat checks it.
            assert_eq!(m.verify(&keys), Ok(id));
            // The classic `auth` field inside: our classic text is heartbeat's.
            let auth = m.get(name::AUTH).expect("auth");
            assert_eq!(keys.verify(auth, &m.auth_text()), Ok(id));
            // Re-signing with the same key gives heartbeat's bytes back.
            let sending = AuthKeys::single(id, keys.get(id).expect("key").method, "secretkey");
            let mut resigned = m.clone();
            resigned.sign(&sending);
            assert_eq!(resigned.to_bytes(), bytes);
        }
        // Another secret: rejected.
        let other = AuthKeys::single(1, Method::Sha1, "other");
        let m = Message::parse(HB_STATUS_SHA1).expect("parse");
        assert_eq!(m.verify(&other), Err(AuthError::Mismatch { key: 1 }));
        // A flipped bit in a field: rejected.
        let mut bytes = HB_STATUS_SHA1.to_vec();
        let at = bytes.windows(8).position(|w| w == b"st=init,").expect("st");
        bytes[at + 3] = b'I';
        let m = Message::parse(&bytes).expect("still well-formed");
        assert!(matches!(m.verify(&keys), Err(AuthError::Mismatch { .. })));
    }

    #[test]
    fn captured_ack_and_shutdone() {
        let m = Message::parse(HB_ACK_SHA1).expect("parse");
        let h = Header::parse(&m).expect("header");
        assert_eq!(
            (h.kind, h.seq, h.dest.as_deref()),
            (Kind::Ack, None, Some("hbreal"))
        );
        assert_eq!(m.get_hex(name::ACK_SEQ), Ok(Some(8)));
        let m = Message::parse(HB_SHUTDONE).expect("parse");
        let h = Header::parse(&m).expect("header");
        assert_eq!((h.kind, h.seq), (Kind::Shutdone, Some(0x1e)));
        assert_eq!(
            m.get_str(name::STATUS).map(NodeStatus::from),
            Some(NodeStatus::Dead)
        );
    }

    #[test]
    fn classic_round_trip_and_signature() {
        let mut m = Message::new(Format::Classic);
        m.push_str("t", "status").expect("t");
        m.push_str("st", "active").expect("st");
        m.push_str("src", "lvs1").expect("src");
        m.push(
            "srcuuid",
            FieldType::Binary,
            &[0xca, 0x44, 0x45, 0x8c, 0, 0x0a],
        )
        .expect("uuid");
        m.push_str("seq", "1f").expect("seq");
        m.push_str("dd_future", "kept").expect("unknown");
        let keys = AuthKeys::single(1, Method::Sha1, "secretkey");
        m.sign(&keys);
        let bytes = m.to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with(">>>\nt=status\nst=active\nsrc=lvs1\n(1)srcuuid=ykRFjAAK\nseq=1f\ndd_future=kept\nauth=1 "), "{text}");
        assert!(bytes.ends_with(b"\n<<<\n\0"));
        let parsed = Message::parse(&bytes).expect("parse");
        assert_eq!(parsed, m);
        assert_eq!(parsed.verify(&keys), Ok(1));
        // The digest is HMAC-SHA1 over the classic text without auth.
        let expected = Method::Sha1.digest(
            b"secretkey",
            b"t=status\nst=active\nsrc=lvs1\n(1)srcuuid=ykRFjAAK\nseq=1f\ndd_future=kept\n",
        );
        assert_eq!(
            parsed.get_str(name::AUTH),
            Some(format!("1 {expected}").as_str())
        );
        // Without the NUL byte too (heartbeat accepts both).
        let trimmed = &bytes[..bytes.len() - 1];
        let parsed = Message::parse(trimmed).expect("parse");
        assert_eq!(parsed.to_bytes(), trimmed);
        assert_eq!(parsed.verify(&keys), Ok(1));
        // Re-signing keeps auth in place.
        let mut again = parsed.clone();
        again.sign(&AuthKeys::single(2, Method::Md5, "k"));
        assert_eq!(again.fields().last().map(Field::name), Some("auth"));
        assert_eq!(again.fields().len(), parsed.fields().len());
    }

    #[test]
    fn netstring_signing_matches_heartbeat() {
        let captured = Message::parse(HB_STATUS_SHA1).expect("parse");
        let mut m = Message::new(Format::Netstring);
        for f in captured.fields().iter().filter(|f| f.name() != name::AUTH) {
            m.push(f.name(), f.kind(), f.value()).expect("field");
        }
        m.sign(&AuthKeys::single(1, Method::Sha1, "secretkey"));
        assert_eq!(m.to_bytes(), HB_STATUS_SHA1);
    }

    #[test]
    fn rejects_malformed() {
        let bad: &[(&[u8], MessageError)] = &[
            (b"", MessageError::Start),
            (b"<<<\n", MessageError::Start),
            (b">>>\nt=status\n", MessageError::End),
            (b">>>\nt=status<<<\n", MessageError::Line),
            (b">>>\nnoequals\n<<<\n", MessageError::Line),
            (b">>>\n=x\n<<<\n", MessageError::Name),
            (b">>>\n\n<<<\n", MessageError::Line),
            (b">>>\n(0)t=x\n<<<\n", MessageError::FieldType),
            (b">>>\n(x)t=x\n<<<\n", MessageError::FieldType),
            (b">>>\n(1t=x\n<<<\n", MessageError::FieldType),
            (
                b">>>\n(1)u=***\n<<<\n",
                MessageError::Base64 {
                    name: String::new(),
                },
            ),
            (
                b">>>\nt=a\rb\n<<<\n",
                MessageError::Value {
                    name: String::new(),
                },
            ),
            (b">>>\nt=x\n<<<\n\0\0", MessageError::End),
            (b">>>\nt=x\n<<<\nmore", MessageError::End),
            (b"###\n", MessageError::End),
            (b"###\n5:(0)t=x%%%\n", MessageError::Netstring),
            (b"###\n05:(0)t=x,%%%\n", MessageError::Netstring),
            (b"###\n99:(0)t=x,%%%\n", MessageError::Netstring),
            (b"###\n3:t=x,%%%\n", MessageError::FieldType),
            (b"###\n4:(0)t,%%%\n", MessageError::Line),
            (b"###\n6:(0)t=x,%%%\n3:abc", MessageError::Netstring),
            (b"###\n6:(0)t=x,%%%\n3:abc,x", MessageError::End),
            (b"###\n99999999:(0)t=x,%%%\n", MessageError::Netstring),
        ];
        for (bytes, expected) in bad {
            let got = Message::parse(bytes);
            let same_kind = match (&got, expected) {
                (Err(MessageError::Base64 { .. }), MessageError::Base64 { .. })
                | (Err(MessageError::Value { .. }), MessageError::Value { .. }) => true,
                (Err(e), expected) => e == expected,
                _ => false,
            };
            assert!(
                same_kind,
                "{:?}: expected {expected:?}, got {got:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert!(matches!(
            Message::parse(&vec![b'>'; MAX_LEN + 1]),
            Err(MessageError::TooLong { .. })
        ));
        // Building: what the format cannot carry is refused.
        let mut m = Message::new(Format::Classic);
        assert_eq!(m.push_str("a=b", "x"), Err(MessageError::Name));
        assert_eq!(m.push_str("(1)a", "x"), Err(MessageError::Name));
        assert!(m.push_str("a", "x\ny").is_err());
        assert!(m.push("s", FieldType::Struct, b"x\ny").is_err());
        let mut n = Message::new(Format::Netstring);
        assert!(n.push("s", FieldType::Struct, b"###\nx\n").is_ok());
        assert!(n.push_str("a", "x\0").is_err());
        // Empty classic message.
        assert_eq!(
            Message::parse(b">>>\n<<<\n").expect("empty").fields(),
            &[] as &[Field]
        );
    }

    #[test]
    fn header_needs_protocol_fields() {
        let parse = |text: &str| {
            let m = Message::parse(text.as_bytes()).expect("parse");
            Header::parse(&m)
        };
        assert_eq!(
            parse(">>>\nsrc=a\nseq=1\nhg=1\nts=1\n<<<\n"),
            Err(MessageError::Missing("t"))
        );
        assert_eq!(
            parse(">>>\nt=status\nseq=1\nhg=1\nts=1\n<<<\n"),
            Err(MessageError::Missing("src"))
        );
        assert_eq!(
            parse(">>>\nt=status\nsrc=a\nhg=1\nts=1\n<<<\n"),
            Err(MessageError::Missing("seq"))
        );
        assert_eq!(
            parse(">>>\nt=status\nsrc=a\nseq=zz\nhg=1\nts=1\n<<<\n"),
            Err(MessageError::Bad("seq"))
        );
        assert_eq!(
            parse(">>>\nt=status\nsrc=a\nseq=1\nts=1\n<<<\n"),
            Err(MessageError::Missing("hg"))
        );
        assert_eq!(
            parse(">>>\nt=status\nsrc=a\nseq=1\nhg=11111111111111111\nts=1\n<<<\n"),
            Err(MessageError::Bad("hg"))
        );
        assert_eq!(
            parse(">>>\nt=status\nsrc=a\nseq=1\nhg=1\n<<<\n"),
            Err(MessageError::Missing("ts"))
        );
        let h = parse(">>>\nt=NS_ackmsg\nsrc=a\nhg=ff\nts=1\ndest=b\n<<<\n").expect("ack");
        assert_eq!((h.kind, h.seq, h.generation), (Kind::Ack, None, 255));
        assert_eq!(h.dest.as_deref(), Some("b"));
        let h = parse(">>>\nt=ip-request\nsrc=a\nseq=2\nhg=1\nts=1\n<<<\n").expect("other");
        assert_eq!(h.kind, Kind::Other("ip-request".into()));
    }

    fn arb_name() -> impl Strategy<Value = String> {
        "[a-z_][a-z0-9_(]{0,11}"
    }

    fn arb_field(format: Format) -> impl Strategy<Value = (String, FieldType, Vec<u8>)> {
        let text = "[ -~]{0,20}".prop_map(String::into_bytes);
        let any_bytes = proptest::collection::vec(any::<u8>(), 0..24);
        prop_oneof![
            (arb_name(), text.clone()).prop_map(|(n, v)| (n, FieldType::String, v)),
            (arb_name(), any_bytes.clone()).prop_map(|(n, v)| (n, FieldType::Binary, v)),
            (
                arb_name(),
                2u8..=9,
                if format == Format::Classic {
                    text.boxed()
                } else {
                    any_bytes.boxed()
                }
            )
                .prop_map(|(n, d, v)| (
                    n,
                    FieldType::from_digit(d).unwrap_or(FieldType::Struct),
                    v
                )),
        ]
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![Just(Format::Classic), Just(Format::Netstring)]
            .prop_flat_map(|format| {
                (
                    Just(format),
                    proptest::collection::vec(arb_field(format), 0..8),
                    any::<bool>(),
                    any::<bool>(),
                )
            })
            .prop_map(|(format, fields, signed, nul)| {
                let mut m = Message::new(format);
                for (name, kind, value) in fields {
                    m.push(&name, kind, &value).expect("legal field");
                }
                if signed {
                    m.sign(&AuthKeys::single(4, Method::Sha256, "k"));
                }
                if format == Format::Classic {
                    m.nul = nul;
                }
                m
            })
    }

    proptest! {
        #[test]
        fn round_trip(m in arb_message()) {
            let bytes = m.to_bytes();
            let parsed = Message::parse(&bytes).expect("parse what we emit");
            prop_assert_eq!(&parsed, &m);
            prop_assert_eq!(parsed.to_bytes(), bytes);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(m) = Message::parse(&bytes) {
                let _ = Header::parse(&m);
                let _ = m.verify(&keys());
                prop_assert_eq!(Message::parse(&m.to_bytes()), Ok(m));
            }
        }

        #[test]
        fn mutated_captures_never_panic(
            which in 0usize..4,
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in any::<usize>(),
        ) {
            let mut bytes = [HB_STATUS_SHA1, HB_ACK_SHA1, HB_STATUS_MD5, HB_SHUTDONE][which].to_vec();
            for (at, b) in edits {
                let at = at % bytes.len();
                bytes[at] = b;
            }
            bytes.truncate(cut % (bytes.len() + 1));
            for prefix in [&b">>>\n"[..], b""] {
                let mut candidate = prefix.to_vec();
                candidate.extend_from_slice(&bytes);
                if let Ok(m) = Message::parse(&candidate) {
                    let _ = Header::parse(&m);
                    let _ = m.verify(&keys());
                }
            }
        }
    }
}
