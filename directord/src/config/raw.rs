//! The file as written: serde structs mirroring the TOML sections.
//!
//! Every struct denies unknown keys. Values that need checking beyond their type are
//! `Spanned` so that validation can name the line and column of the offending value.

use serde::Deserialize;
use toml::Spanned;

pub type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failover {
    pub protocol: S<String>,
    pub interface: S<String>,
    #[serde(default)]
    pub priority: Option<S<i64>>,
    #[serde(default)]
    pub preempt: Option<bool>,
    #[serde(default)]
    pub preempt_delay: Option<S<String>>,
    #[serde(default)]
    pub vrrp: Option<S<Vrrp>>,
    #[serde(default)]
    pub heartbeat: Option<S<Heartbeat>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub peer: S<String>,
    pub auth_key_file: S<String>,
    #[serde(default)]
    pub port: Option<S<i64>>,
    #[serde(default)]
    pub keepalive: Option<S<String>>,
    #[serde(default)]
    pub warntime: Option<S<String>>,
    #[serde(default)]
    pub deadtime: Option<S<String>>,
    #[serde(default)]
    pub initdead: Option<S<String>>,
    #[serde(default)]
    pub preferred: Option<S<String>>,
    #[serde(default)]
    pub auto_failback: Option<bool>,
    #[serde(default)]
    pub allow_insecure_crc: Option<bool>,
    #[serde(default)]
    pub state_dir: Option<S<String>>,
    #[serde(default)]
    pub media: Vec<S<Medium>>,
}

