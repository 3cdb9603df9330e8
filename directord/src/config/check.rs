//! The `check` table of a `[[service]]`: raw options → [`checkers::Check`].
//!
//! Options that belong to another check type are reported, never silently ignored.

use std::ops::{Range, RangeInclusive};
use std::path::PathBuf;
use std::time::Duration;

use checkers::spec::{
    BasicAuth, Connect, Dns, External, Ftp, Health, Http, Imap, Ldap, LdapBind, LdapScope, Login,
    Method, Nntp, Pattern, Pop, Protocol, Radius, Secret, Sip, SipTransport, Smtp, Sql, Tcp, Tls,
    TlsMode,
};

use super::Check;
use super::diagnostic::Collector;
use super::raw::{self, S};
use super::validate::{duration, int_in, ip, sp};

const TYPES: &str = "tcp, http, https, ping, dns, smtp, external, ftp, ftps, imap, imaps, pop, pops, nntp, nntps, ldap, ldaps, mysql, postgres, radius, sip";

pub(super) fn validate(c: &mut Collector<'_>, s: &S<raw::Check>) -> Option<Check> {
    let k = s.get_ref();
    let interval = k
        .interval
        .as_ref()
        .map_or(Some(Duration::from_secs(5)), |d| duration(c, d));
    let timeout = k
        .timeout
        .as_ref()
        .map_or(Some(Duration::from_secs(3)), |d| duration(c, d));
    if let (Some(i), Some(t)) = (interval, timeout) {
        if i.is_zero() {
            c.at(
                k.interval.as_ref().and_then(sp),
                "check interval must be above zero",
            );
        }
        if t.is_zero() || t > i {
            c.at(
                k.timeout.as_ref().and_then(sp).or(sp(s)),
                "check timeout must be above zero and not longer than the interval",
            );
        }
    }
    let rise = k
        .rise
        .as_ref()
        .map_or(Some(1), |r| int_in(c, r, "rise", 1, 100));
    let fall = k
        .fall
        .as_ref()
        .map_or(Some(1), |r| int_in(c, r, "fall", 1, 100));
    let retry = k
        .retry
        .as_ref()
        .map_or(Some(0), |r| int_in(c, r, "retry", 0, 10));
    let retry_delay = k
        .retry_delay
        .as_ref()
        .map_or(Some(Duration::from_secs(1)), |d| duration(c, d));
    if let (Some(i), Some(t), Some(r), Some(d)) = (interval, timeout, retry, retry_delay)
        && r > 0
    {
        let round = t * (r as u32 + 1) + d * r as u32;
        if round > i {
            c.at(
                k.retry.as_ref().and_then(sp),
                format!(
                    "a round of {} attempts ({} ms each, {} ms apart) can take {} ms, longer than the {} ms interval",
                    r + 1,
                    t.as_millis(),
                    d.as_millis(),
                    round.as_millis(),
                    i.as_millis()
                ),
            );
        }
    }
    let initial = match k.initial.as_ref() {
        None => Some(Health::Down),
        Some(v) => match v.get_ref().as_str() {
            "up" => Some(Health::Up),
            "down" => Some(Health::Down),
            other => {
                c.at(
                    sp(v),
                    format!("initial must be \"up\" or \"down\", got \"{other}\""),
                );
                None
            }
        },
    };
    let connect = Connect {
        ip: k.connect_ip.as_ref().and_then(|x| ip(c, x, "connect_ip")),
        port: k
            .connect_port
            .as_ref()
            .and_then(|p| int_in(c, p, "connect_port", 1, 65_535))
            .map(|p| p as u16),
        bind: k.bind_to.as_ref().and_then(|x| ip(c, x, "bind_to")),
    };

    let kind_name = k.kind.get_ref().as_str();
    let mut allowed: Vec<&str> = vec![];
    let protocol = match kind_name {
        "tcp" => {
            allowed.extend(["send", "expect"]);
            Some(Protocol::Tcp(Tcp {
                send: k.send.as_ref().map(|x| x.get_ref().as_bytes().to_vec()),
                expect: k.expect.as_ref().and_then(|x| pattern(c, x)),
            }))
        }
        "http" | "https" => {
            allowed.extend([
                "method",
                "path",
                "host",
                "expect_status",
                "expect_body",
                "expect_digest",
                "headers",
                "user",
                "password",
                "password_file",
            ]);
            if kind_name == "https" {
                allowed.extend(["tls_verify", "ca_file", "sni"]);
            }
            http(c, k, kind_name == "https").map(Protocol::Http)
        }
        "ping" | "icmp" => Some(Protocol::Ping),
        "dns" => {
            allowed.extend(["query_name", "query_type", "expect_rcode", "expect_answer"]);
            dns(c, k).map(Protocol::Dns)
        }
        "smtp" => {
            allowed.extend(["helo", "starttls"]);
            let starttls = k.starttls.as_ref().is_some_and(|b| *b.get_ref());
            if starttls {
                allowed.extend(["tls_verify", "ca_file", "sni"]);
            }
            Some(Protocol::Smtp(Smtp {
                helo: k.helo.as_ref().map(|h| h.get_ref().clone()),
                starttls: if starttls { tls(c, k) } else { None },
            }))
        }
        "external" => {
            allowed.push("command");
            match &k.command {
                Some(cmd) => command(c, cmd).map(|argv| Protocol::External(External { argv })),
                None => {
                    c.at(sp(&k.kind), "an external check needs command");
                    None
                }
            }
        }
        "ftp" | "ftps" => {
            allowed.extend(["user", "password", "password_file", "retrieve", "expect"]);
            let tls = tls_mode(c, k, kind_name, &mut allowed);
            let login = login(c, k, false);
            if let (Some(e), None) = (&k.expect, &k.retrieve) {
                c.at(
                    sp(e),
                    "`expect` on an ftp check needs `retrieve` (the file to match)",
                );
            }
            Some(Protocol::Ftp(Ftp {
                tls: tls?,
                login: login?,
                retrieve: k.retrieve.as_ref().map(|r| r.get_ref().clone()),
                expect: k.expect.as_ref().and_then(|x| pattern(c, x)),
            }))
        }
        "imap" | "imaps" => {
            allowed.extend(["user", "password", "password_file"]);
            let tls = tls_mode(c, k, kind_name, &mut allowed);
            let login = login(c, k, false);
            Some(Protocol::Imap(Imap {
                tls: tls?,
                login: login?,
            }))
        }
        "pop" | "pop3" | "pops" | "pop3s" => {
            allowed.extend(["user", "password", "password_file"]);
            let tls = tls_mode(c, k, kind_name, &mut allowed);
            let login = login(c, k, false);
            Some(Protocol::Pop(Pop {
                tls: tls?,
                login: login?,
            }))
        }
        "nntp" | "nntps" => {
            allowed.push("group");
            let tls = tls_mode(c, k, kind_name, &mut allowed);
            Some(Protocol::Nntp(Nntp {
                tls: tls?,
                group: k.group.as_ref().map(|g| g.get_ref().clone()),
            }))
        }
        "ldap" | "ldaps" => {
            allowed.extend([
                "bind_dn",
                "password",
                "password_file",
                "base_dn",
                "filter",
                "scope",
            ]);
            let tls = tls_mode(c, k, kind_name, &mut allowed);
            ldap(c, k, tls)
        }
        "mysql" | "postgres" => {
            allowed.extend(["user", "password", "password_file", "database", "query"]);
            sql(c, k, kind_name, &mut allowed)
        }
        "radius" => {
            allowed.extend([
                "user",
                "password",
                "password_file",
                "secret",
                "secret_file",
                "nas_identifier",
                "accept_reject",
            ]);
            radius(c, k)
        }
        "sip" => {
            allowed.extend(["transport", "uri"]);
            let transport = match k.transport.as_ref().map(|t| t.get_ref().as_str()) {
                None | Some("udp") => Some(SipTransport::Udp),
                Some("tcp") => Some(SipTransport::Tcp),
                Some(other) => {
                    c.at(
                        k.transport.as_ref().and_then(sp),
                        format!("transport must be \"udp\" or \"tcp\", got \"{other}\""),
                    );
                    None
                }
            };
            if let Some(u) = &k.uri
                && !(u.get_ref().starts_with("sip:") || u.get_ref().starts_with("sips:"))
            {
                c.at(
                    sp(u),
                    "uri must be a SIP URI like \"sip:proxy.example.org\"",
                );
            }
            Some(Protocol::Sip(Sip {
                transport: transport?,
                uri: k.uri.as_ref().map(|u| u.get_ref().clone()),
            }))
        }
        other => {
            c.at(
                sp(&k.kind),
                format!("unknown check type \"{other}\", expected one of: {TYPES}"),
            );
            None
        }
    };
    if protocol.is_some() {
        for (name, span) in type_options(k) {
            if let Some(span) = span
                && !allowed.contains(&name)
            {
                let why = match name {
                    "tls_verify" | "ca_file" | "sni" if kind_name == "smtp" => {
                        " without starttls = true".to_string()
                    }
                    "tls_verify" | "ca_file" | "sni" if k.tls.is_some() => {
                        " without TLS".to_string()
                    }
                    _ => String::new(),
                };
                c.at(
                    Some(span),
                    format!("`{name}` does not apply to a {kind_name} check{why}"),
                );
            }
        }
    }
    if (kind_name == "ping" || kind_name == "icmp")
        && let Some(p) = &k.connect_port
    {
        c.at(sp(p), "`connect_port` does not apply to a ping check");
    }
    Some(Check {
        interval: interval?,
        timeout: timeout?,
        rise: rise? as u32,
        fall: fall? as u32,
        retry: retry? as u32,
        retry_delay: retry_delay?,
        initial: initial?,
        connect,
        protocol: protocol?,
    })
}

