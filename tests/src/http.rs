//! The lab's HTTP, for traffic that really goes through IPVS: `labhttp` runs on the real
//! servers and answers every request with its node name and the two ends of the TCP
//! connection as it sees them; the client side here parses that. A test therefore knows
//! which real server answered, whether the client's own address reached it (NAT, DR and
//! TUN all keep it) and which address the real server was asked on (the VIP for DR and
//! TUN, its own for NAT).
//!
//! Body of every answer: `<node> <client ip:port> <local ip:port>\n`. The server speaks
//! HTTP/1.1 with keep-alive, so one [`Connection`] can carry requests over a long time
//! (the failover test keeps one open across a director's death).

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use socket2::{Domain, Socket, Type};

use crate::lab::Lab;

/// How long the client waits to connect and for each answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// What the real server said about the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The node that answered (`rs1`).
    pub server: String,
    /// The client's address as the real server saw it.
    pub client: SocketAddr,
    /// The address the real server accepted the connection on.
    pub local: SocketAddr,
}

impl Answer {
    fn parse(body: &str) -> Result<Answer> {
        let mut words = body.split_whitespace();
        let (Some(server), Some(client), Some(local), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            bail!("unexpected answer body {body:?}");
        };
        Ok(Answer {
            server: server.to_string(),
            client: client.parse().with_context(|| format!("body {body:?}"))?,
            local: local.parse().with_context(|| format!("body {body:?}"))?,
        })
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.server, self.client, self.local)
    }
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

/// Runs the responder until the process dies: one thread per listening address, one per
/// connection. Says `listening` on stderr once every address is bound.
pub fn serve(name: &str, listen: &[SocketAddr]) -> Result<()> {
    let mut threads = Vec::new();
    for &addr in listen {
        let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
        let name = name.to_string();
        threads.push(thread::spawn(move || -> Result<()> {
            loop {
                let (stream, _) = listener.accept()?;
                let name = name.clone();
                thread::spawn(move || {
                    // A client that goes away mid-request is the client's business.
                    let _ = serve_connection(&name, stream);
                });
            }
        }));
    }
    eprintln!("labhttp {name}: listening on {listen:?}");
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("accept thread panicked"))??;
    }
    Ok(())
}

fn serve_connection(name: &str, stream: TcpStream) -> Result<()> {
    let body = format!("{name} {} {}\n", stream.peer_addr()?, stream.local_addr()?);
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        let mut keep_alive = request.trim_end().ends_with("HTTP/1.1");
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            let header = header.trim_end().to_ascii_lowercase();
            if header.is_empty() {
                break;
            }
            if let Some(value) = header.strip_prefix("connection:") {
                keep_alive = value.trim() == "keep-alive";
            }
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: {}\r\n\r\n{body}",
            body.len(),
            if keep_alive { "keep-alive" } else { "close" },
        );
        writer.write_all(response.as_bytes())?;
        if !keep_alive {
            return Ok(());
        }
    }
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

/// One TCP connection to `target`, from `source` when given (an address the client node
/// holds). Requests on it keep it open.
#[derive(Debug)]
pub struct Connection {
    reader: BufReader<TcpStream>,
    target: SocketAddr,
}

impl Connection {
    pub fn open(target: SocketAddr, source: Option<IpAddr>) -> Result<Connection> {
        Connection::open_timeout(target, source, TIMEOUT)
    }

