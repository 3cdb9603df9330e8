//! `[alerts]` (email and notify scripts) and `[metrics]` (the Prometheus endpoint).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use checkers::spec::Secret;
use serde::{Deserialize, Serialize};

use super::diagnostic::Collector;
use super::raw::S;
use super::validate::{duration, int_in, sp};

/// `[alerts]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    #[serde(default)]
    pub email_to: Vec<S<String>>,
    #[serde(default)]
    pub email_from: Option<S<String>>,
    #[serde(default)]
    pub smtp_server: Option<S<String>>,
    #[serde(default)]
    pub smtp_port: Option<S<i64>>,
    /// "none", "starttls" (default) or "implicit".
    #[serde(default)]
    pub smtp_tls: Option<S<String>>,
    #[serde(default)]
    pub smtp_tls_verify: Option<S<bool>>,
    #[serde(default)]
    pub smtp_ca_file: Option<S<String>>,
    #[serde(default)]
    pub smtp_user: Option<S<String>>,
    #[serde(default)]
    pub smtp_password: Option<S<String>>,
    #[serde(default)]
    pub smtp_password_file: Option<S<String>>,
    /// At most this many mails per `email_window`; the rest are summed up in one
    /// digest at the window's end.
    #[serde(default)]
    pub email_limit: Option<S<i64>>,
    #[serde(default)]
    pub email_window: Option<S<String>>,
    #[serde(default)]
    pub notify_role: Option<S<String>>,
    #[serde(default)]
    pub notify_real: Option<S<String>>,
    #[serde(default)]
    pub notify_timeout: Option<S<String>>,
}

/// `[metrics]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub listen: S<String>,
}

/// Alerts on role and real-server changes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alerts {
    pub email: Option<Email>,
    /// Run on a role change: `script ROLE NODE PRIORITY` (keepalived's notify
    /// contract: the new state and the object).
    pub notify_role: Option<PathBuf>,
    /// Run on a real server's health change: `script UP|DOWN SERVICE REAL`.
    pub notify_real: Option<PathBuf>,
    /// Scripts are killed (their process group) after this.
    pub notify_timeout: Duration,
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts {
            email: None,
            notify_role: None,
            notify_real: None,
            notify_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Email {
    pub to: Vec<String>,
    pub from: String,
    pub server: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// Verify the server's certificate (default true) against `ca_file` or the
    /// system's CAs.
    pub tls_verify: bool,
    pub ca_file: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub limit: u32,
    pub window: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    None,
    StartTls,
    Implicit,
}

/// The Prometheus endpoint; `None` when `[metrics]` is absent (opt-in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metrics {
    pub listen: SocketAddr,
}

pub(super) fn validate_alerts(c: &mut Collector<'_>, s: Option<RawAlerts>) -> Alerts {
    let mut out = Alerts::default();
    let Some(s) = s else { return out };
    let script = |c: &mut Collector<'_>, v: &Option<S<String>>| {
        let v = v.as_ref()?;
        let path = PathBuf::from(v.get_ref());
        if !path.is_absolute() {
            c.at(sp(v), "a notify script must be an absolute path");
        } else if c.check_files {
            use std::os::unix::fs::PermissionsExt as _;
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {}
                Ok(_) => c.at(
                    sp(v),
                    format!("{} is not an executable file", path.display()),
                ),
                Err(e) => c.at(
                    sp(v),
                    format!("cannot use {}: {}", path.display(), e.kind()),
                ),
            }
        }
        Some(path)
    };
    out.notify_role = script(c, &s.notify_role);
    out.notify_real = script(c, &s.notify_real);
    if let Some(t) = s.notify_timeout.as_ref().and_then(|t| duration(c, t)) {
        if t.is_zero() {
            c.at(
                s.notify_timeout.as_ref().and_then(sp),
                "notify_timeout must be above zero",
            );
        }
        out.notify_timeout = t;
    }
    out.email = email(c, &s);
    out
}

