//! `directorctl`: the operator's command line over directord's control socket.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use directord::config::{self, Config};
use directord::control::{Request, Response, client};
use serde_json::Value;

#[derive(Debug, Parser)]
#[command(name = "directorctl", version, about = "Control a running directord")]
struct Args {
    /// Control socket of the directord to talk to.
    #[arg(long, value_name = "PATH", default_value = config::DEFAULT_SOCKET, global = true)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Show role, peer, VIPs, counters and the last transition.
    Status {
        /// One JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Make this director active now; the peer yields.
    Takeover {
        /// Return at once instead of waiting until this node is active.
        #[arg(long)]
        no_wait: bool,
    },
    /// Hand over now and stay standby until `takeover`.
    Standby {
        /// Return at once instead of waiting until this node is standby.
        #[arg(long)]
        no_wait: bool,
    },
    /// Re-read the config file (validated first; an invalid file changes nothing).
    Reload {
        /// Print what the file would change (VIPs, services, real servers,
        /// checks) without applying it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Restart directord in place (re-exec, e.g. after an upgrade), keeping the role,
    /// the VIPs and the IPVS table (VRRP). Waits until the new process answers.
    Restart {
        /// Return at once instead of waiting for the new process.
        #[arg(long)]
        no_wait: bool,
    },
    /// Take a real server out of a service: weight 0, existing connections stay.
    /// Waits until its active connections reach zero. Survives reloads.
    Drain {
        /// The `[[service]]` name.
        service: String,
        /// The real server's address as in the config ("10.0.1.11:80"; a bare IP
        /// when it is the only real server there).
        real: String,
        /// Return at once instead of waiting for the connections to end.
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this many seconds (exit 1; the drain stays).
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
    },
    /// Give a drained real server its configured weight back.
    Enable {
        /// The `[[service]]` name.
        service: String,
        /// The real server's address as in the config.
        real: String,
    },
    /// Run a real server's health check once now and print the result: exit 0 when
    /// it passed, 1 when the real server failed it. Does not count for rise/fall.
    Check {
        /// The `[[service]]` name.
        service: String,
        /// The real server's address as in the config.
        real: String,
    },
    /// Validate a config file without a running daemon (exit 0 or 78).
    CheckConfig {
        #[arg(default_value = config::DEFAULT_CONFIG)]
        file: PathBuf,
    },
    /// Print a shell completion script (the packages install them).
    #[command(hide = true)]
    Completions { shell: clap_complete::Shell },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("directorctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Cmd::Completions { shell } => {
            let mut cmd = <Args as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "directorctl", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::CheckConfig { file } => Ok(match Config::load(&file) {
            Ok(_) => {
                println!("{}: valid", file.display());
                ExitCode::SUCCESS
            }
            Err(p) => {
                eprintln!("{p}");
                ExitCode::from(78)
            }
        }),
        Cmd::Status { json } => {
            let r = checked(client::call(&args.socket, &Request::Status)?)?;
            let status = r.status.unwrap_or(Value::Null);
            if json {
                println!("{}", serde_json::to_string(&status)?);
            } else {
                print!("{}", table(&status));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Takeover { no_wait } => {
            let r = checked(client::call(&args.socket, &Request::Takeover)?)?;
            println!("{}", r.message.unwrap_or_default());
            if no_wait {
                return Ok(ExitCode::SUCCESS);
            }
            wait_for(&args.socket, "active")
        }
        Cmd::Standby { no_wait } => {
            let r = checked(client::call(&args.socket, &Request::Standby)?)?;
            println!("{}", r.message.unwrap_or_default());
            if no_wait {
                return Ok(ExitCode::SUCCESS);
            }
            wait_for(&args.socket, "standby")
        }
        Cmd::Reload { dry_run } => {
            let request = if dry_run {
                Request::ReloadDryRun
            } else {
                Request::Reload
            };
            let r = checked(client::call(&args.socket, &request)?)?;
            println!("{}", r.message.unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Restart { no_wait } => {
            let before = checked(client::call(&args.socket, &Request::Status)?)?
                .status
                .unwrap_or(Value::Null);
            let r = checked(client::call(&args.socket, &Request::Restart)?)?;
            println!("{}", r.message.unwrap_or_default());
            if no_wait {
                return Ok(ExitCode::SUCCESS);
            }
            let start = Instant::now();
            loop {
                // Refused or unanswered while the new process starts: try again.
                if let Ok(Response {
                    ok: true,
                    status: Some(now),
                    ..
                }) = client::call(&args.socket, &Request::Status)
                    && now["started"] != before["started"]
                {
                    println!(
                        "{} restarted in place after {} ms: {} ({}), VIPs held: {}",
                        now["node"].as_str().unwrap_or("?"),
                        start.elapsed().as_millis(),
                        now["role"].as_str().unwrap_or("?"),
                        now["state"].as_str().unwrap_or("?"),
                        held(&now)
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                if start.elapsed() > Duration::from_secs(10) {
                    eprintln!("directord did not come back within 10 s");
                    return Ok(ExitCode::FAILURE);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Cmd::Drain {
            service,
            real,
            no_wait,
            timeout,
        } => {
            let request = Request::Drain {
                service: service.clone(),
                real,
            };
            let r = checked(client::call(&args.socket, &request)?)?;
            println!("{}", r.message.unwrap_or_default());
            let data = r.status.unwrap_or(Value::Null);
            let active = data["active_connections"].as_u64().unwrap_or(0);
            if no_wait || active == 0 {
                return Ok(ExitCode::SUCCESS);
            }
            let address = data["address"].as_str().unwrap_or_default().to_string();
            wait_drained(
                &args.socket,
                &service,
                &address,
                active,
                timeout.map(Duration::from_secs),
            )
        }
        Cmd::Check { service, real } => {
            let r = checked(client::call(
                &args.socket,
                &Request::Check { service, real },
            )?)?;
            println!("{}", r.message.unwrap_or_default());
            let passed = r.status.as_ref().is_some_and(|d| d["result"] == "up");
            Ok(if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Enable { service, real } => {
            let r = checked(client::call(
                &args.socket,
                &Request::Enable { service, real },
            )?)?;
            println!("{}", r.message.unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Polls status until the drained real server has no active connection left.
fn wait_drained(
    socket: &std::path::Path,
    service: &str,
    address: &str,
    mut active: u64,
    timeout: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    println!(
        "waiting for {active} active connection(s) to end (Ctrl-C stops waiting; the drain stays)"
    );
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let r = checked(client::call(socket, &Request::Status)?)?;
        let status = r.status.unwrap_or(Value::Null);
        let real = status["ipvs"]["services"]
            .as_array()
            .and_then(|services| services.iter().find(|s| s["name"] == service))
            .and_then(|s| s["reals"].as_array())
            .and_then(|reals| reals.iter().find(|r| r["address"] == address))
            .cloned()
            .unwrap_or(Value::Null);
        if real.is_null() {
            anyhow::bail!("{service} {address} is no longer configured");
        }
        if real["drained"] != true {
            anyhow::bail!("{service} {address} was enabled again while waiting");
        }
        let now = real["active_connections"].as_u64().unwrap_or(0);
        if now == 0 {
            println!(
                "{service} {address}: drained, no active connection after {:.1} s ({} inactive)",
                start.elapsed().as_secs_f64(),
                real["inactive_connections"]
            );
            return Ok(ExitCode::SUCCESS);
        }
        if now != active {
            println!("{now} active connection(s)");
            active = now;
        }
        if timeout.is_some_and(|t| start.elapsed() >= t) {
            eprintln!(
                "still {now} active connection(s) after {} s; the drain stays",
                start.elapsed().as_secs()
            );
            return Ok(ExitCode::FAILURE);
        }
    }
}

fn checked(r: Response) -> anyhow::Result<Response> {
    if r.ok {
        Ok(r)
    } else {
        anyhow::bail!("{}", r.error.unwrap_or_else(|| "directord refused".into()))
    }
}

/// Polls status until the role is reached (or 10 s pass).
fn wait_for(socket: &std::path::Path, role: &str) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    loop {
        let r = checked(client::call(socket, &Request::Status)?)?;
        let status = r.status.unwrap_or(Value::Null);
        let now = status["role"].as_str().unwrap_or("?");
        if now == role {
            let held: Vec<&str> = status["vips"]
                .as_array()
                .map(|v| {
                    v.iter()
                        .filter(|x| x["held"].as_bool() == Some(true))
                        .filter_map(|x| x["address"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            println!(
                "{} is {role} after {} ms; VIPs held: {}",
                status["node"].as_str().unwrap_or("?"),
                start.elapsed().as_millis(),
                if held.is_empty() {
                    "none".to_string()
                } else {
                    held.join(", ")
                }
            );
            return Ok(ExitCode::SUCCESS);
        }
        if start.elapsed() > Duration::from_secs(10) {
            eprintln!("still {now} after 10 s");
            return Ok(ExitCode::FAILURE);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn held(status: &Value) -> String {
    let held: Vec<&str> = status["vips"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter(|x| x["held"].as_bool() == Some(true))
                .filter_map(|x| x["address"].as_str())
                .collect()
        })
        .unwrap_or_default();
    if held.is_empty() {
        "none".into()
    } else {
        held.join(", ")
    }
}

fn ago(unix_ms: &Value) -> String {
    let Some(ms) = unix_ms.as_u64() else {
        return "never".into();
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let d = now.saturating_sub(ms);
    if d < 10_000 {
        format!("{:.1}s ago", d as f64 / 1000.0)
    } else if d < 7_200_000 {
        format!("{}s ago", d / 1000)
    } else {
        format!("{}h ago", d / 3_600_000)
    }
}

fn table(s: &Value) -> String {
    let mut out = String::new();
    let mut row = |k: &str, v: String| out.push_str(&format!("{k:<12}{v}\n"));
    row("node", s["node"].as_str().unwrap_or("?").to_string());
    if s["protocol"] == "heartbeat" {
        row(
            "failover",
            format!(
                "heartbeat (UDP 694) for {}, keepalive {} ms, deadtime {} ms",
                s["interface"].as_str().unwrap_or("?"),
                s["keepalive"],
                s["deadtime"]
            ),
        );
    } else {
        row(
            "failover",
            format!(
                "{} v{} router {} on {}, adverts every {} ms",
                s["protocol"].as_str().unwrap_or("?"),
                s["version"],
                s["router_id"],
                s["interface"].as_str().unwrap_or("?"),
                s["advert_interval"]
            ),
        );
    }
    row(
        "role",
        format!(
            "{} ({}), priority {}{}{}",
            s["role"].as_str().unwrap_or("?").to_uppercase(),
            s["state"].as_str().unwrap_or("?"),
            s["priority"],
            if s["effective_priority"] != s["priority"] {
                format!(", advertising {}", s["effective_priority"])
            } else {
                String::new()
            },
            match s["override"].as_str() {
                Some("none") | None => String::new(),
                Some(o) => format!(", operator override: {o}"),
            }
        ),
    );
    if s["ready"] == false {
        row(
            "holding",
            "health checks not settled: this node does not take over from a live peer yet".into(),
        );
    }
    let peer = &s["peer"];
    row(
        "peer",
        if peer.is_null() {
            "none heard".into()
        } else {
            format!(
                "{} priority {}, adverts every {} ms, last seen {}",
                peer["address"].as_str().unwrap_or("?"),
                peer["priority"],
                peer["advert_interval"],
                ago(&peer["last_seen"])
            )
        },
    );
    if let Some(vips) = s["vips"].as_array() {
        for (i, v) in vips.iter().enumerate() {
            row(
                if i == 0 { "vips" } else { "" },
                format!(
                    "{} on {}: {}",
                    v["address"].as_str().unwrap_or("?"),
                    v["interface"].as_str().unwrap_or("?"),
                    if v["held"].as_bool() == Some(true) {
                        "held"
                    } else {
                        "not held"
                    }
                ),
            );
        }
    }
    if let Some(links) = s["links"].as_array() {
        for (i, l) in links.iter().enumerate() {
            let text = l
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| match v.as_str() {
                            Some(v) => format!("{k} {v}"),
                            None => format!("{k} {v}"),
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            row(if i == 0 { "links" } else { "" }, text);
        }
    }
    let t = &s["last_transition"];
    row(
        "last change",
        if t.is_null() {
            "none".into()
        } else {
            format!(
                "{} ({}) {}: {}",
                t["role"].as_str().unwrap_or("?"),
                t["state"].as_str().unwrap_or("?"),
                ago(&t["at"]),
                t["reason"].as_str().unwrap_or("")
            )
        },
    );
    let c = &s["counters"];
    let invalid = c["invalid"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|x| !x.is_empty())
        .unwrap_or_else(|| "none".into());
    row(
        "counters",
        format!(
            "adverts sent {}, received {}; became active {} times; invalid: {}",
            c["adverts_sent"], c["adverts_received"], c["became_active"], invalid
        ),
    );
    out.push_str(&ipvs_table(&s["ipvs"]));
    out.push_str(&checks_table(&s["checks"]));
    out
}

/// One line per checked real server: health, then the last result.
fn checks_table(checks: &Value) -> String {
    let mut out = String::new();
    for (i, c) in checks.as_array().into_iter().flatten().enumerate() {
        let last = &c["last"];
        let result = if last.is_null() {
            "no result yet".to_string()
        } else {
            format!(
                "last {}{} in {} ms{}, {}",
                last["result"].as_str().unwrap_or("?"),
                last["reason"]
                    .as_str()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
                last["latency_ms"],
                match last["attempts"].as_u64() {
                    Some(n) if n > 1 => format!(" after {n} attempts"),
                    _ => String::new(),
                },
                ago(&last["at"]),
            )
        };
        out.push_str(&format!(
            "{:<12}{} {} {} for {} round(s); {}\n",
            if i == 0 { "checks" } else { "" },
            c["service"].as_str().unwrap_or("?"),
            c["real"].as_str().unwrap_or("?"),
            c["health"].as_str().unwrap_or("?").to_uppercase(),
            c["streak"],
            result
        ));
    }
    out
}

/// The IPVS part of the status table: one block per service, one line per real
/// server, then what the kernel refused.
fn ipvs_table(ipvs: &Value) -> String {
    let mut out = String::new();
    let state = ipvs["state"].as_str().unwrap_or("unused");
    let mut line = match state {
        "unused" => return out,
        "unavailable" => format!(
            "unavailable: {}",
            ipvs["error"].as_str().unwrap_or("this kernel has no IPVS")
        ),
        _ => match ipvs["error"].as_str() {
            Some(e) => format!("cannot read the table: {e}"),
            None => "ok".to_string(),
        },
    };
    let sync = &ipvs["sync"];
    if !sync.is_null() {
        let running: Vec<&str> = sync["running"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        line.push_str(&format!(
            "; sync daemon {} on {} (id {}), running: {}",
            sync["role"].as_str().unwrap_or("?"),
            sync["interface"].as_str().unwrap_or("?"),
            sync["sync_id"],
            if running.is_empty() {
                "none".to_string()
            } else {
                running.join(", ")
            }
        ));
        if let Some(e) = sync["error"].as_str() {
            line.push_str(&format!(" (error: {e})"));
        }
    }
    let apply = &ipvs["last_apply"];
    if !apply.is_null() {
        line.push_str(&format!(
            "; last apply {}: {} change(s), {} refused",
            ago(&apply["at"]),
            apply["changes"],
            apply["failures"]
        ));
    }
    out.push_str(&format!("{:<12}{line}\n", "ipvs"));
    for service in ipvs["services"].as_array().into_iter().flatten() {
        let stats = &service["stats"];
        out.push_str(&format!(
            "{:<12}{} {} {}{}, {} conn/s, in {} pkt/s {} B/s, out {} pkt/s {} B/s\n",
            "service",
            service["name"].as_str().unwrap_or("?"),
            service["service"].as_str().unwrap_or("?"),
            service["scheduler"].as_str().unwrap_or("?"),
            if service["present"] == true {
                ""
            } else {
                " (NOT IN THE KERNEL)"
            },
            stats["connection_rate"],
            stats["in_packet_rate"],
            stats["in_byte_rate"],
            stats["out_packet_rate"],
            stats["out_byte_rate"],
        ));
        for real in service["reals"].as_array().into_iter().flatten() {
            let weight = match real["weight"].as_u64() {
                Some(w) => w.to_string(),
                None => "-".to_string(),
            };
            out.push_str(&format!(
                "{:<14}-> {} {} weight {}/{}{}, active {}, inactive {}, {} conn/s, in {} B/s, out {} B/s\n",
                "",
                real["address"].as_str().unwrap_or("?"),
                real["forward"].as_str().unwrap_or("?"),
                weight,
                real["configured_weight"],
                match (real["drained"] == true, real["health"].as_str()) {
                    (true, _) => " DRAINED",
                    (false, Some("down")) => " DOWN",
                    _ => "",
                },
                real["active_connections"],
                real["inactive_connections"],
                real["stats"]["connection_rate"],
                real["stats"]["in_byte_rate"],
                real["stats"]["out_byte_rate"],
            ));
        }
    }
    for failure in ipvs["failures"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<12}{}{}: {}: {}\n",
            "refused",
            failure["service"].as_str().unwrap_or("?"),
            failure["real"]
                .as_str()
                .map(|r| format!(" real {r}"))
                .unwrap_or_default(),
            failure["field"].as_str().unwrap_or("?"),
            failure["error"].as_str().unwrap_or("?"),
        ));
    }
    out
}
