//! The Prometheus endpoint (`[metrics] listen = "127.0.0.1:9498"`, opt-in).
//!
//! `GET /metrics` asks the supervisor for the same status `directorctl status --json`
//! prints and renders it in the Prometheus text format (version 0.0.4): role,
//! transitions, failover messages sent and received, invalid packets by reason, VIPs,
//! check results and latency per real server, and the IPVS table's counters per
//! service and real server. Anything else is 404; when the supervisor does not answer,
//! 503.
//!
//! HTTP is hyper's HTTP/1.1 server (already in the tree through the checkers' client):
//! it parses requests strictly, bounds the header size and times out slow headers,
//! which a hand-written parser would have to get right again. On top of it: at most
//! [`MAX_CONNECTIONS`] connections at once, each closed after [`CONNECTION_LIFETIME`],
//! and no request body accepted.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use http_body_util::Full;
use hyper::body::{Body as _, Bytes, Incoming};
use hyper::header::{ALLOW, CONNECTION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::control;
use crate::supervisor::SupervisorHandle;

/// The Prometheus text format's content type.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Connections served at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 16;
/// Bytes of request head buffered (hyper's minimum); larger heads get 431.
pub const MAX_REQUEST: usize = 8192;
/// A request head must arrive within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A keep-alive connection is closed after this, whatever it does.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// A scrape waits this long for the supervisor, then answers 503.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `listen` and serves `GET /metrics` until `cancel`. An address that cannot be
/// bound is an error (logged here too, for a caller that only spawns this).
pub async fn serve(
    listen: SocketAddr,
    supervisor: SupervisorHandle,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let endpoint = match Endpoint::bind(listen) {
        Ok(e) => e,
        Err(e) => {
            warn!("{e:#}");
            return Err(e);
        }
    };
    endpoint.serve(supervisor, cancel).await
}

/// A bound metrics listener: bind at start (so a taken port fails the start), serve
/// once the supervisor runs.
#[derive(Debug)]
pub struct Endpoint {
    listener: std::net::TcpListener,
}

impl Endpoint {
    pub fn bind(listen: SocketAddr) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind(listen)
            .with_context(|| format!("cannot listen on {listen} for metrics"))?;
        listener.set_nonblocking(true)?;
        Ok(Endpoint { listener })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves scrapes from the supervisor's status until `cancel`.
    pub async fn serve(
        self,
        supervisor: SupervisorHandle,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        self.serve_with(
            move || {
                let supervisor = supervisor.clone();
                async move { supervisor.request(control::Request::Status).await }
            },
            cancel,
        )
        .await
    }

    /// Serves with `status` as the source of each scrape's status.
    async fn serve_with<S, F>(self, status: S, cancel: CancellationToken) -> anyhow::Result<()>
    where
        S: Fn() -> F + Send + Sync + 'static,
        F: Future<Output = control::Response> + Send + 'static,
    {
        let local = self.local_addr()?;
        let listener = tokio::net::TcpListener::from_std(self.listener)?;
        info!(listen = %local, "metrics: serving GET /metrics");
        let status = Arc::new(status);
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let tracker = TaskTracker::new();
        loop {
            let (stream, peer) = tokio::select! {
                _ = cancel.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // EMFILE and the like: back off instead of spinning.
                        warn!(error = %e, "metrics: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                debug!(%peer, "metrics: too many connections, closing");
                continue;
            };
            let status = status.clone();
            let cancel = cancel.clone();
            tracker.spawn(async move {
                let _slot = slot;
                connection(stream, status, cancel).await;
                debug!(%peer, "metrics: connection closed");
            });
        }
        tracker.close();
        tracker.wait().await;
        Ok(())
    }
}

/// One HTTP/1.1 connection, bounded in header size, header time and lifetime.
async fn connection<S, F>(stream: tokio::net::TcpStream, status: Arc<S>, cancel: CancellationToken)
where
    S: Fn() -> F + Send + Sync + 'static,
    F: Future<Output = control::Response> + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let status = status.clone();
        async move { Ok::<_, Infallible>(handle(req, status.as_ref()).await) }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_REQUEST);
    let conn = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(error = %e, "metrics: connection error");
            }
            return;
        }
        _ = tokio::time::sleep(CONNECTION_LIFETIME) => {}
        _ = cancel.cancelled() => {}
    }
    // Let a request in flight finish, then close.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
}

