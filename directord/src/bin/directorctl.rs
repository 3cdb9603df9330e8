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
    Reload,
    /// Validate a config file without a running daemon (exit 0 or 78).
    CheckConfig {
        #[arg(default_value = config::DEFAULT_CONFIG)]
        file: PathBuf,
    },
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
        Cmd::Reload => {
            let r = checked(client::call(&args.socket, &Request::Reload)?)?;
            println!("{}", r.message.unwrap_or_default());
            Ok(ExitCode::SUCCESS)
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
    out
}
