//! A line-protocol session (SMTP, FTP, IMAP, POP3, NNTP): the connection, its
//! deadline and the bounded line I/O the protocols share.
//!
//! One [`Session`] is one attempt: [`Session::connect`] connects to `t.addr` (from
//! `t.bind` when set) and, for implicit TLS (imaps, pop3s, ftps...), completes the
//! handshake before the first byte of the protocol; [`Session::upgrade`] is the
//! handshake after a STARTTLS-style command. Every step runs against the one
//! deadline of the attempt, so the reasons say "no greeting within 500 ms" with
//! the check's whole timeout.
//!
//! - A line is bounded to [`MAX_LINE`] bytes (a protocol may lower or raise it with
//!   [`Session::set_max_line`]); it ends at `\n`, and a `\r` before it is dropped.
//!   Reading a line never holds more than that in memory.
//! - [`Session::upgrade`] refuses bytes the server sent after its "go ahead" reply
//!   and before the handshake (the STARTTLS command injection of CVE-2011-0411): the
//!   TLS session must start clean.
//! - The raw calls ([`Session::read_line`], [`Session::write_line`]) return a
//!   [`LineError`] so that a protocol can word its own reasons;
//!   [`Session::line`] and [`Session::send`] put them in the common words
//!   ("connection closed before the greeting", "no reply to LOGIN within 500 ms").
//! - What the server said goes into a reason only through [`shown`]: at most
//!   [`SHOWN`] characters, control characters escaped. What we send (a password
//!   among it) never goes into a reason, and [`redact`] takes out a password that
//!   a server echoes.

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::client::TlsStream;

use crate::tcp::{self, io_reason};
use crate::tls::{self, Handshake};
use crate::{Error, Stop, Target, Verdict, down, verdict};

/// Default bound on one line (without its line end).
pub(crate) const MAX_LINE: usize = 4096;
/// How much of a server's text a reason quotes.
pub(crate) const SHOWN: usize = 120;

/// A piece of what the server said, for a reason: at most [`SHOWN`] characters,
/// escaped (`\t`, `\u{7}`), with "..." when cut.
pub(crate) fn shown(text: &str) -> String {
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

/// [`shown`] for raw bytes (invalid UTF-8 shown as U+FFFD), surrounding white
/// space trimmed.
pub(crate) fn shown_bytes(bytes: &[u8]) -> String {
    shown(String::from_utf8_lossy(bytes).trim())
}

/// `text` with every occurrence of `secret` (a password that a server may echo)
/// replaced by `<password>`.
pub(crate) fn redact<'a>(text: &'a str, secret: &str) -> Cow<'a, str> {
    if secret.is_empty() || !text.contains(secret) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.replace(secret, "<password>"))
}

/// [`verdict`], with `secret` redacted from the reason.
pub(crate) fn verdict_redacted(outcome: Result<(), Stop>, secret: &str) -> Result<Verdict, Error> {
    verdict(outcome.map_err(|stop| match stop {
        Stop::Down(reason) => Stop::Down(redact(&reason, secret).into_owned()),
        checker => checker,
    }))
}

