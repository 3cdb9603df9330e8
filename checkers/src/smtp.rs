//! SMTP check: greeting, EHLO, optionally STARTTLS and EHLO again over TLS, QUIT.
//!
//! A small client written here, not lettre. lettre is built to send mail: its
//! transports pool connections, and its errors fold the server's reply into a few
//! kinds. A health check wants the opposite: one fresh connection per attempt from
//! the bind address, one deadline over the whole session, the shared TLS connector
//! ([`crate::tls`]), and a reason that names the step and quotes the reply
//! ("greeting 554 5.3.2 busy (expected 220)", "EHLO answered 502 ..."). The part of
//! RFC 5321 needed for that is a reply reader and four commands.
//!
//! - Replies may be multi-line (`250-...` then `250 ...`); every line must carry
//!   the same code. A line is bounded to [`MAX_LINE`] bytes and a reply to
//!   [`MAX_REPLY`]; anything else is "not SMTP".
//! - No fallback to HELO: every server in service today speaks EHLO, and a server
//!   that refuses it is reported as such.
//! - STARTTLS must be offered in the EHLO reply. Bytes that arrive after the 220 to
//!   STARTTLS and before the handshake are refused (the STARTTLS command injection
//!   of CVE-2011-0411), as the TLS session must start clean.
//! - QUIT: once EHLO (and TLS) went well the server has shown it serves. A server
//!   that then closes without its 221, or does not answer QUIT in time, is still
//!   up; one that answers QUIT with another code (421 "shutting down") is down.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsConnector;

use crate::spec::{MAX_REPLY, Smtp};
use crate::tcp::{io_reason, is_local_shortage};
use crate::{Error, Target, Verdict, tls};

/// Bound on one reply line. RFC 5321 4.5.3.1.5 allows 512 bytes; servers are
/// allowed some slack.
const MAX_LINE: usize = 2048;
/// How much of a reply's text a reason quotes.
const SHOWN: usize = 120;

pub(crate) struct Prepared {
    /// The EHLO argument; `None`: this host has no usable name, the address literal
    /// of the connection's local end is used.
    helo: Option<String>,
    /// With STARTTLS: the connector, built once.
    tls: Option<TlsConnector>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("helo", &self.helo)
            .field("starttls", &self.tls.is_some())
            .finish()
    }
}

impl Prepared {
    pub(crate) fn new(spec: &Smtp) -> Result<Prepared, Error> {
        let helo = match &spec.helo {
            Some(helo) if is_domain_word(helo) => Some(helo.clone()),
            Some(helo) => {
                return Err(Error::Option {
                    message: format!(
                        "helo {helo:?} is not a host name (no spaces or control characters)"
                    ),
                });
            }
            None => host_name(),
        };
        let tls = match &spec.starttls {
            Some(options) => {
                // A bad server_name is a config problem: report it now, not per attempt.
                tls::server_name(options, None, IpAddr::V4(Ipv4Addr::LOCALHOST))?;
                Some(tls::connector(options)?)
            }
            None => None,
        };
        Ok(Prepared { helo, tls })
    }
}

/// This host's name for EHLO, from the kernel; `None` when it has none usable.
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (is_domain_word(name) && name != "(none)").then(|| name.to_owned())
}

/// Whether `s` can be sent as the EHLO argument without breaking the command line.
fn is_domain_word(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_graphic())
}

/// The EHLO argument when the host has no name: `[192.0.2.1]`, `[IPv6:2001:db8::1]`.
fn address_literal(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
    }
}

/// The steps of a session, for the reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Greeting,
    Ehlo,
    StartTls,
    EhloTls,
    Quit,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Greeting => "greeting",
            Step::Ehlo => "EHLO",
            Step::StartTls => "STARTTLS",
            Step::EhloTls => "EHLO over TLS",
            Step::Quit => "QUIT",
        }
    }

    fn expected(self) -> u16 {
        match self {
            Step::Greeting | Step::StartTls => 220,
            Step::Ehlo | Step::EhloTls => 250,
            Step::Quit => 221,
        }
    }

    /// "the greeting" / "the reply to EHLO", for "no …", "connection closed before …".
    fn awaited(self) -> String {
        match self {
            Step::Greeting => "greeting".to_owned(),
            other => format!("reply to {}", other.name()),
        }
    }
}

