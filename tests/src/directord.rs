//! directord as a node of the lab: its config file, the process, and `directorctl`.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::lab::{IFACE, Lab, Node, Proc, find_bin, run};
use crate::vrrp::Setup;

/// The config file of one director of the pair.
pub fn config(
    node: &Node,
    peer: Option<&Node>,
    setup: &Setup,
    priority: u8,
    socket: &str,
) -> String {
    let peers = match (setup.unicast, peer) {
        (true, Some(p)) if setup.ipv6 => format!("[\"{}\"]", p.ipv6),
        (true, Some(p)) => format!("[\"{}\"]", p.ipv4),
        _ => "[]".to_string(),
    };
    format!(
        r#"[node]
name = "{name}"

[failover]
protocol = "vrrp"
interface = "{IFACE}"
priority = {priority}
preempt = {preempt}
preempt_delay = "0s"

[failover.vrrp]
version = {version}
router_id = {router_id}
advert_interval = "{advert}"
unicast_peers = {peers}

[announce]
count = 5
spacing = "10ms"

[control]
socket = "{socket}"

[[vip]]
address = "{vip}"
interface = "{IFACE}"
"#,
        name = node.name,
        preempt = setup.preempt,
        version = setup.version,
        router_id = setup.router_id,
        advert = setup.advert_str(),
        vip = setup.vip_cidr(),
    )
}

/// A directord of the lab.
#[derive(Debug)]
pub struct Directord {
    pub node: String,
    pub config: PathBuf,
    pub socket: PathBuf,
    proc: Option<Proc>,
}

impl Directord {
    /// Writes the config, checks it with `--check-config`, starts the daemon and waits
    /// until its control socket answers.
    pub fn start(
        lab: &Lab,
        node: &str,
        peer: Option<&str>,
        setup: &Setup,
        priority: u8,
    ) -> Result<Directord> {
        let n = lab.node(node);
        let socket = lab.path(&format!("{node}-directord.sock"));
        let text = config(
            n,
            peer.map(|p| lab.node(p)),
            setup,
            priority,
            &socket.to_string_lossy(),
        );
        let path = lab.path(&format!("{node}-directord.toml"));
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        run(Command::new(find_bin("directord")?)
            .arg("--check-config")
            .arg(&path))
        .with_context(|| format!("directord --check-config {}", path.display()))?;
        let mut d = Directord {
            node: node.to_string(),
            config: path,
            socket,
            proc: None,
        };
        d.restart(lab)?;
        Ok(d)
    }

    /// Starts the daemon again with the same config (after a kill or a stop).
    pub fn restart(&mut self, lab: &Lab) -> Result<()> {
        if let Some(p) = &self.proc
            && lab.is_running(p)
        {
            bail!("directord on {} is still running", self.node);
        }
        let bin = find_bin("directord")?;
        let conf = self.config.to_string_lossy().into_owned();
        let rust_log = std::env::var("LAB_RUST_LOG").unwrap_or_else(|_| "debug".to_string());
        let proc = lab.spawn(
            &self.node,
            "directord",
            bin,
            &["--config", &conf],
            &[("RUST_LOG", &rust_log)],
        )?;
        self.proc = Some(proc.clone());
        // Poll the control socket; a daemon that exits fails at once.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if !lab.is_running(&proc) {
                bail!(
                    "directord on {} exited at start: {}",
                    self.node,
                    crate::lab::tail(&proc.log, 20)
                );
            }
            match self.status() {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!(
                        "directord on {} does not answer on its socket",
                        self.node
                    )));
                }
                Err(_) => std::thread::sleep(crate::wait::POLL),
            }
        }
    }

    pub fn proc(&self) -> Option<&Proc> {
        self.proc.as_ref()
    }

    /// `directorctl --socket PATH ARGS`, stdout.
    pub fn ctl(&self, args: &[&str]) -> Result<String> {
        run(Command::new(find_bin("directorctl")?)
            .arg("--socket")
            .arg(&self.socket)
            .args(args))
    }

    /// `directorctl status --json`.
    pub fn status(&self) -> Result<Value> {
        let out = self.ctl(&["status", "--json"])?;
        serde_json::from_str(out.trim()).with_context(|| format!("parsing status --json: {out}"))
    }

    /// The role `status` reports: "active", "standby" or "fault".
    pub fn role(&self) -> Result<String> {
        let s = self.status()?;
        s["role"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("no role in status {s}"))
    }

    pub fn takeover(&self) -> Result<()> {
        self.ctl(&["takeover"]).map(drop)
    }

    pub fn standby(&self) -> Result<()> {
        self.ctl(&["standby"]).map(drop)
    }

    /// `kill -9`: no priority-0 advert, the VIP stays on the interface.
    pub fn kill9(&self, lab: &Lab) -> Result<()> {
        lab.kill9(self.proc.as_ref().context("directord not started")?)
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&self, lab: &Lab) -> Result<()> {
        let proc = self.proc.as_ref().context("directord not started")?;
        lab.signal(proc, Signal::SIGTERM)?;
        let status = lab.wait_exit(proc, Duration::from_secs(10))?;
        if !status.success() {
            bail!(
                "directord on {} exited with {status} after SIGTERM",
                self.node
            );
        }
        Ok(())
    }
}
