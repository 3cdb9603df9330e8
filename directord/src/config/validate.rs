//! Raw sections → validated [`Config`], collecting every problem with its place.

use crate::error_chain as chain;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::diagnostic::{Collector, Problems};
use super::raw::{self, S};
use super::*;

const SECTIONS: &str = "node, failover, announce, control, ipvs, alerts, metrics, vip, service";
const SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
];
/// Scheduler flags (ipvsadm's `-b`), with the scheduler they belong to.
const SCHEDULER_FLAGS: &[(&str, Option<&str>)] = &[
    ("sh-fallback", Some("sh")),
    ("sh-port", Some("sh")),
    ("mh-fallback", Some("mh")),
    ("mh-port", Some("mh")),
    ("flag-1", None),
    ("flag-2", None),
    ("flag-3", None),
];

pub(super) fn validate(path: &Path, text: &str, check_files: bool) -> Result<Config, Problems> {
    let mut c = Collector::new(path, text);
    c.check_files = check_files;
    let (root, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        for e in errors {
            c.at(e.span(), format!("TOML syntax: {}", e.message().trim()));
        }
        return Err(c.into_problems());
    }
    let root_span = root.span();
    let root = root.into_inner();

    let mut node: Option<raw::Node> = None;
    let mut failover: Option<raw::Failover> = None;
    let mut announce: Option<raw::Announce> = None;
    let mut control: Option<raw::Control> = None;
    let mut ipvs: Option<raw::Ipvs> = None;
    let mut alerts: Option<super::alerts::RawAlerts> = None;
    let mut metrics: Option<super::alerts::RawMetrics> = None;
    let mut vips: Vec<S<raw::Vip>> = Vec::new();
    let mut services: Vec<S<raw::Service>> = Vec::new();
    let mut seen_vip_section = false;
    let mut present = HashSet::new();

    for (key, value) in root {
        let key_span = key.span();
        present.insert(key.get_ref().to_string());
        match key.get_ref().as_ref() {
            "node" => node = section(&mut c, value),
            "failover" => failover = section(&mut c, value),
            "announce" => announce = section(&mut c, value),
            "control" => control = section(&mut c, value),
            "ipvs" => ipvs = section(&mut c, value),
            "alerts" => alerts = section(&mut c, value),
            "metrics" => metrics = section(&mut c, value),
            "vip" => {
                seen_vip_section = true;
                vips = array_of_tables(&mut c, "vip", key_span, value);
            }
            "service" => services = array_of_tables(&mut c, "service", key_span, value),
            other => c.at(
                Some(key_span),
                format!("unknown section `{other}`, expected one of: {SECTIONS}"),
            ),
        }
    }

    let start = Some(root_span.start..root_span.start);
    let node = node.map(|n| validate_node(&mut c, n));
    if !present.contains("node") {
        c.at(start.clone(), "missing section [node]");
    }
    if !present.contains("failover") {
        c.at(start.clone(), "missing section [failover]");
    }
    let failover = failover.and_then(|f| validate_failover(&mut c, f));
    let announce = validate_announce(&mut c, announce);
    let control = validate_control(&mut c, control);
    let alerts = super::alerts::validate_alerts(&mut c, alerts);
    let metrics = super::alerts::validate_metrics(&mut c, metrics);
    let default_if = failover.as_ref().map(|(f, _)| f.interface.clone());
    let vips_ok = validate_vips(&mut c, &vips, default_if.as_deref());
    if !seen_vip_section {
        c.at(
            start,
            "no [[vip]] given: a director needs at least one virtual address",
        );
    }
    let has_services = !services.is_empty();
    let services_ok = validate_services(&mut c, services);
    let ipvs = validate_ipvs(
        &mut c,
        ipvs,
        failover.as_ref().map(|(f, _)| f),
        has_services,
    );

    let family_check = failover
        .as_ref()
        .and_then(|(f, peers_span)| match &f.protocol {
            Protocol::Vrrp(v) => Some((v.clone(), peers_span.clone())),
            Protocol::Heartbeat(_) => None,
        });
    let mut failover = failover.map(|(f, _)| f);
    if let (Some(f), Some((vrrp, span))) = (failover.as_mut(), family_check) {
        settle_family(&mut c, f, &vrrp, span, &vips_ok);
    }

    c.finish()?;
    // `finish` succeeded: every part validated.
    match (node, failover) {
        (Some(node), Some(failover)) => Ok(Config {
            path: path.to_path_buf(),
            node,
            failover,
            announce,
            control,
            ipvs,
            alerts,
            metrics,
            vips: vips_ok,
            services: services_ok,
        }),
        _ => {
            let mut c = Collector::new(path, text);
            c.at(None, "incomplete configuration");
            c.finish().map(|_| unreachable_config())
        }
    }
}