async fn handle<S, F>(req: Request<Incoming>, status: &S) -> Response<Full<Bytes>>
where
    S: Fn() -> F,
    F: Future<Output = control::Response>,
{
    if req.uri().path() != "/metrics" {
        return text(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD /metrics\n",
        );
        r.headers_mut()
            .insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if req.body().size_hint().upper() != Some(0) {
        // Never read: close the connection rather than drain an unbounded body.
        let mut r = text(StatusCode::PAYLOAD_TOO_LARGE, "a scrape has no body\n");
        r.headers_mut()
            .insert(CONNECTION, hyper::header::HeaderValue::from_static("close"));
        return r;
    }
    let answer = match tokio::time::timeout(STATUS_TIMEOUT, status()).await {
        Ok(a) => a,
        Err(_) => control::Response::error(format!(
            "directord did not answer within {}s",
            STATUS_TIMEOUT.as_secs()
        )),
    };
    let (code, body) = scrape(answer);
    if code != StatusCode::OK {
        warn!(error = %body.trim_end(), "metrics: scrape answered 503");
    }
    let mut r = text(code, body);
    if code == StatusCode::OK {
        r.headers_mut().insert(
            CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(CONTENT_TYPE_TEXT),
        );
    }
    r
}

/// The answer to a scrape from the supervisor's answer to `status`: 200 and the
/// rendered metrics, or 503 and why.
pub fn scrape(answer: control::Response) -> (StatusCode, String) {
    match (answer.ok, answer.status) {
        (true, Some(status)) => (StatusCode::OK, render(&status)),
        (_, _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "directord status unavailable: {}\n",
                answer.error.as_deref().unwrap_or("no status in the answer")
            ),
        ),
    }
}

fn text(code: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = code;
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

// --- rendering ---

/// Prometheus metric types used here.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Gauge,
    Counter,
}

/// One metric family: HELP, TYPE, samples.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    samples: Vec<(Vec<(&'static str, String)>, Number)>,
}

#[derive(Debug, Clone, Copy)]
enum Number {
    Int(u64),
    Float(f64),
}

