//! http and https checks.
//!
//! One attempt: connect (one fresh connection, never reused, never through a proxy),
//! TLS if asked, send `GET`/`HEAD path` with `Connection: close`, read the response
//! head, compare the status, and read the body only when the check looks at it
//! (bounded to [`MAX_BODY`]). Redirects are a status like any other, never followed.
//!
//! # hyper, not reqwest
//!
//! The design card named reqwest; the rule was to use it if it meets the benchmark,
//! else hyper directly. `examples/http_client_bench.rs` checks 1,000 loopback real
//! servers (one nginx, 2 workers) 20,000 times, 100 at once, on a current-thread
//! runtime, each client in its own process; two runs each, on an idle 2-core VM:
//!
//! | client                          | checks/s      | CPU s / 1,000 checks | peak RSS     |
//! |---------------------------------|---------------|----------------------|--------------|
//! | reqwest 0.13, http (no pool)    | 15,300-16,700 | 0.058-0.059          | 9.1-9.3 MiB  |
//! | hyper 1 `conn::http1`, http     | 20,300-21,700 | 0.046-0.048          | 7.2-7.3 MiB  |
//! | reqwest 0.13, https             | 3,200-4,000   | 0.235-0.238          | 10.2 MiB     |
//! | hyper 1 + tokio-rustls, https   | 4,200-4,300   | 0.217-0.218          | 8.5-9.0 MiB  |
//!
//! reqwest was set up as a checker needs it: `pool_max_idle_per_host(0)`,
//! `no_proxy`, no redirects, rustls (ring, resumption off), `Connection: close`.
//! hyper costs about 20 % less CPU per plain check and 8 % less per TLS check,
//! 2 MiB less memory, and ten crates less (reqwest, tower, tower-http,
//! hyper-rustls, rustls-platform-verifier, futures-util, ...: a pool and layers
//! that a one-request connection does not use). It also lets each reason say how
//! far the attempt got (connect, TLS, response head, body), where reqwest folds
//! these into "error sending request". So: hyper.
//!
//! The request is written by hyper's HTTP/1 connection driven inside the attempt's
//! own future (no spawned task), so dropping the attempt drops the socket; it is
//! closed without `shutdown` (one system call less per attempt).

use std::fmt::Write as _;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::pin;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::Connection;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use md5::{Digest as _, Md5};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, timeout_at};

use crate::spec::{Http, MAX_BODY, Method};
use crate::tcp::{self, ConnectError};
use crate::{Error, Stop, Target, Verdict, down, tls, verdict};

const USER_AGENT: &str = concat!("directord-check/", env!("CARGO_PKG_VERSION"));

/// What one http check prepares once for all its attempts.
#[derive(Debug)]
pub(crate) struct Prepared {
    method: hyper::Method,
    uri: Uri,
    /// Every request header but Host when it comes from the connect address.
    headers: HeaderMap,
    /// `Some` when Host is fixed (`host` option or a custom Host header).
    fixed_host: bool,
    tls: Option<tls::Client>,
    /// "200-299", "200, 301-302".
    expected: String,
}

impl Prepared {
    pub(crate) fn new(spec: &Http) -> Result<Prepared, Error> {
        let option = |message: String| Error::Option { message };
        let uri: Uri = spec
            .path
            .parse()
            .map_err(|e| option(format!("bad HTTP path {:?}: {e}", spec.path)))?;
        if uri.scheme().is_some() || !spec.path.starts_with('/') {
            return Err(option(format!(
                "bad HTTP path {:?}: must start with '/'",
                spec.path
            )));
        }

        let mut headers = HeaderMap::new();
        if let Some(host) = &spec.host {
            let value = HeaderValue::from_str(host)
                .map_err(|_| option(format!("bad HTTP host {host:?}")))?;
            headers.insert(header::HOST, value);
        }
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        if let Some(auth) = &spec.basic_auth {
            let token = base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                auth.user,
                auth.password.expose()
            ));
            let mut value = HeaderValue::from_str(&format!("Basic {token}"))
                .map_err(|_| option("bad basic_auth credentials".into()))?;
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
        }
        // Custom headers replace the defaults of the same name; repeated custom
        // names are all sent, in order.
        let mut seen: Vec<HeaderName> = Vec::new();
        for (name, value) in &spec.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| option(format!("bad HTTP header name {name:?}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| option(format!("bad value for HTTP header {name}: {value:?}")))?;
            if seen.contains(&name) {
                headers.append(name, value);
            } else {
                headers.insert(name.clone(), value);
                seen.push(name);
            }
        }
        // Last, so no custom header turns it off: every attempt is one connection.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));

        let fixed_host = headers.contains_key(header::HOST);
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let tls = spec
            .tls
            .as_ref()
            .map(|t| tls::Client::new(t, host))
            .transpose()?;

        let mut expected = String::new();
        for (i, range) in spec.expect_status.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            if range.start() == range.end() {
                let _ = write!(expected, "{sep}{}", range.start());
            } else {
                let _ = write!(expected, "{sep}{}-{}", range.start(), range.end());
            }
        }
        Ok(Prepared {
            method: match spec.method {
                Method::Get => hyper::Method::GET,
                Method::Head => hyper::Method::HEAD,
            },
            uri,
            headers,
            fixed_host,
            tls,
            expected,
        })
    }
}

