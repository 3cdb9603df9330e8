//! Alerts: mail and notify scripts on role changes and real-server health changes.
//!
//! One task listens to the supervisor's [`Events`](crate::events::Events). It never
//! slows the supervisor: events reach it over a broadcast channel (falling behind
//! loses the oldest, and says how many), mail goes out from a task of its own, and
//! scripts run one at a time per kind from a short queue.
//!
//! - **Mail** (lettre, SMTP over rustls): a rate limit of `email_limit` mails per
//!   `email_window`. The windows are fixed: a window opens with the first mail sent
//!   after the previous one closed. Events beyond the limit are held and go out as
//!   one digest mail when the window closes; the digest opens the next window and
//!   counts in it. A failed send is logged with the relay's answer and retried once,
//!   [`RETRY_AFTER`] later. The rate limiter is the sans-IO [`Limiter`].
//! - **Notify scripts**, keepalived's contract (the new state, then the object):
//!   `notify_role MASTER|BACKUP|FAULT NODE PRIORITY` and
//!   `notify_real UP|DOWN SERVICE IP:PORT`, with `DIRECTORD_*` variables in the
//!   environment. stdin is /dev/null, the script runs in a process group of its own
//!   that is killed at `notify_timeout`; the exit status and the first stderr line
//!   are logged. Scripts of one kind run in order, never two at once; at most
//!   [`SCRIPT_QUEUE`] wait, and the oldest waiting one is dropped (with a warning)
//!   to make room.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::config::{self, SmtpTls};
use crate::events::Event;
use heartbeat::Role;

/// A failed mail is tried once more after this.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);
/// Scripts of one kind waiting to run; beyond this the oldest is dropped.
pub const SCRIPT_QUEUE: usize = 16;
/// Events listed in one digest mail; the rest are only counted.
pub const DIGEST_LINES: usize = 50;
/// One SMTP session may take this long.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Mails waiting for the mail task; beyond this an alert is dropped (and logged).
const MAIL_QUEUE: usize = 64;

/// Cloneable access to the alert task.
#[derive(Debug, Clone)]
pub struct AlertHandle {
    config: Arc<watch::Sender<config::Alerts>>,
}

impl AlertHandle {
    /// Takes a reloaded `[alerts]`: a new relay, limit or script applies from the
    /// next event on; events held for a digest are sent at once.
    pub fn reconfigure(&self, alerts: config::Alerts) {
        self.config.send_if_modified(|current| {
            let changed = *current != alerts;
            *current = alerts;
            changed
        });
    }
}

/// Starts the alert task on the current runtime. It ends when the event channel
/// closes (the supervisor is gone).
pub fn spawn(alerts: config::Alerts, events: broadcast::Receiver<Event>) -> AlertHandle {
    let (tx, rx) = watch::channel(alerts);
    tokio::spawn(run(rx, events));
    AlertHandle {
        config: Arc::new(tx),
    }
}

async fn run(
    mut config_rx: watch::Receiver<config::Alerts>,
    mut events: broadcast::Receiver<Event>,
) {
    let mut config = config_rx.borrow_and_update().clone();
    let mut mail = MailState::new(config.email.as_ref());
    let roles = ScriptQueue::spawn("notify_role");
    let reals = ScriptQueue::spawn("notify_real");
    let mut config_open = true;
    loop {
        let deadline = mail
            .limiter
            .as_ref()
            .and_then(Limiter::next_deadline)
            .map(Instant::from_std);
        tokio::select! {
            r = events.recv() => match r {
                Ok(event) => {
                    if let Some(job) = script_job(&config, &event) {
                        match event {
                            Event::Role { .. } => roles.push(job),
                            Event::Real { .. } => reals.push(job),
                        }
                    }
                    mail.offer(Instant::now(), &event);
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(dropped = n, "alerts: {n} events dropped (the alert task fell behind)");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            changed = config_rx.changed(), if config_open => {
                if changed.is_err() {
                    config_open = false;
                    continue;
                }
                let new = config_rx.borrow_and_update().clone();
                if new.email != config.email {
                    // What was held goes out through the old relay's settings now.
                    mail.flush(Instant::now());
                    mail = MailState::new(new.email.as_ref());
                    info!(email = new.email.is_some(), "alerts: mail settings reloaded");
                }
                config = new;
            }
            () = sleep_until(deadline) => mail.poll(Instant::now()),
        }
    }
    mail.flush(Instant::now());
    debug!("alert task ends: no more events");
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

// Mail.

/// keepalived's word for a role.
fn keepalived_state(role: Role) -> &'static str {
    match role {
        Role::Active => "MASTER",
        Role::Standby => "BACKUP",
        Role::Fault => "FAULT",
    }
}

fn role_word(role: Role) -> &'static str {
    match role {
        Role::Active => "ACTIVE",
        Role::Standby => "STANDBY",
        Role::Fault => "FAULT",
    }
}

fn health_word(health: checkers::Health) -> &'static str {
    match health {
        checkers::Health::Up => "UP",
        checkers::Health::Down => "DOWN",
    }
}

