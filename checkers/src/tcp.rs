//! TCP connect, for every check over TCP, and the TCP check: connect, send/expect.
//!
//! [`connect`] is how a check reaches its real server: from the bind address if
//! given, within the attempt's deadline. A shortage on the checking host (ports,
//! descriptors, buffers, memory) or a bind address that is not local is the
//! checker's error; anything else ("connection refused", no answer in time) is the
//! real server's, with the reasons "connect 192.0.2.1:80: connection refused",
//! "connect 192.0.2.1:80: no answer within 500 ms".
//!
//! The TCP check, one attempt within the check's timeout: connect; send `send` if
//! any; with `expect`, read until the reply matches, the peer closes, [`MAX_REPLY`]
//! bytes came, or the time is up. The reason for a down real server says which step
//! failed and what came back.

use std::fmt::{self, Write as _};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout_at};

use crate::spec::{MAX_REPLY, Pattern, Tcp};
use crate::{Error, Stop, Target, Verdict, down, verdict};

pub(crate) async fn probe(spec: &Tcp, t: &Target) -> Result<Verdict, Error> {
    verdict(attempt(spec, t).await)
}

async fn attempt(spec: &Tcp, t: &Target) -> Result<(), Stop> {
    let deadline = Instant::now() + t.timeout;
    let mut stream = connect(t, deadline).await?;
    if let Some(data) = &spec.send {
        match timeout_at(deadline, stream.write_all(data)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return down(format!("send to {}: {}", t.addr, io_reason(&e))),
            Err(_) => {
                return down(format!(
                    "send to {}: not taken within {} ms",
                    t.addr,
                    t.timeout.as_millis()
                ));
            }
        }
    }
    match &spec.expect {
        Some(pattern) => expect(&mut stream, pattern, t, deadline).await,
        None => Ok(()),
    }
}

/// Connects to `t.addr`, from `t.bind` when set, by `deadline`, with the reasons
/// of the module doc. Nagle is off: what a check sends is a few small writes.
pub(crate) async fn connect(t: &Target, deadline: Instant) -> Result<TcpStream, Stop> {
    let stream = connect_from(t.addr, t.bind, deadline)
        .await
        .map_err(|e| e.stop(format_args!("connect {}", t.addr), t.timeout))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Why [`connect_from`] gave no connection.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// The checking host cannot: no socket, a bind address that is not local, or
    /// out of ports, descriptors, buffers or memory. Not the real server's fault.
    Local(Error),
    /// The real server's side: refused, unreachable...
    Failed(io::Error),
    /// No answer by the deadline.
    TimedOut,
}

impl ConnectError {
    /// As an attempt's stop, a failure of the real server's side worded after
    /// `what` ("connect 192.0.2.1:80: connection refused", "data connection to
    /// 192.0.2.1:40007: no answer within 500 ms").
    pub(crate) fn stop(self, what: impl fmt::Display, timeout: Duration) -> Stop {
        match self {
            ConnectError::Local(e) => Stop::Checker(e),
            ConnectError::Failed(e) => Stop::Down(format!("{what}: {}", io_reason(&e))),
            ConnectError::TimedOut => Stop::Down(format!(
                "{what}: no answer within {} ms",
                timeout.as_millis()
            )),
        }
    }
}

/// Connects to `addr`, from `bind` (any port) when set, by `deadline`; Nagle left
/// on. For a check that words its own reasons, or connects elsewhere than its
/// target (an FTP data connection).
pub(crate) async fn connect_from(
    addr: SocketAddr,
    bind: Option<IpAddr>,
    deadline: Instant,
) -> Result<TcpStream, ConnectError> {
    let local = |source| {
        ConnectError::Local(Error::Socket {
            target: addr,
            source,
        })
    };
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(local)?;
    if let Some(ip) = bind {
        socket.bind(SocketAddr::new(ip, 0)).map_err(local)?;
    }
    match timeout_at(deadline, socket.connect(addr)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) if is_local_shortage(&e) => Err(local(e)),
        Ok(Err(e)) => Err(ConnectError::Failed(e)),
        Err(_) => Err(ConnectError::TimedOut),
    }
}

/// Reads until the reply matches `pattern`; bounded to [`MAX_REPLY`] bytes.
async fn expect(
    stream: &mut TcpStream,
    pattern: &Pattern,
    t: &Target,
    deadline: Instant,
) -> Result<(), Stop> {
    let mut reply = Vec::new();
    loop {
        if reply.len() >= MAX_REPLY {
            return down(format!(
                "reply did not match /{}/ in its first {MAX_REPLY} bytes ({})",
                pattern.as_str(),
                got(&reply)
            ));
        }
        let len = reply.len();
        reply.resize((len + 4096).min(MAX_REPLY), 0);
        let read = timeout_at(deadline, stream.read(&mut reply[len..])).await;
        let n = match &read {
            Ok(Ok(n)) => *n,
            _ => 0,
        };
        reply.truncate(len + n);
        match read {
            Ok(Ok(0)) => {
                return down(format!(
                    "peer closed before matching /{}/ ({})",
                    pattern.as_str(),
                    got(&reply)
                ));
            }
            Ok(Ok(_)) => {
                if pattern.is_match(&reply) {
                    return Ok(());
                }
            }
            Ok(Err(e)) => {
                return down(format!(
                    "read from {}: {} ({})",
                    t.addr,
                    io_reason(&e),
                    got(&reply)
                ));
            }
            Err(_) => {
                return down(format!(
                    "reply did not match /{}/ within {} ms ({})",
                    pattern.as_str(),
                    t.timeout.as_millis(),
                    got(&reply)
                ));
            }
        }
    }
}

/// What came back, for a reason: `got 23 bytes: "ERR unknown command\r\n..."`.
fn got(reply: &[u8]) -> String {
    const SHOWN: usize = 40;
    if reply.is_empty() {
        return "got nothing".into();
    }
    let mut s = format!("got {} bytes: \"", reply.len());
    for &b in reply.iter().take(SHOWN) {
        let _ = write!(s, "{}", b.escape_ascii());
    }
    s.push('"');
    if reply.len() > SHOWN {
        s.push_str("...");
    }
    s
}

/// Errors that say the checking host, not the real server, is short of something.
pub(crate) fn is_local_shortage(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EADDRNOTAVAIL | libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// An I/O error as a reason: "connection refused", not "Connection refused (os
/// error 111)".
pub(crate) fn io_reason(e: &io::Error) -> String {
    let s = e.to_string();
    let s = s.find(" (os error ").map_or(s.as_str(), |i| &s[..i]);
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn got_shows_a_short_escaped_prefix() {
        assert_eq!(got(b""), "got nothing");
        assert_eq!(got(b"ERR\r\n\x00"), r#"got 6 bytes: "ERR\r\n\x00""#);
        let long = [b'x'; 50];
        assert_eq!(
            got(&long),
            format!("got 50 bytes: \"{}\"...", "x".repeat(40))
        );
    }

    #[test]
    fn io_reason_is_lowercase_without_the_os_error_number() {
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(io_reason(&e), "connection refused");
        let e = io::Error::from_raw_os_error(libc::EHOSTUNREACH);
        assert_eq!(io_reason(&e), "no route to host");
    }
}
