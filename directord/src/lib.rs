//! directord: the supervisor daemon of a high-availability load-balancer director.
//!
//! - [`config`]: `/etc/directord.toml`, validated with file:line:column problems.
//! - [`supervisor`]: joins the failover protocol, the VIPs and the control socket.
//! - [`control`]: the newline-delimited JSON control socket and its client.

pub mod config;
pub mod control;
pub mod supervisor;
