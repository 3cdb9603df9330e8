//! HTTP responder of the lab's real servers: answers every request with
//! `<name> <client ip:port> <local ip:port>` (see `directord_tests::http`).
//!
//! `labhttp --name rs1 --listen 0.0.0.0:80 [--listen 0.0.0.0:8080]...`

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};

const USAGE: &str = "usage: labhttp --name NAME --listen ADDR:PORT [--listen ADDR:PORT]...";

fn main() -> Result<()> {
    let mut name = None;
    let mut listen: Vec<SocketAddr> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--name" => name = Some(args.next().context("--name needs a value")?),
            "--listen" => {
                let v = args.next().context("--listen needs an address")?;
                listen.push(v.parse().with_context(|| format!("bad --listen {v}"))?);
            }
            _ => bail!(USAGE),
        }
    }
    let name = name.context(USAGE)?;
    if listen.is_empty() {
        bail!(USAGE);
    }
    directord_tests::http::serve(&name, &listen)
}