fn email(c: &mut Collector<'_>, s: &RawAlerts) -> Option<Email> {
    let Some(server) = &s.smtp_server else {
        for (name, span) in [
            ("email_to", s.email_to.first().map(|x| x.span())),
            ("email_from", s.email_from.as_ref().map(|x| x.span())),
            ("smtp_user", s.smtp_user.as_ref().map(|x| x.span())),
        ] {
            if span.is_some() {
                c.at(
                    span,
                    format!("`{name}` needs `smtp_server` (the mail relay)"),
                );
            }
        }
        return None;
    };
    if server.get_ref().trim().is_empty() || server.get_ref().contains(char::is_whitespace) {
        c.at(sp(server), "smtp_server must be a host name or address");
    }
    if s.email_to.is_empty() {
        c.at(
            sp(server),
            "email alerts need `email_to` (one or more addresses)",
        );
    }
    let mailbox = |c: &mut Collector<'_>, v: &S<String>, what: &str| {
        let a = v.get_ref();
        let ok = a.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && !d.is_empty() && !a.contains(char::is_whitespace)
        });
        if !ok {
            c.at(
                sp(v),
                format!("{what} `{a}` is not a mail address like ops@example.org"),
            );
        }
        a.clone()
    };
    let to: Vec<String> = s
        .email_to
        .iter()
        .map(|t| mailbox(c, t, "email_to"))
        .collect();
    let from = match &s.email_from {
        Some(f) => mailbox(c, f, "email_from"),
        None => "directord@localhost".to_string(),
    };
    let tls = match s.smtp_tls.as_ref().map(|t| t.get_ref().as_str()) {
        None | Some("starttls") => SmtpTls::StartTls,
        Some("none") => SmtpTls::None,
        Some("implicit") => SmtpTls::Implicit,
        Some(other) => {
            c.at(
                s.smtp_tls.as_ref().and_then(sp),
                format!("smtp_tls must be \"none\", \"starttls\" or \"implicit\", got \"{other}\""),
            );
            SmtpTls::StartTls
        }
    };
    let port = s
        .smtp_port
        .as_ref()
        .and_then(|p| int_in(c, p, "smtp_port", 1, 65_535))
        .map_or(if tls == SmtpTls::Implicit { 465 } else { 25 }, |p| {
            p as u16
        });
    let password =
        super::check::secret(c, &s.smtp_password, &s.smtp_password_file, "smtp_password").flatten();
    if s.smtp_user.is_some() != password.is_some() {
        c.at(
            s.smtp_user.as_ref().map_or(sp(server), sp),
            "SMTP authentication needs both `smtp_user` and `smtp_password` (or `smtp_password_file`)",
        );
    }
    if password.is_some() && tls == SmtpTls::None {
        c.at(
            s.smtp_password.as_ref().or(s.smtp_password_file.as_ref()).and_then(sp),
            "SMTP authentication needs TLS: the password would cross the network in clear (smtp_tls = \"none\")",
        );
    }
    let limit = s
        .email_limit
        .as_ref()
        .and_then(|l| int_in(c, l, "email_limit", 1, 10_000))
        .unwrap_or(10) as u32;
    let window = s
        .email_window
        .as_ref()
        .and_then(|w| duration(c, w))
        .unwrap_or(Duration::from_secs(600));
    if window.is_zero() {
        c.at(
            s.email_window.as_ref().and_then(sp),
            "email_window must be above zero",
        );
    }
    Some(Email {
        to,
        from,
        server: server.get_ref().clone(),
        port,
        tls,
        tls_verify: s.smtp_tls_verify.as_ref().is_none_or(|v| *v.get_ref()),
        ca_file: s.smtp_ca_file.as_ref().map(|f| PathBuf::from(f.get_ref())),
        user: s.smtp_user.as_ref().map(|u| u.get_ref().clone()),
        password,
        limit,
        window,
    })
}

pub(super) fn validate_metrics(c: &mut Collector<'_>, s: Option<RawMetrics>) -> Option<Metrics> {
    let s = s?;
    match s.listen.get_ref().parse::<SocketAddr>() {
        Ok(listen) => Some(Metrics { listen }),
        Err(_) => {
            c.at(
                sp(&s.listen),
                format!(
                    "metrics listen `{}` is not an address with a port (e.g. \"127.0.0.1:9498\")",
                    s.listen.get_ref()
                ),
            );
            None
        }
    }
}
