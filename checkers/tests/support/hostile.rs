//! Servers written in the tests, on loopback ports, that misbehave on purpose:
//! each serves what its test scripts and the check must say what went wrong.
//! Their tasks end with the test's runtime.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Serves every connection to a port on 127.0.0.1 with `serve`.
pub async fn tcp<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tcp_on("127.0.0.1:0", serve).await
}

/// Serves every connection to `addr` (port 0: a free one) with `serve`.
pub async fn tcp_on<F, Fut>(addr: &str, serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await.expect("bind");
    let local = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    local
}

/// Answers each datagram to a port on 127.0.0.1 with the datagrams of
/// `answer(request)`, if any.
pub async fn udp(answer: impl Fn(&[u8]) -> Vec<Vec<u8>> + Send + 'static) -> SocketAddr {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let addr = socket.local_addr().expect("address");
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            for reply in answer(&buf[..n]) {
                let _ = socket.send_to(&reply, from).await;
            }
        }
    });
    addr
}

/// A server that accepts and never says a word.
pub async fn silent() -> SocketAddr {
    tcp(|stream| async move {
        std::future::pending::<()>().await;
        drop(stream);
    })
    .await
}

/// Reads a request head, up to its blank line, so that a server answers after it;
/// `None` if the client closes first.
pub async fn read_head(stream: &mut (impl AsyncRead + Unpin)) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
}

/// What a scripted server received, one command line per entry.
pub type Received = Arc<Mutex<Vec<String>>>;

/// A scripted server for a line protocol (SMTP, FTP, NNTP, POP3): sends
/// `greeting`, then answers each command line with the reply of the first matching
/// prefix (case-insensitive). Closes on an unknown command or after the reply to
/// QUIT.
pub async fn scripted(greeting: &str, replies: &[(&str, &str)]) -> SocketAddr {
    recording(greeting, replies, false).await.0
}

/// [`scripted`], recording what it received. With `tagged` (IMAP) the first word
/// of a command is its tag: prefixes match what follows it, `TAG` in a reply
/// becomes the tag, and the server also closes after the reply to LOGOUT.
pub async fn recording(
    greeting: &str,
    replies: &[(&str, &str)],
    tagged: bool,
) -> (SocketAddr, Received) {
    let greeting = greeting.to_owned();
    let replies: Arc<Vec<(String, String)>> = Arc::new(
        replies
            .iter()
            .map(|(prefix, reply)| (prefix.to_string(), reply.to_string()))
            .collect(),
    );
    let received = Received::default();
    let log = received.clone();
    let addr = tcp(move |stream| {
        let (greeting, replies, log) = (greeting.clone(), replies.clone(), log.clone());
        async move {
            let mut io = BufReader::new(stream);
            if io.get_mut().write_all(greeting.as_bytes()).await.is_err() {
                return;
            }
            let mut line = String::new();
            while matches!(io.read_line(&mut line).await, Ok(n) if n > 0) {
                let full = line.trim_end().to_owned();
                log.lock().expect("log").push(full.clone());
                let (tag, command) = match (tagged, full.split_once(' ')) {
                    (true, Some((tag, rest))) => (tag, rest),
                    _ => ("", full.as_str()),
                };
                let command = command.to_ascii_uppercase();
                let Some((_, reply)) = replies.iter().find(|(p, _)| command.starts_with(p)) else {
                    return;
                };
                let reply = if tagged {
                    reply.replace("TAG", tag)
                } else {
                    reply.clone()
                };
                if io.get_mut().write_all(reply.as_bytes()).await.is_err()
                    || command == "QUIT"
                    || (tagged && command == "LOGOUT")
                {
                    return;
                }
                line.clear();
            }
        }
    })
    .await;
    (addr, received)
}