impl Family {
    fn new(name: &'static str, kind: Kind, help: &'static str) -> Self {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, labels: &[(&'static str, &str)], value: Number) {
        let labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        self.samples.push((labels, value));
    }

    /// Adds the JSON number `v` (skipped when it is not a number).
    fn add_json(&mut self, labels: &[(&'static str, &str)], v: &Value) {
        if let Some(n) = number(v) {
            self.add(labels, n);
        }
    }

    fn write(&self, out: &mut String) {
        if self.samples.is_empty() {
            return;
        }
        let kind = match self.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(out, "# HELP {} {}", self.name, escape_help(self.help));
        let _ = writeln!(out, "# TYPE {} {kind}", self.name);
        for (labels, value) in &self.samples {
            out.push_str(self.name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                }
                out.push('}');
            }
            out.push(' ');
            match value {
                Number::Int(n) => {
                    let _ = write!(out, "{n}");
                }
                Number::Float(f) => out.push_str(&float(*f)),
            }
            out.push('\n');
        }
    }
}

fn number(v: &Value) -> Option<Number> {
    match v {
        Value::Bool(b) => Some(Number::Int(u64::from(*b))),
        Value::Number(n) => n
            .as_u64()
            .map(Number::Int)
            .or_else(|| n.as_f64().map(Number::Float)),
        _ => None,
    }
}

fn flag(b: bool) -> Number {
    Number::Int(u64::from(b))
}

fn float(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_string()
    } else if f.is_infinite() {
        if f > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{f}")
    }
}

/// A label value as the text format writes it: `\`, `"` and newline escaped.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn str_of(v: &Value) -> Option<&str> {
    v.as_str()
}

/// The roles a director can be in; `directord_role` has one series for each.
const ROLES: [&str; 3] = ["active", "standby", "fault"];
/// What a check's last result can be; `directord_check_result` has one series each.
const RESULTS: [&str; 3] = ["up", "down", "error"];

/// Renders `directorctl status --json` (the supervisor's status report) as
/// Prometheus text. Fields missing from `status` leave their series out; it never
/// fails.
pub fn render(status: &Value) -> String {
    let node = str_of(&status["node"]).unwrap_or("");
    let protocol = str_of(&status["protocol"]).unwrap_or("");
    let role = str_of(&status["role"]).unwrap_or("");
    let counters = &status["counters"];

    let mut up = Family::new(
        "directord_up",
        Kind::Gauge,
        "1: directord answered this scrape with its status.",
    );
    up.add(&[], Number::Int(1));

    let mut info = Family::new(
        "directord_info",
        Kind::Gauge,
        "The node's name, failover protocol and interface; always 1.",
    );
    info.add(
        &[
            ("node", node),
            ("protocol", protocol),
            ("interface", str_of(&status["interface"]).unwrap_or("")),
        ],
        Number::Int(1),
    );

    let mut roles = Family::new(
        "directord_role",
        Kind::Gauge,
        "1 for the role this director is in (active, standby, fault), 0 for the others.",
    );
    for r in ROLES {
        roles.add(&[("node", node), ("role", r)], flag(role == r));
    }
    let mut active = Family::new(
        "directord_active",
        Kind::Gauge,
        "1 when this director is active (holds the VIPs' role), else 0.",
    );
    active.add(&[], flag(role == "active"));

    let mut priority = Family::new(
        "directord_priority",
        Kind::Gauge,
        "Configured failover priority.",
    );
    priority.add_json(&[], &status["priority"]);
    let mut effective = Family::new(
        "directord_effective_priority",
        Kind::Gauge,
        "Priority currently advertised (differs under a takeover or standby override).",
    );
    effective.add_json(&[], &status["effective_priority"]);
    let mut ready = Family::new(
        "directord_ready",
        Kind::Gauge,
        "1 when the health checks are settled; 0: holding, no takeover from a live peer.",
    );
    ready.add_json(&[], &status["ready"]);
    let mut peer_priority = Family::new(
        "directord_peer_priority",
        Kind::Gauge,
        "Priority of the peer last heard.",
    );
    let mut peer_seen = Family::new(
        "directord_peer_last_seen_timestamp_seconds",
        Kind::Gauge,
        "When the peer was last heard (unix time).",
    );
    if let Some(address) = str_of(&status["peer"]["address"]) {
        peer_priority.add_json(&[("address", address)], &status["peer"]["priority"]);
        if let Some(ms) = status["peer"]["last_seen"].as_u64() {
            peer_seen.add(&[("address", address)], Number::Float(ms as f64 / 1000.0));
        }
    }

    let mut transitions = Family::new(
        "directord_transitions_total",
        Kind::Counter,
        "Role changes of this process, by the role entered.",
    );
    if let Some(map) = counters.as_object() {
        for (key, v) in map {
            if let Some(to) = key.strip_prefix("became_") {
                transitions.add_json(&[("role", to)], v);
            }
        }
    }
    let mut sent = Family::new(
        "directord_failover_messages_sent_total",
        Kind::Counter,
        "Failover messages sent: VRRP adverts, or heartbeat keepalives.",
    );
    sent.add_json(&[("protocol", protocol)], &counters["adverts_sent"]);
    let mut received = Family::new(
        "directord_failover_messages_received_total",
        Kind::Counter,
        "Valid failover messages received from the peer: VRRP adverts, or authenticated heartbeat messages (per medium).",
    );
    received.add_json(&[("protocol", protocol)], &counters["adverts_received"]);
    let mut zero_sent = Family::new(
        "directord_failover_stepdowns_sent_total",
        Kind::Counter,
        "Step-down messages sent: VRRP priority-0 adverts, or heartbeat shutdown notices.",
    );
    zero_sent.add_json(&[("protocol", protocol)], &counters["priority_zero_sent"]);
    let mut zero_received = Family::new(
        "directord_failover_stepdowns_received_total",
        Kind::Counter,
        "Step-down messages received from the peer.",
    );
    zero_received.add_json(
        &[("protocol", protocol)],
        &counters["priority_zero_received"],
    );
    let mut invalid = Family::new(
        "directord_invalid_packets_total",
        Kind::Counter,
        "Failover packets dropped as invalid, by reason.",
    );
    if let Some(map) = counters["invalid"].as_object() {
        for (reason, v) in map {
            invalid.add_json(&[("protocol", protocol), ("reason", reason)], v);
        }
    }

    let mut link_up = Family::new(
        "directord_heartbeat_link_up",
        Kind::Gauge,
        "1 when the peer was heard on this heartbeat medium within the dead time.",
    );
    for link in status["links"].as_array().into_iter().flatten() {
        if let Some(medium) = str_of(&link["medium"]) {
            link_up.add_json(&[("medium", medium)], &link["up"]);
        }
    }

    let mut vip_held = Family::new(
        "directord_vip_held",
        Kind::Gauge,
        "1 when this director holds the VIP on its interface.",
    );
    for vip in status["vips"].as_array().into_iter().flatten() {
        if let Some(address) = str_of(&vip["address"]) {
            vip_held.add_json(
                &[
                    ("address", address),
                    ("interface", str_of(&vip["interface"]).unwrap_or("")),
                ],
                &vip["held"],
            );
        }
    }

    let mut real_up = Family::new(
        "directord_real_up",
        Kind::Gauge,
        "1 when the checks hold the real server up (after rise/fall), else 0.",
    );
    let mut latency = Family::new(
        "directord_check_latency_seconds",
        Kind::Gauge,
        "Duration of the last check of the real server.",
    );
    let mut result = Family::new(
        "directord_check_result",
        Kind::Gauge,
        "1 for the last check's result (up, down, error: the checker could not run), 0 for the others.",
    );
    let mut last_check = Family::new(
        "directord_check_last_timestamp_seconds",
        Kind::Gauge,
        "When the last check of the real server ended (unix time).",
    );
    for check in status["checks"].as_array().into_iter().flatten() {
        let (Some(service), Some(real)) = (str_of(&check["service"]), str_of(&check["real"]))
        else {
            continue;
        };
        let labels = [("service", service), ("real", real)];
        if let Some(h) = str_of(&check["health"]) {
            real_up.add(&labels, flag(h == "up"));
        }
        let last = &check["last"];
        if let Some(ms) = last["latency_ms"].as_f64() {
            latency.add(&labels, Number::Float(ms / 1000.0));
        }
        if let Some(r) = str_of(&last["result"]) {
            for each in RESULTS {
                result.add(
                    &[("service", service), ("real", real), ("result", each)],
                    flag(r == each),
                );
            }
        }
        if let Some(ms) = last["at"].as_u64() {
            last_check.add(&labels, Number::Float(ms as f64 / 1000.0));
        }
    }

    let mut ipvs = IpvsFamilies::new();
    ipvs.add(&status["ipvs"]);

    let mut out = String::new();
    for f in [
        up,
        info,
        roles,
        active,
        priority,
        effective,
        ready,
        peer_priority,
        peer_seen,
        transitions,
        sent,
        received,
        zero_sent,
        zero_received,
        invalid,
        link_up,
        vip_held,
        real_up,
        latency,
        result,
        last_check,
    ] {
        f.write(&mut out);
    }
    for f in ipvs.families() {
        f.write(&mut out);
    }
    out
}

/// The IPVS block's families.
#[derive(Debug)]
struct IpvsFamilies {
    state: Family,
    present: Family,
    service: [Family; 5],
    active: Family,
    inactive: Family,
    weight: Family,
    configured_weight: Family,
    drained: Family,
    real: [Family; 5],
}

/// The kernel's stats fields rendered as counters, in the order of
/// `IpvsFamilies::service` and `IpvsFamilies::real`.
const STATS: [&str; 5] = [
    "connections",
    "in_packets",
    "out_packets",
    "in_bytes",
    "out_bytes",
];

impl IpvsFamilies {
    fn new() -> Self {
        use Kind::{Counter, Gauge};
        IpvsFamilies {
            state: Family::new(
                "directord_ipvs_state",
                Gauge,
                "1 for the IPVS state (ok, unavailable: no IPVS in this kernel, unused), 0 for the others.",
            ),
            present: Family::new(
                "directord_ipvs_service_present",
                Gauge,
                "1 when the kernel holds the virtual service.",
            ),
            service: [
                Family::new(
                    "directord_ipvs_service_connections_total",
                    Counter,
                    "Connections the kernel scheduled for the virtual service.",
                ),
                Family::new(
                    "directord_ipvs_service_in_packets_total",
                    Counter,
                    "Packets in to the virtual service.",
                ),
                Family::new(
                    "directord_ipvs_service_out_packets_total",
                    Counter,
                    "Packets out of the virtual service.",
                ),
                Family::new(
                    "directord_ipvs_service_in_bytes_total",
                    Counter,
                    "Bytes in to the virtual service.",
                ),
                Family::new(
                    "directord_ipvs_service_out_bytes_total",
                    Counter,
                    "Bytes out of the virtual service.",
                ),
            ],
            active: Family::new(
                "directord_ipvs_real_active_connections",
                Gauge,
                "Active connections to the real server.",
            ),
            inactive: Family::new(
                "directord_ipvs_real_inactive_connections",
                Gauge,
                "Inactive connections to the real server.",
            ),
            weight: Family::new(
                "directord_ipvs_real_weight",
                Gauge,
                "The real server's weight in the kernel (absent: not in the kernel's table).",
            ),
            configured_weight: Family::new(
                "directord_ipvs_real_configured_weight",
                Gauge,
                "The real server's weight in the config.",
            ),
            drained: Family::new(
                "directord_ipvs_real_drained",
                Gauge,
                "1 when an operator drained the real server.",
            ),
            real: [
                Family::new(
                    "directord_ipvs_real_connections_total",
                    Counter,
                    "Connections the kernel scheduled to the real server.",
                ),
                Family::new(
                    "directord_ipvs_real_in_packets_total",
                    Counter,
                    "Packets in to the real server.",
                ),
                Family::new(
                    "directord_ipvs_real_out_packets_total",
                    Counter,
                    "Packets out of the real server.",
                ),
                Family::new(
                    "directord_ipvs_real_in_bytes_total",
                    Counter,
                    "Bytes in to the real server.",
                ),
                Family::new(
                    "directord_ipvs_real_out_bytes_total",
                    Counter,
                    "Bytes out of the real server.",
                ),
            ],
        }
    }

