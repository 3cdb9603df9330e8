//! MySQL / MariaDB and PostgreSQL checks: connect, authenticate as the check's
//! user, run its query, which must return at least one row, and close.
//!
//! Both connect from our own socket (so `bind` works), use the check's shared TLS
//! client ([`crate::tls`]: system store or `ca_file`, `verify`, `server_name`), and
//! keep to one deadline over the whole attempt. Reasons name the step and quote the
//! server: "login as monitor rejected: 1045 Access denied for user ...",
//! "query failed: 42P01 relation \"nope\" does not exist", "query returned no row".
//! The password is only ever put on the wire, and any reason that would contain it
//! (a server echoing it) has it replaced by `<password>`.
//!
//! # MySQL: a client written here, not mysql_async
//! mysql_async opens its own TCP connection (no source address), builds its own
//! rustls client per connection with Mozilla's bundled roots instead of the system
//! store, needs a process-wide rustls provider, and adds ~70 crates and ~30 s of
//! build. A health check needs a small part of the protocol: the handshake, an
//! optional SSLRequest and TLS, the login, one COM_QUERY whose first row is enough,
//! and COM_QUIT.
//!
//! - Authentication: `mysql_native_password` (MariaDB's and MySQL 5.7's default) and
//!   `caching_sha2_password` (MySQL 8's): its fast path, and its full exchange with
//!   the password sent over TLS, or without TLS encrypted with the server's RSA key
//!   (RSA-OAEP, MySQL 8.0.5+). That key is the one the server sends, as with
//!   mysql_async or `mysql --get-server-public-key`: only verified TLS keeps the
//!   password from a server impersonating the real one. `mysql_clear_password`
//!   only over TLS; other plugins are down with their name.
//! - Every packet is bounded: a packet we keep is cut to [`MAX_REPLY`] bytes and the
//!   rest read and dropped; a greeting that is not a MySQL handshake (bad sequence,
//!   length or protocol version) is "malformed handshake" with what the server sent.
//! - No `CLIENT_LOCAL_FILES`: a server asking for a local file is refused.
//!
//! # PostgreSQL: tokio-postgres over our stream
//! `Config::connect_raw` runs over a socket opened here; TLS is `sslmode=require`
//! through a small [`tokio_postgres::tls::TlsConnect`] over the shared rustls client
//! (no tokio-postgres-rustls needed). The raw stream is watched: the first answer
//! must look like PostgreSQL (else "malformed handshake"), a request for the
//! password in clear text without TLS is refused (the password would cross the
//! network readable), and the bytes read are bounded to [`MAX_BODY`]. The query
//! goes as a simple query and the first row is enough.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsConnector;

use crate::session::{SHOWN, verdict_redacted};
use crate::spec::{MAX_BODY, MAX_REPLY, Sql};
use crate::tcp::{self, io_reason};
use crate::{Error, Stop, Target, Verdict, down, tls};

/// Values sent NUL-terminated cannot contain NUL; the value itself is not shown
/// (it may be the password).
fn check_no_nul(db: &str, what: &str, value: &str) -> Result<(), Error> {
    if value.contains('\0') {
        return Err(Error::Option {
            message: format!("the {db} {what} contains a NUL byte, which cannot be sent"),
        });
    }
    Ok(())
}

/// The outcome as the probe returns it, the password taken out of any reason.
fn verdict(outcome: Result<(), Stop>, spec: &Sql) -> Result<Verdict, Error> {
    verdict_redacted(outcome, spec.login.password.expose())
}

/// A piece of what the server said, for a reason: at most [`SHOWN`] characters,
/// control characters escaped, quotes kept (SQL messages are full of them:
/// "Table 'app.nope' doesn't exist").
fn shown(text: &str) -> String {
    let text = text.trim();
    let mut s = String::with_capacity(text.len().min(SHOWN));
    for c in text.chars().take(SHOWN) {
        if c.is_control() {
            s.extend(c.escape_default());
        } else {
            s.push(c);
        }
    }
    if text.chars().count() > SHOWN {
        s.push_str("...");
    }
    s
}

/// [`shown`] for raw bytes (invalid UTF-8 shown as U+FFFD).
fn shown_bytes(bytes: &[u8]) -> String {
    shown(&String::from_utf8_lossy(bytes))
}

// ---------------------------------------------------------------------------
// MySQL / MariaDB
// ---------------------------------------------------------------------------

#[derive(Debug)]
pub(crate) struct MysqlPrepared {
    tls: Option<tls::Client>,
}

impl MysqlPrepared {
    pub(crate) fn new(spec: &Sql) -> Result<MysqlPrepared, Error> {
        check_no_nul("MySQL", "user", &spec.login.user)?;
        check_no_nul("MySQL", "password", spec.login.password.expose())?;
        if let Some(db) = &spec.database {
            check_no_nul("MySQL", "database", db)?;
        }
        if spec.query.len() + 1 >= mysql::MAX_PACKET {
            return Err(Error::Option {
                message: "the MySQL query is too long (16 MiB at most)".into(),
            });
        }
        Ok(MysqlPrepared {
            tls: tls::client(spec.tls.as_ref())?,
        })
    }
}

pub(crate) async fn probe_mysql(
    p: &MysqlPrepared,
    spec: &Sql,
    t: &Target,
) -> Result<Verdict, Error> {
    let deadline = Instant::now() + t.timeout;
    verdict(mysql::session(p, spec, t, deadline).await, spec)
}

mod mysql {
    use super::*;

    use sha1::Sha1;
    use sha2::{Digest, Sha256};

    use crate::session::Stream;

    /// A payload of this length continues in the next packet.
    pub(super) const MAX_PACKET: usize = 0xff_ffff;
    /// Bound on the server's greeting (a real one is about 100 bytes).
    const MAX_GREETING: usize = 16 << 10;

