//! systemd integration: the `sd_notify` protocol spoken by hand (no libsystemd) and
//! whether stderr is the journal.
//!
//! What directord tells systemd (`Type=notify`, `NotifyAccess=main`):
//! - `READY=1` once the config is loaded, the control socket is bound and the
//!   supervisor runs; again after a reload, and after an in-place restart (the
//!   re-executed process keeps the pid, so `NotifyAccess=main` accepts it).
//! - `RELOADING=1` with `MONOTONIC_USEC=` before a reload, `READY=1` after it,
//!   whether the new file was applied or refused (the daemon keeps running).
//! - `STOPPING=1` on SIGTERM/SIGINT, before stepping down.
//! - `STATUS=` the role, the VIPs held and the real servers up, for `systemctl status`.
//! - `WATCHDOG=1` every half of `WATCHDOG_USEC`, but only while the supervisor
//!   answers a status request: a wedged supervisor stops the pings and systemd
//!   restarts the service.
//!
//! Without `NOTIFY_SOCKET` every call here does nothing. `NOTIFY_SOCKET` is left in
//! the environment on purpose: the in-place restart re-executes with it, and a child
//! (a check or notify script) writing to it is refused by `NotifyAccess=main`.

use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::LazyLock;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::control::Request;
use crate::events::Event;
use crate::supervisor::SupervisorHandle;

/// How often `STATUS=` is refreshed when there is no watchdog to keep.
const STATUS_PERIOD: Duration = Duration::from_secs(5);

/// A datagram socket to the service manager's `NOTIFY_SOCKET`.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// `value` as systemd sets it: a path, or `@name` for an abstract socket.
    pub fn new(value: &OsStr) -> io::Result<Notifier> {
        let bytes = value.as_bytes();
        let addr = match bytes.split_first() {
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "NOTIFY_SOCKET is empty",
                ));
            }
            Some((b'@', name)) => SocketAddr::from_abstract_name(name)?,
            Some((b'/', _)) => SocketAddr::from_pathname(value)?,
            Some(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "NOTIFY_SOCKET {} is neither a path nor @abstract",
                        value.to_string_lossy()
                    ),
                ));
            }
        };
        Ok(Notifier {
            socket: UnixDatagram::unbound()?,
            addr,
        })
    }

    /// Sends one message (newline-separated `KEY=value` lines) as one datagram.
    pub fn send(&self, message: &str) -> io::Result<()> {
        self.socket
            .send_to_addr(message.as_bytes(), &self.addr)
            .map(drop)
    }
}

static NOTIFIER: LazyLock<Option<Notifier>> = LazyLock::new(|| {
    let value = std::env::var_os("NOTIFY_SOCKET")?;
    match Notifier::new(&value) {
        Ok(n) => Some(n),
        Err(e) => {
            warn!(error = %e, "cannot use NOTIFY_SOCKET; not telling systemd anything");
            None
        }
    }
});

/// Whether directord runs under a service manager that listens (`NOTIFY_SOCKET`).
pub fn enabled() -> bool {
    NOTIFIER.is_some()
}

fn notify(message: &str) {
    if let Some(n) = &*NOTIFIER {
        match n.send(message) {
            Ok(()) => debug!(message, "told systemd"),
            Err(e) => debug!(message, error = %e, "cannot tell systemd"),
        }
    }
}

/// Startup or a reload is done: `READY=1`.
pub fn ready() {
    notify("READY=1");
}

/// A reload begins: `RELOADING=1` and the monotonic clock, then [`ready`] once done.
pub fn reloading() {
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
}

/// Shutting down (stepping down first): `STOPPING=1`.
pub fn stopping() {
    notify("STOPPING=1");
}

/// A one-line status for `systemctl status` (newlines become spaces).
pub fn status(text: &str) {
    notify(&format!("STATUS={}", text.replace('\n', " ")));
}

/// The supervisor answered: `WATCHDOG=1`.
pub fn watchdog() {
    notify("WATCHDOG=1");
}

fn monotonic_usec() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(t) => {
            let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
            let nanos = u64::try_from(t.tv_nsec()).unwrap_or(0);
            secs.saturating_mul(1_000_000).saturating_add(nanos / 1_000)
        }
        Err(_) => 0,
    }
}

/// The watchdog timeout systemd set for this process (`WATCHDOG_USEC`, and
/// `WATCHDOG_PID` naming this process or absent); `None` when there is none.
pub fn watchdog_timeout() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    parse_watchdog(usec.as_deref(), pid.as_deref(), std::process::id())
}

fn parse_watchdog(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok()? != me
    {
        return None;
    }
    Some(Duration::from_micros(usec))
}

/// Whether stderr is the journal: `JOURNAL_STREAM` (`device:inode`, set by systemd
/// for `StandardError=journal`) matches stderr. A child that inherited the variable
/// but whose stderr was redirected does not match.
pub fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var("JOURNAL_STREAM")
        .ok()
        .and_then(|v| parse_journal_stream(&v))
    else {
        return false;
    };
    let Ok(fd) = io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(m) => (m.dev(), m.ino()) == stream,
        Err(_) => false,
    }
}