pub(crate) async fn probe(p: &Prepared, spec: &Http, t: &Target) -> Result<Verdict, Error> {
    verdict(attempt(p, spec, t).await)
}

async fn attempt(p: &Prepared, spec: &Http, t: &Target) -> Result<(), Stop> {
    let deadline = Instant::now() + t.timeout;
    let ms = t.timeout.as_millis();
    // The reasons of an HTTP check keep their own words ("connect: connection
    // refused", see `io_reason` below).
    let tcp = match tcp::connect_from(t.addr, t.bind, deadline).await {
        Ok(tcp) => tcp,
        Err(ConnectError::Local(e)) => return Err(Stop::Checker(e)),
        Err(ConnectError::Failed(e)) => return down(format!("connect: {}", io_reason(&e))),
        Err(ConnectError::TimedOut) => return down(format!("connect: no answer within {ms} ms")),
    };
    // Closed with a reset once the verdict is in (as HAProxy closes its checks): no
    // FIN exchange and no TIME_WAIT left on either side; 6 % less CPU at 10,000
    // checks a second (see examples/scale.rs). The response has been read by then.
    let _ = tcp.set_zero_linger();
    let request = request(p, t);
    match &p.tls {
        None => exchange(tcp, request, p, spec, deadline, ms).await,
        Some(client) => {
            // The TLS client writes its last handshake flight and then the request:
            // with Nagle, the request could wait for a delayed ACK (40 ms). Plain
            // HTTP writes the request once and needs no extra system call.
            let _ = tcp.set_nodelay(true);
            let handshake = client.handshake(t.addr.ip());
            let stream = tls::handshake(tcp, handshake, deadline, t.timeout).await?;
            exchange(stream, request, p, spec, deadline, ms).await
        }
    }
}

fn request(p: &Prepared, t: &Target) -> Request<Empty<Bytes>> {
    let mut request = Request::new(Empty::new());
    *request.method_mut() = p.method.clone();
    *request.uri_mut() = p.uri.clone();
    let mut headers = p.headers.clone();
    if !p.fixed_host {
        let default_port = if p.tls.is_some() { 443 } else { 80 };
        let host = match (t.addr, t.addr.port() == default_port) {
            (SocketAddr::V4(a), true) => a.ip().to_string(),
            (SocketAddr::V6(a), true) => format!("[{}]", a.ip()),
            (addr, false) => addr.to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&host) {
            headers.insert(header::HOST, value);
        }
    }
    *request.headers_mut() = headers;
    request
}

async fn exchange<S>(
    io: S,
    request: Request<Empty<Bytes>>,
    p: &Prepared,
    spec: &Http,
    deadline: Instant,
    ms: u128,
) -> Result<(), Stop>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (mut sender, mut conn) = match hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(io))
        .await
    {
        Ok(pair) => pair,
        Err(e) => return down(format!("HTTP: {}", chain(&e))),
    };
    let mut conn = Driver::new(&mut conn);

    let response = match timeout_at(deadline, conn.drive(sender.send_request(request))).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => return down(head_error(&e)),
        Err(_) => return down(format!("connected, no response headers within {ms} ms")),
    };
    let status = response.status().as_u16();
    if !spec.expect_status.iter().any(|r| r.contains(&status)) {
        return down(format!("status {status}, expected {}", p.expected));
    }
    if spec.expect_body.is_none() && spec.expect_digest.is_none() {
        // The body is not looked at: dropping the connection here is the point.
        return Ok(());
    }
    check_body(response, &mut conn, spec, deadline, ms, status).await
}