fn unreachable_config() -> Config {
    // Only reached if finish() on a collector with a problem returned Ok, which it
    // never does; kept total to avoid a panic path.
    Config {
        path: PathBuf::new(),
        node: Node {
            name: String::new(),
        },
        failover: Failover {
            interface: String::new(),
            priority: 1,
            preempt: true,
            preempt_delay: Duration::ZERO,
            protocol: Protocol::Vrrp(Vrrp {
                version: VrrpVersion::V3,
                router_id: 1,
                advert_interval: Duration::from_secs(1),
                unicast_peers: Vec::new(),
                source_address: None,
                family: Family::V4,
            }),
        },
        announce: Announce {
            count: 0,
            spacing: Duration::ZERO,
            refresh: None,
        },
        alerts: Alerts::default(),
        metrics: None,
        control: Control {
            socket: PathBuf::new(),
            group: String::new(),
        },
        ipvs: Ipvs { sync: None },
        vips: Vec::new(),
        services: Vec::new(),
    }
}

/// Deserializes one section on its own, recording its error.
fn section<T: DeserializeOwned>(c: &mut Collector<'_>, value: Spanned<DeValue<'_>>) -> Option<T> {
    let span = value.span();
    match T::deserialize(ValueDeserializer::from(value)) {
        Ok(v) => Some(v),
        Err(e) => {
            c.at(e.span().or(Some(span)), tidy(e.message()));
            None
        }
    }
}

fn array_of_tables<T: DeserializeOwned>(
    c: &mut Collector<'_>,
    name: &str,
    key_span: Range<usize>,
    value: Spanned<DeValue<'_>>,
) -> Vec<S<T>> {
    let span = value.span();
    match value.into_inner() {
        DeValue::Array(items) => items
            .into_iter()
            .filter_map(|item| {
                let item_span = item.span();
                section::<T>(c, item).map(|v| Spanned::new(item_span, v))
            })
            .collect(),
        _ => {
            c.at(
                Some(key_span.start..span.end),
                format!("`{name}` must be an array of tables: write [[{name}]]"),
            );
            Vec::new()
        }
    }
}

/// serde's messages name Rust types; keep the words an operator understands.
fn tidy(message: &str) -> String {
    message
        .trim()
        .replace("invalid type: integer", "wrong type: an integer")
        .replace("invalid type: string", "wrong type: a string")
        .replace("invalid type: boolean", "wrong type: a boolean")
        .replace("i64", "an integer")
        .replace("struct ", "table ")
}

pub(super) fn sp<T>(s: &S<T>) -> Option<Range<usize>> {
    Some(s.span())
}

fn validate_node(c: &mut Collector<'_>, n: raw::Node) -> Node {
    let name = n.name.get_ref().trim().to_string();
    if name.is_empty() {
        c.at(sp(&n.name), "node name must not be empty");
    }
    Node { name }
}

pub(super) fn duration(c: &mut Collector<'_>, s: &S<String>) -> Option<Duration> {
    match duration::parse(s.get_ref()) {
        Ok(d) => Some(d),
        Err(e) => {
            c.at(sp(s), e);
            None
        }
    }
}

pub(super) fn int_in(
    c: &mut Collector<'_>,
    s: &S<i64>,
    what: &str,
    lo: i64,
    hi: i64,
) -> Option<i64> {
    let v = *s.get_ref();
    if (lo..=hi).contains(&v) {
        Some(v)
    } else {
        c.at(
            sp(s),
            format!("{what} must be between {lo} and {hi}, got {v}"),
        );
        None
    }
}

fn interface_name(c: &mut Collector<'_>, s: &S<String>) -> String {
    let name = s.get_ref().clone();
    let ok = !name.is_empty()
        && name.len() < 16
        && !name.contains(['/', ' ', '\t', ':'])
        && name != "."
        && name != "..";
    if !ok {
        c.at(
            sp(s),
            format!(
                "`{name}` is not a valid interface name (1-15 characters, no '/', ':' or spaces)"
            ),
        );
    }
    name
}

pub(super) fn ip(c: &mut Collector<'_>, s: &S<String>, what: &str) -> Option<IpAddr> {
    match s.get_ref().parse::<IpAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            c.at(
                sp(s),
                format!("{what} `{}` is not an IP address", s.get_ref()),
            );
            None
        }
    }
}

