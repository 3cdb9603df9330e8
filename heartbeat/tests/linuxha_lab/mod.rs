//! Network-namespace lab for the heartbeat tests: two namespaces `a` and `b` joined
//! by two veth pairs (two links), removed again on drop.
//!
//! link 0: a 192.0.2.1/24    <-> b 192.0.2.2/24
//! link 1: a 198.51.100.1/24 <-> b 198.51.100.2/24

#![allow(dead_code)]

#[path = "../common/handle.rs"]
mod handle;
pub use handle::*;

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use heartbeat::linuxha::{AuthKeys, HbConfig, Medium};
use heartbeat::role::{FailoverHandle, Role};

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// Node names: a runs lvs1, b runs lvs2.
pub const NAMES: [&str; 2] = ["lvs1", "lvs2"];
/// Addresses per link, per namespace.
pub const ADDR: [[Ipv4Addr; 2]; 2] = [
    [Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)],
    [
        Ipv4Addr::new(198, 51, 100, 1),
        Ipv4Addr::new(198, 51, 100, 2),
    ],
];
pub const GROUP: Ipv4Addr = Ipv4Addr::new(239, 0, 0, 94);
/// An IPv6 link-local group for the second link.
pub const GROUP6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0x6, 0x94);
/// heartbeat's port: each namespace has its own.
pub const PORT: u16 = 694;
pub const SECRET: &str = "lab-secret";

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

pub fn run(args: &[&str]) {
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

/// What the second link carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Second {
    Multicast,
    /// IPv6 multicast to a link-local group (from link-local addresses).
    Multicast6,
    Broadcast,
}

pub struct Lab {
    pub id: String,
    pub ns: [String; 2],
    /// ifname[link][node]
    pub ifname: [[String; 2]; 2],
    pub dir: PathBuf,
}

