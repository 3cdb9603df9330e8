//! Health checkers for real servers.
//!
//! [`spec`] says what a check is (validated values, built by directord's config);
//! [`Probe`] runs one attempt of a check against one real server and gives a
//! [`Verdict`]; [`runner`] runs every (check, real server) pair on its schedule and turns
//! verdicts into health changes with rise/fall hysteresis.
//!
//! A real server that fails the check is a normal result, [`Verdict::Down`] with a
//! reason. An [`Error`] means the checker itself cannot work (a CA file that does not
//! load, a source address that is not local, a program that cannot be started).

pub mod dns;
mod error;
pub mod external;
pub mod ftp;
pub mod http;
pub mod icmp;
pub mod imap;
pub mod ldap;
pub mod nntp;
pub mod pop;
pub mod radius;
pub mod runner;
mod session;
pub mod sip;
pub mod smtp;
pub mod spec;
pub mod sql;
pub mod tcp;
pub(crate) mod tls;
mod udp;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub use error::Error;
pub use spec::{Check, Health, Protocol};

/// The verdict of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Up,
    /// The real server failed the check; the reason is for the operator
    /// ("connect: connection refused", "status 503, expected 200-299").
    Down(String),
}

/// Why an attempt stopped short of [`Verdict::Up`].
#[derive(Debug)]
pub(crate) enum Stop {
    /// The real server failed the check.
    Down(String),
    /// The checker itself could not work.
    Checker(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        Stop::Checker(e)
    }
}

impl Stop {
    /// As the probe returns it: a down real server is a verdict, a checker that
    /// cannot work an error.
    pub(crate) fn into_verdict(self) -> Result<Verdict, Error> {
        match self {
            Stop::Down(reason) => Ok(Verdict::Down(reason)),
            Stop::Checker(e) => Err(e),
        }
    }
}

pub(crate) fn down<T>(reason: String) -> Result<T, Stop> {
    Err(Stop::Down(reason))
}

/// The outcome of an attempt as the probe returns it.
pub(crate) fn verdict(outcome: Result<(), Stop>) -> Result<Verdict, Error> {
    outcome.map_or_else(Stop::into_verdict, |()| Ok(Verdict::Up))
}

/// Where and how long one attempt may take; given to each protocol.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The real server itself.
    pub real: SocketAddr,
    /// Where to connect (connect_ip / connect_port applied, default port filled in).
    pub addr: SocketAddr,
    /// Source address to bind, if any.
    pub bind: Option<IpAddr>,
    /// The whole attempt's budget.
    pub timeout: Duration,
}

/// A check made ready to run: what can be prepared once (TLS client config, parsed
/// names) is, so each attempt does only the protocol's work. Cheap to share
/// (`Arc<Probe>`) between the real servers of a service.
#[derive(Debug)]
pub struct Probe {
    check: Check,
    kind: Prepared,
}

#[derive(Debug)]
enum Prepared {
    Tcp,
    Http(http::Prepared),
    Ping,
    Dns(dns::Prepared),
    Smtp(smtp::Prepared),
    External,
    Ftp(ftp::Prepared),
    Imap(imap::Prepared),
    Pop(pop::Prepared),
    Nntp(nntp::Prepared),
    Ldap(ldap::Prepared),
    Mysql(sql::MysqlPrepared),
    Postgres(sql::PostgresPrepared),
    Radius(radius::Prepared),
    Sip(sip::Prepared),
}