/// The one-line summary of an event: a mail's subject (after "[directord] ") and a
/// digest's line.
pub fn summary(event: &Event) -> String {
    match event {
        Event::Role { node, role, .. } => format!("{node} is now {}", role_word(*role)),
        Event::Real {
            service,
            real,
            health,
            reason,
            ..
        } => match reason {
            Some(r) if *health == checkers::Health::Down => {
                format!("{service} {real} is {}: {r}", health_word(*health))
            }
            _ => format!("{service} {real} is {}", health_word(*health)),
        },
    }
}

fn at(event: &Event) -> SystemTime {
    match event {
        Event::Role { at, .. } | Event::Real { at, .. } => *at,
    }
}

/// A mail ready to go: subject and plain-text body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub subject: String,
    pub body: String,
}

impl Mail {
    /// The mail for one event.
    pub fn event(event: &Event) -> Mail {
        let time = httpdate::fmt_http_date(at(event));
        let body = match event {
            Event::Role {
                node,
                role,
                state,
                reason,
                priority,
                ..
            } => format!(
                "Director {node} is now {} ({state}).\n\n\
                 node:     {node}\n\
                 role:     {}\n\
                 priority: {priority}\n\
                 time:     {time}\n\
                 reason:   {reason}\n",
                role_word(*role),
                role_word(*role),
            ),
            Event::Real {
                node,
                service,
                real,
                health,
                reason,
                ..
            } => format!(
                "Real server {real} of service {service} is {}.\n\n\
                 node:     {node}\n\
                 service:  {service}\n\
                 real:     {real}\n\
                 health:   {}\n\
                 time:     {time}\n\
                 reason:   {}\n",
                health_word(*health),
                health_word(*health),
                reason.as_deref().unwrap_or("check passed"),
            ),
        };
        Mail {
            subject: format!("[directord] {}", summary(event)),
            body,
        }
    }

    /// The digest of the events held back by the rate limit.
    pub fn digest(node: &str, digest: &Digest) -> Mail {
        let head = format!(
            "{} more events in the last {}",
            digest.count,
            human(digest.window)
        );
        let mut body = format!(
            "{head} on {node} (more than email_limit = {} mails):\n\n",
            digest.limit
        );
        for line in &digest.lines {
            body.push_str(line);
            body.push('\n');
        }
        let unlisted = digest.count - digest.lines.len();
        if unlisted > 0 {
            body.push_str(&format!("... and {unlisted} more\n"));
        }
        Mail {
            subject: format!("[directord] {node}: {head}"),
            body,
        }
    }
}

