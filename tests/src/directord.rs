//! directord as a node of the lab: its config file, the process, and `directorctl`.

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::lab::{IFACE, IFACE2, Lab, Node, Proc, find_bin, run};
use crate::vrrp::{Setup, duration_str};

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
        Directord::start_with(lab, node, peer, setup, priority, "")
    }

    /// As [`Directord::start`], with `extra` (more TOML sections: `[ipvs]`,
    /// `[[service]]`...) appended to the config file.
    pub fn start_with(
        lab: &Lab,
        node: &str,
        peer: Option<&str>,
        setup: &Setup,
        priority: u8,
        extra: &str,
    ) -> Result<Directord> {
        let n = lab.node(node);
        let socket = lab.path(&format!("{node}-directord.sock"));
        let mut text = config(
            n,
            peer.map(|p| lab.node(p)),
            setup,
            priority,
            &socket.to_string_lossy(),
        );
        text.push_str(extra);
        Directord::start_config(lab, node, &socket, &text)
    }

    /// Starts directord on `node` with the UDP 694 heartbeat (see [`heartbeat_config`])
    /// against `peer`; writes the pair's key file first.
    pub fn start_heartbeat(lab: &Lab, node: &str, peer: &str, hb: &Heartbeat) -> Result<Directord> {
        let socket = lab.path(&format!("{node}-directord.sock"));
        let text = heartbeat_config(lab, node, peer, hb, &socket.to_string_lossy())?;
        Directord::start_config(lab, node, &socket, &text)
    }

    /// Writes `text` as the config of `node`, checks it with `--check-config`, starts the
    /// daemon and waits until it answers on `socket` (which `text` names).
    fn start_config(lab: &Lab, node: &str, socket: &Path, text: &str) -> Result<Directord> {
        let path = lab.path(&format!("{node}-directord.toml"));
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        run(Command::new(find_bin("directord")?)
            .arg("--check-config")
            .arg(&path))
        .with_context(|| format!("directord --check-config {}", path.display()))?;
        let mut d = Directord {
            node: node.to_string(),
            config: path,
            socket: socket.to_path_buf(),
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

/// The heartbeat pair's multicast group on `eth0`.
pub const HEARTBEAT_GROUP: Ipv4Addr = Ipv4Addr::new(239, 0, 0, 94);
/// The heartbeat pair's shared secret (sha256), in `<lab>/authkeys`.
pub const HEARTBEAT_SECRET: &str = "lab-heartbeat-secret";

/// The medium of a heartbeat pair on the service network (`eth0`); the other one is
/// unicast over the second link (`eth1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceMedium {
    /// To [`HEARTBEAT_GROUP`].
    Multicast,
    /// To 192.0.2.255.
    Broadcast,
}

/// What both directors of a UDP 694 heartbeat pair agree on.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub keepalive: Duration,
    pub warntime: Duration,
    pub deadtime: Duration,
    pub initdead: Duration,
    /// The node that holds the VIP when both run.
    pub preferred: String,
    pub auto_failback: bool,
    pub service_medium: ServiceMedium,
}

impl Heartbeat {
    /// Keepalives every `keepalive`, the peer dead after `deadtime` of silence on both
    /// media; warntime twice the keepalive, initdead twice the deadtime; d1 preferred,
    /// auto-failback on, multicast on `eth0`.
    pub fn new(keepalive: Duration, deadtime: Duration) -> Heartbeat {
        Heartbeat {
            keepalive,
            warntime: (keepalive * 2).min(deadtime),
            deadtime,
            initdead: deadtime * 2,
            preferred: "d1".to_string(),
            auto_failback: true,
            service_medium: ServiceMedium::Multicast,
        }
    }

    pub fn preferred(mut self, node: &str) -> Heartbeat {
        self.preferred = node.to_string();
        self
    }

    pub fn broadcast(mut self) -> Heartbeat {
        self.service_medium = ServiceMedium::Broadcast;
        self
    }

    /// "100ms/300ms": keepalive / deadtime, as the bench prints them.
    pub fn timers_str(&self) -> String {
        format!(
            "{}/{}",
            duration_str(self.keepalive),
            duration_str(self.deadtime)
        )
    }

    /// A generous deadline for one failover: the dead time twice, plus slack for a busy
    /// 2-core CI machine.
    pub fn failover_deadline(&self) -> Duration {
        self.deadtime * 2 + Duration::from_secs(5)
    }
}

/// The config of one director of a heartbeat pair: unicast to the peer's `eth1` address,
/// multicast (or broadcast) on `eth0`; the key file (`<lab>/authkeys`, written on first
/// use, mode 0600) and a state directory per node (`<lab>/<node>-state`) in the lab's dir.
pub fn heartbeat_config(
    lab: &Lab,
    node: &str,
    peer: &str,
    hb: &Heartbeat,
    socket: &str,
) -> Result<String> {
    let key_file = lab.path("authkeys");
    if !key_file.exists() {
        fs::write(&key_file, format!("auth 1\n1 sha256 {HEARTBEAT_SECRET}\n"))
            .with_context(|| format!("writing {}", key_file.display()))?;
        fs::set_permissions(&key_file, fs::Permissions::from_mode(0o600))?;
    }
    let state_dir = lab.path(&format!("{node}-state"));
    fs::create_dir_all(&state_dir)?;
    let service = match hb.service_medium {
        ServiceMedium::Multicast => format!("multicast = \"{HEARTBEAT_GROUP}\""),
        ServiceMedium::Broadcast => "broadcast = true".to_string(),
    };
    Ok(format!(
        r#"[node]
name = "{node}"

[failover]
protocol = "heartbeat"
interface = "{IFACE}"

[failover.heartbeat]
peer = "{peer}"
preferred = "{preferred}"
auto_failback = {auto_failback}
auth_key_file = "{key_file}"
state_dir = "{state_dir}"
keepalive = "{keepalive}"
warntime = "{warntime}"
deadtime = "{deadtime}"
initdead = "{initdead}"
media = [
    {{ unicast = "{peer_link2}", interface = "{IFACE2}" }},
    {{ {service}, interface = "{IFACE}" }},
]

[announce]
count = 5
spacing = "10ms"

[control]
socket = "{socket}"

[[vip]]
address = "{vip}/{prefix}"
interface = "{IFACE}"
"#,
        preferred = hb.preferred,
        auto_failback = hb.auto_failback,
        key_file = key_file.display(),
        state_dir = state_dir.display(),
        keepalive = duration_str(hb.keepalive),
        warntime = duration_str(hb.warntime),
        deadtime = duration_str(hb.deadtime),
        initdead = duration_str(hb.initdead),
        peer_link2 = lab.ipv4_on(peer, IFACE2),
        vip = crate::lab::VIP4,
        prefix = crate::lab::PREFIX4,
    ))
}
