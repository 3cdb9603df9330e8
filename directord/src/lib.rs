//! directord: the supervisor daemon of a high-availability load-balancer director.
//!
//! - [`config`]: `/etc/directord.toml`, validated with file:line:column problems.
//! - [`supervisor`]: joins the failover protocol, the VIPs and the control socket.
//! - [`control`]: the newline-delimited JSON control socket and its client.
//! - [`ipvs`]: the services as the kernel's IPVS table, on a thread of its own.

pub mod alert;
pub mod config;
pub mod control;
pub mod events;
pub mod health;
pub mod ipvs;
pub mod metrics;
pub mod supervisor;
pub mod systemd;

/// An error with its causes on one line ("outer: inner: errno"), for logs and
/// operator messages; a cause whose text is already there is not repeated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