/// "10 min", "2 s", "1 h", "1500 ms".
fn human(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() != 0 || s == 0 {
        format!("{} ms", d.as_millis())
    } else if s.is_multiple_of(3600) {
        format!("{} h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

/// The mail side of the alert task: the limiter and the channel to the mail task.
struct MailState {
    limiter: Option<Limiter>,
    node: String,
    out: Option<mpsc::Sender<Outgoing>>,
    mailer: Option<Arc<Mailer>>,
}

impl MailState {
    fn new(email: Option<&config::Email>) -> MailState {
        let Some(email) = email else {
            return MailState {
                limiter: None,
                node: String::new(),
                out: None,
                mailer: None,
            };
        };
        let mailer = match Mailer::new(email) {
            Ok(m) => Some(Arc::new(m)),
            Err(e) => {
                error!(relay = %email.server, error = %e, "alert mail disabled: cannot set up the relay");
                None
            }
        };
        let (tx, rx) = mpsc::channel(MAIL_QUEUE);
        tokio::spawn(send_mails(rx));
        MailState {
            limiter: Some(Limiter::new(email.limit, email.window)),
            node: String::new(),
            out: Some(tx),
            mailer,
        }
    }

    fn offer(&mut self, now: Instant, event: &Event) {
        let Some(limiter) = &mut self.limiter else {
            return;
        };
        let (Event::Role { node, .. } | Event::Real { node, .. }) = event;
        self.node.clone_from(node);
        let line = format!("{}  {}", httpdate::fmt_http_date(at(event)), summary(event));
        if limiter.offer(now.into_std(), line) == Decision::Send {
            self.send(Mail::event(event));
        } else {
            debug!(event = %summary(event), "alert mail held for the digest (rate limit)");
        }
    }

    fn poll(&mut self, now: Instant) {
        if let Some(d) = self.limiter.as_mut().and_then(|l| l.poll(now.into_std())) {
            let mail = Mail::digest(&self.node, &d);
            self.send(mail);
        }
    }

    fn flush(&mut self, now: Instant) {
        if let Some(d) = self.limiter.as_mut().and_then(|l| l.flush(now.into_std())) {
            let mail = Mail::digest(&self.node, &d);
            self.send(mail);
        }
    }

    fn send(&self, mail: Mail) {
        let (Some(out), Some(mailer)) = (&self.out, &self.mailer) else {
            return;
        };
        let subject = mail.subject.clone();
        let job = Outgoing {
            mailer: mailer.clone(),
            mail,
            retried: false,
        };
        if out.try_send(job).is_err() {
            warn!(%subject, "alert mail dropped: the mail queue is full (relay slow or down)");
        }
    }
}

/// The relay and the envelope.
struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    relay: String,
}

impl Mailer {
    fn new(email: &config::Email) -> Result<Mailer, String> {
        let tls = match email.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::StartTls => Tls::Required(tls_parameters(email)?),
            SmtpTls::Implicit => Tls::Wrapper(tls_parameters(email)?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&email.server)
            .port(email.port)
            .tls(tls)
            .timeout(Some(SMTP_TIMEOUT));
        if let (Some(user), Some(password)) = (&email.user, &email.password) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose().to_string(),
            ));
        }
        let mailbox = |a: &str| {
            a.parse::<Mailbox>()
                .map_err(|e| format!("mail address {a:?}: {e}"))
        };
        Ok(Mailer {
            transport: builder.build(),
            from: mailbox(&email.from)?,
            to: email
                .to
                .iter()
                .map(|a| mailbox(a))
                .collect::<Result<_, _>>()?,
            relay: format!("{}:{}", email.server, email.port),
        })
    }

    fn message(&self, mail: &Mail) -> Result<Message, String> {
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(mail.subject.clone())
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            b = b.to(to.clone());
        }
        b.body(mail.body.clone()).map_err(|e| e.to_string())
    }
}

/// TLS towards the relay: the system's CAs, or only `ca_file`'s when given; no
/// verification at all with `smtp_tls_verify = false`.
fn tls_parameters(email: &config::Email) -> Result<TlsParameters, String> {
    let mut b = TlsParameters::builder(email.server.clone());
    if let Some(path) = &email.ca_file {
        let pem =
            std::fs::read(path).map_err(|e| format!("smtp_ca_file {}: {e}", path.display()))?;
        let cert = Certificate::from_pem(&pem)
            .map_err(|e| format!("smtp_ca_file {}: {e}", path.display()))?;
        b = b
            .certificate_store(CertificateStore::None)
            .add_root_certificate(cert);
    }
    if !email.tls_verify {
        b = b
            .dangerous_accept_invalid_certs(true)
            .dangerous_accept_invalid_hostnames(true);
    }
    b.build_rustls().map_err(|e| e.to_string())
}