    /// As [`Connection::open`], waiting at most `timeout` to connect and for each answer.
    pub fn open_timeout(
        target: SocketAddr,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> Result<Connection> {
        let socket = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
        if let Some(ip) = source {
            socket
                .bind(&SocketAddr::new(ip, 0).into())
                .with_context(|| format!("binding {ip}"))?;
        }
        socket
            .connect_timeout(&target.into(), timeout)
            .with_context(|| format!("connecting to {target}"))?;
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            reader: BufReader::new(stream),
            target,
        })
    }

    /// This end of the connection.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.reader.get_ref().local_addr()?)
    }

    /// `GET /` on this connection, asking to keep it open (`keep_alive`) or not.
    pub fn get(&mut self, keep_alive: bool) -> Result<Answer> {
        let target = self.target;
        self.exchange(keep_alive)
            .with_context(|| format!("GET http://{target}/"))
    }

    fn exchange(&mut self, keep_alive: bool) -> Result<Answer> {
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nConnection: {}\r\n\r\n",
            self.target,
            if keep_alive { "keep-alive" } else { "close" }
        );
        self.reader.get_mut().write_all(request.as_bytes())?;
        let mut status = String::new();
        self.reader.read_line(&mut status)?;
        ensure!(
            status.starts_with("HTTP/1.1 200 "),
            "status line {status:?}"
        );
        let mut length = None;
        loop {
            let mut header = String::new();
            ensure!(
                self.reader.read_line(&mut header)? > 0,
                "connection closed in the headers"
            );
            let header = header.trim_end().to_ascii_lowercase();
            if header.is_empty() {
                break;
            }
            if let Some(value) = header.strip_prefix("content-length:") {
                length = Some(value.trim().parse::<usize>()?);
            }
        }
        let mut body = vec![0; length.context("no Content-Length")?];
        self.reader.read_exact(&mut body)?;
        Answer::parse(&String::from_utf8_lossy(&body))
    }
}

/// One request on a fresh connection (closed afterwards).
pub fn get(target: SocketAddr, source: Option<IpAddr>) -> Result<Answer> {
    Connection::open(target, source)?.get(false)
}

/// A request to send: where to, and from which of the client's addresses (`None`: the
/// kernel picks).
pub type Request = (SocketAddr, Option<IpAddr>);

/// From the `node` namespace, each request in turn on a fresh connection; the answers in
/// order.
pub fn get_each(lab: &Lab, node: &str, requests: Vec<Request>) -> Result<Vec<Answer>> {
    lab.in_netns(node, move || {
        requests
            .iter()
            .enumerate()
            .map(|(i, &(target, source))| {
                get(target, source).with_context(|| format!("request {}", i + 1))
            })
            .collect()
    })?
    .join()
    .map_err(|_| anyhow::anyhow!("client thread panicked"))?
}

/// `n` requests to `target` from `node`, each on a fresh connection.
pub fn get_n(lab: &Lab, node: &str, target: SocketAddr, n: usize) -> Result<Vec<Answer>> {
    get_each(lab, node, vec![(target, None); n])
}

/// How many answers each real server gave.
pub fn by_server(answers: &[Answer]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for a in answers {
        *out.entry(a.server.clone()).or_default() += 1;
    }
    out
}

/// Opens a connection from the `node` namespace (the socket stays there).
pub fn open_in(
    lab: &Lab,
    node: &str,
    target: SocketAddr,
    source: Option<IpAddr>,
) -> Result<Connection> {
    lab.in_netns(node, move || Connection::open(target, source))?
        .join()
        .map_err(|_| anyhow::anyhow!("client thread panicked"))?
}

// ---------------------------------------------------------------------------
// Steady load
// ---------------------------------------------------------------------------

/// One request of a [`Load`].
#[derive(Debug, Clone)]
pub struct Shot {
    /// Microseconds since the load started.
    pub sent_us: u64,
    /// When the answer (or the failure) came.
    pub done_us: u64,
    /// The real server that answered, or why the request failed.
    pub result: std::result::Result<String, String>,
}

struct LoadShared {
    start: Instant,
    stop: AtomicBool,
    shots: Mutex<Vec<Shot>>,
}