    fn add(&mut self, ipvs: &Value) {
        if let Some(state) = str_of(&ipvs["state"]) {
            let mut states = vec!["ok", "unavailable", "unused"];
            if !states.contains(&state) {
                states.push(state);
            }
            for s in states {
                self.state.add(&[("state", s)], flag(s == state));
            }
        }
        for service in ipvs["services"].as_array().into_iter().flatten() {
            let Some(name) = str_of(&service["name"]) else {
                continue;
            };
            let labels = [("service", name)];
            self.present.add_json(&labels, &service["present"]);
            for (family, field) in self.service.iter_mut().zip(STATS) {
                family.add_json(&labels, &service["stats"][field]);
            }
            for real in service["reals"].as_array().into_iter().flatten() {
                let Some(address) = str_of(&real["address"]) else {
                    continue;
                };
                let labels = [("service", name), ("real", address)];
                self.active.add_json(&labels, &real["active_connections"]);
                self.inactive
                    .add_json(&labels, &real["inactive_connections"]);
                self.weight.add_json(&labels, &real["weight"]);
                self.configured_weight
                    .add_json(&labels, &real["configured_weight"]);
                self.drained.add_json(&labels, &real["drained"]);
                for (family, field) in self.real.iter_mut().zip(STATS) {
                    family.add_json(&labels, &real["stats"][field]);
                }
            }
        }
    }

