//! The failover benchmark: client-visible outage (probe every 10 ms to VIP:7 from the
//! client) for directord and keepalived pairs in the namespace lab, side by side: VRRP
//! rows for both, UDP 694 heartbeat rows for directord (keepalived has no heartbeat).
//!
//! `failover-bench [--runs N] [--only directord|keepalived] [--protocol vrrp,heartbeat]
//! [--advert 1s,100ms] [--hb-timers 100ms/300ms,1s/3s]
//! [--event kill9,linkdown,takeover,standby]`
//! `--event` applies to both protocols; without it VRRP runs all four events and the
//! heartbeat kill -9 and takeover. Run as root; `tests/bench/failover.sh` builds
//! (release) and runs it.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use directord_tests::directord::Heartbeat;
use directord_tests::drill::{self, Event};
use directord_tests::lab::{self, Lab};
use directord_tests::pair::{Daemon, Pair};
use directord_tests::vrrp::{Setup, duration_str};

/// What a row's pair runs.
#[derive(Debug, Clone)]
enum Protocol {
    /// VRRPv3 multicast at this advert interval.
    Vrrp(Duration),
    /// The UDP 694 heartbeat at these timers.
    Heartbeat(Heartbeat),
}

impl Protocol {
    fn name(&self) -> &'static str {
        match self {
            Protocol::Vrrp(_) => "vrrp v3",
            Protocol::Heartbeat(_) => "heartbeat",
        }
    }

    fn timers(&self) -> String {
        match self {
            Protocol::Vrrp(advert) => duration_str(*advert),
            Protocol::Heartbeat(hb) => hb.timers_str(),
        }
    }
}

struct Options {
    runs: usize,
    daemons: Vec<Daemon>,
    vrrp: bool,
    heartbeat: bool,
    adverts: Vec<Duration>,
    hb_timers: Vec<(Duration, Duration)>,
    events: Option<Vec<Event>>,
}

const USAGE: &str = "usage: failover-bench [--runs N] [--only directord|keepalived] \
     [--protocol vrrp,heartbeat] [--advert 1s,100ms] [--hb-timers 100ms/300ms,1s/3s] \
     [--event kill9,linkdown,takeover,standby]";

fn parse_duration(a: &str) -> Result<Duration> {
    match a.strip_suffix("ms") {
        Some(ms) => Ok(Duration::from_millis(ms.parse()?)),
        None => Ok(Duration::from_secs(a.trim_end_matches('s').parse()?)),
    }
}

fn parse_args() -> Result<Options> {
    let usage = USAGE;
    let mut o = Options {
        runs: 5,
        daemons: vec![Daemon::Directord, Daemon::Keepalived],
        vrrp: true,
        heartbeat: true,
        adverts: vec![Duration::from_secs(1), Duration::from_millis(100)],
        hb_timers: vec![
            (Duration::from_millis(100), Duration::from_millis(300)),
            (Duration::from_secs(1), Duration::from_secs(3)),
        ],
        events: None,
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
            "--protocol" => {
                let list = args.next().context(usage)?;
                (o.vrrp, o.heartbeat) = (false, false);
                for p in list.split(',') {
                    match p {
                        "vrrp" => o.vrrp = true,
                        "heartbeat" => o.heartbeat = true,
                        _ => bail!("unknown protocol {p}: {usage}"),
                    }
                }
            }
            "--advert" => {
                o.adverts = args
                    .next()
                    .context(usage)?
                    .split(',')
                    .map(parse_duration)
                    .collect::<Result<_>>()?
            }
            "--hb-timers" => {
                o.hb_timers = args
                    .next()
                    .context(usage)?
                    .split(',')
                    .map(|t| {
                        let (k, d) = t
                            .split_once('/')
                            .with_context(|| format!("--hb-timers {t}: {usage}"))?;
                        Ok((parse_duration(k)?, parse_duration(d)?))
                    })
                    .collect::<Result<_>>()?
            }
            "--event" => {
                o.events = Some(
                    args.next()
                        .context(usage)?
                        .split(',')
                        .map(|e| match e {
                            "kill9" => Ok(Event::Crash),
                            "linkdown" => Ok(Event::LinkDown),
                            "takeover" => Ok(Event::Takeover),
                            "standby" => Ok(Event::Standby),
                            _ => bail!("unknown event {e}: {usage}"),
                        })
                        .collect::<Result<_>>()?,
                )
            }
            _ => bail!(usage),
        }
    }
    Ok(o)
}

