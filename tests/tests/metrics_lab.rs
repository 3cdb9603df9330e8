//! The Prometheus endpoint in the namespace lab: a directord pair (VRRPv3, 100 ms
//! adverts; d1 priority 150, d2 100), each with `[metrics]` on its lab address and a
//! checked web service (rs1 runs `labhttp`, rs2 runs nothing). The client scrapes both
//! directors over the lab's network, d1 is killed with `kill -9`, and the client
//! scrapes d2 again: what a Prometheus server on the client would record. Every scrape
//! is parsed strictly as the text format (version 0.0.4). Run as root; otherwise the
//! test says it was skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use directord_tests::directord::Directord;
use directord_tests::lab::{self, Lab, find_bin};
use directord_tests::vrrp::Setup;
use directord_tests::wait;

const PORT: u16 = 9498;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The lab: two directors, the client, two real servers.
fn build() -> Result<Lab> {
    Lab::builder()
        .node("d1")
        .node("d2")
        .node("client")
        .node("rs1")
        .node("rs2")
        .build()
}

/// `[metrics]` on the director's lab address and the web service: rs1 up (labhttp),
/// rs2 down (nothing listens).
fn extra(lab: &Lab, node: &str) -> String {
    format!(
        r#"
[metrics]
listen = "{metrics}"

[[service]]
name = "www"
address = "192.0.2.100:80"
protocol = "tcp"
scheduler = "rr"
forward = "dr"
check = {{ type = "http", path = "/", interval = "200ms", timeout = "200ms", rise = 1, fall = 1 }}

[[service.real]]
address = "{rs1}:80"
weight = 3

[[service.real]]
address = "{rs2}:80"
weight = 2
"#,
        metrics = metrics_addr(lab, node),
        rs1 = lab.node("rs1").ipv4,
        rs2 = lab.node("rs2").ipv4,
    )
}

fn metrics_addr(lab: &Lab, node: &str) -> SocketAddr {
    SocketAddr::from((lab.node(node).ipv4, PORT))
}

/// An HTTP answer: status code, headers (lowercase names), body.
#[derive(Debug)]
struct Answer {
    code: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

/// One HTTP/1.1 request from the client's namespace (`Connection: close`).
fn http(lab: &Lab, target: SocketAddr, request: String) -> Result<Answer> {
    let thread = lab.in_netns("client", move || {
        let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(5))
            .with_context(|| format!("connecting to {target}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(request.as_bytes())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .with_context(|| format!("reading the answer of {target}"))?;
        Ok(raw)
    })?;
    let raw = thread
        .join()
        .map_err(|_| anyhow::anyhow!("the client's HTTP thread panicked"))??;
    let text = String::from_utf8(raw).context("the answer is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("no end of headers in {text:?}"))?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad status line {status:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Answer {
        code,
        headers,
        body: body.to_string(),
    })
}

fn get(lab: &Lab, target: SocketAddr, path: &str) -> Result<Answer> {
    http(
        lab,
        target,
        format!("GET {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"),
    )
}

/// `GET /metrics` from the client: 200, the text format's content type, parsed.
fn scrape(lab: &Lab, node: &str) -> Result<Scrape> {
    let target = metrics_addr(lab, node);
    let answer = get(lab, target, "/metrics")?;
    ensure!(
        answer.code == 200,
        "GET /metrics of {node}: {} {}",
        answer.code,
        answer.body
    );
    let ct = answer
        .headers
        .get("content-type")
        .map(String::as_str)
        .unwrap_or("");
    ensure!(
        ct.starts_with("text/plain") && ct.contains("version=0.0.4"),
        "content type of {node}'s metrics: {ct:?}"
    );
    parse(&answer.body).with_context(|| format!("{node}'s metrics:\n{}", answer.body))
}

/// Scrapes `node` until `done` holds of its metrics, or `timeout`; returns the scrape.
fn scrape_until(
    lab: &Lab,
    node: &str,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&Scrape) -> Result<bool>,
) -> Result<Scrape> {
    let mut last = None;
    wait::until(timeout, what, || {
        let m = scrape(lab, node)?;
        let ok = done(&m)?;
        last = Some(m);
        Ok(ok)
    })?;
    last.context("no scrape")
}

/// One sample: the family's name, its labels, its value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed scrape: the declared types and the samples.
#[derive(Debug)]
struct Scrape {
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Scrape {
    /// The value of the one sample of `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        match found.as_slice() {
            [one] => Ok(one.value),
            [] => bail!("no sample {name}{labels:?}"),
            many => bail!("{} samples {name}{labels:?}", many.len()),
        }
    }
}

fn is_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