fn socket_addr(c: &mut Collector<'_>, s: &S<String>, what: &str) -> Option<SocketAddr> {
    match s.get_ref().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            c.at(
                sp(s),
                format!(
                    "{what} `{}` is not an address with a port (e.g. \"10.0.1.11:80\" or \"[2001:db8::11]:80\")",
                    s.get_ref()
                ),
            );
            None
        }
    }
}

/// Returns the failover section and the span to blame for a family problem.
fn validate_failover(
    c: &mut Collector<'_>,
    f: raw::Failover,
) -> Option<(Failover, Option<Range<usize>>)> {
    let interface = interface_name(c, &f.interface);
    let priority = match &f.priority {
        Some(p) => int_in(c, p, "priority", 1, 255),
        None => Some(100),
    };
    let preempt_delay = match &f.preempt_delay {
        Some(s) => duration(c, s),
        None => Some(Duration::ZERO),
    };
    let protocol = match f.protocol.get_ref().as_str() {
        "vrrp" => {
            if let Some(hb) = &f.heartbeat {
                c.at(
                    sp(hb),
                    "[failover.heartbeat] is given but protocol is \"vrrp\"",
                );
            }
            match &f.vrrp {
                Some(v) => validate_vrrp(c, v).map(Protocol::Vrrp),
                None => {
                    c.at(
                        sp(&f.protocol),
                        "protocol \"vrrp\" needs a [failover.vrrp] section (router_id at least)",
                    );
                    None
                }
            }
        }
        "heartbeat" => {
            if let Some(v) = &f.vrrp {
                c.at(
                    sp(v),
                    "[failover.vrrp] is given but protocol is \"heartbeat\"",
                );
            }
            match &f.heartbeat {
                Some(h) => validate_heartbeat(c, h, &interface).map(Protocol::Heartbeat),
                None => {
                    c.at(
                        sp(&f.protocol),
                        "protocol \"heartbeat\" needs a [failover.heartbeat] section (peer, auth_key_file, media)",
                    );
                    None
                }
            }
        }
        other => {
            c.at(
                sp(&f.protocol),
                format!(
                    "unknown failover protocol \"{other}\", expected \"vrrp\" or \"heartbeat\""
                ),
            );
            None
        }
    };
    let peers_span = f.vrrp.as_ref().map(|v| {
        v.get_ref()
            .unicast_peers
            .first()
            .map_or(v.span(), |p| p.span())
    });
    Some((
        Failover {
            interface,
            priority: u8::try_from(priority?).ok()?,
            preempt: f.preempt.unwrap_or(true),
            preempt_delay: preempt_delay?,
            protocol: protocol?,
        },
        peers_span,
    ))
}