impl Options {
    /// Every (protocol, event) row, VRRP first.
    fn rows(&self) -> Vec<(Protocol, Event)> {
        let mut rows = Vec::new();
        if self.vrrp {
            let events = self.events.clone().unwrap_or_else(|| {
                vec![
                    Event::Crash,
                    Event::LinkDown,
                    Event::Takeover,
                    Event::Standby,
                ]
            });
            for &advert in &self.adverts {
                for &event in &events {
                    rows.push((Protocol::Vrrp(advert), event));
                }
            }
        }
        if self.heartbeat {
            let events = self
                .events
                .clone()
                .unwrap_or_else(|| vec![Event::Crash, Event::Takeover]);
            for &(keepalive, deadtime) in &self.hb_timers {
                for &event in &events {
                    rows.push((
                        Protocol::Heartbeat(Heartbeat::new(keepalive, deadtime)),
                        event,
                    ));
                }
            }
        }
        rows
    }
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

fn bench(daemon: Daemon, protocol: &Protocol, event: Event, runs: usize) -> Result<Vec<f64>> {
    let lab = match protocol {
        Protocol::Vrrp(_) => Lab::pair()?,
        Protocol::Heartbeat(_) => Lab::pair_two_links()?,
    };
    let result = (|| {
        let mut pair = match protocol {
            Protocol::Vrrp(advert) => Pair::usual(&lab, Setup::v3(*advert), daemon),
            Protocol::Heartbeat(hb) => Pair::heartbeat(&lab, hb.clone()),
        };
        pair.start()?;
        pair.wait_converged("d1", pair.failover_deadline())?;
        let mut out = Vec::new();
        for run in 1..=runs {
            let f = drill::measure(&mut pair, event).with_context(|| format!("run {run}"))?;
            eprintln!(
                "  {daemon:<10} {:<9} {:<11} {:<26} run {run}: {} -> {}: outage {:>5.0} ms ({} lost)",
                protocol.name(),
                protocol.timers(),
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
    if !o.vrrp {
        // Only heartbeat rows: keepalived has nothing to run.
        daemons.retain(|d| *d == Daemon::Directord);
    }
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
    for (protocol, event) in o.rows() {
        let mut cells = Vec::new();
        for &daemon in &daemons {
            // keepalived has no planned hand-over command, and no UDP 694 heartbeat.
            let planned = matches!(event, Event::Takeover | Event::Standby);
            let heartbeat = matches!(protocol, Protocol::Heartbeat(_));
            if (planned || heartbeat) && daemon == Daemon::Keepalived {
                cells.push((daemon, None));
                continue;
            }
            let cell = bench(daemon, &protocol, event, o.runs).map_err(|e| format!("{e:#}"));
            if let Err(e) = &cell {
                eprintln!(
                    "  {daemon} {} {} {}: {e}",
                    protocol.name(),
                    protocol.timers(),
                    event.describe()
                );
            }
            cells.push((daemon, Some(cell)));
        }
        rows.push((protocol, event, cells));
    }

    println!();
    println!(
        "Client-visible outage in ms (UDP probe to VIP:7 every 10 ms from the client; \
         {} runs each; min median max)",
        o.runs
    );
    print!("{:<9}  {:<11}  {:<26}", "protocol", "timers", "event");
    for d in &daemons {
        print!("   {:<17}", d.to_string());
    }
    println!();
    for (protocol, event, cells) in &rows {
        print!(
            "{:<9}  {:<11}  {:<26}",
            protocol.name(),
            protocol.timers(),
            event.describe()
        );
        for (_, cell) in cells {
            print!("   {:<17}", cell_text(cell.as_ref()));
        }
        println!();
    }
    println!();
    println!(
        "kill -9 = SIGKILL of the failover daemon and of the echo service on the active \
         director (the director is gone); link down = `ip link set eth0 down` on the active. \
         VRRP: timers = advert interval, priorities 150 (d1) / 100 (d2), multicast. \
         Heartbeat: timers = keepalive/deadtime, unicast over a second link (eth1) plus \
         multicast on eth0, d1 preferred with auto-failback. 5 gratuitous ARPs."
    );
    Ok(())
}
