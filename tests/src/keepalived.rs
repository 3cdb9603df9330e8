//! keepalived (the Debian package) as a VRRP node of the lab.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;

use crate::lab::{IFACE, Lab, Node, Proc};
use crate::vrrp::Setup;

/// `/usr/sbin/keepalived`, or an error telling how to get it.
pub fn find() -> Result<PathBuf> {
    for dir in ["/usr/sbin", "/usr/local/sbin", "/sbin"] {
        let p = PathBuf::from(dir).join("keepalived");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("keepalived not found: apt-get install -y keepalived")
}

/// keepalived.conf for one node of the pair.
pub fn config(node: &Node, peer: Option<&Node>, setup: &Setup, priority: u8) -> String {
    let advert = setup.advert.as_secs_f64();
    let mut c = String::new();
    c.push_str(&format!(
        "global_defs {{\n    router_id {name}\n    vrrp_version {v}\n    script_user root\n    \
         enable_script_security\n}}\n\n",
        name = node.name,
        v = setup.version,
    ));
    c.push_str(&format!(
        "vrrp_instance VI_{id} {{\n    state BACKUP\n    interface {IFACE}\n    \
         virtual_router_id {id}\n    priority {priority}\n    advert_int {advert}\n",
        id = setup.router_id,
    ));
    if setup.ipv6 {
        c.push_str("    native_ipv6\n");
    }
    if !setup.preempt {
        c.push_str("    nopreempt\n");
    }
    if setup.unicast {
        let peer = peer.expect("unicast needs a peer");
        let (src, dst) = if setup.ipv6 {
            (node.ipv6.to_string(), peer.ipv6.to_string())
        } else {
            (node.ipv4.to_string(), peer.ipv4.to_string())
        };
        c.push_str(&format!(
            "    unicast_src_ip {src}\n    unicast_peer {{\n        {dst}\n    }}\n"
        ));
    }
    c.push_str(&format!(
        "    virtual_ipaddress {{\n        {} dev {IFACE}\n    }}\n}}\n",
        setup.vip_cidr()
    ));
    c
}

/// A keepalived of the lab (VRRP subsystem only, foreground, logging to its log file).
#[derive(Debug)]
pub struct Keepalived {
    pub node: String,
    pub config: PathBuf,
    proc: Option<Proc>,
}

impl Keepalived {
    pub fn start(
        lab: &Lab,
        node: &str,
        peer: Option<&str>,
        setup: &Setup,
        priority: u8,
    ) -> Result<Keepalived> {
        let n = lab.node(node);
        let text = config(n, peer.map(|p| lab.node(p)), setup, priority);
        let path = lab.path(&format!("{node}-keepalived.conf"));
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        let mut k = Keepalived {
            node: node.to_string(),
            config: path,
            proc: None,
        };
        k.restart(lab)?;
        Ok(k)
    }

    /// Starts keepalived again with the same config (after a kill).
    pub fn restart(&mut self, lab: &Lab) -> Result<()> {
        if let Some(p) = &self.proc
            && lab.is_running(p)
        {
            bail!("keepalived on {} is still running", self.node);
        }
        let bin = find()?;
        let pid = lab.path(&format!("{}-keepalived.pid", self.node));
        let vrrp_pid = lab.path(&format!("{}-keepalived-vrrp.pid", self.node));
        let _ = fs::remove_file(&pid);
        let _ = fs::remove_file(&vrrp_pid);
        let conf = self.config.to_string_lossy().into_owned();
        let pid = pid.to_string_lossy().into_owned();
        let vrrp_pid = vrrp_pid.to_string_lossy().into_owned();
        let args = [
            "--dont-fork",
            "--log-console",
            "--log-detail",
            "--no-syslog",
            "--vrrp",
            "--use-file",
            &conf,
            "--pid",
            &pid,
            "--vrrp_pid",
            &vrrp_pid,
        ];
        self.proc = Some(lab.spawn(&self.node, "keepalived", bin, &args, &[])?);
        Ok(())
    }

    pub fn proc(&self) -> Option<&Proc> {
        self.proc.as_ref()
    }

    /// `kill -9` of keepalived and its VRRP child: no priority-0 advert, the VIP stays.
    pub fn kill9(&self, lab: &Lab) -> Result<()> {
        let proc = self.proc.as_ref().context("keepalived not started")?;
        lab.kill9(proc)
    }

    /// SIGTERM: keepalived sends priority 0 and removes the VIP.
    pub fn terminate(&self, lab: &Lab) -> Result<()> {
        let proc = self.proc.as_ref().context("keepalived not started")?;
        lab.signal(proc, Signal::SIGTERM)?;
        lab.wait_exit(proc, Duration::from_secs(10))?;
        Ok(())
    }
}
