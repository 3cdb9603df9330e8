//! Network-namespace lab for the VRRP integration tests: two namespaces joined by
//! a veth pair, removed again on drop.

#![allow(dead_code)]

mod handle;
pub use handle::*;

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use heartbeat::vrrp::{Family, Version, VrrpConfig};

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// Why a privileged test cannot run here, if it cannot.
pub fn skip_reason() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("skipped: needs root (network namespaces)");
    }
    if Process::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_or(true, |s| !s.success())
    {
        return Some("skipped: needs the `ip` command (iproute2)");
    }
    None
}

/// True when keepalived can be run.
pub fn have_keepalived() -> bool {
    Process::new("keepalived")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(args: &[&str]) {
    let out = Process::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces `a` and `b`, each with one end of a veth pair:
/// a: 192.0.2.1/24, fd00::1/64; b: 192.0.2.2/24, fd00::2/64.
pub struct Lab {
    pub ns: [String; 2],
    pub ifname: [String; 2],
    dir: PathBuf,
    children: Vec<Child>,
}

pub const ADDR4: [&str; 2] = ["192.0.2.1", "192.0.2.2"];
pub const ADDR6: [&str; 2] = ["fd00::1", "fd00::2"];
pub const VIPS4: [&str; 2] = ["192.0.2.100", "192.0.2.101"];
pub const VIPS6: [&str; 2] = ["fd00::100", "fd00::101"];

impl Lab {
    pub fn new() -> Lab {
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let id = format!("hb{}x{n}", std::process::id());
        let ns = [format!("{id}a"), format!("{id}b")];
        // Interface names are at most 15 bytes.
        let ifname = [format!("{id}a"), format!("{id}b")];
        assert!(
            ifname[0].len() <= 15,
            "interface name {} too long",
            ifname[0]
        );
        let dir = std::env::temp_dir().join(format!("heartbeat-lab-{id}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("lab dir");
        let lab = Lab {
            ns,
            ifname,
            dir,
            children: Vec::new(),
        };
        for ns in &lab.ns {
            run(&["ip", "netns", "add", ns]);
            // No duplicate address detection: link-local addresses usable at once.
            run(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        run(&[
            "ip",
            "link",
            "add",
            &lab.ifname[0],
            "netns",
            &lab.ns[0],
            "type",
            "veth",
            "peer",
            "name",
            &lab.ifname[1],
            "netns",
            &lab.ns[1],
        ]);
        for i in 0..2 {
            let (ns, ifname) = (&lab.ns[i], &lab.ifname[i]);
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", ADDR4[i]),
                "dev",
                ifname,
            ]);
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/64", ADDR6[i]),
                "dev",
                ifname,
                "nodad",
            ]);
            run(&["ip", "-n", ns, "link", "set", ifname, "up"]);
        }
        // Wait for the carrier, so that the protocols start on a running link.
        let deadline = Instant::now() + Duration::from_secs(5);
        for i in 0..2 {
            loop {
                let out = Process::new("ip")
                    .args(["-n", &lab.ns[i], "link", "show", &lab.ifname[i]])
                    .output()
                    .expect("ip link show");
                if String::from_utf8_lossy(&out.stdout).contains("state UP") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "veth {} never came up",
                    lab.ifname[i]
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        lab
    }

    pub fn netns_path(&self, i: usize) -> PathBuf {
        Path::new("/run/netns").join(&self.ns[i])
    }

    /// A directord VRRP config for node `i`.
    pub fn config(&self, i: usize, version: Version, family: Family, priority: u8) -> VrrpConfig {
        let (interval, addresses) = match family {
            Family::V4 => (Duration::from_secs(1), VIPS4),
            Family::V6 => (Duration::from_secs(1), VIPS6),
        };
        VrrpConfig {
            interface: self.ifname[i].clone(),
            version,
            vrid: 51,
            priority,
            preempt: true,
            preempt_delay: Duration::ZERO,
            advert_interval: interval,
            unicast_peers: Vec::new(),
            source_address: None,
            addresses: addresses
                .iter()
                .map(|a| a.parse::<IpAddr>().expect("vip"))
                .collect(),
            family,
            netns: Some(self.netns_path(i)),
            resume_master: false,
            ready: true,
        }
    }

    /// Starts keepalived in namespace `i` with the given `vrrp_instance` body lines
    /// (interface and virtual_router_id are filled in). Returns its log path.
    pub fn keepalived(&mut self, i: usize, version: Version, instance: &str) -> PathBuf {
        let version = match version {
            Version::V2 => 2,
            Version::V3 => 3,
        };
        let conf = self.dir.join(format!("keepalived{i}.conf"));
        let log = self.dir.join(format!("keepalived{i}.log"));
        fs::write(
            &conf,
            format!(
                "global_defs {{\n  router_id lab{i}\n  vrrp_version {version}\n  \
                 max_auto_priority -1\n}}\n\
                 vrrp_instance VI_1 {{\n  state BACKUP\n  interface {}\n  \
                 virtual_router_id 51\n{instance}\n}}\n",
                self.ifname[i]
            ),
        )
        .expect("write keepalived.conf");
        let out = fs::File::create(&log).expect("keepalived log");
        let err = out.try_clone().expect("keepalived log");
        let pid = |name: &str| self.dir.join(format!("{name}{i}.pid"));
        let child = Process::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns[i],
                "keepalived",
                "-n",
                "-l",
                "-D",
                "-P",
                "-f",
            ])
            .arg(&conf)
            .arg("-p")
            .arg(pid("keepalived"))
            .arg("-r")
            .arg(pid("vrrp"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start keepalived");
        self.children.push(child);
        log
    }

    /// Stops every keepalived started here with SIGTERM (clean stop: it sends a
    /// priority-0 advert when master).
    pub fn stop_keepalived(&mut self) {
        for child in &mut self.children {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_keepalived();
        for ns in &self.ns {
            let _ = Process::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// keepalived's state per its log ("MASTER", "BACKUP", "FAULT"), if it said one.
pub fn keepalived_state(log: &Path) -> Option<String> {
    let text = fs::read_to_string(log).ok()?;
    text.lines().rev().find_map(|line| {
        ["MASTER", "BACKUP", "FAULT"]
            .into_iter()
            .find(|s| line.contains(&format!("Entering {s} STATE")))
            .map(str::to_owned)
    })
}

/// Asserts that keepalived never complained about a packet (it logs "bogus VRRP
/// packet", "Invalid ...", "... mismatch" for what it drops).
pub fn assert_keepalived_accepted_all(log: &Path) {
    let text = fs::read_to_string(log).unwrap_or_default();
    let complaints: Vec<&str> = text
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("bogus") || l.contains("invalid") || l.contains("mismatch")
        })
        .collect();
    assert!(
        complaints.is_empty(),
        "keepalived dropped our packets:\n{text}"
    );
}

pub async fn wait_keepalived(log: &Path, state: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if keepalived_state(log).as_deref() == Some(state) {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "keepalived did not enter {state} within {timeout:?}; log:\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