fn validate_heartbeat(
    c: &mut Collector<'_>,
    h: &S<raw::Heartbeat>,
    default_if: &str,
) -> Option<Heartbeat> {
    let whole = sp(h);
    let h = h.get_ref();
    let peer = h.peer.get_ref().trim().to_string();
    if peer.is_empty() || peer.contains(char::is_whitespace) {
        c.at(
            sp(&h.peer),
            "peer must be the peer's node name, without spaces",
        );
    }
    let port = match &h.port {
        Some(p) => int_in(c, p, "port", 1, 65_535).map(|p| p as u16),
        None => Some(694),
    };
    let dur = |c: &mut Collector<'_>, s: &Option<S<String>>, default: Duration| match s {
        Some(s) => duration(c, s),
        None => Some(default),
    };
    let keepalive = dur(c, &h.keepalive, Duration::from_secs(2));
    let deadtime = dur(c, &h.deadtime, keepalive.unwrap_or_default() * 3);
    let warntime = dur(c, &h.warntime, keepalive.unwrap_or_default() * 2);
    let initdead = dur(c, &h.initdead, deadtime.unwrap_or_default() * 2);
    if let (Some(k), Some(w), Some(d), Some(i)) = (keepalive, warntime, deadtime, initdead) {
        let blame = |s: &Option<S<String>>| s.as_ref().and_then(sp).or(whole.clone());
        if k < Duration::from_millis(10) {
            c.at(blame(&h.keepalive), "keepalive must be at least 10ms");
        }
        if d < k * 2 {
            c.at(
                blame(&h.deadtime),
                "deadtime must be at least twice the keepalive (one lost keepalive must not kill the peer)",
            );
        }
        if w < k || w > d {
            c.at(
                blame(&h.warntime),
                "warntime must lie between keepalive and deadtime",
            );
        }
        if i < d {
            c.at(blame(&h.initdead), "initdead must be at least the deadtime");
        }
    }
    let key_file = PathBuf::from(h.auth_key_file.get_ref());
    check_key_file(c, &h.auth_key_file, &key_file);
    let state_dir = h.state_dir.as_ref().map_or_else(
        || PathBuf::from("/var/lib/directord"),
        |s| PathBuf::from(s.get_ref()),
    );
    let preferred = h.preferred.as_ref().map(|p| p.get_ref().trim().to_string());
    let mut media = Vec::new();
    if h.media.is_empty() {
        c.at(
            whole.clone(),
            "heartbeat needs at least one medium in `media`",
        );
    }
    for m in &h.media {
        let span = sp(m);
        let m = m.get_ref();
        let interface = match &m.interface {
            Some(i) => interface_name(c, i),
            None => default_if.to_string(),
        };
        let given = [
            m.unicast.is_some(),
            m.multicast.is_some(),
            m.broadcast.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if given != 1 {
            c.at(
                span,
                "a medium is exactly one of { unicast = \"PEER-IP\" }, { multicast = \"GROUP\" } or { broadcast = true }, each with an optional interface",
            );
            continue;
        }
        if m.ttl.is_some() && m.multicast.is_none() {
            c.at(
                m.ttl.as_ref().and_then(sp),
                "ttl applies to multicast media only",
            );
        }
        if let Some(u) = &m.unicast {
            if let Some(peer) = ip(c, u, "unicast peer") {
                media.push(Medium::Unicast { peer, interface });
            }
        } else if let Some(g) = &m.multicast {
            if let Some(group) = ip(c, g, "multicast group") {
                if !group.is_multicast() {
                    c.at(sp(g), format!("{group} is not a multicast address"));
                }
                let ttl = match &m.ttl {
                    Some(t) => int_in(c, t, "ttl", 1, 255).map(|t| t as u8).unwrap_or(1),
                    None => 1,
                };
                media.push(Medium::Multicast {
                    group,
                    interface,
                    ttl,
                });
            }
        } else if let Some(b) = &m.broadcast {
            if !*b.get_ref() {
                c.at(sp(b), "write `broadcast = true`, or leave the medium out");
            }
            media.push(Medium::Broadcast { interface });
        }
    }
    Some(Heartbeat {
        peer,
        auth_key_file: key_file,
        port: port?,
        keepalive: keepalive?,
        warntime: warntime?,
        deadtime: deadtime?,
        initdead: initdead?,
        preferred,
        auto_failback: h.auto_failback.unwrap_or(true),
        allow_insecure_crc: h.allow_insecure_crc.unwrap_or(false),
        state_dir,
        media,
    })
}

/// The key file must exist and be unreadable to group and others (as heartbeat's
/// authkeys, mode 0600).
fn check_key_file(c: &mut Collector<'_>, s: &S<String>, path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if !path.is_absolute() {
        c.at(sp(s), "auth_key_file must be an absolute path");
        return;
    }
    if !c.check_files {
        return;
    }
    match std::fs::metadata(path) {
        Err(e) => c.at(
            sp(s),
            format!("cannot read auth_key_file {}: {e}", path.display()),
        ),
        Ok(m) => {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                c.at(
                    sp(s),
                    format!(
                        "auth_key_file {} has mode {mode:04o}: it must not be accessible to group or others (chmod 600)",
                        path.display()
                    ),
                );
            } else if let Err(e) = heartbeat::linuxha::AuthKeys::load(path) {
                c.at(
                    sp(s),
                    format!("auth_key_file {}: {}", path.display(), chain(&e)),
                );
            }
        }
    }
}