/// Every protocol-specific option with its span, for the "does not apply" check.
fn type_options(k: &raw::Check) -> Vec<(&'static str, Option<Range<usize>>)> {
    fn span<T>(o: &Option<S<T>>) -> Option<Range<usize>> {
        o.as_ref().map(|x| x.span())
    }
    vec![
        ("method", span(&k.method)),
        ("path", span(&k.path)),
        ("host", span(&k.host)),
        ("expect_status", span(&k.expect_status)),
        ("expect_body", span(&k.expect_body)),
        ("expect_digest", span(&k.expect_digest)),
        ("headers", span(&k.headers)),
        ("user", span(&k.user)),
        ("password", span(&k.password)),
        ("tls_verify", span(&k.tls_verify)),
        ("ca_file", span(&k.ca_file)),
        ("sni", span(&k.sni)),
        ("send", span(&k.send)),
        ("expect", span(&k.expect)),
        ("query_name", span(&k.query_name)),
        ("query_type", span(&k.query_type)),
        ("expect_rcode", span(&k.expect_rcode)),
        ("expect_answer", span(&k.expect_answer)),
        ("helo", span(&k.helo)),
        ("starttls", span(&k.starttls)),
        ("command", span(&k.command)),
        ("password_file", span(&k.password_file)),
        ("tls", span(&k.tls)),
        ("retrieve", span(&k.retrieve)),
        ("group", span(&k.group)),
        ("bind_dn", span(&k.bind_dn)),
        ("base_dn", span(&k.base_dn)),
        ("filter", span(&k.filter)),
        ("scope", span(&k.scope)),
        ("database", span(&k.database)),
        ("query", span(&k.query)),
        ("secret", span(&k.secret)),
        ("secret_file", span(&k.secret_file)),
        ("nas_identifier", span(&k.nas_identifier)),
        ("accept_reject", span(&k.accept_reject)),
        ("transport", span(&k.transport)),
        ("uri", span(&k.uri)),
    ]
}