/// Parses the Prometheus text format (0.0.4) strictly: `# HELP name text`,
/// `# TYPE name type` (once per family, before its samples), `name{k="v",...} value`
/// with escaped label values; every sample belongs to a family with a TYPE (a counter's
/// samples end in `_total` here), no sample repeats, families are not interleaved, and
/// the text ends with a newline.
fn parse(text: &str) -> Result<Scrape> {
    ensure!(text.ends_with('\n'), "does not end with a newline");
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: BTreeSet<String> = BTreeSet::new();
    let mut samples: Vec<Sample> = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let keyword = parts.next().unwrap_or_default();
            let name = parts.next().unwrap_or_default().to_string();
            let arg = parts.next().unwrap_or_default();
            match keyword {
                "HELP" => {
                    ensure!(is_name(&name, true), "line {n}: bad name {name:?}");
                    ensure!(helps.insert(name.clone()), "line {n}: second HELP");
                }
                "TYPE" => {
                    ensure!(is_name(&name, true), "line {n}: bad name {name:?}");
                    ensure!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg),
                        "line {n}: bad type {arg:?}"
                    );
                    ensure!(!types.contains_key(&name), "line {n}: second TYPE");
                    types.insert(name.clone(), arg.to_string());
                }
                _ => {}
            }
            if let Some(prev) = current.replace(name.clone())
                && prev != name
            {
                done.insert(prev);
            }
            ensure!(!done.contains(&name), "line {n}: family {name} interleaved");
            continue;
        }
        ensure!(!line.starts_with('#'), "line {n}: comment without a space");
        let sample = parse_sample(line).with_context(|| format!("line {n}: {line:?}"))?;
        let family = types
            .get(&sample.name)
            .with_context(|| format!("line {n}: {} has no TYPE", sample.name))?;
        if family == "counter" {
            ensure!(
                sample.name.ends_with("_total"),
                "line {n}: counter {} does not end in _total",
                sample.name
            );
            ensure!(sample.value >= 0.0, "line {n}: negative counter");
        }
        ensure!(
            current.as_deref() == Some(sample.name.as_str()),
            "line {n}: sample of {} outside its family's block",
            sample.name
        );
        ensure!(
            seen.insert(format!("{}{:?}", sample.name, sample.labels)),
            "line {n}: repeated series"
        );
        samples.push(sample);
    }
    Ok(Scrape { types, samples })
}