struct Outgoing {
    mailer: Arc<Mailer>,
    mail: Mail,
    retried: bool,
}

/// The mail task: sends in order; a failure is tried once more, later.
async fn send_mails(mut rx: mpsc::Receiver<Outgoing>) {
    let mut retries: VecDeque<(Instant, Outgoing)> = VecDeque::new();
    loop {
        let due = retries.front().map(|(t, _)| *t);
        let job = tokio::select! {
            j = rx.recv() => match j {
                Some(j) => j,
                None if retries.is_empty() => return,
                None => {
                    // The sender is gone (reload or shutdown): still try the retries.
                    let (t, j) = retries.pop_front().expect("not empty");
                    tokio::time::sleep_until(t).await;
                    j
                }
            },
            () = sleep_until(due) => retries.pop_front().expect("due means queued").1,
        };
        let Outgoing {
            mailer,
            mail,
            retried,
        } = job;
        let message = match mailer.message(&mail) {
            Ok(m) => m,
            Err(e) => {
                error!(subject = %mail.subject, error = %e, "cannot build the alert mail");
                continue;
            }
        };
        match mailer.transport.send(message).await {
            Ok(answer) => info!(
                relay = %mailer.relay,
                subject = %mail.subject,
                answer = %answer.message().collect::<Vec<_>>().join(" "),
                "alert mail sent"
            ),
            Err(e) if !retried => {
                warn!(
                    relay = %mailer.relay,
                    subject = %mail.subject,
                    error = %crate::error_chain(&e),
                    "alert mail not sent; trying again in {} s",
                    RETRY_AFTER.as_secs()
                );
                retries.push_back((
                    Instant::now() + RETRY_AFTER,
                    Outgoing {
                        mailer,
                        mail,
                        retried: true,
                    },
                ));
            }
            Err(e) => error!(
                relay = %mailer.relay,
                subject = %mail.subject,
                error = %crate::error_chain(&e),
                "alert mail not sent, given up after a retry"
            ),
        }
    }
}

// The rate limit, sans IO.

/// What [`Limiter::offer`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Mail it now.
    Send,
    /// Over the limit: held for the digest.
    Held,
}

/// The events held back in one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// How many events were held.
    pub count: usize,
    /// The first [`DIGEST_LINES`] of them.
    pub lines: Vec<String>,
    pub limit: u32,
    pub window: Duration,
}

/// At most `limit` mails per fixed window; a window opens with the first mail sent
/// after the previous window closed. Over the limit, events are held; when the
/// window closes they make one digest, which opens the next window as its first
/// mail. Time is an argument: no clock is read here.
#[derive(Debug)]
pub struct Limiter {
    limit: u32,
    window: Duration,
    /// The open window: when it started and how many mails went out in it.
    open: Option<(std::time::Instant, u32)>,
    held: usize,
    lines: Vec<String>,
}

impl Limiter {
    pub fn new(limit: u32, window: Duration) -> Limiter {
        Limiter {
            limit: limit.max(1),
            window,
            open: None,
            held: 0,
            lines: Vec::new(),
        }
    }

    /// An event at `now`, summed up as `line` should it be held.
    pub fn offer(&mut self, now: std::time::Instant, line: String) -> Decision {
        self.close_if_over(now);
        let (_, sent) = self.open.get_or_insert((now, 0));
        if *sent < self.limit {
            *sent += 1;
            return Decision::Send;
        }
        self.held += 1;
        if self.lines.len() < DIGEST_LINES {
            self.lines.push(line);
        }
        Decision::Held
    }

    /// When [`poll`](Self::poll) has a digest to give: the end of the window, if
    /// anything is held.
    pub fn next_deadline(&self) -> Option<std::time::Instant> {
        match self.open {
            Some((start, _)) if self.held > 0 => Some(start + self.window),
            _ => None,
        }
    }

