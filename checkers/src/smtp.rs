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

use std::net::IpAddr;

use crate::session::{LineError, Session, shown};
use crate::spec::{MAX_REPLY, Smtp};
use crate::tcp::io_reason;
use crate::{Error, Stop, Target, Verdict, down, tls, verdict};

/// Bound on one reply line. RFC 5321 4.5.3.1.5 allows 512 bytes; servers are
/// allowed some slack.
const MAX_LINE: usize = 2048;

#[derive(Debug)]
pub(crate) struct Prepared {
    /// The EHLO argument; `None`: this host has no usable name, the address literal
    /// of the connection's local end is used.
    helo: Option<String>,
    /// With STARTTLS: the client, built once.
    tls: Option<tls::Client>,
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
        let tls = tls::client(spec.starttls.as_ref())?;
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

pub(crate) async fn probe(p: &Prepared, spec: &Smtp, t: &Target) -> Result<Verdict, Error> {
    let _ = spec; // everything needed was prepared
    verdict(session(p, t).await)
}

async fn session(p: &Prepared, t: &Target) -> Result<(), Stop> {
    let mut conn = Conn::new(Session::connect(t, None).await?);
    let helo = match &p.helo {
        Some(helo) => helo.clone(),
        None => address_literal(conn.io.local_addr().ip()),
    };
    conn.expect(Step::Greeting).await?;
    let ehlo = conn.command(&format!("EHLO {helo}"), Step::Ehlo).await?;

    let Some(client) = &p.tls else {
        return conn.quit().await;
    };
    if !ehlo.offers("STARTTLS") {
        return down("server does not offer STARTTLS".to_owned());
    }
    conn.command("STARTTLS", Step::StartTls).await?;
    let mut conn = Conn::new(conn.io.upgrade(client.handshake(t.addr.ip())).await?);
    conn.command(&format!("EHLO {helo}"), Step::EhloTls).await?;
    conn.quit().await
}

/// The command/reply exchange over a plain or TLS session.
struct Conn {
    io: Session,
}

/// How reading a reply can fail, before it is put as a reason.
enum ReadError {
    Line(LineError),
    NotSmtp(Vec<u8>),
    TooLong,
}

impl From<LineError> for ReadError {
    fn from(e: LineError) -> ReadError {
        match e {
            LineError::TooLong => ReadError::TooLong,
            other => ReadError::Line(other),
        }
    }
}

impl Conn {
    fn new(mut io: Session) -> Conn {
        io.set_max_line(MAX_LINE);
        Conn { io }
    }

    /// Sends `command` and reads the reply, which must have the step's code.
    async fn command(&mut self, command: &str, step: Step) -> Result<Reply, Stop> {
        match self.io.write_line(command).await {
            Ok(()) => {}
            Err(LineError::TimedOut) => return down(self.timed_out(step)),
            Err(LineError::Io(e)) => return down(format!("{}: {}", step.name(), io_reason(&e))),
            Err(e @ (LineError::Closed | LineError::TooLong)) => {
                return down(self.io.write_reason(e, step.name()));
            }
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

    /// QUIT at the end of a good session: only an explicit other reply than 221 is
    /// down (see the module doc).
    async fn quit(&mut self) -> Result<(), Stop> {
        if self.io.write_line("QUIT").await.is_err() {
            return Ok(());
        }
        match self.read_reply().await {
            Ok(reply) if reply.code != Step::Quit.expected() => down(format!(
                "QUIT answered {} (expected {})",
                reply.code_and_text(),
                Step::Quit.expected()
            )),
            _ => Ok(()),
        }
    }

    fn timed_out(&self, step: Step) -> String {
        format!("no {} within {} ms", step.awaited(), self.io.timeout_ms())
    }

    async fn reply(&mut self, step: Step) -> Result<Reply, Stop> {
        match self.read_reply().await {
            Ok(reply) => Ok(reply),
            Err(ReadError::Line(LineError::Closed)) => {
                down(format!("connection closed before the {}", step.awaited()))
            }
            Err(ReadError::Line(LineError::Io(e))) => {
                down(format!("{}: {}", step.name(), io_reason(&e)))
            }
            Err(ReadError::Line(LineError::TimedOut)) => down(self.timed_out(step)),
            Err(ReadError::NotSmtp(line)) => {
                let line = String::from_utf8_lossy(&line);
                down(format!(
                    "{} is not SMTP: \"{}\"",
                    step.awaited(),
                    shown(line.trim_end())
                ))
            }
            Err(ReadError::Line(LineError::TooLong) | ReadError::TooLong) => down(format!(
                "{} too long (over {MAX_LINE} bytes a line or {MAX_REPLY} in all)",
                step.awaited()
            )),
        }
    }

    async fn read_reply(&mut self) -> Result<Reply, ReadError> {
        let mut lines = Vec::new();
        let mut total = 0;
        let mut code = None;
        loop {
            let line = self.io.read_line().await?;
            // The line end counts too.
            total += line.len() + 2;
            if total > MAX_REPLY {
                return Err(ReadError::TooLong);
            }
            let Ok((this, more, text)) = parse_line(&line) else {
                return Err(ReadError::NotSmtp(line));
            };
            if code.is_some_and(|c| c != this) {
                return Err(ReadError::NotSmtp(line));
            }
            code = Some(this);
            lines.push(text);
            if !more {
                return Ok(Reply { code: this, lines });
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
            format!("554 {}...", "x".repeat(crate::session::SHOWN))
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