async fn check_body<S>(
    response: Response<Incoming>,
    conn: &mut Driver<'_, S>,
    spec: &Http,
    deadline: Instant,
    ms: u128,
    status: u16,
) -> Result<(), Stop>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let length = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = length.is_some_and(|n| n > MAX_BODY as u64);
    if too_large && spec.expect_digest.is_some() {
        return down("body larger than 1 MiB, digest not checked".to_owned());
    }
    // Ends at the connection's end rather than at a length or a last chunk.
    let close_delimited = length.is_none()
        && !response
            .headers()
            .get(header::TRANSFER_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));

    let mut body = response.into_body();
    // Grows as the body comes; the length the server claims only hints.
    let mut kept: Vec<u8> =
        Vec::with_capacity(length.map_or(8 << 10, |n| n.min(64 << 10) as usize));
    let mut md5 = spec.expect_digest.map(|_| Md5::new());
    let mut total: usize = 0;
    let mut truncated = false;
    let read = async {
        while let Some(frame) = conn.drive(body.frame()).await {
            let frame = frame?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            total += data.len();
            if let Some(md5) = &mut md5 {
                md5.update(&data);
            }
            let room = MAX_BODY - kept.len();
            kept.extend_from_slice(&data[..data.len().min(room)]);
            if total > MAX_BODY {
                truncated = true;
                break;
            }
        }
        Ok::<(), hyper::Error>(())
    };
    match timeout_at(deadline, read).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) if close_delimited && is_eof(&e) => {}
        Ok(Err(e)) if is_eof(&e) => {
            return down(format!("connection closed mid-body after {total} bytes"));
        }
        Ok(Err(e)) => {
            return down(format!(
                "status {status}, body failed after {total} bytes: {}",
                chain(&e)
            ));
        }
        Err(_) => {
            return down(format!(
                "status {status}, body incomplete after {total} bytes within {ms} ms"
            ));
        }
    }

    if let (Some(want), Some(md5)) = (&spec.expect_digest, md5) {
        if truncated {
            return down("body larger than 1 MiB, digest not checked".to_owned());
        }
        let got: [u8; 16] = md5.finalize().into();
        if &got != want {
            return down(format!("body MD5 {}, expected {}", hex(&got), hex(want)));
        }
    }
    if let Some(pattern) = &spec.expect_body
        && !pattern.is_match(&kept)
    {
        let note = if truncated {
            " (in the first 1 MiB of a larger body)"
        } else {
            ""
        };
        return down(format!("body did not match /{}/{note}", pattern.as_str()));
    }
    Ok(())
}

/// Polls the HTTP/1 connection alongside whatever waits on it (the response head,
/// then each body frame), within the attempt's task. Without shutdown: the socket
/// is simply closed when the attempt drops it, which saves a `shutdown` call (and
/// its loopback FIN processing) per attempt.
struct Driver<'a, S: AsyncRead + AsyncWrite + Unpin + Send> {
    conn: Option<&'a mut Connection<TokioIo<S>, Empty<Bytes>>>,
}

impl<'a, S> Driver<'a, S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    fn new(conn: &'a mut Connection<TokioIo<S>, Empty<Bytes>>) -> Self {
        Driver { conn: Some(conn) }
    }

    async fn drive<F: Future>(&mut self, work: F) -> F::Output {
        let mut work = pin!(work);
        poll_fn(|cx| {
            if let Some(conn) = &mut self.conn
                && conn.poll_without_shutdown(cx).is_ready()
            {
                // Finished or failed: either way `work` now learns of it through
                // hyper's channel.
                self.conn = None;
            }
            work.as_mut().poll(cx)
        })
        .await
    }
}

/// Why no response head came.
fn head_error(e: &hyper::Error) -> String {
    if e.is_parse() || e.is_parse_status() {
        format!("malformed response: {e}")
    } else if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        "connected, connection closed before response headers".into()
    } else {
        format!("connected, no response: {}", chain(e))
    }
}

fn is_eof(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return io.kind() == io::ErrorKind::UnexpectedEof;
        }
        source = s.source();
    }
    false
}

/// An error with its causes, "a: b: c".
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(out, ": {}", s);
        source = s.source();
    }
    out
}

/// "connection refused" rather than "Connection refused (os error 111)".
fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::HostUnreachable => "host unreachable".into(),
        io::ErrorKind::NetworkUnreachable => "network unreachable".into(),
        io::ErrorKind::TimedOut => "timed out".into(),
        _ => e.to_string(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
