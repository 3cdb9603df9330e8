//! What a check is: plain, validated values. directord's config validation builds
//! these (every problem reported with file:line:column there); the checkers accept only
//! these types, so a check never meets a malformed option at run time.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Serialize, Serializer};

/// One health check, applied to each real server of a service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// Time between the starts of two rounds (fixed rate, not after completion).
    pub interval: Duration,
    /// Bound on one attempt, connect to verdict.
    pub timeout: Duration,
    /// Consecutive successful rounds that bring a down real server up.
    pub rise: u32,
    /// Consecutive failed rounds that take an up real server down.
    pub fall: u32,
    /// Further attempts within one round after a failed one; the round fails only
    /// when all fail.
    pub retry: u32,
    /// Pause before each such further attempt.
    pub retry_delay: Duration,
    /// The state before the first verdict.
    pub initial: Health,
    pub connect: Connect,
    pub protocol: Protocol,
}

/// Where a check connects. Defaults to the real server's own address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Connect {
    /// Connect to this address instead of the real server's.
    pub ip: Option<IpAddr>,
    /// Connect to this port instead of the real server's.
    pub port: Option<u16>,
    /// Bind the checking socket to this source address.
    pub bind: Option<IpAddr>,
}

impl Connect {
    /// The address to connect to for a real server at `real`. A real server port of
    /// 0 (fwmark services) with no `port` override stays 0: the protocol's default
    /// port applies ([`Protocol::default_port`]).
    pub fn target(&self, real: SocketAddr) -> SocketAddr {
        SocketAddr::new(
            self.ip.unwrap_or(real.ip()),
            self.port.unwrap_or(real.port()),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Up,
    Down,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Protocol {
    Tcp(Tcp),
    Http(Http),
    Ping,
    Dns(Dns),
    Smtp(Smtp),
    External(External),
    Ftp(Ftp),
    Imap(Imap),
    Pop(Pop),
    Nntp(Nntp),
    Ldap(Ldap),
    Mysql(Sql),
    Postgres(Sql),
    Radius(Radius),
    Sip(Sip),
}

impl Protocol {
    pub fn name(&self) -> &'static str {
        match self {
            Protocol::Tcp(_) => "tcp",
            Protocol::Http(h) if h.tls.is_some() => "https",
            Protocol::Http(_) => "http",
            Protocol::Ping => "ping",
            Protocol::Dns(_) => "dns",
            Protocol::Smtp(_) => "smtp",
            Protocol::External(_) => "external",
            Protocol::Ftp(_) => "ftp",
            Protocol::Imap(_) => "imap",
            Protocol::Pop(_) => "pop",
            Protocol::Nntp(_) => "nntp",
            Protocol::Ldap(_) => "ldap",
            Protocol::Mysql(_) => "mysql",
            Protocol::Postgres(_) => "postgres",
            Protocol::Radius(_) => "radius",
            Protocol::Sip(_) => "sip",
        }
    }

    /// The port used when neither the real server nor `connect_port` gives one.
    pub fn default_port(&self) -> u16 {
        match self {
            Protocol::Http(h) if h.tls.is_some() => 443,
            Protocol::Http(_) => 80,
            Protocol::Dns(_) => 53,
            Protocol::Smtp(_) => 25,
            Protocol::Ftp(f) => f.tls.port(21, 990),
            Protocol::Imap(i) => i.tls.port(143, 993),
            Protocol::Pop(p) => p.tls.port(110, 995),
            Protocol::Nntp(n) => n.tls.port(119, 563),
            Protocol::Ldap(l) => l.tls.port(389, 636),
            Protocol::Mysql(_) => 3306,
            Protocol::Postgres(_) => 5432,
            Protocol::Radius(_) => 1812,
            Protocol::Sip(_) => 5060,
            Protocol::Tcp(_) | Protocol::Ping | Protocol::External(_) => 0,
        }
    }
}

/// TCP connect; with `send`/`expect`, send bytes and match the reply.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Tcp {
    /// Bytes to send after connecting (escapes such as `\r\n` already decoded).
    pub send: Option<Vec<u8>>,
    /// The reply must match this; read until it does, the peer closes, or the
    /// timeout (bounded to [`MAX_REPLY`] bytes).
    pub expect: Option<Pattern>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Http {
    /// `Some` for HTTPS.
    pub tls: Option<Tls>,
    pub method: Method,
    /// Path and query, starting with '/'.
    pub path: String,
    /// Sent as Host (and, with TLS, as SNI); default: the connect address.
    pub host: Option<String>,
    /// Accepted status codes; a response passes when any range holds its status.
    pub expect_status: Vec<RangeInclusive<u16>>,
    /// The body must match (read up to [`MAX_BODY`] bytes).
    pub expect_body: Option<Pattern>,
    /// MD5 of the whole body, as keepalived's `digest` (read up to [`MAX_BODY`]).
    pub expect_digest: Option<[u8; 16]>,
    /// Extra request headers, in order.
    pub headers: Vec<(String, String)>,
    pub basic_auth: Option<BasicAuth>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Method {
    #[serde(rename = "GET")]
    Get,
    #[serde(rename = "HEAD")]
    Head,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BasicAuth {
    pub user: String,
    pub password: Secret,
}

/// TLS client options (HTTPS, SMTP STARTTLS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tls {
    /// Verify the certificate chain and name (default true).
    pub verify: bool,
    /// Trust anchors in PEM instead of the system store (`/etc/ssl/certs`).
    pub ca_file: Option<PathBuf>,
    /// The name for SNI and verification; default: the HTTP host, else the
    /// connect address.
    pub server_name: Option<String>,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            verify: true,
            ca_file: None,
            server_name: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dns {
    pub name: String,
    pub query_type: QueryType,
    /// The response code that means up (default NOERROR).
    pub expect_rcode: Rcode,
    /// When set, some answer record of the query type must have this value, in
    /// presentation form ("192.0.2.1", "mail.example.org.").
    pub expect_answer: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Smtp {
    /// The EHLO name (default: this host's name).
    pub helo: Option<String>,
    /// `Some`: issue STARTTLS after EHLO and complete the handshake.
    pub starttls: Option<Tls>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct External {
    /// The program and its arguments (split like a shell would, without a shell).
    /// The real server is also given as `$1` address and `$2` port appended, and in
    /// the environment as `DIRECTORD_REAL_IP` / `DIRECTORD_REAL_PORT`.
    pub argv: Vec<String>,
}

/// Upper bound on an HTTP body read for `expect_body` / `expect_digest`.
pub const MAX_BODY: usize = 1 << 20;
/// Upper bound on a TCP/SMTP reply read.
pub const MAX_REPLY: usize = 64 << 10;

/// A compiled regular expression over bytes, compared and shown by its source.
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::bytes::Regex);

impl Pattern {
    pub fn new(source: &str) -> Result<Pattern, regex::Error> {
        regex::bytes::Regex::new(source).map(Pattern)
    }
    pub fn is_match(&self, haystack: &[u8]) -> bool {
        self.0.is_match(haystack)
    }
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Pattern {}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A DNS query type by mnemonic, or `TYPE<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum QueryType {
    A,
    Aaaa,
    Cname,
    Mx,
    Ns,
    Ptr,
    Soa,
    Srv,
    Txt,
    Other(u16),
}

impl QueryType {
    pub fn code(self) -> u16 {
        match self {
            QueryType::A => 1,
            QueryType::Ns => 2,
            QueryType::Cname => 5,
            QueryType::Soa => 6,
            QueryType::Ptr => 12,
            QueryType::Mx => 15,
            QueryType::Txt => 16,
            QueryType::Aaaa => 28,
            QueryType::Srv => 33,
            QueryType::Other(n) => n,
        }
    }
}

impl FromStr for QueryType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "A" => QueryType::A,
            "AAAA" => QueryType::Aaaa,
            "CNAME" => QueryType::Cname,
            "MX" => QueryType::Mx,
            "NS" => QueryType::Ns,
            "PTR" => QueryType::Ptr,
            "SOA" => QueryType::Soa,
            "SRV" => QueryType::Srv,
            "TXT" => QueryType::Txt,
            other => match other.strip_prefix("TYPE").and_then(|n| n.parse().ok()) {
                Some(n) => QueryType::Other(n),
                None => {
                    return Err(format!(
                        "unknown DNS query type \"{s}\", expected A, AAAA, CNAME, MX, NS, PTR, SOA, SRV, TXT or TYPE<n>"
                    ));
                }
            },
        })
    }
}

/// A DNS response code by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Rcode {
    NoError,
    FormErr,
    ServFail,
    NxDomain,
    NotImp,
    Refused,
}

impl Rcode {
    pub fn code(self) -> u16 {
        match self {
            Rcode::NoError => 0,
            Rcode::FormErr => 1,
            Rcode::ServFail => 2,
            Rcode::NxDomain => 3,
            Rcode::NotImp => 4,
            Rcode::Refused => 5,
        }
    }
}

impl FromStr for Rcode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "NOERROR" => Rcode::NoError,
            "FORMERR" => Rcode::FormErr,
            "SERVFAIL" => Rcode::ServFail,
            "NXDOMAIN" => Rcode::NxDomain,
            "NOTIMP" => Rcode::NotImp,
            "REFUSED" => Rcode::Refused,
            _ => {
                return Err(format!(
                    "unknown DNS rcode \"{s}\", expected NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP or REFUSED"
                ));
            }
        })
    }
}

/// A password or shared secret: given inline or read from a file at config load.
/// Its value never appears in `Debug`, in serialized status, or in errors.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    /// Where it came from, for the operator: `None` inline, else the file.
    file: Option<PathBuf>,
}

impl Secret {
    pub fn inline(value: impl Into<String>) -> Secret {
        Secret {
            value: value.into(),
            file: None,
        }
    }

    /// A secret read from `file` (its content, without one trailing newline).
    pub fn from_file(value: impl Into<String>, file: PathBuf) -> Secret {
        Secret {
            value: value.into(),
            file: Some(file),
        }
    }

    /// The secret itself: only for putting on the wire.
    pub fn expose(&self) -> &str {
        &self.value
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.file {
            Some(path) => write!(f, "<secret from {}>", path.display()),
            None => f.write_str("<secret>"),
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{self:?}"))
    }
}

/// A user name and its password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Login {
    pub user: String,
    pub password: Secret,
}

/// How a line protocol (FTP, IMAP, POP, NNTP, LDAP) uses TLS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain text.
    None,
    /// TLS from the first byte (ftps, imaps, pop3s, nntps, ldaps).
    Implicit(Tls),
    /// Upgraded in the session (FTP AUTH TLS, IMAP STARTTLS, POP STLS, NNTP
    /// STARTTLS, LDAP StartTLS); a server that does not offer it is down.
    StartTls(Tls),
}

impl TlsMode {
    /// The protocol's port for this mode.
    pub fn port(&self, plain: u16, implicit: u16) -> u16 {
        match self {
            TlsMode::Implicit(_) => implicit,
            TlsMode::None | TlsMode::StartTls(_) => plain,
        }
    }

    pub fn tls(&self) -> Option<&Tls> {
        match self {
            TlsMode::None => None,
            TlsMode::Implicit(t) | TlsMode::StartTls(t) => Some(t),
        }
    }
}

/// FTP: 220 greeting, login, optionally RETR of a file over a passive data
/// connection whose content must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ftp {
    pub tls: TlsMode,
    /// `None`: anonymous (user `anonymous`, password `directord@`).
    pub login: Option<Login>,
    /// A file to retrieve (PASV/EPSV, binary), read up to [`MAX_BODY`] bytes.
    pub retrieve: Option<String>,
    /// What the retrieved file must match (only with `retrieve`).
    pub expect: Option<Pattern>,
}

/// IMAP: greeting (`* OK`), optionally LOGIN, LOGOUT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Imap {
    pub tls: TlsMode,
    pub login: Option<Login>,
}

/// POP3: `+OK` greeting, optionally USER/PASS, QUIT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pop {
    pub tls: TlsMode,
    pub login: Option<Login>,
}

/// NNTP: 200/201 greeting, optionally GROUP (211 expected), QUIT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nntp {
    pub tls: TlsMode,
    pub group: Option<String>,
}

/// LDAP: bind (anonymous, or simple with a DN and password), then a search under
/// `base_dn` that must return at least one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ldap {
    pub tls: TlsMode,
    /// `None`: anonymous bind.
    pub bind: Option<LdapBind>,
    pub base_dn: String,
    /// Default `(objectClass=*)`.
    pub filter: String,
    pub scope: LdapScope,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LdapBind {
    pub dn: String,
    pub password: Secret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LdapScope {
    Base,
    One,
    Sub,
}

/// MySQL / PostgreSQL: connect, authenticate, run `query`, which must return at
/// least one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sql {
    pub login: Login,
    pub database: Option<String>,
    /// Default `SELECT 1`.
    pub query: String,
    /// `Some`: require TLS (verified per the options).
    pub tls: Option<Tls>,
}

/// RADIUS: Access-Request (PAP) with Message-Authenticator; the response
/// authenticator is verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Radius {
    pub secret: Secret,
    pub login: Login,
    /// NAS-Identifier attribute (default `directord`).
    pub nas_identifier: Option<String>,
    /// An Access-Reject also counts as alive (the server answered, properly signed).
    pub accept_reject: bool,
}

/// SIP: OPTIONS, expecting `SIP/2.0 200` with our Call-ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sip {
    pub transport: SipTransport,
    /// Request-URI; default `sip:<connect address>`.
    pub uri: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SipTransport {
    Udp,
    Tcp,
}