impl LoadShared {
    fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn shots(&self) -> std::sync::MutexGuard<'_, Vec<Shot>> {
        self.shots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A client sending `GET /` at a steady rate, each request on a fresh connection: what
/// a busy site's users do to a VIP. Requests go out on schedule from a pool of worker
/// threads (request `n` from worker `n % WORKERS`), so a slow one does not hold up the
/// next; a worker whose previous request is still running sends late, and the shot
/// records when it really went out. `stop` returns every request's outcome.
pub struct Load {
    shared: Arc<LoadShared>,
    target: SocketAddr,
    workers: Vec<JoinHandle<Result<()>>>,
}

impl fmt::Debug for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Load")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// The worker threads of a [`Load`].
const WORKERS: u32 = 32;

impl Load {
    /// Starts sending from `node`, one request to `target` every `interval`; a request
    /// fails when connecting or its answer takes longer than `timeout`.
    pub fn start_in(
        lab: &Lab,
        node: &str,
        target: SocketAddr,
        interval: Duration,
        timeout: Duration,
    ) -> Result<Load> {
        let shared = Arc::new(LoadShared {
            start: Instant::now(),
            stop: AtomicBool::new(false),
            shots: Mutex::new(Vec::new()),
        });
        let mut workers = Vec::new();
        for worker in 0..WORKERS {
            let s = Arc::clone(&shared);
            workers.push(lab.in_netns(node, move || {
                let mut n = worker;
                while !s.stop.load(Ordering::SeqCst) {
                    // Scheduled from the start, so a late request does not shift
                    // later ones.
                    let due = s.start + interval * n;
                    n += WORKERS;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        thread::sleep(wait);
                    }
                    let sent_us = s.now_us();
                    let result = Connection::open_timeout(target, None, timeout)
                        .and_then(|mut c| c.get(false))
                        .map(|a| a.server)
                        .map_err(|e| format!("{e:#}"));
                    let done_us = s.now_us();
                    s.shots().push(Shot {
                        sent_us,
                        done_us,
                        result,
                    });
                }
                Ok(())
            })?);
        }
        Ok(Load {
            shared,
            target,
            workers,
        })
    }

    /// Microseconds since the load started (the clock of [`Shot`]).
    pub fn now_us(&self) -> u64 {
        self.shared.now_us()
    }

    /// The requests finished so far, in order of sending.
    pub fn snapshot(&self) -> LoadReport {
        LoadReport::new(self.shared.shots().clone())
    }

    /// Stops sending, waits for the requests in flight, and returns them all.
    pub fn stop(self) -> Result<LoadReport> {
        self.shared.stop.store(true, Ordering::SeqCst);
        for worker in self.workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
        }
        Ok(LoadReport::new(self.shared.shots().clone()))
    }
}

/// The outcome of a [`Load`].
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// In order of sending.
    pub shots: Vec<Shot>,
}

impl LoadReport {
    fn new(mut shots: Vec<Shot>) -> LoadReport {
        shots.sort_by_key(|s| s.sent_us);
        LoadReport { shots }
    }

    /// The requests sent in [from_us, to_us).
    pub fn sent_between(&self, from_us: u64, to_us: u64) -> Vec<&Shot> {
        self.shots
            .iter()
            .filter(|s| s.sent_us >= from_us && s.sent_us < to_us)
            .collect()
    }

    /// The failed requests sent in [from_us, to_us).
    pub fn failed_between(&self, from_us: u64, to_us: u64) -> Vec<&Shot> {
        self.sent_between(from_us, to_us)
            .into_iter()
            .filter(|s| s.result.is_err())
            .collect()
    }

    /// The longest time a request sent in [from_us, to_us) took, failed or not.
    pub fn slowest_between(&self, from_us: u64, to_us: u64) -> Duration {
        self.sent_between(from_us, to_us)
            .iter()
            .map(|s| Duration::from_micros(s.done_us.saturating_sub(s.sent_us)))
            .max()
            .unwrap_or_default()
    }

    /// Answers per real server among the requests sent in [from_us, to_us).
    pub fn by_server_between(&self, from_us: u64, to_us: u64) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for s in self.sent_between(from_us, to_us) {
            if let Ok(server) = &s.result {
                *out.entry(server.clone()).or_default() += 1;
            }
        }
        out
    }
}

impl fmt::Display for Shot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let took = self.done_us.saturating_sub(self.sent_us) as f64 / 1000.0;
        match &self.result {
            Ok(server) => write!(f, "{:.3}s +{took:.1}ms {server}", self.sent_us as f64 / 1e6),
            Err(e) => write!(
                f,
                "{:.3}s +{took:.1}ms FAILED {e}",
                self.sent_us as f64 / 1e6
            ),
        }
    }
}