fn validate_vrrp(c: &mut Collector<'_>, v: &S<raw::Vrrp>) -> Option<Vrrp> {
    let v = v.get_ref();
    let version = match &v.version {
        None => Some(VrrpVersion::V3),
        Some(s) => match *s.get_ref() {
            3 => Some(VrrpVersion::V3),
            2 => Some(VrrpVersion::V2),
            other => {
                c.at(sp(s), format!("VRRP version must be 2 or 3, got {other}"));
                None
            }
        },
    };
    let router_id = int_in(c, &v.router_id, "router_id", 1, 255);
    let advert_interval = match &v.advert_interval {
        None => Some(Duration::from_secs(1)),
        Some(s) => duration(c, s).and_then(|d| check_interval(c, s, d, version)),
    };
    let mut peers = Vec::new();
    let mut seen = HashSet::new();
    for p in &v.unicast_peers {
        if let Some(a) = ip(c, p, "unicast peer") {
            if !seen.insert(a) {
                c.at(sp(p), format!("unicast peer {a} is listed twice"));
            }
            peers.push((a, p.span()));
        }
    }
    let family = peers
        .first()
        .map(|(a, _)| family_of(a))
        .unwrap_or(Family::V4);
    for (a, span) in &peers {
        if family_of(a) != family {
            c.at(
                Some(span.clone()),
                format!("unicast peer {a} is not of the same address family as the first peer"),
            );
        }
    }
    let source_address = v.source_address.as_ref().and_then(|s| {
        let a = ip(c, s, "source_address")?;
        if !peers.is_empty() && family_of(&a) != family {
            c.at(sp(s), "source_address is not of the peers' address family");
        }
        Some(a)
    });
    if version == Some(VrrpVersion::V2) && family == Family::V6 && !peers.is_empty() {
        c.at(
            peers.first().map(|(_, s)| s.clone()),
            "VRRP version 2 is IPv4 only (RFC 3768); use version = 3 for IPv6",
        );
    }
    Some(Vrrp {
        version: version?,
        router_id: u8::try_from(router_id?).ok()?,
        advert_interval: advert_interval?,
        unicast_peers: peers.into_iter().map(|(a, _)| a).collect(),
        source_address,
        family,
    })
}

fn check_interval(
    c: &mut Collector<'_>,
    s: &S<String>,
    d: Duration,
    version: Option<VrrpVersion>,
) -> Option<Duration> {
    let ms = d.as_millis();
    match version? {
        VrrpVersion::V3 => {
            if !(10..=40_950).contains(&ms) || !ms.is_multiple_of(10) {
                c.at(
                    sp(s),
                    "VRRPv3 advert_interval must be a multiple of 10ms between 10ms and 40950ms (centiseconds on the wire)",
                );
                return None;
            }
        }
        VrrpVersion::V2 => {
            if !ms.is_multiple_of(1000) || !(1..=255).contains(&(ms / 1000)) {
                c.at(
                    sp(s),
                    "VRRPv2 advert_interval must be whole seconds between 1s and 255s (use version = 3 for sub-second adverts)",
                );
                return None;
            }
        }
    }
    Some(d)
}

/// Picks the advert family (peers first, else the first VIP) and checks it fits.
fn settle_family(
    c: &mut Collector<'_>,
    f: &mut Failover,
    vrrp: &Vrrp,
    span: Option<Range<usize>>,
    vips: &[Vip],
) {
    let Protocol::Vrrp(v) = &mut f.protocol else {
        return;
    };
    if vrrp.unicast_peers.is_empty()
        && let Some(first) = vips.first()
    {
        v.family = family_of(&first.address);
    }
    if v.version == VrrpVersion::V2 && v.family == Family::V6 {
        c.at(
            span.clone(),
            "VRRP version 2 is IPv4 only (RFC 3768), but the adverts would be IPv6; use version = 3",
        );
    }
    if !vips.is_empty() && !vips.iter().any(|x| family_of(&x.address) == v.family) {
        c.at(
            span,
            "no [[vip]] has the address family of the VRRP peers; VRRP adverts must list at least one VIP",
        );
    }
}

fn validate_announce(c: &mut Collector<'_>, a: Option<raw::Announce>) -> Announce {
    let mut out = Announce {
        count: 5,
        spacing: Duration::from_millis(10),
        refresh: None,
    };
    let Some(a) = a else { return out };
    if let Some(n) = &a.count
        && let Some(n) = int_in(c, n, "announce count", 0, 100)
    {
        out.count = n as u32;
    }
    if let Some(s) = &a.spacing
        && let Some(d) = duration(c, s)
    {
        if d > Duration::from_secs(60) {
            c.at(sp(s), "announce spacing above 60s makes no sense");
        }
        out.spacing = d;
    }
    if let Some(s) = &a.refresh
        && let Some(d) = duration(c, s)
    {
        if d < Duration::from_millis(100) && !d.is_zero() {
            c.at(
                sp(s),
                "announce refresh below 100ms would flood the segment",
            );
        }
        out.refresh = (!d.is_zero()).then_some(d);
    }
    out
}