    fn families(self) -> Vec<Family> {
        let mut out = vec![self.state, self.present];
        out.extend(self.service);
        out.extend([
            self.active,
            self.inactive,
            self.weight,
            self.configured_weight,
            self.drained,
        ]);
        out.extend(self.real);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// `directorctl status --json` of d2, the standby of the metrics lab
    /// (tests/tests/metrics_lab.rs): VRRPv3 at 100 ms, rs1 up and rs2 down. That
    /// kernel had no IPVS, so the `ipvs` block's counters were all 0; they are set
    /// here to distinct values, rs1 given its kernel weight, and one invalid-packet
    /// reason added, so that each lands in its own series.
    const STATUS: &str = r#"{"advert_interval":100,"checks":[{"health":"up","last":{"at":1795630727752,"attempts":1,"latency_ms":0.8,"result":"up"},"real":"192.0.2.21:80","service":"www","streak":2},{"health":"down","last":{"at":1795630727693,"attempts":1,"latency_ms":0.2,"reason":"connect: connection refused","result":"down"},"real":"192.0.2.22:80","service":"www","streak":1}],"config":"/tmp/directord-dlab26454x0/d2-directord.toml","counters":{"adverts_received":1,"adverts_sent":0,"became_active":0,"invalid":{"interval-mismatch":2},"priority_zero_received":0,"priority_zero_sent":0},"effective_priority":100,"interface":"eth0","ipvs":{"error":null,"failures":[],"last_apply":null,"services":[{"name":"www","present":true,"reals":[{"active_connections":4,"address":"192.0.2.21:80","configured_weight":3,"drained":false,"forward":"dr","health":"up","inactive_connections":5,"persistent_connections":0,"stats":{"connection_rate":0,"connections":11,"in_byte_rate":0,"in_bytes":12,"in_packet_rate":0,"in_packets":13,"out_byte_rate":0,"out_bytes":14,"out_packet_rate":0,"out_packets":15},"weight":3},{"active_connections":0,"address":"192.0.2.22:80","configured_weight":2,"drained":true,"forward":"dr","health":"down","inactive_connections":0,"persistent_connections":0,"stats":{"connection_rate":0,"connections":0,"in_byte_rate":0,"in_bytes":0,"in_packet_rate":0,"in_packets":0,"out_byte_rate":0,"out_bytes":0,"out_packet_rate":0,"out_packets":0},"weight":null}],"scheduler":"rr","service":"TCP 192.0.2.100:80","stats":{"connection_rate":0,"connections":21,"in_byte_rate":0,"in_bytes":22,"in_packet_rate":0,"in_packets":23,"out_byte_rate":0,"out_bytes":24,"out_packet_rate":0,"out_packets":25}}],"state":"ok","sync":{"error":null,"interface":"eth0","role":"backup","running":[],"sync_id":51}},"last_transition":{"at":1795630727547,"reason":"startup","role":"standby","state":"backup"},"node":"d2","override":"none","peer":{"address":"192.0.2.11","advert_interval":100,"last_seen":1795630727853,"priority":150},"pid":26528,"priority":100,"protocol":"vrrp","ready":true,"role":"standby","router_id":51,"started":1795630727555,"state":"backup","version":3,"vips":[{"address":"192.0.2.100/24","held":false,"interface":"eth0"}]}"#;

    fn status() -> Value {
        serde_json::from_str(STATUS).expect("captured status is JSON")
    }

    /// Every sample line's family has HELP and TYPE lines before it, each once.
    fn assert_well_formed(text: &str) {
        let mut typed = std::collections::BTreeSet::new();
        let mut helped = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap_or_default();
                assert!(typed.insert(name.to_string()), "second TYPE: {line}");
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default();
                assert!(helped.insert(name.to_string()), "second HELP: {line}");
            } else {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                assert!(typed.contains(name), "no TYPE for {line}");
                assert!(helped.contains(name), "no HELP for {line}");
            }
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn renders_a_captured_status() {
        let text = render(&status());
        assert_well_formed(&text);
        for line in [
            "# TYPE directord_up gauge",
            "directord_up 1",
            "directord_info{node=\"d2\",protocol=\"vrrp\",interface=\"eth0\"} 1",
            "directord_role{node=\"d2\",role=\"active\"} 0",
            "directord_role{node=\"d2\",role=\"standby\"} 1",
            "directord_role{node=\"d2\",role=\"fault\"} 0",
            "directord_active 0",
            "directord_priority 100",
            "directord_effective_priority 100",
            "directord_ready 1",
            "directord_peer_priority{address=\"192.0.2.11\"} 150",
            "directord_peer_last_seen_timestamp_seconds{address=\"192.0.2.11\"} 1795630727.853",
            "# TYPE directord_transitions_total counter",
            "directord_transitions_total{role=\"active\"} 0",
            "directord_failover_messages_sent_total{protocol=\"vrrp\"} 0",
            "directord_failover_messages_received_total{protocol=\"vrrp\"} 1",
            "directord_failover_stepdowns_sent_total{protocol=\"vrrp\"} 0",
            "directord_invalid_packets_total{protocol=\"vrrp\",reason=\"interval-mismatch\"} 2",
            "directord_vip_held{address=\"192.0.2.100/24\",interface=\"eth0\"} 0",
            "directord_real_up{service=\"www\",real=\"192.0.2.21:80\"} 1",
            "directord_real_up{service=\"www\",real=\"192.0.2.22:80\"} 0",
            "directord_check_latency_seconds{service=\"www\",real=\"192.0.2.21:80\"} 0.0008",
            "directord_check_result{service=\"www\",real=\"192.0.2.22:80\",result=\"up\"} 0",
            "directord_check_result{service=\"www\",real=\"192.0.2.22:80\",result=\"down\"} 1",
            "directord_check_result{service=\"www\",real=\"192.0.2.22:80\",result=\"error\"} 0",
            "directord_check_last_timestamp_seconds{service=\"www\",real=\"192.0.2.21:80\"} 1795630727.752",
            "directord_ipvs_state{state=\"ok\"} 1",
            "directord_ipvs_state{state=\"unavailable\"} 0",
            "directord_ipvs_service_present{service=\"www\"} 1",
            "directord_ipvs_service_connections_total{service=\"www\"} 21",
            "directord_ipvs_service_in_bytes_total{service=\"www\"} 22",
            "directord_ipvs_service_in_packets_total{service=\"www\"} 23",
            "directord_ipvs_service_out_bytes_total{service=\"www\"} 24",
            "directord_ipvs_service_out_packets_total{service=\"www\"} 25",
            "directord_ipvs_real_active_connections{service=\"www\",real=\"192.0.2.21:80\"} 4",
            "directord_ipvs_real_inactive_connections{service=\"www\",real=\"192.0.2.21:80\"} 5",
            "directord_ipvs_real_weight{service=\"www\",real=\"192.0.2.21:80\"} 3",
            "directord_ipvs_real_configured_weight{service=\"www\",real=\"192.0.2.22:80\"} 2",
            "directord_ipvs_real_drained{service=\"www\",real=\"192.0.2.22:80\"} 1",
            "# TYPE directord_ipvs_real_connections_total counter",
            "directord_ipvs_real_connections_total{service=\"www\",real=\"192.0.2.21:80\"} 11",
            "directord_ipvs_real_in_bytes_total{service=\"www\",real=\"192.0.2.21:80\"} 12",
            "directord_ipvs_real_in_packets_total{service=\"www\",real=\"192.0.2.21:80\"} 13",
            "directord_ipvs_real_out_bytes_total{service=\"www\",real=\"192.0.2.21:80\"} 14",
            "directord_ipvs_real_out_packets_total{service=\"www\",real=\"192.0.2.21:80\"} 15",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
        // A real server out of the kernel's table has no weight series.
        assert!(
            !text.contains("directord_ipvs_real_weight{service=\"www\",real=\"192.0.2.22:80\"}")
        );
        // No heartbeat media under VRRP.
        assert!(!text.contains("directord_heartbeat_link_up"));
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("two\nlines"), "two\\nlines");
        let mut s = status();
        s["checks"][0]["service"] = Value::from("w\"w\\w\nw");
        s["node"] = Value::from("lvs \"1\"");
        let text = render(&s);
        assert_well_formed(&text);
        assert!(
            text.contains(
                "directord_real_up{service=\"w\\\"w\\\\w\\nw\",real=\"192.0.2.21:80\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("directord_role{node=\"lvs \\\"1\\\"\",role=\"standby\"} 1"));
        // No raw newline inside any series.
        assert!(
            text.lines()
                .all(|l| l.starts_with('#') || l.ends_with(|c: char| c.is_ascii_digit()))
        );
    }

    #[test]
    fn an_empty_or_odd_status_renders_what_it_can() {
        let text = render(&serde_json::json!({}));
        assert_well_formed(&text);
        assert!(text.lines().any(|l| l == "directord_up 1"));
        assert!(text.lines().any(|l| l == "directord_active 0"));
        let text = render(&serde_json::json!({
            "role": "fault", "priority": "high", "checks": [{"service": 1}], "ipvs": null
        }));
        assert_well_formed(&text);
        assert!(text.contains("directord_role{node=\"\",role=\"fault\"} 1"));
        assert!(!text.contains("directord_priority"));
        assert!(!text.contains("directord_real_up"));
    }

    #[test]
    fn heartbeat_media_and_other_transitions() {
        let mut s = status();
        s["protocol"] = Value::from("heartbeat");
        s["counters"]["became_fault"] = Value::from(3);
        s["links"] = serde_json::json!([
            {"medium": "ucast eth1 198.51.100.12", "interface": "eth1", "up": true},
            {"medium": "mcast eth0 239.0.0.94", "interface": "eth0", "up": false}
        ]);
        let text = render(&s);
        assert_well_formed(&text);
        assert!(text.contains("directord_transitions_total{role=\"fault\"} 3"));
        assert!(
            text.contains("directord_heartbeat_link_up{medium=\"ucast eth1 198.51.100.12\"} 1")
        );
        assert!(text.contains("directord_heartbeat_link_up{medium=\"mcast eth0 239.0.0.94\"} 0"));
        assert!(
            text.contains("directord_failover_messages_received_total{protocol=\"heartbeat\"} 1")
        );
    }

    #[test]
    fn a_failed_status_is_503() {
        let (code, body) = scrape(control::Response::error("directord is shutting down"));
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            "directord status unavailable: directord is shutting down\n"
        );
        let (code, body) = scrape(control::Response::status(status()));
        assert_eq!(code, StatusCode::OK);
        assert!(body.starts_with("# HELP directord_up "));
    }

    /// Starts the server on 127.0.0.1 with `ok` deciding whether the status comes.
    async fn start(ok: bool) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
        let endpoint = Endpoint::bind("127.0.0.1:0".parse().expect("address")).expect("bind");
        let addr = endpoint.local_addr().expect("local address");
        let cancel = CancellationToken::new();
        let task = tokio::spawn({
            let cancel = cancel.clone();
            async move {
                let status = move || async move {
                    if ok {
                        control::Response::status(status())
                    } else {
                        control::Response::error("directord is shutting down")
                    }
                };
                endpoint.serve_with(status, cancel).await.expect("serve");
            }
        });
        (addr, cancel, task)
    }