impl Lab {
    pub fn new() -> Lab {
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let id = format!("lh{}x{n}", std::process::id());
        let ns = [format!("{id}a"), format!("{id}b")];
        let ifname = [
            [format!("{id}a0"), format!("{id}b0")],
            [format!("{id}a1"), format!("{id}b1")],
        ];
        assert!(
            ifname[0][0].len() <= 15,
            "interface name {} too long",
            ifname[0][0]
        );
        let dir = std::env::temp_dir().join(format!("heartbeat-lab-{id}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("lab dir");
        let lab = Lab {
            id,
            ns,
            ifname,
            dir,
        };
        for ns in &lab.ns {
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
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
        }
        for (link, addresses) in ADDR.iter().enumerate() {
            run(&[
                "ip",
                "link",
                "add",
                &lab.ifname[link][0],
                "netns",
                &lab.ns[0],
                "type",
                "veth",
                "peer",
                "name",
                &lab.ifname[link][1],
                "netns",
                &lab.ns[1],
            ]);
            for (node, address) in addresses.iter().enumerate() {
                run(&[
                    "ip",
                    "-n",
                    &lab.ns[node],
                    "addr",
                    "add",
                    &format!("{address}/24"),
                    "brd",
                    "+",
                    "dev",
                    &lab.ifname[link][node],
                ]);
                run(&[
                    "ip",
                    "-n",
                    &lab.ns[node],
                    "link",
                    "set",
                    &lab.ifname[link][node],
                    "up",
                ]);
            }
        }
        for link in 0..2 {
            lab.wait_carrier(link);
        }
        lab
    }

    pub fn netns_path(&self, node: usize) -> PathBuf {
        Path::new("/run/netns").join(&self.ns[node])
    }

    fn wait_carrier(&self, link: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        for node in 0..2 {
            loop {
                let out = Process::new("ip")
                    .args([
                        "-n",
                        &self.ns[node],
                        "link",
                        "show",
                        &self.ifname[link][node],
                    ])
                    .output()
                    .expect("ip link show");
                if String::from_utf8_lossy(&out.stdout).contains("state UP") {
                    break;
                }
                assert!(Instant::now() < deadline, "link {link} never came up");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Cuts a link (both directions): its veth end in namespace a goes down.
    pub fn cut(&self, link: usize) {
        run(&[
            "ip",
            "-n",
            &self.ns[0],
            "link",
            "set",
            &self.ifname[link][0],
            "down",
        ]);
    }

    /// Restores a cut link and waits for its carrier.
    pub fn heal(&self, link: usize) {
        run(&[
            "ip",
            "-n",
            &self.ns[0],
            "link",
            "set",
            &self.ifname[link][0],
            "up",
        ]);
        self.wait_carrier(link);
    }

    /// A state directory of its own per node.
    pub fn state_dir(&self, node: usize) -> PathBuf {
        self.dir.join(format!("state-{}", NAMES[node]))
    }

    /// The key file (mode 0600), written on first use.
    pub fn key_file(&self) -> PathBuf {
        let path = self.dir.join("authkeys");
        if !path.exists() {
            fs::write(&path, format!("auth 1\n1 sha256 {SECRET}\n")).expect("authkeys");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        path
    }

    /// The keys, loaded from the key file as a node does.
    pub fn keys(&self) -> AuthKeys {
        AuthKeys::load(&self.key_file()).expect("load authkeys")
    }

    /// What a node needs to run, as one string (for a helper process).
    pub fn spec(&self, node: usize, second: Second) -> String {
        let second = match second {
            Second::Multicast => "mcast",
            Second::Multicast6 => "mcast6",
            Second::Broadcast => "bcast",
        };
        [
            node.to_string(),
            second.to_owned(),
            self.netns_path(node).display().to_string(),
            self.ifname[0][node].clone(),
            self.ifname[1][node].clone(),
            self.state_dir(node).display().to_string(),
            self.key_file().display().to_string(),
        ]
        .join("|")
    }

    /// A directord heartbeat config for `node` (unicast on link 0, `second` on
    /// link 1), with fast timers.
    pub fn config(&self, node: usize, second: Second) -> HbConfig {
        config_from_spec(&self.spec(node, second))
    }
}

/// The config [`Lab::spec`] describes.
pub fn config_from_spec(spec: &str) -> HbConfig {
    let parts: Vec<&str> = spec.split('|').collect();
    let [node, second, netns, if0, if1, state_dir, key_file] = parts[..] else {
        panic!("bad node spec {spec:?}");
    };
    let node: usize = node.parse().expect("node index");
    let media = vec![
        Medium::Unicast {
            peer: IpAddr::V4(ADDR[0][1 - node]),
            interface: if0.to_owned(),
        },
        match second {
            "mcast" => Medium::Multicast {
                group: IpAddr::V4(GROUP),
                interface: if1.to_owned(),
                ttl: 1,
            },
            "mcast6" => Medium::Multicast {
                group: IpAddr::V6(GROUP6),
                interface: if1.to_owned(),
                ttl: 1,
            },
            _ => Medium::Broadcast {
                interface: if1.to_owned(),
            },
        },
    ];
    let keys = AuthKeys::load(Path::new(key_file)).expect("load authkeys");
    let mut c = HbConfig::new(NAMES[node], NAMES[1 - node], media, keys);
    c.keepalive = Duration::from_millis(200);
    c.warntime = Duration::from_millis(400);
    c.deadtime = Duration::from_millis(1000);
    c.initdead = Duration::from_millis(3000);
    c.port = PORT;
    c.state_dir = PathBuf::from(state_dir);
    c.netns = Some(PathBuf::from(netns));
    c
}

impl Lab {
    /// Runs `f` on a thread inside namespace `node`.
    pub fn in_netns<T: Send + 'static>(
        &self,
        node: usize,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let path = self.netns_path(node);
        std::thread::spawn(move || {
            let file = fs::File::open(&path).expect("open netns");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("netns thread")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in &self.ns {
            let _ = Process::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Both roles, as (a, b).
pub fn roles(a: &FailoverHandle, b: &FailoverHandle) -> (Role, Role) {
    (a.status.borrow().role, b.status.borrow().role)
}

/// Checks Active/Standby for a while: exactly one active, the same one throughout.
pub async fn assert_stable(
    a: &FailoverHandle,
    b: &FailoverHandle,
    expected: (Role, Role),
    for_: Duration,
) {
    let end = Instant::now() + for_;
    while Instant::now() < end {
        assert_eq!(roles(a, b), expected, "roles changed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