fn http(c: &mut Collector<'_>, k: &raw::Check, https: bool) -> Option<Http> {
    let method = match k.method.as_ref() {
        None => Some(Method::Get),
        Some(m) => match m.get_ref().to_ascii_uppercase().as_str() {
            "GET" => Some(Method::Get),
            "HEAD" => Some(Method::Head),
            _ => {
                c.at(sp(m), "http method must be GET or HEAD");
                None
            }
        },
    };
    let path = k
        .path
        .as_ref()
        .map_or("/".to_string(), |p| p.get_ref().clone());
    if !path.starts_with('/') || path.chars().any(|ch| ch.is_ascii_control() || ch == ' ') {
        c.at(
            k.path.as_ref().and_then(sp),
            "http path must start with '/' and contain no spaces or control characters",
        );
    }
    let expect_status = match &k.expect_status {
        None => vec![200..=299],
        Some(v) => status_set(c, v),
    };
    if let (Some(m), Some(b)) = (method, k.expect_body.as_ref().or(k.expect_digest.as_ref()))
        && m == Method::Head
    {
        c.at(sp(b), "a HEAD request has no body to match");
    }
    let expect_body = k.expect_body.as_ref().and_then(|x| pattern(c, x));
    let expect_digest = k.expect_digest.as_ref().and_then(|d| {
        let hex = d.get_ref().trim();
        let bytes: Option<Vec<u8>> = (hex.len() == 32)
            .then(|| {
                (0..16)
                    .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                    .collect()
            })
            .flatten();
        match bytes.and_then(|b| <[u8; 16]>::try_from(b).ok()) {
            Some(b) => Some(b),
            None => {
                c.at(
                    sp(d),
                    "expect_digest must be an MD5 digest: 32 hexadecimal digits",
                );
                None
            }
        }
    });
    let mut headers = Vec::new();
    if let Some(h) = &k.headers {
        for (name, value) in h.get_ref() {
            let valid_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            match value.as_str() {
                Some(v) if valid_name && !v.contains(['\r', '\n']) => {
                    headers.push((name.clone(), v.to_string()));
                }
                _ => c.at(
                    sp(h),
                    format!(
                        "header `{name}`: names are HTTP tokens and values are strings without line breaks"
                    ),
                ),
            }
        }
    }
    let basic_auth = login(c, k, false).flatten().map(|l| BasicAuth {
        user: l.user,
        password: l.password,
    });
    let tls = if https { Some(tls(c, k)?) } else { None };
    Some(Http {
        tls,
        method: method?,
        path,
        host: k.host.as_ref().map(|x| x.get_ref().clone()),
        expect_status,
        expect_body,
        expect_digest,
        headers,
        basic_auth,
    })
}

