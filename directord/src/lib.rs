//! directord: the supervisor daemon of a high-availability load-balancer director.
//!
//! - [`config`]: `/etc/directord.toml`, validated with file:line:column problems.
//! - [`supervisor`]: joins the failover protocol, the VIPs and the control socket.
//! - [`control`]: the newline-delimited JSON control socket and its client.
//! - [`ipvs`]: the services as the kernel's IPVS table, on a thread of its own.

pub mod config;
pub mod control;
pub mod ipvs;
pub mod supervisor;