/// One SMTP reply: its code and the text of each line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    /// The first line's text, cut for a reason.
    fn text(&self) -> String {
        let first = self.lines.first().map_or("", |l| l.trim());
        shown(first)
    }

    /// Whether an EHLO reply lists the extension `keyword` (lines after the first).
    fn offers(&self, keyword: &str) -> bool {
        self.lines.iter().skip(1).any(|line| {
            line.split_ascii_whitespace()
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case(keyword))
        })
    }

    /// "554 5.3.2 busy", or "554" alone.
    fn code_and_text(&self) -> String {
        match self.text() {
            t if t.is_empty() => self.code.to_string(),
            t => format!("{} {t}", self.code),
        }
    }
}

fn shown(text: &str) -> String {
    let mut s: String = text
        .chars()
        .take(SHOWN)
        .flat_map(char::escape_default)
        .collect();
    if text.chars().count() > SHOWN {
        s.push_str("...");
    }
    s
}

/// One reply line (without its line end) → code, whether more lines follow, text.
fn parse_line(line: &[u8]) -> Result<(u16, bool, String), ()> {
    let (code, rest) = match line {
        [a @ b'2'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9', rest @ ..] => {
            let digit = |d: &u8| u16::from(d - b'0');
            (digit(a) * 100 + digit(b) * 10 + digit(c), rest)
        }
        _ => return Err(()),
    };
    let (more, text) = match rest {
        [] => (false, &[][..]),
        [b' ', text @ ..] => (false, text),
        [b'-', text @ ..] => (true, text),
        _ => return Err(()),
    };
    Ok((code, more, String::from_utf8_lossy(text).into_owned()))
}

/// Why a session stopped short of up.
#[derive(Debug)]
enum Stop {
    Down(String),
    Checker(Error),
}

fn down<T>(reason: String) -> Result<T, Stop> {
    Err(Stop::Down(reason))
}

pub(crate) async fn probe(p: &Prepared, spec: &Smtp, t: &Target) -> Result<Verdict, Error> {
    let deadline = Instant::now() + t.timeout;
    match session(p, spec, t, deadline).await {
        Ok(()) => Ok(Verdict::Up),
        Err(Stop::Down(reason)) => Ok(Verdict::Down(reason)),
        Err(Stop::Checker(e)) => Err(e),
    }
}