    /// The digest, once the window holding it has closed.
    pub fn poll(&mut self, now: std::time::Instant) -> Option<Digest> {
        let due = self.next_deadline()?;
        if now < due {
            return None;
        }
        let digest = self.take();
        // The digest is the first mail of the next window.
        self.open = Some((now, 1));
        Some(digest)
    }

    /// The digest now, whatever the window (reload, shutdown).
    pub fn flush(&mut self, _now: std::time::Instant) -> Option<Digest> {
        (self.held > 0).then(|| self.take())
    }

    fn take(&mut self) -> Digest {
        let digest = Digest {
            count: self.held,
            lines: std::mem::take(&mut self.lines),
            limit: self.limit,
            window: self.window,
        };
        self.held = 0;
        digest
    }

    fn close_if_over(&mut self, now: std::time::Instant) {
        if let Some((start, _)) = self.open
            && now >= start + self.window
            && self.held == 0
        {
            self.open = None;
        }
    }
}

// Notify scripts.

/// One run of a notify script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptJob {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
}

/// The script run for `event`, if one is configured: keepalived's arguments (the
/// new state, then the object) and the details in `DIRECTORD_*` variables.
pub fn script_job(alerts: &config::Alerts, event: &Event) -> Option<ScriptJob> {
    let time = at(event)
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (program, args, mut env) = match event {
        Event::Role {
            node,
            role,
            state,
            reason,
            priority,
            ..
        } => (
            alerts.notify_role.clone()?,
            vec![
                keepalived_state(*role).to_string(),
                node.clone(),
                priority.to_string(),
            ],
            vec![
                ("DIRECTORD_EVENT", "role".to_string()),
                ("DIRECTORD_NODE", node.clone()),
                ("DIRECTORD_ROLE", role_word(*role).to_lowercase()),
                ("DIRECTORD_STATE", state.clone()),
                ("DIRECTORD_PRIORITY", priority.to_string()),
                ("DIRECTORD_REASON", reason.clone()),
            ],
        ),
        Event::Real {
            node,
            service,
            real,
            health,
            reason,
            ..
        } => (
            alerts.notify_real.clone()?,
            vec![
                health_word(*health).to_string(),
                service.clone(),
                real.to_string(),
            ],
            vec![
                ("DIRECTORD_EVENT", "real".to_string()),
                ("DIRECTORD_NODE", node.clone()),
                ("DIRECTORD_SERVICE", service.clone()),
                ("DIRECTORD_REAL", real.to_string()),
                ("DIRECTORD_REAL_IP", real.ip().to_string()),
                ("DIRECTORD_REAL_PORT", real.port().to_string()),
                ("DIRECTORD_HEALTH", health_word(*health).to_lowercase()),
                ("DIRECTORD_REASON", reason.clone().unwrap_or_default()),
            ],
        ),
    };
    env.push(("DIRECTORD_TIME", time.to_string()));
    Some(ScriptJob {
        program,
        args,
        env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        timeout: alerts.notify_timeout,
    })
}

/// The scripts of one kind, run one after the other by a task of their own.
#[derive(Debug)]
struct ScriptQueue {
    tx: mpsc::UnboundedSender<ScriptJob>,
}

impl ScriptQueue {
    fn spawn(kind: &'static str) -> ScriptQueue {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_scripts(kind, rx));
        ScriptQueue { tx }
    }

    fn push(&self, job: ScriptJob) {
        let _ = self.tx.send(job);
    }
}