fn tls(c: &mut Collector<'_>, k: &raw::Check) -> Option<Tls> {
    let ca_file = k.ca_file.as_ref().map(|f| PathBuf::from(f.get_ref()));
    if let (Some(f), Some(path)) = (&k.ca_file, &ca_file)
        && c.check_files
        && let Err(e) = std::fs::metadata(path)
    {
        c.at(
            sp(f),
            format!("cannot read the CA file {}: {e}", path.display()),
        );
    }
    let verify = k.tls_verify.as_ref().is_none_or(|v| *v.get_ref());
    if let (false, Some(f)) = (verify, &k.ca_file) {
        c.at(sp(f), "`ca_file` has no effect with tls_verify = false");
    }
    Some(Tls {
        verify,
        ca_file,
        server_name: k.sni.as_ref().map(|x| x.get_ref().clone()),
    })
}

fn dns(c: &mut Collector<'_>, k: &raw::Check) -> Option<Dns> {
    let Some(name) = &k.query_name else {
        c.at(sp(&k.kind), "a dns check needs query_name");
        return None;
    };
    let query_type = match &k.query_type {
        None => Some(checkers::spec::QueryType::A),
        Some(t) => t.get_ref().parse().map_err(|e: String| c.at(sp(t), e)).ok(),
    };
    let expect_rcode = match &k.expect_rcode {
        None => Some(checkers::spec::Rcode::NoError),
        Some(r) => r.get_ref().parse().map_err(|e: String| c.at(sp(r), e)).ok(),
    };
    Some(Dns {
        name: name.get_ref().clone(),
        query_type: query_type?,
        expect_rcode: expect_rcode?,
        expect_answer: k.expect_answer.as_ref().map(|a| a.get_ref().clone()),
    })
}

