//! TCP connect, and send/expect.
//!
//! One attempt, all within the check's timeout: connect (from the bind address if
//! given); send `send` if any; with `expect`, read until the reply matches, the peer
//! closes, [`MAX_REPLY`] bytes came, or the time is up. The reason for a down real
//! server says which step failed and what came back.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout_at};

use crate::spec::{MAX_REPLY, Pattern, Tcp};
use crate::{Error, Target, Verdict};

/// Why an attempt did not succeed.
enum Failure {
    /// The real server failed the check.
    Down(String),
    /// The checker itself could not work.
    Checker(Error),
}

pub(crate) async fn probe(spec: &Tcp, t: &Target) -> Result<Verdict, Error> {
    match attempt(spec, t).await {
        Ok(()) => Ok(Verdict::Up),
        Err(Failure::Down(reason)) => Ok(Verdict::Down(reason)),
        Err(Failure::Checker(e)) => Err(e),
    }
}

async fn attempt(spec: &Tcp, t: &Target) -> Result<(), Failure> {
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

/// Connects to `t.addr`, from `t.bind` when set.
async fn connect(t: &Target, deadline: Instant) -> Result<TcpStream, Failure> {
    let checker = |source| {
        Failure::Checker(Error::Socket {
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
            // `send` is one write; do not let Nagle hold it back.
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        // Our side is out of something (ports, descriptors, buffers): not the real
        // server's fault.
        Ok(Err(e)) if is_local_shortage(&e) => Err(checker(e)),
        Ok(Err(e)) => down(format!("connect {}: {}", t.addr, io_reason(&e))),
        Err(_) => down(format!(
            "connect {}: no answer within {} ms",
            t.addr,
            t.timeout.as_millis()
        )),
    }
}

/// Reads until the reply matches `pattern`; bounded to [`MAX_REPLY`] bytes.
async fn expect(
    stream: &mut TcpStream,
    pattern: &Pattern,
    t: &Target,
    deadline: Instant,
) -> Result<(), Failure> {
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

fn down<T>(reason: String) -> Result<T, Failure> {
    Err(Failure::Down(reason))
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