fn parse_sample(line: &str) -> Result<Sample> {
    let end = line.find(['{', ' ']).context("no value after the name")?;
    let name = &line[..end];
    ensure!(is_name(name, true), "bad metric name {name:?}");
    let mut rest = &line[end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        loop {
            // label name
            let start = chars.peek().map(|(i, _)| *i).context("unterminated {")?;
            if inner[start..].starts_with('}') {
                rest = &inner[start + 1..];
                break;
            }
            let eq = inner[start..].find('=').context("label without =")? + start;
            let key = &inner[start..eq];
            ensure!(is_name(key, false), "bad label name {key:?}");
            ensure!(
                inner[eq + 1..].starts_with('"'),
                "label value of {key} not quoted"
            );
            while chars.peek().is_some_and(|(i, _)| *i <= eq + 1) {
                chars.next();
            }
            let mut value = String::new();
            loop {
                match chars.next().context("unterminated label value")? {
                    (_, '"') => break,
                    (_, '\\') => match chars.next().context("dangling \\")?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        c => bail!("bad escape \\{c}"),
                    },
                    (_, '\n') => bail!("raw newline in a label value"),
                    (_, c) => value.push(c),
                }
            }
            ensure!(
                labels.insert(key.to_string(), value).is_none(),
                "label {key} twice"
            );
            match chars.peek() {
                Some((_, ',')) => {
                    chars.next();
                }
                Some((_, '}')) => {}
                _ => bail!("expected , or }} after label {key}"),
            }
        }
    }
    let mut fields = rest
        .strip_prefix(' ')
        .context("no space before the value")?
        .split(' ');
    let raw = fields.next().context("no value")?;
    let value = match raw {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().with_context(|| format!("bad value {v:?}"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .with_context(|| format!("bad timestamp {ts:?}"))?;
    }
    ensure!(fields.next().is_none(), "trailing fields");
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Both directors scraped before and after a `kill -9` of the active one: the survivor
/// turns active in its metrics, its transitions count grows, it has received the dead
/// one's adverts, and the checks and VIPs show what the lab holds.
#[test]
fn metrics_follow_a_failover() {
    lab::test("metrics_follow_a_failover", build, |lab| {
        let setup = Setup::v3(ms(100));
        lab.spawn(
            "rs1",
            "labhttp",
            find_bin("labhttp")?,
            &["--name", "rs1", "--listen", "0.0.0.0:80"],
            &[],
        )?;
        let d1 = Directord::start_with(lab, "d1", Some("d2"), &setup, 150, &extra(lab, "d1"))?;
        let d2 = Directord::start_with(lab, "d2", Some("d1"), &setup, 100, &extra(lab, "d2"))?;
        let deadline = setup.failover_deadline();
        wait::until(deadline, "d1 active and d2 standby", || {
            Ok(d1.role()? == "active" && d2.role()? == "standby")
        })?;

        // Settled: rs1 up, rs2 down, d1 holds the VIP; adverts flowed both ways.
        let mut before = scrape(lab, "d2")?;
        wait::until(Duration::from_secs(5), "the checks to settle", || {
            before = scrape(lab, "d2")?;
            let rs1 = before.value("directord_real_up", &[("real", "192.0.2.21:80")]);
            let rs2 = before.value("directord_real_up", &[("real", "192.0.2.22:80")]);
            Ok(matches!((rs1, rs2), (Ok(1.0), Ok(0.0))))
        })?;
        let active1 = scrape_until(lab, "d1", deadline, "d1 active holding the VIP", |m| {
            Ok(m.value("directord_active", &[])? == 1.0
                && m.value("directord_vip_held", &[])? == 1.0)
        })?;
        ensure!(active1.value("directord_up", &[])? == 1.0);
        ensure!(active1.value("directord_active", &[])? == 1.0);
        ensure!(active1.value("directord_role", &[("node", "d1"), ("role", "active")])? == 1.0);
        ensure!(active1.value("directord_vip_held", &[])? == 1.0);
        ensure!(active1.value("directord_priority", &[])? == 150.0);
        ensure!(before.value("directord_active", &[])? == 0.0);
        ensure!(before.value("directord_role", &[("node", "d2"), ("role", "standby")])? == 1.0);
        ensure!(before.value("directord_vip_held", &[])? == 0.0);
        ensure!(
            before.value(
                "directord_check_result",
                &[("real", "192.0.2.22:80"), ("result", "up")]
            )? == 0.0
        );
        ensure!(
            before.value(
                "directord_check_latency_seconds",
                &[("real", "192.0.2.21:80")]
            )? < 1.0
        );
        ensure!(
            before
                .types
                .get("directord_transitions_total")
                .map(String::as_str)
                == Some("counter")
        );
        let transitions0 = before
            .value("directord_transitions_total", &[("role", "active")])
            .unwrap_or(0.0);
        let received0 = before.value(
            "directord_failover_messages_received_total",
            &[("protocol", "vrrp")],
        )?;
        ensure!(received0 > 0.0, "d2 received no advert from d1");
        ensure!(
            active1.value(
                "directord_failover_messages_sent_total",
                &[("protocol", "vrrp")]
            )? > 0.0
        );

        // The drill: d1 dies, d2 takes over; the client scrapes the survivor.
        d1.kill9(lab)?;
        // directord_active flips on the survivor (scraped until it does, within the
        // failover deadline); the VIP follows.
        let after = scrape_until(lab, "d2", deadline, "d2 active holding the VIP", |m| {
            Ok(m.value("directord_active", &[])? == 1.0
                && m.value("directord_vip_held", &[])? == 1.0)
        })?;
        ensure!(
            d2.role()? == "active",
            "directorctl disagrees with the metrics"
        );
        ensure!(after.value("directord_up", &[])? == 1.0);
        ensure!(after.value("directord_active", &[])? == 1.0);
        ensure!(after.value("directord_role", &[("node", "d2"), ("role", "active")])? == 1.0);
        ensure!(after.value("directord_role", &[("node", "d2"), ("role", "standby")])? == 0.0);
        ensure!(after.value("directord_vip_held", &[])? == 1.0);
        let transitions1 = after.value("directord_transitions_total", &[("role", "active")])?;
        ensure!(
            transitions1 > transitions0,
            "transitions_total {transitions0} -> {transitions1}"
        );
        let received1 = after.value(
            "directord_failover_messages_received_total",
            &[("protocol", "vrrp")],
        )?;
        ensure!(received1 >= received0 && received1 > 0.0);
        ensure!(
            after.value(
                "directord_failover_messages_sent_total",
                &[("protocol", "vrrp")]
            )? > 0.0,
            "d2 sends adverts as master"
        );
        ensure!(after.value("directord_real_up", &[("real", "192.0.2.21:80")])? == 1.0);

        // Only /metrics is served; the dead director has no endpoint.
        let other = get(lab, metrics_addr(lab, "d2"), "/")?;
        ensure!(other.code == 404, "GET / answered {}", other.code);
        ensure!(
            get(lab, metrics_addr(lab, "d1"), "/metrics").is_err(),
            "the killed d1 still answers scrapes"
        );
        Ok(())
    });
}

mod parser {
    use super::parse;

    #[test]
    fn accepts_escaped_labels_and_rejects_untyped_samples() {
        let ok = "# HELP a_total x\n# TYPE a_total counter\na_total{l=\"q\\\"\\\\\\n\",m=\"\"} 3\n";
        let s = parse(ok).expect("valid");
        assert_eq!(s.samples[0].labels["l"], "q\"\\\n");
        assert!(parse("a 1\n").is_err(), "no TYPE");
        assert!(
            parse("# TYPE a gauge\na{l=\"x} 1\n").is_err(),
            "unterminated"
        );
        assert!(parse("# TYPE a gauge\na 1\na 2\n").is_err(), "repeated");
        assert!(
            parse("# TYPE a counter\na 1\n").is_err(),
            "counter without _total"
        );
        assert!(parse("# TYPE a gauge\na x\n").is_err(), "bad value");
        assert!(parse("# TYPE a gauge\na 1").is_err(), "no final newline");
    }
}