fn pattern(c: &mut Collector<'_>, s: &S<String>) -> Option<Pattern> {
    match Pattern::new(s.get_ref()) {
        Ok(p) => Some(p),
        Err(e) => {
            // regex's message is several lines with a caret; keep its last line.
            let text = e.to_string();
            let why = text.lines().last().unwrap_or("invalid").trim().to_string();
            c.at(sp(s), format!("not a valid regular expression: {why}"));
            None
        }
    }
}

/// `command`: an array of strings, or one string split like a shell would (quotes
/// and backslashes), without running a shell.
fn command(c: &mut Collector<'_>, v: &S<toml::Value>) -> Option<Vec<String>> {
    let argv = match v.get_ref() {
        toml::Value::String(s) => split_words(s),
        toml::Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| "every element of command must be a string".to_string()),
        _ => Err("command must be a string or an array of strings".to_string()),
    };
    match argv {
        Ok(a) if !a.is_empty() && !a[0].is_empty() => Some(a),
        Ok(_) => {
            c.at(sp(v), "command is empty");
            None
        }
        Err(e) => {
            c.at(sp(v), e);
            None
        }
    }
}

fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = s.chars();
    while let Some(ch) = chars.next() {
        match ch {
            ' ' | '\t' | '\n' => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => w.push(ch),
                        None => return Err("command has an unclosed ' quote".into()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(ch) => w.push(ch),
                            None => return Err("command ends in a backslash".into()),
                        },
                        Some(ch) => w.push(ch),
                        None => return Err("command has an unclosed \" quote".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(ch) => word.get_or_insert_with(String::new).push(ch),
                None => return Err("command ends in a backslash".into()),
            },
            ch => word.get_or_insert_with(String::new).push(ch),
        }
    }
    if let Some(w) = word {
        words.push(w);
    }
    Ok(words)
}

