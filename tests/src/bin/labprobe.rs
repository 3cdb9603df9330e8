//! The lab's prober, for use by hand: run it in the client namespace.
//!
//! `ip netns exec NS labprobe --target 192.0.2.100:7 [--duration 10s] [--interval 10ms] [--json]`
//! prints the timeline of answering nodes and the client-visible outage (or the whole
//! report as JSON).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use directord_tests::probe::{INTERVAL, Probe};

fn parse_duration(s: &str) -> Result<Duration> {
    if let Some(ms) = s.strip_suffix("ms") {
        return Ok(Duration::from_millis(ms.parse()?));
    }
    if let Some(secs) = s.strip_suffix('s') {
        return Ok(Duration::from_secs_f64(secs.parse()?));
    }
    bail!("bad duration {s} (say 10ms or 5s)")
}

fn main() -> Result<()> {
    let usage = "usage: labprobe --target ADDR:PORT [--duration 10s] [--interval 10ms] [--json]";
    let mut target = None;
    let mut duration = Duration::from_secs(10);
    let mut interval = INTERVAL;
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--target" => {
                target = Some(
                    args.next()
                        .context(usage)?
                        .parse()
                        .context("bad --target")?,
                )
            }
            "--duration" => duration = parse_duration(&args.next().context(usage)?)?,
            "--interval" => interval = parse_duration(&args.next().context(usage)?)?,
            "--json" => json = true,
            _ => bail!(usage),
        }
    }
    let probe = Probe::start_here(target.context(usage)?, interval)?;
    std::thread::sleep(duration);
    let report = probe.stop();
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.describe());
    }
    Ok(())
}