fn validate_control(c: &mut Collector<'_>, s: Option<raw::Control>) -> Control {
    let mut out = Control {
        socket: PathBuf::from(DEFAULT_SOCKET),
        group: "directord".into(),
    };
    let Some(s) = s else { return out };
    if let Some(p) = &s.socket {
        let path = PathBuf::from(p.get_ref());
        if !path.is_absolute() {
            c.at(sp(p), "control socket must be an absolute path");
        }
        if p.get_ref().len() >= 108 {
            c.at(
                sp(p),
                "control socket path is longer than a Unix socket allows (107 bytes)",
            );
        }
        out.socket = path;
    }
    if let Some(g) = &s.group {
        if g.get_ref().is_empty() {
            c.at(sp(g), "control group must not be empty");
        }
        out.group = g.get_ref().clone();
    }
    out
}

fn validate_vips(
    c: &mut Collector<'_>,
    vips: &[S<raw::Vip>],
    default_if: Option<&str>,
) -> Vec<Vip> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for v in vips {
        let raw = v.get_ref();
        let interface = match &raw.interface {
            Some(i) => interface_name(c, i),
            None => default_if.unwrap_or_default().to_string(),
        };
        let text = raw.address.get_ref();
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text.as_str(), None),
        };
        let Ok(address) = addr.parse::<IpAddr>() else {
            c.at(
                sp(&raw.address),
                format!(
                    "VIP `{text}` is not an address with a prefix length (e.g. \"192.0.2.100/24\")"
                ),
            );
            continue;
        };
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => {
                    c.at(
                        sp(&raw.address),
                        format!("VIP `{text}` has a bad prefix length (0-{max})"),
                    );
                    continue;
                }
            },
        };
        if address.is_unspecified() || address.is_multicast() || address.is_loopback() {
            c.at(
                sp(&raw.address),
                format!("VIP {address} cannot be a virtual address"),
            );
            continue;
        }
        if !seen.insert(address) {
            c.at(sp(&raw.address), format!("VIP {address} is listed twice"));
            continue;
        }
        out.push(Vip {
            address,
            prefix_len,
            interface,
        });
    }
    out
}