/// `expect_status`: 200, [200, 301], "200-299", or a list mixing both.
fn status_set(c: &mut Collector<'_>, v: &S<toml::Value>) -> Vec<RangeInclusive<u16>> {
    let items: Vec<toml::Value> = match v.get_ref() {
        toml::Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    let mut out = Vec::new();
    for item in items {
        let range = match &item {
            toml::Value::Integer(n) => u16::try_from(*n).ok().map(|n| (n, n)),
            toml::Value::String(s) => s.split_once('-').and_then(|(a, b)| {
                Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
            }),
            _ => None,
        };
        match range {
            Some((a, b)) if (100..=599).contains(&a) && (a..=599).contains(&b) => out.push(a..=b),
            _ => c.at(
                sp(v),
                format!("expect_status must be status codes 100-599 or ranges like \"200-299\", got {item}"),
            ),
        }
    }
    out
}

/// `tls` of a line protocol: "none", "implicit" or "starttls"; the `…s` type names
/// (ftps, imaps, pops, nntps, ldaps) mean implicit. TLS options become allowed
/// when TLS is on.
fn tls_mode(
    c: &mut Collector<'_>,
    k: &raw::Check,
    kind_name: &str,
    allowed: &mut Vec<&str>,
) -> Option<TlsMode> {
    let implicit_name = matches!(
        kind_name,
        "ftps" | "imaps" | "pops" | "pop3s" | "nntps" | "ldaps"
    );
    allowed.push("tls");
    let mode = match k.tls.as_ref().map(|t| (t, t.get_ref().as_str())) {
        None if implicit_name => "implicit",
        None => "none",
        Some((t, m)) if implicit_name && m != "implicit" => {
            c.at(
                sp(t),
                format!(
                    "a {kind_name} check is implicit TLS; use type = \"{}\" for tls = \"{m}\"",
                    kind_name.trim_end_matches('s').replace("pop3", "pop")
                ),
            );
            return None;
        }
        Some((t, m @ ("none" | "implicit" | "starttls"))) => {
            let _ = t;
            m
        }
        Some((t, m)) => {
            c.at(
                sp(t),
                format!("tls must be \"none\", \"implicit\" or \"starttls\", got \"{m}\""),
            );
            return None;
        }
    };
    if mode == "none" {
        return Some(TlsMode::None);
    }
    allowed.extend(["tls_verify", "ca_file", "sni"]);
    let options = tls(c, k)?;
    Some(if mode == "implicit" {
        TlsMode::Implicit(options)
    } else {
        TlsMode::StartTls(options)
    })
}

/// A secret given inline or as a file (read now; its content without one trailing
/// newline). Both at once is a mistake.
pub(super) fn secret(
    c: &mut Collector<'_>,
    inline: &Option<S<String>>,
    file: &Option<S<String>>,
    what: &str,
) -> Option<Option<Secret>> {
    match (inline, file) {
        (None, None) => Some(None),
        (Some(v), None) => Some(Some(Secret::inline(v.get_ref().clone()))),
        (Some(_), Some(f)) => {
            c.at(sp(f), format!("give `{what}` or `{what}_file`, not both"));
            None
        }
        (None, Some(f)) => {
            let path = PathBuf::from(f.get_ref());
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let value = text.strip_suffix('\n').unwrap_or(&text);
                    let value = value.strip_suffix('\r').unwrap_or(value);
                    Some(Some(Secret::from_file(value, path)))
                }
                // Pure validation (no file access asked): keep the reference.
                Err(_) if !c.check_files => Some(Some(Secret::from_file("", path))),
                Err(e) => {
                    c.at(
                        sp(f),
                        format!("cannot read {what}_file {}: {}", path.display(), e.kind()),
                    );
                    None
                }
            }
        }
    }
}

/// `user` with `password` / `password_file`. `required`: the check needs a login.
fn login(c: &mut Collector<'_>, k: &raw::Check, required: bool) -> Option<Option<Login>> {
    let password = secret(c, &k.password, &k.password_file, "password")?;
    match (&k.user, password) {
        (Some(u), Some(p)) => Some(Some(Login {
            user: u.get_ref().clone(),
            password: p,
        })),
        (Some(u), None) if required => Some(Some(Login {
            user: u.get_ref().clone(),
            password: Secret::inline(""),
        })),
        (Some(u), None) => {
            c.at(sp(u), "`user` needs `password` or `password_file`");
            None
        }
        (None, Some(_)) => {
            c.at(
                k.password
                    .as_ref()
                    .or(k.password_file.as_ref())
                    .and_then(sp),
                "a password needs `user` too",
            );
            None
        }
        (None, None) if required => {
            c.at(
                sp(&k.kind),
                format!("a {} check needs `user`", k.kind.get_ref()),
            );
            None
        }
        (None, None) => Some(None),
    }
}

