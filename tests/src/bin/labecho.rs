//! UDP echo responder of the lab: answers `<name> <payload>` on port 7.
//!
//! `labecho --name d1 [--bind 192.0.2.100:7]...` (default: 0.0.0.0:7 and [::]:7). Bound
//! addresses need not be held yet (IP_FREEBIND): bind the VIP and the node answers from it
//! while it holds it.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let mut name = None;
    let mut binds: Vec<SocketAddr> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--name" => name = Some(args.next().context("--name needs a value")?),
            "--bind" => {
                let v = args.next().context("--bind needs an address")?;
                binds.push(v.parse().with_context(|| format!("bad --bind {v}"))?);
            }
            _ => bail!("usage: labecho --name NAME [--bind ADDR:PORT]..."),
        }
    }
    let name = name.context("usage: labecho --name NAME [--bind ADDR:PORT]...")?;
    directord_tests::probe::serve_echo(&name, &binds)
}