    /// Sends `request` raw and reads until the server closes.
    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(request).await.expect("write");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    fn get(path: &str) -> Vec<u8> {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
    }

    #[tokio::test]
    async fn serves_metrics_over_http() {
        let (addr, cancel, task) = start(true).await;
        let answer = exchange(addr, &get("/metrics")).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(
            answer.contains("content-type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{answer}"
        );
        assert!(answer.contains("\r\n\r\n# HELP directord_up "), "{answer}");

        let answer = exchange(addr, &get("/")).await;
        assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
        let answer = exchange(
            addr,
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 405 "), "{answer}");
        assert!(answer.contains("allow: GET, HEAD\r\n"), "{answer}");
        let answer = exchange(
            addr,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
        // A head larger than the buffer: 431, nothing rendered.
        let big = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(MAX_REQUEST * 2)
        );
        let answer = exchange(addr, big.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");

        cancel.cancel();
        task.await.expect("server ends on cancel");
    }

    #[tokio::test]
    async fn a_failed_status_answers_503() {
        let (addr, cancel, task) = start(false).await;
        let answer = exchange(addr, &get("/metrics")).await;
        assert!(
            answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{answer}"
        );
        assert!(answer.ends_with("directord status unavailable: directord is shutting down\n"));
        cancel.cancel();
        task.await.expect("server ends on cancel");
    }

    /// A client that connects and says nothing is dropped after the header timeout.
    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_dropped() {
        let (addr, cancel, task) = start(true).await;
        let t0 = tokio::time::Instant::now();
        let answer = exchange(addr, b"").await;
        let waited = t0.elapsed();
        assert!(
            waited >= HEADER_TIMEOUT && waited < HEADER_TIMEOUT * 2,
            "closed after {waited:?}: {answer}"
        );
        cancel.cancel();
        task.await.expect("server ends on cancel");
    }
}