    mod capability {
        pub const LONG_PASSWORD: u32 = 0x1;
        pub const CONNECT_WITH_DB: u32 = 0x8;
        pub const PROTOCOL_41: u32 = 0x200;
        pub const SSL: u32 = 0x800;
        pub const TRANSACTIONS: u32 = 0x2000;
        pub const SECURE_CONNECTION: u32 = 0x8000;
        pub const MULTI_RESULTS: u32 = 0x2_0000;
        pub const PLUGIN_AUTH: u32 = 0x8_0000;
        pub const PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 0x20_0000;
    }

    /// utf8mb4_general_ci: known to MySQL 5.5+ and every MariaDB.
    const CHARSET: u8 = 45;
    const COM_QUIT: u8 = 0x01;
    const COM_QUERY: u8 = 0x03;

    const NATIVE: &str = "mysql_native_password";
    const CACHING_SHA2: &str = "caching_sha2_password";
    const CLEAR: &str = "mysql_clear_password";

    /// The steps of a session, for the reasons.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Step {
        Handshake,
        Login,
        Query,
    }

    /// What the server's first packet says.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(super) struct Greeting {
        pub(super) capabilities: u32,
        /// The 20-byte scramble, both parts.
        pub(super) nonce: Vec<u8>,
        /// The server's default auth plugin (`None`: before plugin auth).
        pub(super) plugin: Option<String>,
    }

    /// Parses a protocol-10 handshake packet; `None` if it is not one.
    pub(super) fn parse_greeting(p: &[u8]) -> Option<Greeting> {
        let mut r = Reader(p);
        if r.u8()? != 10 {
            return None;
        }
        r.nul_str()?; // server version
        r.take(4)?; // connection id
        let mut nonce = r.take(8)?.to_vec();
        r.u8()?; // filler
        let mut capabilities = u32::from(r.u16()?);
        if r.0.is_empty() {
            return Some(Greeting {
                capabilities,
                nonce,
                plugin: None,
            });
        }
        r.u8()?; // character set
        r.u16()?; // status
        capabilities |= u32::from(r.u16()?) << 16;
        let auth_len = usize::from(r.u8()?);
        r.take(10)?; // reserved (MariaDB keeps its extended capabilities here)
        if capabilities & capability::SECURE_CONNECTION != 0 {
            let len = auth_len.saturating_sub(8).max(13);
            let part = r.take(len.min(r.0.len()))?;
            // The second part ends with a NUL that is not part of the scramble.
            let part = part.strip_suffix(&[0]).unwrap_or(part);
            nonce.extend_from_slice(part);
        }
        let plugin = if capabilities & capability::PLUGIN_AUTH != 0 {
            // Some servers omit the final NUL.
            let rest = r.0;
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            Some(String::from_utf8_lossy(&rest[..end]).into_owned())
        } else {
            None
        };
        Some(Greeting {
            capabilities,
            nonce,
            plugin,
        })
    }

    /// An ERR packet (`0xff`): "1045 Access denied for user ...".
    pub(super) fn parse_err(p: &[u8]) -> String {
        let mut r = Reader(p);
        let (Some(0xff), Some(code)) = (r.u8(), r.u16()) else {
            return format!("malformed error packet \"{}\"", shown_bytes(p));
        };
        // With PROTOCOL_41: '#' and a five-character SQL state before the message.
        if r.0.first() == Some(&b'#') && r.0.len() >= 6 {
            r.take(6);
        }
        let message = shown_bytes(r.0);
        if message.is_empty() {
            code.to_string()
        } else {
            format!("{code} {message}")
        }
    }

    /// mysql_native_password: SHA1(pw) XOR SHA1(nonce + SHA1(SHA1(pw))).
    pub(super) fn scramble_native(nonce: &[u8], password: &[u8]) -> Vec<u8> {
        if password.is_empty() {
            return Vec::new();
        }
        let stage1 = Sha1::digest(password);
        let stage2 = Sha1::digest(stage1);
        let mix = Sha1::new()
            .chain_update(nonce)
            .chain_update(stage2)
            .finalize();
        stage1.iter().zip(mix.iter()).map(|(a, b)| a ^ b).collect()
    }

    /// caching_sha2_password fast path:
    /// SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + nonce).
    pub(super) fn scramble_sha256(nonce: &[u8], password: &[u8]) -> Vec<u8> {
        if password.is_empty() {
            return Vec::new();
        }
        let stage1 = Sha256::digest(password);
        let stage2 = Sha256::digest(stage1);
        let mix = Sha256::new()
            .chain_update(stage2)
            .chain_update(nonce)
            .finalize();
        stage1.iter().zip(mix.iter()).map(|(a, b)| a ^ b).collect()
    }

    /// The password, NUL-terminated, XORed with the nonce and encrypted with the
    /// server's RSA key (PEM, SubjectPublicKeyInfo or PKCS#1) with OAEP/SHA-1.
    pub(super) fn encrypt_password(
        password: &[u8],
        nonce: &[u8],
        pem: &[u8],
    ) -> Result<Vec<u8>, String> {
        use rsa::pkcs1::DecodeRsaPublicKey;
        use rsa::pkcs8::DecodePublicKey;

        let pem = std::str::from_utf8(pem).map_err(|_| "the server's RSA key is not PEM")?;
        let pem = pem.trim_matches(|c: char| c == '\0' || c.is_whitespace());
        let key = rsa::RsaPublicKey::from_public_key_pem(pem)
            .or_else(|_| rsa::RsaPublicKey::from_pkcs1_pem(pem))
            .map_err(|e| format!("the server's RSA key does not load: {e}"))?;
        let mut plain: Vec<u8> = password.iter().copied().chain([0]).collect();
        if !nonce.is_empty() {
            for (i, b) in plain.iter_mut().enumerate() {
                *b ^= nonce[i % nonce.len()];
            }
        }
        key.encrypt(&mut rsa::rand_core::OsRng, rsa::Oaep::new::<Sha1>(), &plain)
            .map_err(|e| format!("cannot encrypt the password with the server's RSA key: {e}"))
    }

    /// A length-encoded integer at the start of `p`.
    pub(super) fn lenenc(p: &[u8]) -> Option<u64> {
        let mut r = Reader(p);
        match r.u8()? {
            n @ 0..=0xfa => Some(u64::from(n)),
            0xfc => r.u16().map(u64::from),
            0xfd => r
                .take(3)
                .map(|b| u64::from_le_bytes([b[0], b[1], b[2], 0, 0, 0, 0, 0])),
            0xfe => r
                .take(8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes),
            _ => None,
        }
    }

    /// A cursor over a packet's payload.
    struct Reader<'a>(&'a [u8]);

    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            if self.0.len() < n {
                return None;
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Some(head)
        }

        fn u8(&mut self) -> Option<u8> {
            self.take(1).map(|b| b[0])
        }

        fn u16(&mut self) -> Option<u16> {
            self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
        }

        fn nul_str(&mut self) -> Option<&'a [u8]> {
            let end = self.0.iter().position(|&b| b == 0)?;
            let s = self.take(end)?;
            self.take(1)?;
            Some(s)
        }
    }

    /// One packet as read: its payload (cut to the bound) and full length.
    #[derive(Debug)]
    struct Packet {
        payload: Vec<u8>,
        len: usize,
    }

    impl Packet {
        fn first(&self) -> Option<u8> {
            self.payload.first().copied()
        }

        /// The end of a result set (EOF packet; a row is never this short with 0xfe).
        fn is_eof(&self) -> bool {
            self.first() == Some(0xfe) && self.len < 9
        }
    }

    enum ReadError {
        Closed,
        Io(io::Error),
        TimedOut,
    }

    /// The packet exchange over a plain or TLS stream.
    struct Conn {
        io: BufReader<Stream>,
        seq: u8,
        deadline: Instant,
        timeout_ms: u128,
    }

    impl Conn {
        async fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ReadError> {
            match timeout_at(self.deadline, self.io.read_exact(buf)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Err(ReadError::Closed),
                Ok(Err(e)) => Err(ReadError::Io(e)),
                Err(_) => Err(ReadError::TimedOut),
            }
        }

        /// Reads and drops `n` bytes.
        async fn skip(&mut self, mut n: usize) -> Result<(), ReadError> {
            let mut sink = [0u8; 8192];
            while n > 0 {
                let chunk = n.min(sink.len());
                self.read_exact(&mut sink[..chunk]).await?;
                n -= chunk;
            }
            Ok(())
        }

        async fn header(&mut self) -> Result<(usize, u8), ReadError> {
            let mut h = [0u8; 4];
            self.read_exact(&mut h).await?;
            Ok((
                usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16,
                h[3],
            ))
        }

        /// The next packet, its payload cut to [`MAX_REPLY`] bytes (the rest read
        /// and dropped, continuation packets included).
        async fn packet(&mut self) -> Result<Packet, ReadError> {
            let mut payload = Vec::new();
            let mut total = 0;
            loop {
                let (len, seq) = self.header().await?;
                self.seq = seq.wrapping_add(1);
                let keep = len.min(MAX_REPLY - payload.len());
                let start = payload.len();
                payload.resize(start + keep, 0);
                self.read_exact(&mut payload[start..]).await?;
                self.skip(len - keep).await?;
                total += len;
                if len < MAX_PACKET {
                    return Ok(Packet {
                        payload,
                        len: total,
                    });
                }
            }
        }

        /// The next packet, or the reason it did not come.
        async fn expect(&mut self, step: Step, user: &str) -> Result<Packet, Stop> {
            match self.packet().await {
                Ok(p) => Ok(p),
                Err(e) => down(self.read_reason(e, step, user)),
            }
        }

        fn read_reason(&self, e: ReadError, step: Step, user: &str) -> String {
            match (e, step) {
                (ReadError::Closed, Step::Handshake) => {
                    "connection closed before the handshake".into()
                }
                (ReadError::Closed, Step::Login) => {
                    format!("login as {user}: connection closed")
                }
                (ReadError::Closed, Step::Query) => {
                    "connection closed before the answer to the query".into()
                }
                (ReadError::Io(e), Step::Handshake) => format!("handshake: {}", io_reason(&e)),
                (ReadError::Io(e), Step::Login) => format!("login as {user}: {}", io_reason(&e)),
                (ReadError::Io(e), Step::Query) => format!("query: {}", io_reason(&e)),
                (ReadError::TimedOut, Step::Handshake) => {
                    format!("no handshake within {} ms", self.timeout_ms)
                }
                (ReadError::TimedOut, Step::Login) => {
                    format!("login as {user}: no answer within {} ms", self.timeout_ms)
                }
                (ReadError::TimedOut, Step::Query) => {
                    format!("query: no answer within {} ms", self.timeout_ms)
                }
            }
        }

        /// Sends one packet (payload under 16 MiB) with the next sequence number.
        async fn send(&mut self, payload: &[u8], step: Step, user: &str) -> Result<(), Stop> {
            let len = payload.len();
            let mut packet = Vec::with_capacity(4 + len);
            packet.extend_from_slice(&[len as u8, (len >> 8) as u8, (len >> 16) as u8, self.seq]);
            packet.extend_from_slice(payload);
            self.seq = self.seq.wrapping_add(1);
            let write = async {
                let stream = self.io.get_mut();
                stream.write_all(&packet).await?;
                stream.flush().await
            };
            let what = match step {
                Step::Handshake => "handshake".to_owned(),
                Step::Login => format!("login as {user}"),
                Step::Query => "query".to_owned(),
            };
            match timeout_at(self.deadline, write).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => down(format!("{what}: {}", io_reason(&e))),
                Err(_) => down(format!("{what}: not sent within {} ms", self.timeout_ms)),
            }
        }
    }

    pub(super) async fn session(
        p: &MysqlPrepared,
        spec: &Sql,
        t: &Target,
        deadline: Instant,
    ) -> Result<(), Stop> {
        let user = spec.login.user.as_str();
        let password = spec.login.password.expose().as_bytes();
        let tcp = tcp::connect(t, deadline).await?;
        let mut conn = Conn {
            io: BufReader::new(Stream::Plain(tcp)),
            seq: 0,
            deadline,
            timeout_ms: t.timeout.as_millis(),
        };

        let greeting = read_greeting(&mut conn).await?;
        if greeting.capabilities & capability::PROTOCOL_41 == 0
            || greeting.capabilities & capability::SECURE_CONNECTION == 0
        {
            return down("server speaks a protocol older than MySQL 4.1".into());
        }
        let mut capabilities = capability::LONG_PASSWORD
            | capability::PROTOCOL_41
            | capability::TRANSACTIONS
            | capability::SECURE_CONNECTION
            | capability::MULTI_RESULTS
            | (greeting.capabilities
                & (capability::PLUGIN_AUTH | capability::PLUGIN_AUTH_LENENC_CLIENT_DATA));
        if spec.database.is_some() {
            capabilities |= capability::CONNECT_WITH_DB;
        }

        let mut secure = false;
        if let Some(client) = &p.tls {
            if greeting.capabilities & capability::SSL == 0 {
                return down("server does not offer TLS".into());
            }
            capabilities |= capability::SSL;
            conn.send(&fixed_header(capabilities), Step::Handshake, user)
                .await?;
            if !conn.io.buffer().is_empty() {
                return down("server sent data before the TLS handshake".into());
            }
            let Stream::Plain(tcp) = conn.io.into_inner() else {
                unreachable!("TLS starts once, on the plain connection");
            };
            let handshake = client.handshake(t.addr.ip());
            let stream = tls::handshake(tcp, handshake, deadline, t.timeout).await?;
            conn.io = BufReader::new(Stream::Tls(Box::new(stream)));
            secure = true;
        }

        // A server whose default plugin we do not know gets mysql_native_password
        // and switches us to the user's own plugin if it differs.
        let mut plugin = match greeting.plugin.as_deref() {
            Some(p @ (NATIVE | CACHING_SHA2)) => p.to_owned(),
            _ => NATIVE.to_owned(),
        };
        let mut nonce = greeting.nonce.clone();
        let auth = auth_response(&plugin, &nonce, password, secure)?;
        let mut response = fixed_header(capabilities);
        response.extend_from_slice(user.as_bytes());
        response.push(0);
        // At most 32 bytes: a one-byte length, whether length-encoded or not.
        response.push(auth.len() as u8);
        response.extend_from_slice(&auth);
        if let Some(db) = &spec.database {
            response.extend_from_slice(db.as_bytes());
            response.push(0);
        }
        if capabilities & capability::PLUGIN_AUTH != 0 {
            response.extend_from_slice(plugin.as_bytes());
            response.push(0);
        }
        conn.send(&response, Step::Login, user).await?;

        // The login exchange: OK, ERR, an auth switch (once), or more data for
        // caching_sha2_password.
        let mut switched = false;
        loop {
            let packet = conn.expect(Step::Login, user).await?;
            match packet.first() {
                Some(0x00) => break,
                Some(0xff) => {
                    return down(format!(
                        "login as {user} rejected: {}",
                        parse_err(&packet.payload)
                    ));
                }
                Some(0xfe) if !switched => {
                    switched = true;
                    let mut r = Reader(&packet.payload[1..]);
                    let Some(name) = r.nul_str() else {
                        return down(format!(
                            "login as {user}: the server asks for the pre-4.1 password hash, which the check does not support"
                        ));
                    };
                    plugin = String::from_utf8_lossy(name).into_owned();
                    nonce = r.0.strip_suffix(&[0]).unwrap_or(r.0).to_vec();
                    let auth = auth_response(&plugin, &nonce, password, secure)?;
                    conn.send(&auth, Step::Login, user).await?;
                }
                Some(0x01) if plugin == CACHING_SHA2 => match packet.payload.get(1) {
                    // Fast authentication succeeded; the OK follows.
                    Some(0x03) => {}
                    // Full authentication: the password itself, over TLS or
                    // encrypted with the server's RSA key.
                    Some(0x04) if secure => {
                        let mut clear = password.to_vec();
                        clear.push(0);
                        conn.send(&clear, Step::Login, user).await?;
                    }
                    Some(0x04) => {
                        conn.send(&[0x02], Step::Login, user).await?;
                        let key = conn.expect(Step::Login, user).await?;
                        if key.first() != Some(0x01) {
                            if key.first() == Some(0xff) {
                                return down(format!(
                                    "login as {user} rejected: {}",
                                    parse_err(&key.payload)
                                ));
                            }
                            return down(format!(
                                "login as {user}: no RSA key from the server for caching_sha2_password"
                            ));
                        }
                        let encrypted = encrypt_password(password, &nonce, &key.payload[1..])
                            .map_err(|e| Stop::Down(format!("login as {user}: {e}")))?;
                        conn.send(&encrypted, Step::Login, user).await?;
                    }
                    _ => {
                        return down(format!(
                            "login as {user}: unexpected caching_sha2_password step \"{}\"",
                            shown_bytes(&packet.payload)
                        ));
                    }
                },
                _ => {
                    return down(format!(
                        "login as {user}: unexpected answer \"{}\"",
                        shown_bytes(&packet.payload)
                    ));
                }
            }
        }

        conn.seq = 0;
        let mut query = Vec::with_capacity(1 + spec.query.len());
        query.push(COM_QUERY);
        query.extend_from_slice(spec.query.as_bytes());
        conn.send(&query, Step::Query, user).await?;
        let outcome = read_result(&mut conn, user).await;
        if outcome.is_ok() {
            quit(conn).await;
        }
        outcome
    }

    /// The server's first packet: a handshake, or an error ("Too many connections",
    /// "Host ... is not allowed to connect").
    async fn read_greeting(conn: &mut Conn) -> Result<Greeting, Stop> {
        let (len, seq) = match conn.header().await {
            Ok(h) => h,
            Err(e) => return down(conn.read_reason(e, Step::Handshake, "")),
        };
        if seq != 0 || len == 0 || len > MAX_GREETING {
            // Not MySQL: show what came ("SSH-2.0-...", "HTTP/1.1 400 ...").
            let mut head = vec![len as u8, (len >> 8) as u8, (len >> 16) as u8, seq];
            head.extend_from_slice(conn.io.buffer());
            return down(format!("malformed handshake: \"{}\"", shown_bytes(&head)));
        }
        let mut payload = vec![0u8; len];
        if let Err(e) = conn.read_exact(&mut payload).await {
            return down(conn.read_reason(e, Step::Handshake, ""));
        }
        conn.seq = 1;
        if payload[0] == 0xff {
            return down(format!("handshake: {}", parse_err(&payload)));
        }
        match parse_greeting(&payload) {
            Some(g) => Ok(g),
            None => down(format!(
                "malformed handshake: \"{}\"",
                shown_bytes(&payload)
            )),
        }
    }

    /// Capabilities, max packet size, character set and 23 reserved bytes: the
    /// SSLRequest, and the start of the handshake response.
    fn fixed_header(capabilities: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&capabilities.to_le_bytes());
        out.extend_from_slice(&(MAX_PACKET as u32).to_le_bytes());
        out.push(CHARSET);
        out.extend_from_slice(&[0; 23]);
        out
    }

    fn auth_response(
        plugin: &str,
        nonce: &[u8],
        password: &[u8],
        secure: bool,
    ) -> Result<Vec<u8>, Stop> {
        match plugin {
            NATIVE => Ok(scramble_native(nonce, password)),
            CACHING_SHA2 => Ok(scramble_sha256(nonce, password)),
            CLEAR if secure => Ok(password.iter().copied().chain([0]).collect()),
            CLEAR => down(
                "server asks for the password in clear text (mysql_clear_password) without TLS; refused"
                    .into(),
            ),
            other => down(format!(
                "server asks for auth plugin {}, which the check does not support (use mysql_native_password or caching_sha2_password for the check's user)",
                shown(other)
            )),
        }
    }

    /// The answer to COM_QUERY: a result set with at least one row is up.
    async fn read_result(conn: &mut Conn, user: &str) -> Result<(), Stop> {
        let first = conn.expect(Step::Query, user).await?;
        let columns = match first.first() {
            Some(0xff) => return down(format!("query failed: {}", parse_err(&first.payload))),
            Some(0x00) => return down("query returned no row (no result set)".into()),
            Some(0xfb) => {
                return down("query asked for a local file (LOAD DATA LOCAL); refused".into());
            }
            _ => match lenenc(&first.payload) {
                Some(n) if (1..=4096).contains(&n) => n,
                _ => {
                    return down(format!(
                        "query: malformed answer \"{}\"",
                        shown_bytes(&first.payload)
                    ));
                }
            },
        };
        // Column definitions, then the EOF that ends them.
        for _ in 0..columns {
            let def = conn.expect(Step::Query, user).await?;
            if def.first() == Some(0xff) {
                return down(format!("query failed: {}", parse_err(&def.payload)));
            }
        }
        let eof = conn.expect(Step::Query, user).await?;
        if !eof.is_eof() {
            return down(format!(
                "query: malformed answer \"{}\"",
                shown_bytes(&eof.payload)
            ));
        }
        let row = conn.expect(Step::Query, user).await?;
        if row.first() == Some(0xff) {
            return down(format!("query failed: {}", parse_err(&row.payload)));
        }
        if row.is_eof() {
            return down("query returned no row".into());
        }
        Ok(())
    }

    /// COM_QUIT, best effort: the server has shown it serves.
    async fn quit(mut conn: Conn) {
        conn.seq = 0;
        let packet = [1, 0, 0, 0, COM_QUIT];
        let _ = timeout_at(conn.deadline, async {
            let stream = conn.io.get_mut();
            stream.write_all(&packet).await?;
            stream.shutdown().await
        })
        .await;
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

pub(crate) struct PostgresPrepared {
    tls: Option<tls::Client>,
    /// user, password, database, application name, sslmode.
    config: tokio_postgres::Config,
}

impl std::fmt::Debug for PostgresPrepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the config: it holds the password.
        f.debug_struct("PostgresPrepared")
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl PostgresPrepared {
    pub(crate) fn new(spec: &Sql) -> Result<PostgresPrepared, Error> {
        check_no_nul("PostgreSQL", "user", &spec.login.user)?;
        check_no_nul("PostgreSQL", "password", spec.login.password.expose())?;
        check_no_nul("PostgreSQL", "query", &spec.query)?;
        let mut config = tokio_postgres::Config::new();
        config
            .user(&spec.login.user)
            .password(spec.login.password.expose())
            .application_name("directord");
        if let Some(db) = &spec.database {
            check_no_nul("PostgreSQL", "database", db)?;
            config.dbname(db);
        }
        let tls = tls::client(spec.tls.as_ref())?;
        config.ssl_mode(if tls.is_some() {
            tokio_postgres::config::SslMode::Require
        } else {
            tokio_postgres::config::SslMode::Disable
        });
        Ok(PostgresPrepared { tls, config })
    }
}

pub(crate) async fn probe_postgres(
    p: &PostgresPrepared,
    spec: &Sql,
    t: &Target,
) -> Result<Verdict, Error> {
    let deadline = Instant::now() + t.timeout;
    verdict(postgres::session(p, spec, t, deadline).await, spec)
}

mod postgres {
    use super::*;

    use tokio_postgres::tls::{ChannelBinding, NoTls, TlsConnect};
    use tokio_postgres::{Client, Connection, SimpleQueryMessage};

    /// How much of the server's first bytes is kept to quote.
    const HEAD: usize = 64;
    /// Bound on the first message (an authentication request or an error).
    const MAX_FIRST: usize = 64 << 10;

    /// What the raw stream showed, shared between the stream and the probe.
    #[derive(Debug, Default)]
    pub(super) struct Watch {
        /// The first bytes from the server.
        head: Vec<u8>,
        /// Bytes read in all.
        total: usize,
        /// Whether the first answer is the one-byte reply to SSLRequest.
        tls: bool,
        /// Whether the first answer was found to be PostgreSQL's.
        valid: bool,
        problem: Option<Problem>,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Problem {
        Malformed,
        Cleartext,
        TooLong,
    }

    impl Watch {
        /// Takes in newly read bytes; a problem stops the connection.
        pub(super) fn saw(&mut self, bytes: &[u8]) -> Option<Problem> {
            self.total += bytes.len();
            if self.total > MAX_BODY {
                self.problem = Some(Problem::TooLong);
            }
            if self.head.len() < HEAD {
                let room = HEAD - self.head.len();
                self.head.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
            if self.problem.is_none() && !self.valid {
                match first_answer(&self.head, self.tls) {
                    Ok(true) => self.valid = true,
                    Ok(false) => {}
                    Err(p) => self.problem = Some(p),
                }
            }
            self.problem
        }
    }

    /// Checks the server's first bytes as far as they go: `Ok(true)` when they are
    /// PostgreSQL's, `Ok(false)` when more are needed.
    pub(super) fn first_answer(head: &[u8], tls: bool) -> Result<bool, Problem> {
        let Some(&tag) = head.first() else {
            return Ok(false);
        };
        if tls {
            // 'S' (go ahead) then the server's TLS records, 'N' (no TLS here), or an
            // error from an old server.
            return match (tag, head.get(1)) {
                (b'S', None) => Ok(false),
                (b'S', Some(0x14..=0x17)) | (b'N' | b'E', _) => Ok(true),
                _ => Err(Problem::Malformed),
            };
        }
        // Authentication request, error, notice, or protocol version negotiation.
        if !matches!(tag, b'R' | b'E' | b'N' | b'v') {
            return Err(Problem::Malformed);
        }
        let Some(len) = head.get(1..5) else {
            return Ok(false);
        };
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if !(4..=MAX_FIRST).contains(&len) {
            return Err(Problem::Malformed);
        }
        if tag != b'R' {
            return Ok(true);
        }
        let Some(code) = head.get(5..9) else {
            return Ok(false);
        };
        // AuthenticationCleartextPassword: the password would cross the network
        // readable.
        if u32::from_be_bytes([code[0], code[1], code[2], code[3]]) == 3 {
            return Err(Problem::Cleartext);
        }
        Ok(true)
    }

    /// The TCP stream, watched (see the module doc).
    pub(super) struct Watched {
        inner: TcpStream,
        watch: Arc<Mutex<Watch>>,
    }

    impl AsyncRead for Watched {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            let before = buf.filled().len();
            let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
            if let Poll::Ready(Ok(())) = poll {
                let new = &buf.filled()[before..];
                let mut watch = this.watch.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(problem) = watch.saw(new) {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{problem:?}"),
                    )));
                }
            }
            poll
        }
    }

    impl AsyncWrite for Watched {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
        }
    }

    /// sslmode=require over the check's rustls client.
    struct Rustls {
        connector: TlsConnector,
        name: ServerName<'static>,
    }

    impl TlsConnect<Watched> for Rustls {
        type Stream = RustlsStream;
        type Error = io::Error;
        type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

        fn connect(self, stream: Watched) -> Self::Future {
            Box::pin(async move {
                let tls = self.connector.connect(self.name, stream).await?;
                Ok(RustlsStream(Box::new(tls)))
            })
        }
    }

    struct RustlsStream(Box<tokio_rustls::client::TlsStream<Watched>>);

    impl tokio_postgres::tls::TlsStream for RustlsStream {
        fn channel_binding(&self) -> ChannelBinding {
            ChannelBinding::none()
        }
    }

    impl AsyncRead for RustlsStream {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(self.get_mut().0.as_mut()).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for RustlsStream {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(self.get_mut().0.as_mut()).poll_write(cx, buf)
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(self.get_mut().0.as_mut()).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(self.get_mut().0.as_mut()).poll_shutdown(cx)
        }
    }

    /// What the probe knows to word its reasons.
    struct Reasons<'a> {
        user: &'a str,
        timeout_ms: u128,
        watch: Arc<Mutex<Watch>>,
    }

    impl Reasons<'_> {
        /// The reason for what the watched stream saw, if anything.
        fn watched(&self) -> Option<String> {
            let watch = self.watch.lock().unwrap_or_else(|e| e.into_inner());
            Some(match watch.problem? {
                Problem::Malformed => {
                    format!("malformed handshake: \"{}\"", shown_bytes(&watch.head))
                }
                Problem::Cleartext => {
                    "server asks for the password in clear text without TLS; refused".into()
                }
                Problem::TooLong => format!("answer too long (over {MAX_BODY} bytes)"),
            })
        }

        fn heard_anything(&self) -> bool {
            self.watch.lock().unwrap_or_else(|e| e.into_inner()).total > 0
        }

        /// A failed login as a reason.
        fn login_reason(&self, e: &tokio_postgres::Error) -> String {
            if let Some(reason) = self.watched() {
                return reason;
            }
            let user = self.user;
            if let Some(db) = e.as_db_error() {
                return format!(
                    "login as {user} rejected: {} {}",
                    db.code().code(),
                    shown(db.message())
                );
            }
            let text = e.to_string();
            if text.starts_with("error performing TLS handshake") {
                return match std::error::Error::source(e)
                    .and_then(|s| s.downcast_ref::<io::Error>())
                {
                    Some(io) => tls::describe_tls_error(io),
                    None => "server does not offer TLS".into(),
                };
            }
            if !self.heard_anything() {
                return match io_source(e) {
                    Some(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
                        "connection closed before the handshake".into()
                    }
                    Some(io) => format!("handshake: {}", io_reason(io)),
                    None if e.is_closed() => "connection closed before the handshake".into(),
                    None => format!("handshake: {}", shown(&text)),
                };
            }
            match io_source(e) {
                Some(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
                    format!("login as {user}: connection closed")
                }
                Some(io) => format!("login as {user}: {}", io_reason(io)),
                None if e.is_closed() => format!("login as {user}: connection closed"),
                None => format!("login as {user}: {}", shown(&error_text(e))),
            }
        }

        fn query_reason(&self, e: &tokio_postgres::Error) -> String {
            if let Some(reason) = self.watched() {
                return reason;
            }
            if let Some(db) = e.as_db_error() {
                return format!("query failed: {} {}", db.code().code(), shown(db.message()));
            }
            match io_source(e) {
                Some(io) => format!("query: {}", io_reason(io)),
                None if e.is_closed() => "connection closed before the answer to the query".into(),
                None => format!("query: {}", shown(&error_text(e))),
            }
        }
    }

    fn io_source(e: &tokio_postgres::Error) -> Option<&io::Error> {
        std::error::Error::source(e).and_then(|s| s.downcast_ref::<io::Error>())
    }

    /// "unexpected message from server", with its cause when it has one.
    fn error_text(e: &tokio_postgres::Error) -> String {
        match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        }
    }

    pub(super) async fn session(
        p: &PostgresPrepared,
        spec: &Sql,
        t: &Target,
        deadline: Instant,
    ) -> Result<(), Stop> {
        let tcp = tcp::connect(t, deadline).await?;
        let watch = Arc::new(Mutex::new(Watch {
            tls: p.tls.is_some(),
            ..Watch::default()
        }));
        let stream = Watched {
            inner: tcp,
            watch: watch.clone(),
        };
        let reasons = Reasons {
            user: &spec.login.user,
            timeout_ms: t.timeout.as_millis(),
            watch,
        };
        match &p.tls {
            Some(client) => {
                let handshake = client.handshake(t.addr.ip());
                let tls = Rustls {
                    connector: handshake.connector.clone(),
                    name: handshake.name,
                };
                let login = timeout_at(deadline, p.config.connect_raw(stream, tls)).await;
                run(login, spec, &reasons, deadline).await
            }
            None => {
                let login = timeout_at(deadline, p.config.connect_raw(stream, NoTls)).await;
                run(login, spec, &reasons, deadline).await
            }
        }
    }

    type Login<S> = Result<
        Result<(Client, Connection<Watched, S>), tokio_postgres::Error>,
        tokio::time::error::Elapsed,
    >;

    async fn run<S>(
        login: Login<S>,
        spec: &Sql,
        reasons: &Reasons<'_>,
        deadline: Instant,
    ) -> Result<(), Stop>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (client, connection) = match login {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return down(reasons.login_reason(&e)),
            Err(_) => {
                if let Some(reason) = reasons.watched() {
                    return down(reason);
                }
                return down(if reasons.heard_anything() {
                    format!(
                        "login as {}: no answer within {} ms",
                        reasons.user, reasons.timeout_ms
                    )
                } else {
                    format!("no handshake within {} ms", reasons.timeout_ms)
                });
            }
        };
        let mut connection = std::pin::pin!(connection);
        let query = first_row(&client, &spec.query);
        let outcome = tokio::select! {
            r = timeout_at(deadline, query) => match r {
                Ok(Ok(true)) => Ok(()),
                Ok(Ok(false)) => down("query returned no row".into()),
                Ok(Err(e)) => down(reasons.query_reason(&e)),
                Err(_) => down(reasons.watched().unwrap_or_else(|| {
                    format!("query: no answer within {} ms", reasons.timeout_ms)
                })),
            },
            r = &mut connection => match r {
                Err(e) => down(reasons.query_reason(&e)),
                Ok(()) => down("connection closed before the answer to the query".into()),
            },
        };
        // Dropping the client makes the connection send Terminate and close.
        drop(client);
        if outcome.is_ok() {
            let _ = timeout_at(deadline, connection).await;
        }
        outcome
    }

    /// Whether the query's answer has a row; stops at the first.
    async fn first_row(client: &Client, query: &str) -> Result<bool, tokio_postgres::Error> {
        let stream = client.simple_query_raw(query).await?;
        let mut stream = std::pin::pin!(stream);
        while let Some(message) =
            std::future::poll_fn(|cx| futures_core::Stream::poll_next(stream.as_mut(), cx)).await
        {
            if let SimpleQueryMessage::Row(_) = message? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::spec::{Login, Secret};

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn password_scrambles() {
        // Expected values computed with Python's hashlib from the formulas.
        let nonce = b"0123456789abcdefghij";
        assert_eq!(
            hex(&mysql::scramble_native(nonce, b"secret")),
            "f5cac3f3b3df2133feb57db682c71e6ed433a988"
        );
        assert_eq!(
            hex(&mysql::scramble_sha256(nonce, b"secret")),
            "7e4adda2f2d5ef09b4147518becb0cee2939376203650a8c2bb2815959364bd0"
        );
        assert!(mysql::scramble_native(nonce, b"").is_empty());
        assert!(mysql::scramble_sha256(nonce, b"").is_empty());
    }

    #[test]
    fn mariadb_greeting() {
        // The handshake payload of MariaDB 10.11.19 (Debian 12), TLS off.
        let packet = b"\x0a5.5.5-10.11.19-MariaDB-0+deb12u1\x00\x04\x00\x00\x00'&&,HfK\"\x00\
            \xfe\xf7\x08\x02\x00\xff\x81\x15\x00\x00\x00\x00\x00\x00\x1d\x00\x00\x00\
            gb7*jY^NMs~A\x00mysql_native_password\x00";
        let g = mysql::parse_greeting(packet).expect("a handshake");
        assert_eq!(g.nonce, b"'&&,HfK\"gb7*jY^NMs~A");
        assert_eq!(g.plugin.as_deref(), Some("mysql_native_password"));
        assert_eq!(g.capabilities & 0x200, 0x200, "PROTOCOL_41");
        assert_eq!(g.capabilities & 0x800, 0, "no SSL");
        assert_eq!(g.capabilities & 0x8_0000, 0x8_0000, "PLUGIN_AUTH");
        for bad in [
            &b""[..],
            b"\x09old",
            b"\x0aversion-without-nul",
            &packet[..20],
        ] {
            assert_eq!(mysql::parse_greeting(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn error_packets() {
        assert_eq!(
            mysql::parse_err(b"\xff\x7a\x04#42S02Table 'app.nope' doesn't exist"),
            "1146 Table 'app.nope' doesn't exist"
        );
        assert_eq!(
            mysql::parse_err(b"\xff\x10\x04Too many connections"),
            "1040 Too many connections"
        );
        assert_eq!(mysql::parse_err(b"\xff\x10\x04"), "1040");
        assert_eq!(
            mysql::parse_err(b"\xff\x10"),
            "malformed error packet \"\u{fffd}\\u{10}\""
        );
    }

    #[test]
    fn length_encoded_integers() {
        assert_eq!(mysql::lenenc(b"\x01"), Some(1));
        assert_eq!(mysql::lenenc(b"\xfc\x00\x01"), Some(256));
        assert_eq!(mysql::lenenc(b"\xfd\x01\x02\x03"), Some(0x03_0201));
        assert_eq!(mysql::lenenc(b"\xfe\x01\0\0\0\0\0\0\0"), Some(1));
        assert_eq!(mysql::lenenc(b"\xfb"), None);
        assert_eq!(mysql::lenenc(b"\xfc\x00"), None);
        assert_eq!(mysql::lenenc(b""), None);
    }

    #[test]
    fn postgres_first_answer() {
        use postgres::{Problem, first_answer};
        // AuthenticationSASL, md5, ok; an error; not enough bytes yet.
        assert_eq!(first_answer(b"R\0\0\0\x17\0\0\0\x0aSCRAM", false), Ok(true));
        assert_eq!(first_answer(b"R\0\0\0\x0c\0\0\0\x05salt", false), Ok(true));
        assert_eq!(first_answer(b"E\0\0\0\x60SFATAL", false), Ok(true));
        assert_eq!(first_answer(b"R\0\0", false), Ok(false));
        assert_eq!(first_answer(b"", false), Ok(false));
        // AuthenticationCleartextPassword.
        assert_eq!(
            first_answer(b"R\0\0\0\x08\0\0\0\x03", false),
            Err(Problem::Cleartext)
        );
        assert_eq!(first_answer(b"HTTP/1.1", false), Err(Problem::Malformed));
        assert_eq!(first_answer(b"RFB 003", false), Err(Problem::Malformed));
        // With TLS: 'S' and a TLS record, 'N', or garbage.
        assert_eq!(first_answer(b"S", true), Ok(false));
        assert_eq!(first_answer(b"S\x16\x03\x03", true), Ok(true));
        assert_eq!(first_answer(b"N", true), Ok(true));
        assert_eq!(first_answer(b"SSH-2.0", true), Err(Problem::Malformed));
        assert_eq!(first_answer(b"HTTP", true), Err(Problem::Malformed));
    }

    #[test]
    fn reasons_keep_quotes_escape_controls_and_hide_the_password() {
        assert_eq!(
            shown("Table 'a.b' doesn't\texist\n"),
            "Table 'a.b' doesn't\\texist"
        );
        assert_eq!(shown(&"x".repeat(300)), format!("{}...", "x".repeat(SHOWN)));
        let spec = Sql {
            login: Login {
                user: "m".into(),
                password: Secret::inline("hunter2"),
            },
            database: None,
            query: "SELECT 1".into(),
            tls: None,
        };
        assert_eq!(
            verdict(down("user 'm' password 'hunter2'".into()), &spec).expect("verdict"),
            Verdict::Down("user 'm' password '<password>'".into())
        );
    }

    #[test]
    fn unsendable_values_are_checker_errors() {
        let spec = Sql {
            login: Login {
                user: "mon\0itor".into(),
                password: Secret::inline("pw"),
            },
            database: None,
            query: "SELECT 1".into(),
            tls: None,
        };
        let err = MysqlPrepared::new(&spec).err();
        assert!(matches!(err, Some(Error::Option { .. })), "{err:?}");
        let err = PostgresPrepared::new(&spec).err();
        assert!(matches!(err, Some(Error::Option { .. })), "{err:?}");
        let debug = format!(
            "{:?}",
            PostgresPrepared::new(&Sql {
                login: Login {
                    user: "monitor".into(),
                    password: Secret::inline("hunter2"),
                },
                ..spec
            })
            .expect("valid")
        );
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