fn parse_journal_stream(value: &str) -> Option<(u64, u64)> {
    let (dev, ino) = value.trim().split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// The `STATUS=` line from a status report (`directorctl status --json`):
/// "active (master), 2/2 VIPs held, 5/6 real servers up".
pub fn status_line(report: &Value) -> String {
    let role = report["role"].as_str().unwrap_or("unknown");
    let mut line = match report["state"].as_str() {
        Some(state) if state != role => format!("{role} ({state})"),
        _ => role.to_string(),
    };
    if report["ready"] == false {
        line.push_str(", waiting for the first health checks");
    }
    let vips = report["vips"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let held = vips.iter().filter(|v| v["held"] == true).count();
    line.push_str(&format!(", {held}/{} VIPs held", vips.len()));
    let checks = report["checks"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if !checks.is_empty() {
        let up = checks.iter().filter(|c| c["health"] == "up").count();
        line.push_str(&format!(", {up}/{} real servers up", checks.len()));
    }
    line
}

/// Keeps systemd informed while the supervisor runs: asks it for its status every
/// half watchdog timeout (or every few seconds without a watchdog) and whenever a
/// role or real-server event comes; each answer in time is a `WATCHDOG=1` and,
/// when the line changed, a `STATUS=`. Returns at once without `NOTIFY_SOCKET`.
pub async fn keep(
    handle: SupervisorHandle,
    events: broadcast::Receiver<Event>,
    cancel: CancellationToken,
) {
    if !enabled() {
        return;
    }
    let watchdog_timeout = watchdog_timeout();
    let period = watchdog_timeout.map_or(STATUS_PERIOD, |t| t / 2);
    let mut events = Some(events);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shown = String::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
            event = next_event(&mut events) => {
                if let Err(broadcast::error::RecvError::Closed) = event {
                    events = None;
                    continue;
                }
            }
        }
        match tokio::time::timeout(period, handle.request(Request::Status)).await {
            Ok(answer) => {
                let Some(report) = answer.status.filter(|_| answer.ok) else {
                    debug!(error = ?answer.error, "no status from the supervisor");
                    continue;
                };
                if watchdog_timeout.is_some() {
                    watchdog();
                }
                let line = status_line(&report);
                if line != shown {
                    status(&line);
                    shown = line;
                }
            }
            Err(_) => warn!(
                waited_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX),
                "the supervisor did not answer a status request in time; no watchdog ping"
            ),
        }
    }
}

async fn next_event(
    events: &mut Option<broadcast::Receiver<Event>>,
) -> Result<Event, broadcast::error::RecvError> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn notify_socket_path_and_abstract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).expect("bind");
        Notifier::new(path.as_os_str())
            .expect("path")
            .send("READY=1")
            .expect("send");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("directord-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract");
        let rx = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        Notifier::new(OsStr::new(&format!("@{name}")))
            .expect("abstract")
            .send("STOPPING=1")
            .expect("send");
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn notify_socket_that_is_not_an_address() {
        assert!(Notifier::new(OsStr::new("")).is_err());
        assert!(Notifier::new(OsStr::new("relative/path")).is_err());
    }

    #[test]
    fn watchdog_for_this_process_only() {
        assert_eq!(
            parse_watchdog(Some("10000000"), None, 42),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_watchdog(Some("200000"), Some("42"), 42),
            Some(Duration::from_millis(200))
        );
        // Set for another process (a child inherited it).
        assert_eq!(parse_watchdog(Some("200000"), Some("41"), 42), None);
        assert_eq!(parse_watchdog(Some("0"), None, 42), None);
        assert_eq!(parse_watchdog(Some("soon"), None, 42), None);
        assert_eq!(parse_watchdog(None, Some("42"), 42), None);
    }

    #[test]
    fn journal_stream_is_device_and_inode() {
        assert_eq!(parse_journal_stream("8:123456"), Some((8, 123456)));
        assert_eq!(parse_journal_stream("8"), None);
        assert_eq!(parse_journal_stream("x:1"), None);
    }

    #[test]
    fn status_line_names_role_vips_and_real_servers() {
        let report = json!({
            "role": "active", "state": "master", "ready": true,
            "vips": [{"held": true}, {"held": true}],
            "checks": [{"health": "up"}, {"health": "down"}, {"health": "up"}],
        });
        assert_eq!(
            status_line(&report),
            "active (master), 2/2 VIPs held, 2/3 real servers up"
        );
        let report = json!({
            "role": "standby", "state": "standby", "ready": false,
            "vips": [{"held": false}], "checks": [],
        });
        assert_eq!(
            status_line(&report),
            "standby, waiting for the first health checks, 0/1 VIPs held"
        );
    }
}