impl Probe {
    pub fn new(check: Check) -> Result<Probe, Error> {
        let kind = match &check.protocol {
            Protocol::Tcp(_) => Prepared::Tcp,
            Protocol::Http(h) => Prepared::Http(http::Prepared::new(h)?),
            Protocol::Ping => Prepared::Ping,
            Protocol::Dns(d) => Prepared::Dns(dns::Prepared::new(d)?),
            Protocol::Smtp(s) => Prepared::Smtp(smtp::Prepared::new(s)?),
            Protocol::External(_) => Prepared::External,
            Protocol::Ftp(x) => Prepared::Ftp(ftp::Prepared::new(x)?),
            Protocol::Imap(x) => Prepared::Imap(imap::Prepared::new(x)?),
            Protocol::Pop(x) => Prepared::Pop(pop::Prepared::new(x)?),
            Protocol::Nntp(x) => Prepared::Nntp(nntp::Prepared::new(x)?),
            Protocol::Ldap(x) => Prepared::Ldap(ldap::Prepared::new(x)?),
            Protocol::Mysql(x) => Prepared::Mysql(sql::MysqlPrepared::new(x)?),
            Protocol::Postgres(x) => Prepared::Postgres(sql::PostgresPrepared::new(x)?),
            Protocol::Radius(x) => Prepared::Radius(radius::Prepared::new(x)?),
            Protocol::Sip(x) => Prepared::Sip(sip::Prepared::new(x)?),
        };
        Ok(Probe { check, kind })
    }

    pub fn check(&self) -> &Check {
        &self.check
    }

    /// Where an attempt against `real` connects.
    pub fn target(&self, real: SocketAddr) -> Target {
        let mut addr = self.check.connect.target(real);
        if addr.port() == 0 {
            addr.set_port(self.check.protocol.default_port());
        }
        Target {
            real,
            addr,
            bind: self.check.connect.bind,
            timeout: self.check.timeout,
        }
    }

    /// One attempt (no retry: the runner retries), bounded by the check's timeout.
    pub async fn run(&self, real: SocketAddr) -> Result<Verdict, Error> {
        let t = self.target(real);
        let attempt = async {
            match (&self.kind, &self.check.protocol) {
                (Prepared::Tcp, Protocol::Tcp(spec)) => tcp::probe(spec, &t).await,
                (Prepared::Http(p), Protocol::Http(spec)) => http::probe(p, spec, &t).await,
                (Prepared::Ping, Protocol::Ping) => icmp::probe(&t).await,
                (Prepared::Dns(p), Protocol::Dns(spec)) => dns::probe(p, spec, &t).await,
                (Prepared::Smtp(p), Protocol::Smtp(spec)) => smtp::probe(p, spec, &t).await,
                (Prepared::External, Protocol::External(spec)) => external::probe(spec, &t).await,
                (Prepared::Ftp(p), Protocol::Ftp(spec)) => ftp::probe(p, spec, &t).await,
                (Prepared::Imap(p), Protocol::Imap(spec)) => imap::probe(p, spec, &t).await,
                (Prepared::Pop(p), Protocol::Pop(spec)) => pop::probe(p, spec, &t).await,
                (Prepared::Nntp(p), Protocol::Nntp(spec)) => nntp::probe(p, spec, &t).await,
                (Prepared::Ldap(p), Protocol::Ldap(spec)) => ldap::probe(p, spec, &t).await,
                (Prepared::Mysql(p), Protocol::Mysql(spec)) => sql::probe_mysql(p, spec, &t).await,
                (Prepared::Postgres(p), Protocol::Postgres(spec)) => {
                    sql::probe_postgres(p, spec, &t).await
                }
                (Prepared::Radius(p), Protocol::Radius(spec)) => radius::probe(p, spec, &t).await,
                (Prepared::Sip(p), Protocol::Sip(spec)) => sip::probe(p, spec, &t).await,
                _ => unreachable!("Probe::new prepares the check's own protocol"),
            }
        };
        // Each protocol keeps to the budget and says how far it got; this outer bound
        // is the backstop.
        match tokio::time::timeout(t.timeout + Duration::from_millis(50), attempt).await {
            Ok(r) => r,
            Err(_) => Ok(Verdict::Down(format!(
                "no verdict within the {} ms timeout",
                t.timeout.as_millis()
            ))),
        }
    }
}