/// One heartbeat medium: exactly one of `unicast`, `multicast`, `broadcast`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Medium {
    #[serde(default)]
    pub unicast: Option<S<String>>,
    #[serde(default)]
    pub multicast: Option<S<String>>,
    #[serde(default)]
    pub broadcast: Option<S<bool>>,
    #[serde(default)]
    pub interface: Option<S<String>>,
    #[serde(default)]
    pub ttl: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vrrp {
    #[serde(default)]
    pub version: Option<S<i64>>,
    pub router_id: S<i64>,
    #[serde(default)]
    pub advert_interval: Option<S<String>>,
    #[serde(default)]
    pub unicast_peers: Vec<S<String>>,
    #[serde(default)]
    pub source_address: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announce {
    #[serde(default)]
    pub count: Option<S<i64>>,
    #[serde(default)]
    pub spacing: Option<S<String>>,
    #[serde(default)]
    pub refresh: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    #[serde(default)]
    pub socket: Option<S<String>>,
    #[serde(default)]
    pub group: Option<S<String>>,
}

/// `[ipvs]`: the connection-sync daemon.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ipvs {
    #[serde(default)]
    pub sync: Option<S<bool>>,
    #[serde(default)]
    pub sync_interface: Option<S<String>>,
    #[serde(default)]
    pub sync_id: Option<S<i64>>,
    #[serde(default)]
    pub sync_group: Option<S<String>>,
    #[serde(default)]
    pub sync_port: Option<S<i64>>,
    #[serde(default)]
    pub sync_ttl: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vip {
    pub address: S<String>,
    #[serde(default)]
    pub interface: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: S<String>,
    #[serde(default)]
    pub address: Option<S<String>>,
    #[serde(default)]
    pub fwmark: Option<S<i64>>,
    #[serde(default)]
    pub protocol: Option<S<String>>,
    #[serde(default)]
    pub scheduler: Option<S<String>>,
    #[serde(default)]
    pub forward: Option<S<String>>,
    #[serde(default)]
    pub scheduler_flags: Vec<S<String>>,
    #[serde(default)]
    pub persistence: Option<S<String>>,
    /// A prefix length (24) or, for IPv4, a netmask ("255.255.255.0").
    #[serde(default)]
    pub persistence_netmask: Option<S<toml::Value>>,
    #[serde(default)]
    pub on_failure: Option<S<String>>,
    #[serde(default)]
    pub sorry_server: Option<S<String>>,
    #[serde(default)]
    pub check: Option<S<Check>>,
    #[serde(default)]
    pub real: Vec<S<RealServer>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealServer {
    pub address: S<String>,
    #[serde(default)]
    pub weight: Option<S<i64>>,
}

/// A health check. Common timing fields plus the protocol's own, tagged by `type`.
/// A flat struct (not a serde-tagged enum) so each option keeps its span and an option
/// of another check type gets a pointed error rather than serde's "unknown field".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    #[serde(rename = "type")]
    pub kind: S<String>,
    #[serde(default)]
    pub interval: Option<S<String>>,
    #[serde(default)]
    pub timeout: Option<S<String>>,
    #[serde(default)]
    pub rise: Option<S<i64>>,
    #[serde(default)]
    pub fall: Option<S<i64>>,
    #[serde(default)]
    pub retry: Option<S<i64>>,
    #[serde(default)]
    pub retry_delay: Option<S<String>>,
    #[serde(default)]
    pub initial: Option<S<String>>,
    #[serde(default)]
    pub connect_ip: Option<S<String>>,
    #[serde(default)]
    pub connect_port: Option<S<i64>>,
    #[serde(default)]
    pub bind_to: Option<S<String>>,
    // http / https
    #[serde(default)]
    pub method: Option<S<String>>,
    #[serde(default)]
    pub path: Option<S<String>>,
    #[serde(default)]
    pub host: Option<S<String>>,
    #[serde(default)]
    pub expect_status: Option<S<toml::Value>>,
    #[serde(default)]
    pub expect_body: Option<S<String>>,
    #[serde(default)]
    pub expect_digest: Option<S<String>>,
    #[serde(default)]
    pub headers: Option<S<toml::Table>>,
    #[serde(default)]
    pub user: Option<S<String>>,
    #[serde(default)]
    pub password: Option<S<String>>,
    // TLS: https, smtp with starttls
    #[serde(default)]
    pub tls_verify: Option<S<bool>>,
    #[serde(default)]
    pub ca_file: Option<S<String>>,
    #[serde(default)]
    pub sni: Option<S<String>>,
    // tcp send/expect
    #[serde(default)]
    pub send: Option<S<String>>,
    #[serde(default)]
    pub expect: Option<S<String>>,
    // dns
    #[serde(default)]
    pub query_name: Option<S<String>>,
    #[serde(default)]
    pub query_type: Option<S<String>>,
    #[serde(default)]
    pub expect_rcode: Option<S<String>>,
    #[serde(default)]
    pub expect_answer: Option<S<String>>,
    // smtp
    #[serde(default)]
    pub helo: Option<S<String>>,
    #[serde(default)]
    pub starttls: Option<S<bool>>,
    // external command: a string (split like a shell, without one) or an array
    #[serde(default)]
    pub command: Option<S<toml::Value>>,
    // logins (ftp, imap, pop, mysql, postgres, radius; also http's basic auth)
    #[serde(default)]
    pub password_file: Option<S<String>>,
    // TLS of ftp, imap, pop, nntp, ldap, mysql, postgres: "none", "implicit", "starttls"
    #[serde(default)]
    pub tls: Option<S<String>>,
    // ftp
    #[serde(default)]
    pub retrieve: Option<S<String>>,
    // nntp
    #[serde(default)]
    pub group: Option<S<String>>,
    // ldap
    #[serde(default)]
    pub bind_dn: Option<S<String>>,
    #[serde(default)]
    pub base_dn: Option<S<String>>,
    #[serde(default)]
    pub filter: Option<S<String>>,
    #[serde(default)]
    pub scope: Option<S<String>>,
    // mysql, postgres
    #[serde(default)]
    pub database: Option<S<String>>,
    #[serde(default)]
    pub query: Option<S<String>>,
    // radius
    #[serde(default)]
    pub secret: Option<S<String>>,
    #[serde(default)]
    pub secret_file: Option<S<String>>,
    #[serde(default)]
    pub nas_identifier: Option<S<String>>,
    #[serde(default)]
    pub accept_reject: Option<S<bool>>,
    // sip
    #[serde(default)]
    pub transport: Option<S<String>>,
    #[serde(default)]
    pub uri: Option<S<String>>,
}