/// Whether `value` can go on a command line as it is (no CR, LF or NUL).
pub(crate) fn fits_a_line(value: &str) -> bool {
    !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

/// How reading or writing a line can fail, before a protocol puts it as a reason.
#[derive(Debug)]
pub(crate) enum LineError {
    /// The server closed the connection (a partial last line is dropped).
    Closed,
    Io(io::Error),
    /// A line longer than the session's bound.
    TooLong,
    /// The attempt's deadline passed.
    TimedOut,
}

/// The connection: plain TCP or TLS over it.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One attempt's connection, with its deadline.
#[derive(Debug)]
pub(crate) struct Session {
    io: BufReader<Stream>,
    local: SocketAddr,
    deadline: Instant,
    timeout: Duration,
    max_line: usize,
}

impl Session {
    /// Connects to `t.addr` (from `t.bind` when set) and, with `tls`, completes the
    /// handshake at once (implicit TLS). The deadline is `t.timeout` from now.
    pub(crate) async fn connect(t: &Target, tls: Option<Handshake<'_>>) -> Result<Session, Stop> {
        let deadline = Instant::now() + t.timeout;
        let tcp = tcp::connect(t, deadline).await?;
        let local = tcp.local_addr().map_err(|source| {
            Stop::Checker(Error::Socket {
                target: t.addr,
                source,
            })
        })?;
        let stream = match tls {
            Some(h) => Stream::Tls(Box::new(tls::handshake(tcp, h, deadline, t.timeout).await?)),
            None => Stream::Plain(tcp),
        };
        Ok(Session {
            io: BufReader::new(stream),
            local,
            deadline,
            timeout: t.timeout,
            max_line: MAX_LINE,
        })
    }

    /// After the server agreed to a STARTTLS-style command: the handshake, over the
    /// same connection. Down if the server already sent more (see the module doc),
    /// if the session is TLS already, or if the handshake fails.
    pub(crate) async fn upgrade(self, tls: Handshake<'_>) -> Result<Session, Stop> {
        if !self.io.buffer().is_empty() {
            return down(
                "server sent data after its STARTTLS reply, before the handshake".to_owned(),
            );
        }
        let Session {
            io,
            local,
            deadline,
            timeout,
            max_line,
        } = self;
        let Stream::Plain(tcp) = io.into_inner() else {
            return down("STARTTLS within TLS".to_owned());
        };
        let tls = tls::handshake(tcp, tls, deadline, timeout).await?;
        Ok(Session {
            io: BufReader::new(Stream::Tls(Box::new(tls))),
            local,
            deadline,
            timeout,
            max_line,
        })
    }

    /// Changes the bound on one line (default [`MAX_LINE`]).
    pub(crate) fn set_max_line(&mut self, max: usize) {
        self.max_line = max;
    }

    /// The check's whole timeout in ms, for "no … within N ms".
    pub(crate) fn timeout_ms(&self) -> u128 {
        self.timeout.as_millis()
    }

    /// The connection's local address (the bind address, or the one the kernel
    /// chose).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self.io.get_ref(), Stream::Tls(_))
    }

    /// Sends `line` and its CRLF, flushed, within the deadline.
    pub(crate) async fn write_line(&mut self, line: &str) -> Result<(), LineError> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        let write = async {
            let stream = self.io.get_mut();
            stream.write_all(&bytes).await?;
            stream.flush().await
        };
        match timeout_at(self.deadline, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(LineError::Io(e)),
            Err(_) => Err(LineError::TimedOut),
        }
    }

    /// One line without its line end (`\n` or `\r\n`), within the deadline and at
    /// most the session's line bound.
    pub(crate) async fn read_line(&mut self) -> Result<Vec<u8>, LineError> {
        match timeout_at(self.deadline, self.next_line()).await {
            Ok(r) => r,
            Err(_) => Err(LineError::TimedOut),
        }
    }

    async fn next_line(&mut self) -> Result<Vec<u8>, LineError> {
        let mut line = Vec::new();
        loop {
            let buf = self.io.fill_buf().await.map_err(LineError::Io)?;
            if buf.is_empty() {
                return Err(LineError::Closed);
            }
            let (taken, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            line.extend_from_slice(&buf[..taken]);
            self.io.consume(taken);
            if done {
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
            }
            // Not done: a `\r` at the end may yet be part of the line end.
            if line.len() > self.max_line + usize::from(!done) {
                return Err(LineError::TooLong);
            }
            if done {
                return Ok(line);
            }
        }
    }

    /// Reads and drops `n` bytes (an IMAP literal), within the deadline.
    pub(crate) async fn skip(&mut self, mut n: usize) -> Result<(), LineError> {
        let skip = async {
            while n > 0 {
                let buf = self.io.fill_buf().await.map_err(LineError::Io)?;
                if buf.is_empty() {
                    return Err(LineError::Closed);
                }
                let taken = buf.len().min(n);
                self.io.consume(taken);
                n -= taken;
            }
            Ok(())
        };
        match timeout_at(self.deadline, skip).await {
            Ok(r) => r,
            Err(_) => Err(LineError::TimedOut),
        }
    }

    /// [`Session::write_line`] with the common reasons: `what` names the command
    /// ("LOGIN"); the line itself is never quoted.
    pub(crate) async fn send(&mut self, line: &str, what: &str) -> Result<(), Stop> {
        self.write_line(line)
            .await
            .map_err(|e| Stop::Down(self.write_reason(e, what)))
    }

    /// [`Session::read_line`] with the common reasons: `awaited` is what was
    /// expected ("greeting", "reply to LOGIN").
    pub(crate) async fn line(&mut self, awaited: &str) -> Result<Vec<u8>, Stop> {
        self.read_line()
            .await
            .map_err(|e| Stop::Down(self.read_reason(e, awaited)))
    }

    /// A failed read as a reason: "connection closed before the greeting", "no
    /// reply to LOGIN within 500 ms", "greeting too long (over 4096 bytes a line)",
    /// "reply to USER: connection reset by peer".
    pub(crate) fn read_reason(&self, e: LineError, awaited: &str) -> String {
        match e {
            LineError::Closed => format!("connection closed before the {awaited}"),
            LineError::Io(e) => format!("{awaited}: {}", io_reason(&e)),
            LineError::TooLong => {
                format!("{awaited} too long (over {} bytes a line)", self.max_line)
            }
            LineError::TimedOut => format!("no {awaited} within {} ms", self.timeout_ms()),
        }
    }

    /// A failed write as a reason: "LOGIN: broken pipe", "LOGIN: not sent within
    /// 500 ms".
    pub(crate) fn write_reason(&self, e: LineError, what: &str) -> String {
        match e {
            LineError::Io(e) => format!("{what}: {}", io_reason(&e)),
            LineError::TimedOut => format!("{what}: not sent within {} ms", self.timeout_ms()),
            LineError::Closed => format!("{what}: connection closed"),
            LineError::TooLong => format!("{what}: line too long"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::{IpAddr, Ipv4Addr};

    use tokio::io::AsyncReadExt as _;
    use tokio::net::TcpListener;

    #[test]
    fn shown_is_bounded_and_escaped() {
        assert_eq!(shown("no\tthanks"), "no\\tthanks");
        assert_eq!(
            shown(&format!("{}\x07", "x".repeat(200))),
            format!("{}...", "x".repeat(SHOWN))
        );
        assert_eq!(shown_bytes(b" -ERR \xff busy\r\n"), "-ERR \\u{fffd} busy");
    }

    #[test]
    fn redact_hides_the_password() {
        assert_eq!(
            redact("user 'm' password 'hunter2'", "hunter2"),
            "user 'm' password '<password>'"
        );
        assert_eq!(redact("nothing", ""), "nothing");
        assert!(fits_a_line("s3cret w/ space"));
        assert!(!fits_a_line("s3cret\r\nQUIT"));
    }

    /// A server that writes `script` then holds the connection open until the
    /// client closes it; returns what the client sent.
    async fn serve(script: &'static [u8]) -> (Target, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            s.write_all(script).await.expect("write");
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got).await;
            got
        });
        let t = Target {
            real: addr,
            addr,
            bind: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            timeout: Duration::from_millis(300),
        };
        (t, server)
    }

    #[tokio::test]
    async fn lines_end_at_lf_with_or_without_cr() {
        let (t, server) = serve(b"+OK one\r\n+OK two\n{3}\r\nabc tail\r\nlast").await;
        let mut s = Session::connect(&t, None).await.expect("connect");
        assert!(!s.is_tls());
        assert_eq!(s.local_addr().ip(), Ipv4Addr::LOCALHOST);
        assert_eq!(s.line("greeting").await.expect("line"), b"+OK one");
        assert_eq!(s.line("greeting").await.expect("line"), b"+OK two");
        assert_eq!(s.line("greeting").await.expect("line"), b"{3}");
        s.skip(3).await.expect("skip");
        assert_eq!(s.line("greeting").await.expect("line"), b" tail");
        let Err(Stop::Down(reason)) = s.line("reply to USER").await else {
            panic!("a line without its end, then silence, is not a line");
        };
        assert_eq!(reason, "no reply to USER within 300 ms");
        s.send("QUIT", "QUIT").await.expect("send");
        drop(s);
        assert_eq!(server.await.expect("server"), b"QUIT\r\n");
    }

    #[tokio::test]
    async fn long_lines_and_closed_connections_are_reasons() {
        static LONG: [u8; 5000] = [b'x'; 5000];
        let (t, _server) = serve(&LONG).await;
        let mut s = Session::connect(&t, None).await.expect("connect");
        let Err(Stop::Down(reason)) = s.line("greeting").await else {
            panic!("too long");
        };
        assert_eq!(reason, "greeting too long (over 4096 bytes a line)");

        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let _ = s.write_all(b"* OK partial").await;
        });
        let t = Target { addr, ..t };
        let mut s = Session::connect(&t, None).await.expect("connect");
        let Err(Stop::Down(reason)) = s.line("greeting").await else {
            panic!("closed");
        };
        assert_eq!(reason, "connection closed before the greeting");
    }

    #[tokio::test]
    async fn upgrade_refuses_bytes_sent_before_the_handshake() {
        let (t, _server) = serve(b"+OK begin TLS\r\ninjected\r\n").await;
        let mut s = Session::connect(&t, None).await.expect("connect");
        // Let both lines arrive so that they are buffered together.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            s.line("reply to STLS").await.expect("line"),
            b"+OK begin TLS"
        );
        let client = tls::Client::new(
            &crate::spec::Tls {
                verify: false,
                ..crate::spec::Tls::default()
            },
            None,
        )
        .expect("client");
        let Err(Stop::Down(reason)) = s
            .upgrade(client.handshake(Ipv4Addr::LOCALHOST.into()))
            .await
        else {
            panic!("upgrade over injected bytes");
        };
        assert_eq!(
            reason,
            "server sent data after its STARTTLS reply, before the handshake"
        );
    }
}