fn ldap(c: &mut Collector<'_>, k: &raw::Check, tls: Option<TlsMode>) -> Option<Protocol> {
    let password = secret(c, &k.password, &k.password_file, "password")?;
    let bind = match (&k.bind_dn, password) {
        (Some(dn), Some(p)) => Some(LdapBind {
            dn: dn.get_ref().clone(),
            password: p,
        }),
        (None, None) => None,
        (Some(dn), None) => {
            c.at(sp(dn), "`bind_dn` needs `password` or `password_file`");
            return None;
        }
        (None, Some(_)) => {
            c.at(
                k.password
                    .as_ref()
                    .or(k.password_file.as_ref())
                    .and_then(sp),
                "a password needs `bind_dn` too (without both the bind is anonymous)",
            );
            return None;
        }
    };
    let Some(base_dn) = &k.base_dn else {
        c.at(
            sp(&k.kind),
            "an ldap check needs `base_dn` (where the search must find an entry)",
        );
        return None;
    };
    let filter = k
        .filter
        .as_ref()
        .map_or("(objectClass=*)".to_string(), |f| f.get_ref().clone());
    if !(filter.starts_with('(') && filter.ends_with(')')) {
        c.at(
            k.filter.as_ref().and_then(sp),
            "filter must be an LDAP filter in parentheses, like \"(uid=monitor)\"",
        );
    }
    let scope = match k.scope.as_ref().map(|x| x.get_ref().as_str()) {
        None | Some("sub") => Some(LdapScope::Sub),
        Some("one") => Some(LdapScope::One),
        Some("base") => Some(LdapScope::Base),
        Some(other) => {
            c.at(
                k.scope.as_ref().and_then(sp),
                format!("scope must be \"base\", \"one\" or \"sub\", got \"{other}\""),
            );
            None
        }
    };
    Some(Protocol::Ldap(Ldap {
        tls: tls?,
        bind,
        base_dn: base_dn.get_ref().clone(),
        filter,
        scope: scope?,
    }))
}

/// mysql / postgres: `tls` is "none" (default) or "require" (negotiated in the
/// protocol, then verified per the TLS options).
fn sql(
    c: &mut Collector<'_>,
    k: &raw::Check,
    kind_name: &str,
    allowed: &mut Vec<&str>,
) -> Option<Protocol> {
    allowed.push("tls");
    let tls = match k.tls.as_ref().map(|t| t.get_ref().as_str()) {
        None | Some("none") => Some(None),
        Some("require") => {
            allowed.extend(["tls_verify", "ca_file", "sni"]);
            tls(c, k).map(Some)
        }
        Some(other) => {
            c.at(
                k.tls.as_ref().and_then(sp),
                format!(
                    "tls of a {kind_name} check must be \"none\" or \"require\", got \"{other}\""
                ),
            );
            None
        }
    };
    let login = login(c, k, true);
    let query = k
        .query
        .as_ref()
        .map_or("SELECT 1".to_string(), |q| q.get_ref().clone());
    if query.trim().is_empty() {
        c.at(k.query.as_ref().and_then(sp), "query is empty");
    }
    let sql = Sql {
        login: login??,
        database: k.database.as_ref().map(|d| d.get_ref().clone()),
        query,
        tls: tls?,
    };
    Some(if kind_name == "mysql" {
        Protocol::Mysql(sql)
    } else {
        Protocol::Postgres(sql)
    })
}

fn radius(c: &mut Collector<'_>, k: &raw::Check) -> Option<Protocol> {
    let shared = secret(c, &k.secret, &k.secret_file, "secret");
    let login = login(c, k, false);
    let Some(Some(secret)) = shared else {
        if matches!(shared, Some(None)) {
            c.at(
                sp(&k.kind),
                "a radius check needs `secret` or `secret_file` (the shared secret)",
            );
        }
        return None;
    };
    let Some(login) = login? else {
        c.at(
            sp(&k.kind),
            "a radius check needs `user` and `password` (or `password_file`)",
        );
        return None;
    };
    Some(Protocol::Radius(Radius {
        secret,
        login,
        nas_identifier: k.nas_identifier.as_ref().map(|n| n.get_ref().clone()),
        accept_reject: k.accept_reject.as_ref().is_some_and(|a| *a.get_ref()),
    }))
}

#[cfg(test)]
mod tests {
    use super::split_words;

    #[test]
    fn words_split_like_a_shell() {
        assert_eq!(
            split_words(r#"/usr/lib/check --name 'a b' "c \"d\"" e\ f"#).unwrap(),
            vec!["/usr/lib/check", "--name", "a b", "c \"d\"", "e f"]
        );
        assert!(split_words("x 'open").is_err());
        assert_eq!(split_words("  ").unwrap(), Vec::<String>::new());
    }
}
