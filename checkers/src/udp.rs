//! A request and its answer over UDP (DNS, RADIUS, SIP).
//!
//! The socket is bound to the bind address if given (any port) and connected to
//! the real server, so that the ICMP errors from its side come back on it: "UDP
//! port 53 unreachable". A shortage on the checking host is the checker's error,
//! as for TCP ([`crate::tcp`]). The request is sent once (the check's `retry` is
//! the retransmission); every datagram that comes back is judged until one is the
//! answer or the deadline passes.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout_at};

use crate::tcp::{io_reason, is_local_shortage};
use crate::{Error, Stop, Target, down};

/// A UDP socket connected to one real server.
#[derive(Debug)]
pub(crate) struct Udp {
    socket: UdpSocket,
    addr: SocketAddr,
}

impl Udp {
    /// Binds to `t.bind` (any address when unset) and connects to `t.addr`.
    pub(crate) async fn connect(t: &Target) -> Result<Udp, Stop> {
        let ip = t.bind.unwrap_or(match t.addr {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        });
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0))
            .await
            .map_err(|source| socket_error(t.addr, source))?;
        match socket.connect(t.addr).await {
            Ok(()) => Ok(Udp {
                socket,
                addr: t.addr,
            }),
            Err(e) if is_local_shortage(&e) => Err(socket_error(t.addr, e)),
            Err(e) => down(format!("connect {}: {}", t.addr, io_reason(&e))),
        }
    }

    /// The socket's own address (the port the kernel chose).
    pub(crate) fn local_addr(&self) -> Result<SocketAddr, Stop> {
        self.socket
            .local_addr()
            .map_err(|source| socket_error(self.addr, source))
    }

    /// Sends `request` and hands each datagram that comes back (cut to `max_len`
    /// bytes) to `judge` until it returns the answer. Down with `no_answer()` when
    /// none came by `deadline`.
    pub(crate) async fn exchange<T>(
        &self,
        request: &[u8],
        max_len: usize,
        deadline: Instant,
        no_answer: impl FnOnce() -> String,
        mut judge: impl FnMut(&[u8]) -> Option<T>,
    ) -> Result<T, Stop> {
        let exchange = async {
            self.socket.send(request).await?;
            let mut buf = vec![0u8; max_len];
            loop {
                let n = self.socket.recv(&mut buf).await?;
                if let Some(answer) = judge(&buf[..n]) {
                    return Ok::<T, io::Error>(answer);
                }
            }
        };
        match timeout_at(deadline, exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => down(self.reason(&e)),
            Err(_) => down(no_answer()),
        }
    }

    /// An error from the connected socket: ICMP errors from the real server's side
    /// arrive this way.
    fn reason(&self, e: &io::Error) -> String {
        if e.kind() == io::ErrorKind::ConnectionRefused {
            format!("UDP port {} unreachable", self.addr.port())
        } else {
            format!("{}: {}", self.addr, io_reason(e))
        }
    }
}

fn socket_error(target: SocketAddr, source: io::Error) -> Stop {
    Stop::Checker(Error::Socket { target, source })
}
