//! The failover benchmark: client-visible outage (probe every 10 ms to VIP:7 from the
//! client) for directord and keepalived pairs in the namespace lab, side by side.
//!
//! `failover-bench [--runs N] [--only directord|keepalived] [--advert 1s,100ms]
//! [--event kill9,linkdown,takeover,standby]`
//! Run as root; `tests/bench/failover.sh` builds (release) and runs it.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use directord_tests::drill::{self, Event};
use directord_tests::lab::{self, Lab};
use directord_tests::pair::{Daemon, Pair};
use directord_tests::vrrp::{Setup, duration_str};

struct Options {
    runs: usize,
    daemons: Vec<Daemon>,
    adverts: Vec<Duration>,
    events: Vec<Event>,
}

fn parse_args() -> Result<Options> {
    let usage =
        "usage: failover-bench [--runs N] [--only directord|keepalived] [--advert 1s,100ms]";
    let mut o = Options {
        runs: 5,
        daemons: vec![Daemon::Directord, Daemon::Keepalived],
        adverts: vec![Duration::from_secs(1), Duration::from_millis(100)],
        events: vec![
            Event::Crash,
            Event::LinkDown,
            Event::Takeover,
            Event::Standby,
        ],
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => o.runs = args.next().context(usage)?.parse().context("--runs")?,
            "--only" => {
                o.daemons = match args.next().context(usage)?.as_str() {
                    "directord" => vec![Daemon::Directord],
                    "keepalived" => vec![Daemon::Keepalived],
                    other => bail!("--only {other}: {usage}"),
                }
            }
            "--advert" => {
                o.adverts = args
                    .next()
                    .context(usage)?
                    .split(',')
                    .map(|a| match a.strip_suffix("ms") {
                        Some(ms) => Ok(Duration::from_millis(ms.parse()?)),
                        None => Ok(Duration::from_secs(a.trim_end_matches('s').parse()?)),
                    })
                    .collect::<Result<_>>()?
            }
            "--event" => {
                o.events = args
                    .next()
                    .context(usage)?
                    .split(',')
                    .map(|e| match e {
                        "kill9" => Ok(Event::Crash),
                        "linkdown" => Ok(Event::LinkDown),
                        "takeover" => Ok(Event::Takeover),
                        "standby" => Ok(Event::Standby),
                        _ => bail!("unknown event {e}: {usage}"),
                    })
                    .collect::<Result<_>>()?
            }
            _ => bail!(usage),
        }
    }
    Ok(o)
}

/// min / median / max of the runs, or why there are none.
type Cell = Result<Vec<f64>, String>;

fn cell_text(cell: Option<&Cell>) -> String {
    match cell {
        None => "n/a".to_string(),
        Some(Err(_)) => "failed (see above)".to_string(),
        Some(Ok(v)) if v.is_empty() => "no runs".to_string(),
        Some(Ok(v)) => {
            let mut s = v.clone();
            s.sort_by(f64::total_cmp);
            format!(
                "{:>5.0} {:>5.0} {:>5.0}",
                s[0],
                s[s.len() / 2],
                s[s.len() - 1]
            )
        }
    }
}

fn bench(daemon: Daemon, advert: Duration, event: Event, runs: usize) -> Result<Vec<f64>> {
    let lab = Lab::pair()?;
    let result = (|| {
        let mut pair = Pair::usual(&lab, Setup::v3(advert), daemon);
        pair.start()?;
        pair.wait_converged("d1", pair.setup.failover_deadline())?;
        let mut out = Vec::new();
        for run in 1..=runs {
            let f = drill::measure(&mut pair, event).with_context(|| format!("run {run}"))?;
            eprintln!(
                "  {daemon:<10} {:<5} {:<26} run {run}: {} -> {}: outage {:>5.0} ms ({} lost)",
                duration_str(advert),
                event.describe(),
                f.from,
                f.to,
                f.outage.ms,
                f.outage.lost
            );
            out.push(f.outage.ms);
        }
        Ok(out)
    })();
    if result.is_err() {
        lab.mark_failed();
    }
    result
}

fn main() -> Result<()> {
    let o = parse_args()?;
    if !lab::is_root_or_skip("failover-bench") {
        bail!("failover-bench needs root");
    }
    let mut daemons = o.daemons.clone();
    if daemons.contains(&Daemon::Directord)
        && let Err(e) = lab::find_bin("directord").and_then(|_| lab::find_bin("directorctl"))
    {
        eprintln!("directord side skipped: {e:#}");
        daemons.retain(|d| *d != Daemon::Directord);
    }
    if daemons.contains(&Daemon::Keepalived)
        && let Err(e) = directord_tests::keepalived::find()
    {
        eprintln!("keepalived side skipped: {e:#}");
        daemons.retain(|d| *d != Daemon::Keepalived);
    }
    let mut rows = Vec::new();
    for &advert in &o.adverts {
        for &event in &o.events {
            let mut cells = Vec::new();
            for &daemon in &daemons {
                // keepalived has no planned hand-over command.
                let planned = matches!(event, Event::Takeover | Event::Standby);
                if planned && daemon == Daemon::Keepalived {
                    cells.push((daemon, None));
                    continue;
                }
                let cell = bench(daemon, advert, event, o.runs).map_err(|e| format!("{e:#}"));
                if let Err(e) = &cell {
                    eprintln!(
                        "  {daemon} {} {}: {e}",
                        duration_str(advert),
                        event.describe()
                    );
                }
                cells.push((daemon, Some(cell)));
            }
            rows.push((advert, event, cells));
        }
    }

    println!();
    println!(
        "Client-visible outage in ms (UDP probe to VIP:7 every 10 ms from the client; \
         {} runs each; min median max)",
        o.runs
    );
    print!("{:<28} {:>6}", "event", "advert");
    for d in &daemons {
        print!("   {:<17}", d.to_string());
    }
    println!();
    for (advert, event, cells) in &rows {
        print!("{:<28} {:>6}", event.describe(), duration_str(*advert));
        for (_, cell) in cells {
            print!("   {:<17}", cell_text(cell.as_ref()));
        }
        println!();
    }
    println!();
    println!(
        "kill -9 = SIGKILL of the VRRP daemon and of the echo service on the active director \
         (the director is gone); link down = `ip link set eth0 down` on the active. Priorities \
         150 (d1) / 100 (d2), VRRPv3 multicast, 5 gratuitous ARPs."
    );
    Ok(())
}