async fn session(p: &Prepared, spec: &Smtp, t: &Target, deadline: Instant) -> Result<(), Stop> {
    let stream = connect(t, deadline).await?;
    let helo = match &p.helo {
        Some(helo) => helo.clone(),
        None => {
            let local = stream.local_addr().map_err(|source| {
                Stop::Checker(Error::Socket {
                    target: t.addr,
                    source,
                })
            })?;
            address_literal(local.ip())
        }
    };
    let mut conn = Conn::new(stream, t, deadline);
    conn.expect(Step::Greeting).await?;
    let ehlo = conn.command(&format!("EHLO {helo}"), Step::Ehlo).await?;

    let (Some(connector), Some(options)) = (&p.tls, &spec.starttls) else {
        return conn.quit().await;
    };
    if !ehlo.offers("STARTTLS") {
        return down("server does not offer STARTTLS".to_owned());
    }
    conn.command("STARTTLS", Step::StartTls).await?;
    if !conn.io.buffer().is_empty() {
        return down("server sent data after its STARTTLS reply, before the handshake".to_owned());
    }
    let name = tls::server_name(options, None, t.addr.ip()).map_err(Stop::Checker)?;
    let tcp = conn.io.into_inner();
    let tls = match timeout_at(deadline, connector.connect(name, tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return down(tls::describe_tls_error(&e)),
        Err(_) => {
            return down(format!(
                "TLS: no handshake within {} ms",
                t.timeout.as_millis()
            ));
        }
    };
    let mut conn = Conn::new(tls, t, deadline);
    conn.command(&format!("EHLO {helo}"), Step::EhloTls).await?;
    conn.quit().await
}

/// Connects to `t.addr`, from `t.bind` when set.
async fn connect(t: &Target, deadline: Instant) -> Result<TcpStream, Stop> {
    let checker = |source| {
        Stop::Checker(Error::Socket {
            target: t.addr,
            source,
        })
    };
    let socket = match t.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(checker)?;
    if let Some(ip) = t.bind {
        socket.bind(SocketAddr::new(ip, 0)).map_err(checker)?;
    }
    match timeout_at(deadline, socket.connect(t.addr)).await {
        Ok(Ok(stream)) => {
            // Commands are single small writes; do not let Nagle hold them.
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) if is_local_shortage(&e) => Err(checker(e)),
        Ok(Err(e)) => down(format!("connect {}: {}", t.addr, io_reason(&e))),
        Err(_) => down(format!(
            "connect {}: no answer within {} ms",
            t.addr,
            t.timeout.as_millis()
        )),
    }
}

/// The command/reply exchange over a plain or TLS stream.
struct Conn<S> {
    io: BufReader<S>,
    deadline: Instant,
    timeout_ms: u128,
}

/// How reading a reply can fail, before it is put as a reason.
enum ReadError {
    Closed,
    Io(io::Error),
    NotSmtp(Vec<u8>),
    TooLong,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(stream: S, t: &Target, deadline: Instant) -> Conn<S> {
        Conn {
            io: BufReader::new(stream),
            deadline,
            timeout_ms: t.timeout.as_millis(),
        }
    }

    /// Sends `command` and reads the reply, which must have the step's code.
    async fn command(&mut self, command: &str, step: Step) -> Result<Reply, Stop> {
        match timeout_at(self.deadline, self.send(command)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return down(format!("{}: {}", step.name(), io_reason(&e))),
            Err(_) => return down(self.timed_out(step)),
        }
        self.expect(step).await
    }

    /// Reads a reply, which must have the step's code.
    async fn expect(&mut self, step: Step) -> Result<Reply, Stop> {
        let reply = self.reply(step).await?;
        if reply.code == step.expected() {
            return Ok(reply);
        }
        let what = match step {
            Step::Greeting => "greeting".to_owned(),
            other => format!("{} answered", other.name()),
        };
        down(format!(
            "{what} {} (expected {})",
            reply.code_and_text(),
            step.expected()
        ))
    }

    async fn send(&mut self, command: &str) -> io::Result<()> {
        let line = format!("{command}\r\n");
        self.io.get_mut().write_all(line.as_bytes()).await?;
        self.io.get_mut().flush().await
    }

    /// QUIT at the end of a good session: only an explicit other reply than 221 is
    /// down (see the module doc).
    async fn quit(&mut self) -> Result<(), Stop> {
        if !matches!(
            timeout_at(self.deadline, self.send("QUIT")).await,
            Ok(Ok(()))
        ) {
            return Ok(());
        }
        match timeout_at(self.deadline, self.read_reply()).await {
            Ok(Ok(reply)) if reply.code != Step::Quit.expected() => down(format!(
                "QUIT answered {} (expected {})",
                reply.code_and_text(),
                Step::Quit.expected()
            )),
            _ => Ok(()),
        }
    }

    fn timed_out(&self, step: Step) -> String {
        format!("no {} within {} ms", step.awaited(), self.timeout_ms)
    }

    async fn reply(&mut self, step: Step) -> Result<Reply, Stop> {
        match timeout_at(self.deadline, self.read_reply()).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(ReadError::Closed)) => {
                down(format!("connection closed before the {}", step.awaited()))
            }
            Ok(Err(ReadError::Io(e))) => down(format!("{}: {}", step.name(), io_reason(&e))),
            Ok(Err(ReadError::NotSmtp(line))) => {
                let line = String::from_utf8_lossy(&line);
                down(format!(
                    "{} is not SMTP: \"{}\"",
                    step.awaited(),
                    shown(line.trim_end())
                ))
            }
            Ok(Err(ReadError::TooLong)) => down(format!(
                "{} too long (over {MAX_LINE} bytes a line or {MAX_REPLY} in all)",
                step.awaited()
            )),
            Err(_) => down(self.timed_out(step)),
        }
    }

    async fn read_reply(&mut self) -> Result<Reply, ReadError> {
        let mut lines = Vec::new();
        let mut total = 0;
        let mut code = None;
        loop {
            let line = self.read_line().await?;
            total += line.len();
            if total > MAX_REPLY {
                return Err(ReadError::TooLong);
            }
            let trimmed = line.strip_suffix(b"\n").unwrap_or(&line);
            let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
            let Ok((this, more, text)) = parse_line(trimmed) else {
                return Err(ReadError::NotSmtp(trimmed.to_vec()));
            };
            if code.is_some_and(|c| c != this) {
                return Err(ReadError::NotSmtp(trimmed.to_vec()));
            }
            code = Some(this);
            lines.push(text);
            if !more {
                return Ok(Reply { code: this, lines });
            }
        }
    }

    /// One line including its `\n`; at most [`MAX_LINE`] bytes.
    async fn read_line(&mut self) -> Result<Vec<u8>, ReadError> {
        let mut line = Vec::new();
        loop {
            let buf = self.io.fill_buf().await.map_err(ReadError::Io)?;
            if buf.is_empty() {
                return Err(ReadError::Closed);
            }
            let (taken, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            line.extend_from_slice(&buf[..taken]);
            self.io.consume(taken);
            if line.len() > MAX_LINE {
                return Err(ReadError::TooLong);
            }
            if done {
                return Ok(line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lines() {
        assert_eq!(
            parse_line(b"220 mx.example.org ESMTP"),
            Ok((220, false, "mx.example.org ESMTP".to_owned()))
        );
        assert_eq!(
            parse_line(b"250-PIPELINING"),
            Ok((250, true, "PIPELINING".to_owned()))
        );
        assert_eq!(parse_line(b"221"), Ok((221, false, String::new())));
        for bad in [
            &b"HTTP/1.1 400 Bad Request"[..],
            b"22",
            b"2200 x",
            b"120 x",
            b"",
            b"25x ok",
        ] {
            assert_eq!(parse_line(bad), Err(()), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn extensions_and_text() {
        let ehlo = Reply {
            code: 250,
            lines: vec![
                "mx.example.org".into(),
                "PIPELINING".into(),
                "starttls".into(),
            ],
        };
        assert!(ehlo.offers("STARTTLS"));
        let greeting = Reply {
            code: 220,
            lines: vec!["STARTTLS is not an extension here".into()],
        };
        assert!(!greeting.offers("STARTTLS"));
        let long = Reply {
            code: 554,
            lines: vec![format!("{}\x07", "x".repeat(200))],
        };
        assert_eq!(
            long.code_and_text(),
            format!("554 {}...", "x".repeat(SHOWN))
        );
        let ctl = Reply {
            code: 554,
            lines: vec!["no\tthanks".into()],
        };
        assert_eq!(ctl.code_and_text(), "554 no\\tthanks");
    }

    #[test]
    fn helo_names() {
        assert!(is_domain_word("mx1.example.org"));
        assert!(!is_domain_word("mx1 example"));
        assert!(!is_domain_word("mx1\r\nRSET"));
        assert!(!is_domain_word(""));
        assert_eq!(
            address_literal("192.0.2.1".parse().expect("ip")),
            "[192.0.2.1]"
        );
        assert_eq!(
            address_literal("2001:db8::1".parse().expect("ip")),
            "[IPv6:2001:db8::1]"
        );
        let bad = Prepared::new(&Smtp {
            helo: Some("a b".into()),
            starttls: None,
        });
        assert!(matches!(bad, Err(Error::Option { .. })), "{bad:?}");
    }
}