fn validate_services(c: &mut Collector<'_>, services: Vec<S<raw::Service>>) -> Vec<Service> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    let mut targets = HashSet::new();
    for s in services {
        let span = s.span();
        let s = s.into_inner();
        let name = s.name.get_ref().clone();
        if name.is_empty() || name.contains(char::is_whitespace) {
            c.at(
                sp(&s.name),
                "service name must be non-empty, without spaces",
            );
        } else if !names.insert(name.clone()) {
            c.at(sp(&s.name), format!("service name `{name}` is used twice"));
        }
        let protocol = match s.protocol.as_ref().map(|p| p.get_ref().as_str()) {
            None | Some("tcp") => Some(L4Protocol::Tcp),
            Some("udp") => Some(L4Protocol::Udp),
            Some("sctp") => Some(L4Protocol::Sctp),
            Some(other) => {
                c.at(
                    s.protocol.as_ref().and_then(sp),
                    format!("unknown protocol \"{other}\", expected tcp, udp or sctp"),
                );
                None
            }
        };
        let target = match (&s.address, &s.fwmark) {
            (Some(a), None) => socket_addr(c, a, "service address").map(ServiceTarget::Address),
            (None, Some(m)) => int_in(c, m, "fwmark", 1, i64::from(u32::MAX))
                .map(|m| ServiceTarget::Fwmark(m as u32)),
            (Some(_), Some(m)) => {
                c.at(
                    sp(m),
                    "a service has either `address` or `fwmark`, not both",
                );
                None
            }
            (None, None) => {
                c.at(
                    Some(span.clone()),
                    format!("service `{name}` needs `address` or `fwmark`"),
                );
                None
            }
        };
        let scheduler = match &s.scheduler {
            None => "wlc".to_string(),
            Some(x) => {
                if !SCHEDULERS.contains(&x.get_ref().as_str()) {
                    c.at(
                        sp(x),
                        format!(
                            "unknown scheduler \"{}\", expected one of: {}",
                            x.get_ref(),
                            SCHEDULERS.join(", ")
                        ),
                    );
                }
                x.get_ref().clone()
            }
        };
        let mut scheduler_flags = Vec::new();
        for flag in &s.scheduler_flags {
            let name = flag.get_ref().as_str();
            match SCHEDULER_FLAGS.iter().find(|(f, _)| *f == name) {
                None => c.at(
                    sp(flag),
                    format!(
                        "unknown scheduler flag \"{name}\", expected one of: {}",
                        SCHEDULER_FLAGS
                            .iter()
                            .map(|(f, _)| *f)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
                Some((_, Some(owner))) if *owner != scheduler => c.at(
                    sp(flag),
                    format!(
                        "scheduler flag \"{name}\" belongs to the {owner} scheduler, not {scheduler}"
                    ),
                ),
                Some(_) if scheduler_flags.iter().any(|f| f == name) => {
                    c.at(sp(flag), format!("scheduler flag \"{name}\" is listed twice"))
                }
                Some(_) => scheduler_flags.push(name.to_string()),
            }
        }
        let forward = match s.forward.as_ref().map(|p| p.get_ref().as_str()) {
            None | Some("dr") => Some(Forward::Dr),
            Some("nat") => Some(Forward::Nat),
            Some("tun") => Some(Forward::Tun),
            Some(other) => {
                c.at(
                    s.forward.as_ref().and_then(sp),
                    format!("unknown forward method \"{other}\", expected nat, dr or tun"),
                );
                None
            }
        };
        let persistence = s.persistence.as_ref().and_then(|p| {
            let d = duration(c, p)?;
            if d.is_zero() {
                return None;
            }
            if d.as_secs() == 0 || d.subsec_millis() != 0 {
                c.at(sp(p), "persistence must be whole seconds");
            }
            Some(d)
        });
        if let (Some(m), None) = (&s.persistence_netmask, persistence) {
            c.at(
                sp(m),
                "persistence_netmask applies only with persistence (e.g. persistence = \"300s\")",
            );
        }
        let on_failure = match s.on_failure.as_ref().map(|p| p.get_ref().as_str()) {
            None | Some("quiesce") => Some(OnFailure::Quiesce),
            Some("remove") => Some(OnFailure::Remove),
            Some(other) => {
                c.at(
                    s.on_failure.as_ref().and_then(sp),
                    format!("unknown on_failure \"{other}\", expected quiesce or remove"),
                );
                None
            }
        };
        let sorry_server = s
            .sorry_server
            .as_ref()
            .and_then(|x| socket_addr(c, x, "sorry_server"));
        let check = s.check.as_ref().and_then(|x| super::check::validate(c, x));
        let fwmark = matches!(target, Some(ServiceTarget::Fwmark(_)));
        let mut reals: Vec<RealServer> = Vec::new();
        let mut seen = HashSet::new();
        if s.real.is_empty() {
            c.at(
                Some(span.clone()),
                format!("service `{name}` has no [[service.real]]"),
            );
        }
        for r in &s.real {
            let r = r.get_ref();
            let address = if fwmark {
                // fwmark services may name a bare IP: the client's port is kept.
                r.address
                    .get_ref()
                    .parse::<IpAddr>()
                    .map(|a| SocketAddr::new(a, 0))
                    .ok()
                    .or_else(|| socket_addr(c, &r.address, "real server address"))
            } else {
                socket_addr(c, &r.address, "real server address")
            };
            let weight = match &r.weight {
                None => Some(1),
                Some(w) => int_in(c, w, "weight", 0, 65_535),
            };
            if let Some(a) = address {
                if !seen.insert(a) {
                    c.at(
                        sp(&r.address),
                        format!("real server {a} is listed twice in `{name}`"),
                    );
                }
                if let Some(ServiceTarget::Address(v)) = target {
                    if v.is_ipv4() != a.is_ipv4() && forward != Some(Forward::Tun) {
                        c.at(
                            sp(&r.address),
                            "real server and service are of different address families",
                        );
                    }
                } else if let Some(first) = reals.first() {
                    // A fwmark service takes the family of its first real server.
                    if first.address.is_ipv4() != a.is_ipv4() && forward != Some(Forward::Tun) {
                        c.at(
                            sp(&r.address),
                            "the real servers of a fwmark service must all be of one address \
                             family (unless forward = \"tun\")",
                        );
                    }
                }
                if let Some(w) = weight {
                    reals.push(RealServer {
                        address: a,
                        weight: w as u32,
                    });
                }
            }
        }
        // A fwmark service takes the family of its real servers.
        let family = match target {
            Some(ServiceTarget::Address(a)) => family_of(&a.ip()),
            _ => reals
                .first()
                .map_or(Family::V4, |r| family_of(&r.address.ip())),
        };
        if let Some(t) = target {
            // IPVS keys a service by protocol and address, or by mark and family.
            let key = match t {
                ServiceTarget::Address(_) => (t, protocol, None),
                ServiceTarget::Fwmark(_) => (t, None, Some(family)),
            };
            if !targets.insert(key) {
                c.at(
                    Some(span.clone()),
                    format!("service `{name}` repeats another service's address"),
                );
            }
        }
        let persistence_netmask = s
            .persistence_netmask
            .as_ref()
            .and_then(|m| netmask(c, m, family));
        if let (Some(target), Some(protocol), Some(forward), Some(on_failure)) =
            (target, protocol, forward, on_failure)
        {
            out.push(Service {
                name,
                target,
                protocol,
                scheduler,
                scheduler_flags,
                forward,
                persistence,
                persistence_netmask,
                on_failure,
                sorry_server,
                check,
                reals,
            });
        }
    }
    out
}

/// `persistence_netmask`: a prefix length, or for IPv4 a dotted netmask.
fn netmask(c: &mut Collector<'_>, m: &S<toml::Value>, family: Family) -> Option<u8> {
    let (lo, hi) = match family {
        Family::V4 => (0, 32),
        // The kernel refuses /0 for IPv6.
        Family::V6 => (1, 128),
    };
    let prefix = match m.get_ref() {
        toml::Value::Integer(n) => u8::try_from(*n).ok().filter(|n| (lo..=hi).contains(n)),
        toml::Value::String(text) if family == Family::V4 => text
            .parse::<std::net::Ipv4Addr>()
            .ok()
            .map(u32::from)
            .filter(|bits| bits.leading_ones() + bits.trailing_zeros() == 32)
            .map(|bits| bits.leading_ones() as u8),
        _ => None,
    };
    if prefix.is_none() {
        c.at(
            sp(m),
            match family {
                Family::V4 => format!(
                    "persistence_netmask must be a prefix length {lo}-{hi} or a netmask like \"255.255.255.0\", got {}",
                    m.get_ref()
                ),
                Family::V6 => format!(
                    "persistence_netmask of an IPv6 service must be a prefix length {lo}-{hi}, got {}",
                    m.get_ref()
                ),
            },
        );
    }
    prefix
}

/// `[ipvs]`: the sync daemon runs by default when there are services, on the
/// failover interface, with the VRRP router id as its sync id.
fn validate_ipvs(
    c: &mut Collector<'_>,
    raw: Option<raw::Ipvs>,
    failover: Option<&Failover>,
    has_services: bool,
) -> Ipvs {
    let raw = raw.unwrap_or(raw::Ipvs {
        sync: None,
        sync_interface: None,
        sync_id: None,
        sync_group: None,
        sync_port: None,
        sync_ttl: None,
    });
    let enabled = raw.sync.as_ref().map_or(has_services, |s| *s.get_ref());
    if !enabled {
        let given = [
            (
                "sync_interface",
                raw.sync_interface.as_ref().map(|x| x.span()),
            ),
            ("sync_id", raw.sync_id.as_ref().map(|x| x.span())),
            ("sync_group", raw.sync_group.as_ref().map(|x| x.span())),
            ("sync_port", raw.sync_port.as_ref().map(|x| x.span())),
            ("sync_ttl", raw.sync_ttl.as_ref().map(|x| x.span())),
        ];
        for (key, span) in given {
            if span.is_some() {
                c.at(
                    span,
                    match &raw.sync {
                        Some(_) => format!("`{key}` has no effect with sync = false"),
                        None => format!(
                            "`{key}` has no effect: without [[service]] no sync daemon runs unless sync = true"
                        ),
                    },
                );
            }
        }
        return Ipvs { sync: None };
    }
    let interface = match &raw.sync_interface {
        Some(i) => interface_name(c, i),
        None => failover.map(|f| f.interface.clone()).unwrap_or_default(),
    };
    let default_id = match failover.map(|f| &f.protocol) {
        Some(Protocol::Vrrp(v)) => v.router_id,
        _ => 0,
    };
    let sync_id = raw
        .sync_id
        .as_ref()
        .map_or(Some(default_id), |s| {
            int_in(c, s, "sync_id", 0, 255).map(|v| v as u8)
        })
        .unwrap_or(default_id);
    let group = raw.sync_group.as_ref().and_then(|g| {
        let a = ip(c, g, "sync_group")?;
        if !a.is_multicast() {
            c.at(sp(g), format!("sync_group {a} is not a multicast address"));
        }
        Some(a)
    });
    let port = raw
        .sync_port
        .as_ref()
        .and_then(|p| int_in(c, p, "sync_port", 1, 65_535))
        .map(|p| p as u16);
    let ttl = raw
        .sync_ttl
        .as_ref()
        .and_then(|t| int_in(c, t, "sync_ttl", 1, 255))
        .map(|t| t as u8);
    Ipvs {
        sync: Some(IpvsSync {
            interface,
            sync_id,
            group,
            port,
            ttl,
        }),
    }
}