async fn run_scripts(kind: &'static str, mut rx: mpsc::UnboundedReceiver<ScriptJob>) {
    let mut queue: VecDeque<ScriptJob> = VecDeque::new();
    let mut open = true;
    let enqueue = |queue: &mut VecDeque<ScriptJob>, job: ScriptJob| {
        if queue.len() >= SCRIPT_QUEUE
            && let Some(old) = queue.pop_front()
        {
            warn!(
                kind,
                script = %old.program.display(),
                args = ?old.args,
                "notify script dropped: {SCRIPT_QUEUE} already waiting (the scripts are too slow)"
            );
        }
        queue.push_back(job);
    };
    loop {
        let Some(job) = queue.pop_front() else {
            if !open {
                return;
            }
            match rx.recv().await {
                Some(job) => queue.push_back(job),
                None => open = false,
            }
            continue;
        };
        let run = run_script(kind, job);
        tokio::pin!(run);
        loop {
            tokio::select! {
                () = &mut run => break,
                j = rx.recv(), if open => match j {
                    Some(j) => enqueue(&mut queue, j),
                    None => open = false,
                },
            }
        }
    }
}

/// Runs one script to its end or its timeout (the checkers' external-command
/// runner: own process group, killed whole), and logs how it went.
async fn run_script(kind: &'static str, job: ScriptJob) {
    let script = job.program.display().to_string();
    let mut cmd = tokio::process::Command::new(&job.program);
    cmd.args(&job.args)
        .envs(job.env.iter().map(|(k, v)| (k, v)));
    let finished = match checkers::external::run(cmd, job.timeout).await {
        Ok(f) => f,
        Err(e) => {
            warn!(kind, %script, args = ?job.args, error = %e, "cannot start the notify script");
            return;
        }
    };
    match &finished.status {
        None => warn!(
            kind, %script, args = ?job.args,
            "notify script killed (its process group) after the {} ms timeout",
            job.timeout.as_millis()
        ),
        Some(Ok(s)) if s.success() => info!(kind, %script, args = ?job.args, "notify script ran"),
        Some(_) => {
            warn!(kind, %script, args = ?job.args, failure = %finished.failure(), "notify script failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant as StdInstant;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn under_the_limit_every_event_is_mailed() {
        let t0 = StdInstant::now();
        let mut l = Limiter::new(3, secs(600));
        for i in 0..3 {
            assert_eq!(l.offer(t0 + secs(i), format!("e{i}")), Decision::Send);
        }
        assert_eq!(l.next_deadline(), None);
        // A new window opens with the next mail after the first one closed.
        for i in 0..3 {
            assert_eq!(l.offer(t0 + secs(600 + i), format!("f{i}")), Decision::Send);
        }
    }

    #[test]
    fn over_the_limit_events_make_one_digest_at_the_window_end() {
        let t0 = StdInstant::now();
        let mut l = Limiter::new(2, secs(600));
        assert_eq!(l.offer(t0, "a".into()), Decision::Send);
        assert_eq!(l.offer(t0 + secs(1), "b".into()), Decision::Send);
        for i in 0..12 {
            assert_eq!(l.offer(t0 + secs(2 + i), format!("x{i}")), Decision::Held);
        }
        assert_eq!(l.next_deadline(), Some(t0 + secs(600)));
        assert_eq!(l.poll(t0 + secs(599)), None);
        let d = l.poll(t0 + secs(600)).expect("digest at the window end");
        assert_eq!(d.count, 12);
        assert_eq!(d.lines.first().map(String::as_str), Some("x0"));
        assert_eq!(l.poll(t0 + secs(601)), None, "one digest only");
        assert_eq!(l.next_deadline(), None);
        // The digest opened the next window and counts in it: one more mail fits.
        assert_eq!(l.offer(t0 + secs(700), "c".into()), Decision::Send);
        assert_eq!(l.offer(t0 + secs(701), "d".into()), Decision::Held);
        assert_eq!(l.next_deadline(), Some(t0 + secs(1200)));
        let m = Mail::digest("lvs1", &l.poll(t0 + secs(1200)).expect("digest"));
        assert_eq!(
            m.subject,
            "[directord] lvs1: 1 more events in the last 10 min"
        );
        assert!(m.body.contains("\nd\n"), "{}", m.body);
    }

    #[test]
    fn a_digest_lists_a_bounded_number_of_events() {
        let t0 = StdInstant::now();
        let mut l = Limiter::new(1, secs(2));
        assert_eq!(l.offer(t0, "first".into()), Decision::Send);
        for i in 0..(DIGEST_LINES + 7) {
            assert_eq!(l.offer(t0, format!("e{i}")), Decision::Held);
        }
        let d = l.poll(t0 + secs(2)).expect("digest");
        assert_eq!(d.count, DIGEST_LINES + 7);
        assert_eq!(d.lines.len(), DIGEST_LINES);
        let m = Mail::digest("lvs1", &d);
        assert_eq!(
            m.subject,
            format!(
                "[directord] lvs1: {} more events in the last 2 s",
                DIGEST_LINES + 7
            )
        );
        assert!(m.body.ends_with("... and 7 more\n"), "{}", m.body);
    }

    #[test]
    fn flush_gives_the_held_events_at_once() {
        let t0 = StdInstant::now();
        let mut l = Limiter::new(1, secs(60));
        l.offer(t0, "a".into());
        assert_eq!(l.flush(t0), None);
        l.offer(t0, "b".into());
        assert_eq!(l.flush(t0 + secs(1)).map(|d| d.count), Some(1));
        assert_eq!(l.next_deadline(), None);
    }

    fn real(health: checkers::Health, reason: Option<&str>) -> Event {
        Event::Real {
            node: "lvs1".into(),
            service: "www".into(),
            real: "10.0.1.11:80".parse().expect("addr"),
            health,
            reason: reason.map(str::to_string),
            at: SystemTime::UNIX_EPOCH + secs(1_700_000_000),
        }
    }

    fn role(role: Role) -> Event {
        Event::Role {
            node: "lvs1".into(),
            role,
            state: "master".into(),
            reason: "no advert from the master within 3.6 s".into(),
            priority: 100,
            at: SystemTime::UNIX_EPOCH + secs(1_700_000_000),
        }
    }

    #[test]
    fn subjects_and_bodies() {
        let m = Mail::event(&role(Role::Active));
        assert_eq!(m.subject, "[directord] lvs1 is now ACTIVE");
        assert!(m.body.contains("node:     lvs1\n"), "{}", m.body);
        assert!(
            m.body.contains("time:     Tue, 14 Nov 2023 22:13:20 GMT\n"),
            "{}",
            m.body
        );
        assert!(m.body.contains("reason:   no advert"), "{}", m.body);
        let m = Mail::event(&real(
            checkers::Health::Down,
            Some("connect: connection refused"),
        ));
        assert_eq!(
            m.subject,
            "[directord] www 10.0.1.11:80 is DOWN: connect: connection refused"
        );
        let m = Mail::event(&real(checkers::Health::Up, None));
        assert_eq!(m.subject, "[directord] www 10.0.1.11:80 is UP");
    }

    #[test]
    fn script_arguments_follow_keepalived() {
        let alerts = config::Alerts {
            notify_role: Some("/etc/directord/notify-role".into()),
            notify_real: Some("/etc/directord/notify-real".into()),
            ..config::Alerts::default()
        };
        let j = script_job(&alerts, &role(Role::Active)).expect("job");
        assert_eq!(j.args, ["MASTER", "lvs1", "100"]);
        assert!(j.env.contains(&("DIRECTORD_EVENT".into(), "role".into())));
        let j = script_job(&alerts, &role(Role::Standby)).expect("job");
        assert_eq!(j.args[0], "BACKUP");
        let j = script_job(&alerts, &role(Role::Fault)).expect("job");
        assert_eq!(j.args[0], "FAULT");
        let j = script_job(&alerts, &real(checkers::Health::Down, Some("x"))).expect("job");
        assert_eq!(j.args, ["DOWN", "www", "10.0.1.11:80"]);
        assert!(j.env.contains(&("DIRECTORD_REASON".into(), "x".into())));
        assert_eq!(
            script_job(&config::Alerts::default(), &role(Role::Active)),
            None
        );
    }

    #[test]
    fn durations_read_like_the_config() {
        assert_eq!(human(secs(600)), "10 min");
        assert_eq!(human(secs(2)), "2 s");
        assert_eq!(human(secs(7200)), "2 h");
        assert_eq!(human(Duration::from_millis(1500)), "1500 ms");
    }
}
