//! The network-namespace lab: every node is a namespace with one `eth0`, wired by a veth
//! pair to a Linux bridge that lives in its own "switch" namespace. Nothing is created in
//! the root namespace, so labs run in parallel and a crashed run leaves nothing on the host
//! but namespace names (swept by the next run, see [`sweep_stale`]).
//!
//! Addresses: 192.0.2.0/24 and 2001:db8::/64; a node with host id `h` gets 192.0.2.h,
//! 2001:db8::h (h written in hex digits as decimal, e.g. `2001:db8::11` for d1) and the MAC
//! 02:00:c0:00:02:hh. The VIPs are [`VIP4`] and [`VIP6`].
//!
//! A lab can have a second link ([`LabBuilder::second_link`]): `eth1` on the nodes named,
//! with 198.51.100.h/24, on a bridge of its own (`br1`). The heartbeat labs run a medium
//! over each link. [`Lab::cut`] pulls a node's cable at the switch.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, Once};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt as _;

/// The IPv4 VIP the pair shares.
pub const VIP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
/// The IPv6 VIP the pair shares.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
/// Prefix lengths of the lab subnet.
pub const PREFIX4: u8 = 24;
pub const PREFIX6: u8 = 64;
/// Every node's lab interface.
pub const IFACE: &str = "eth0";
/// The interface of the second link, on the nodes that have one.
pub const IFACE2: &str = "eth1";
/// Prefix length of the second link's subnet (198.51.100.0/24).
pub const PREFIX2: u8 = 24;

/// Namespace names start with this, then the test process id and a per-process counter.
const NS_PREFIX: &str = "dlab";

/// Host ids of the usual nodes.
pub fn host_id(name: &str) -> Option<u8> {
    Some(match name {
        "client" => 2,
        "d1" => 11,
        "d2" => 12,
        "rs1" => 21,
        "rs2" => 22,
        _ => return None,
    })
}

/// True when running as root. Otherwise prints why the caller is skipped: tests call this
/// first and return when it is false, so a non-root run says so instead of passing silently.
pub fn is_root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    // Straight to the stderr handle: the test harness captures `eprintln!` of passing
    // tests, and a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "{test}: skipped: needs root (network namespaces)"
    );
    false
}

/// Finds a binary of this workspace's target directory: next to the running executable
/// (bins) or one level up (test executables live in `target/<profile>/deps`).
/// `DIRECTORD_BIN_DIR` overrides the search.
pub fn find_bin(name: &str) -> Result<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("DIRECTORD_BIN_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("current_exe")?;
    if let Some(dir) = exe.parent() {
        dirs.push(dir.to_path_buf());
        if let Some(up) = dir.parent() {
            dirs.push(up.to_path_buf());
        }
    }
    for dir in &dirs {
        let path = dir.join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    bail!(
        "binary `{name}` not found in {dirs:?}: run `cargo build` first (for the bench: \
         `cargo build --release`), or point DIRECTORD_BIN_DIR at it"
    )
}

/// A node of the lab.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    /// The namespace name (`ip netns exec <ns>`).
    pub ns: String,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    pub mac: String,
}

impl Node {
    fn new(lab_id: &str, name: &str, host: u8) -> Node {
        // 2001:db8::11 for host 11: write the decimal digits as hex digits, readable in dumps.
        let h6 = u16::from_str_radix(&host.to_string(), 16).unwrap_or(u16::from(host));
        Node {
            name: name.to_string(),
            ns: format!("{lab_id}-{name}"),
            ipv4: Ipv4Addr::new(192, 0, 2, host),
            ipv6: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, h6),
            mac: format!("02:00:c0:00:02:{host:02x}"),
        }
    }
}

/// A process the lab started; kill it through the lab.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: u32,
    pub node: String,
    pub label: String,
    pub log: PathBuf,
}

/// A neighbour (ARP / NDP) entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub mac: Option<String>,
    pub state: Vec<String>,
}

#[derive(Debug, Default)]
pub struct LabBuilder {
    nodes: Vec<(String, u8)>,
    second_link: Vec<String>,
}

impl LabBuilder {
    /// Adds a node with one of the usual names (`d1`, `d2`, `client`, `rs1`, `rs2`).
    pub fn node(self, name: &str) -> Self {
        let host = host_id(name).unwrap_or_else(|| panic!("no default host id for node {name}"));
        self.node_with_host(name, host)
    }

    pub fn node_with_host(mut self, name: &str, host: u8) -> Self {
        self.nodes.push((name.to_string(), host));
        self
    }

    /// A second link joining `nodes` (added with [`LabBuilder::node`] before): `eth1`
    /// with 198.51.100.h/24 on each, all on the bridge `br1` ([`Lab::ipv4_on`]).
    pub fn second_link(mut self, nodes: &[&str]) -> Self {
        self.second_link.extend(nodes.iter().map(|n| n.to_string()));
        self
    }

    pub fn build(self) -> Result<Lab> {
        sweep_stale();
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("{NS_PREFIX}{}x{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("directord-{id}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut lab = Lab {
            switch_ns: format!("{id}-sw"),
            nodes: Vec::new(),
            namespaces: Mutex::new(Vec::new()),
            procs: Mutex::new(Vec::new()),
            failed: AtomicBool::new(false),
            keep: std::env::var_os("LAB_KEEP").is_some(),
            dir,
            id,
        };
        // From here on, Drop cleans up whatever was created.
        lab.setup_switch()?;
        for (name, host) in &self.nodes {
            let node = Node::new(&lab.id, name, *host);
            lab.setup_node(&node)?;
            lab.nodes.push(node);
        }
        if !self.second_link.is_empty() {
            lab.add_bridge(BRIDGE2)?;
            for name in &self.second_link {
                lab.setup_second_link(name)?;
            }
        }
        Ok(lab)
    }
}

struct Spawned {
    proc: Proc,
    child: Child,
    exited: Option<ExitStatus>,
}

/// A running lab. Dropping it kills every process it started and deletes its namespaces;
/// its temp dir (configs, logs) is kept and the logs printed when the test failed.
pub struct Lab {
    id: String,
    switch_ns: String,
    nodes: Vec<Node>,
    namespaces: Mutex<Vec<String>>,
    procs: Mutex<Vec<Spawned>>,
    dir: PathBuf,
    failed: AtomicBool,
    keep: bool,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("id", &self.id)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Lab {
    pub fn builder() -> LabBuilder {
        LabBuilder::default()
    }

    /// Two directors and a client: the usual failover lab.
    pub fn pair() -> Result<Lab> {
        Lab::builder().node("d1").node("d2").node("client").build()
    }

    /// The usual failover lab, the directors also joined by a second link (`eth1`): what
    /// the heartbeat labs run their two media over.
    pub fn pair_two_links() -> Result<Lab> {
        Lab::builder()
            .node("d1")
            .node("d2")
            .node("client")
            .second_link(&["d1", "d2"])
            .build()
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The lab's temp dir: configs, sockets, logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("lab {} has no node {name}", self.id))
    }

    /// Keeps the temp dir (configs, logs) when the lab is dropped.
    pub fn keep_files(&mut self) {
        self.keep = true;
    }

    /// Marks the lab failed: logs are printed and the temp dir kept on drop.
    pub fn mark_failed(&self) {
        self.failed.store(true, Ordering::SeqCst);
    }

    fn add_ns(&self, ns: &str) -> Result<()> {
        run(Command::new("ip").args(["netns", "add", ns]))?;
        lock(&self.namespaces).push(ns.to_string());
        run(Command::new("ip").args(["-n", ns, "link", "set", "lo", "up"]))?;
        Ok(())
    }

    fn setup_switch(&self) -> Result<()> {
        self.add_ns(&self.switch_ns)?;
        self.add_bridge(BRIDGE)
    }

    fn add_bridge(&self, bridge: &str) -> Result<()> {
        let sw = &self.switch_ns;
        run(Command::new("ip").args([
            "-n",
            sw,
            "link",
            "add",
            bridge,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ]))?;
        // The switch has no business speaking IPv6 itself.
        run(Command::new("ip").args([
            "netns",
            "exec",
            sw,
            "sysctl",
            "-q",
            "-w",
            &format!("net.ipv6.conf.{bridge}.disable_ipv6=1"),
        ]))?;
        run(Command::new("ip").args(["-n", sw, "link", "set", bridge, "up"]))?;
        Ok(())
    }

    /// `eth1` of `name` on the second bridge, with its 198.51.100.h address.
    fn setup_second_link(&self, name: &str) -> Result<()> {
        let node = self.node(name);
        let sw = &self.switch_ns;
        let port = switch_port(name, IFACE2);
        let addr = format!("{}/{PREFIX2}", self.ipv4_on(name, IFACE2));
        run(Command::new("ip").args([
            "-n", sw, "link", "add", &port, "type", "veth", "peer", "name", IFACE2, "netns",
            &node.ns,
        ]))?;
        run(Command::new("ip").args(["-n", sw, "link", "set", &port, "master", BRIDGE2]))?;
        run(Command::new("ip").args(["-n", sw, "link", "set", &port, "up"]))?;
        run(Command::new("ip").args([
            "-n", &node.ns, "addr", "add", &addr, "brd", "+", "dev", IFACE2,
        ]))?;
        run(Command::new("ip").args(["-n", &node.ns, "link", "set", IFACE2, "up"]))?;
        Ok(())
    }

    /// The node's IPv4 address on `iface`: 192.0.2.h on [`IFACE`], 198.51.100.h on
    /// [`IFACE2`].
    pub fn ipv4_on(&self, node: &str, iface: &str) -> Ipv4Addr {
        let ipv4 = self.node(node).ipv4;
        match iface {
            IFACE2 => Ipv4Addr::new(198, 51, 100, ipv4.octets()[3]),
            _ => ipv4,
        }
    }

    /// Pulls the cable of `node`'s `iface` at the switch: its bridge port stops
    /// forwarding (port state `disabled`). The node's interface keeps its carrier, so
    /// daemons on it see silence, not a link going down.
    pub fn cut(&self, node: &str, iface: &str) -> Result<()> {
        self.set_port_state(node, iface, "0")
    }

    /// Plugs the cable back in ([`Lab::cut`]): the port forwards again at once.
    pub fn heal(&self, node: &str, iface: &str) -> Result<()> {
        self.set_port_state(node, iface, "3")
    }

    fn set_port_state(&self, node: &str, iface: &str, state: &str) -> Result<()> {
        let port = switch_port(&self.node(node).name, iface);
        run(Command::new("ip")
            .args(["netns", "exec", &self.switch_ns])
            .args(["bridge", "link", "set", "dev", &port, "state", state]))
        .map(drop)
    }

    fn setup_node(&self, node: &Node) -> Result<()> {
        let ns = &node.ns;
        self.add_ns(ns)?;
        let port = &switch_port(&node.name, IFACE);
        // Created inside the switch namespace, peer moved straight into the node's.
        run(Command::new("ip").args([
            "-n",
            &self.switch_ns,
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            IFACE,
            "address",
            &node.mac,
            "netns",
            ns,
        ]))?;
        run(Command::new("ip").args([
            "-n",
            &self.switch_ns,
            "link",
            "set",
            port,
            "master",
            BRIDGE,
        ]))?;
        run(Command::new("ip").args(["-n", &self.switch_ns, "link", "set", port, "up"]))?;
        let v4 = format!("{}/{PREFIX4}", node.ipv4);
        let v6 = format!("{}/{PREFIX6}", node.ipv6);
        run(Command::new("ip").args(["-n", ns, "addr", "add", &v4, "dev", IFACE]))?;
        run(Command::new("ip").args(["-n", ns, "addr", "add", &v6, "dev", IFACE, "nodad"]))?;
        run(Command::new("ip").args(["-n", ns, "link", "set", IFACE, "up"]))?;
        Ok(())
    }

    /// Waits until no node has a tentative IPv6 address (link-locals finish DAD about a
    /// second after link up). VRRP over IPv6 sends from the link-local address.
    pub fn wait_ipv6_ready(&self) -> Result<()> {
        for node in &self.nodes {
            crate::wait::until(Duration::from_secs(10), "IPv6 DAD finished", || {
                let json = self.ip(&node.name, &["-j", "-6", "addr", "show", "dev", IFACE])?;
                Ok(!json.contains("tentative"))
            })
            .with_context(|| format!("node {}", node.name))?;
        }
        Ok(())
    }

    /// Runs `ip -n <ns> ARGS` and returns stdout.
    pub fn ip(&self, node: &str, args: &[&str]) -> Result<String> {
        let ns = &self.node(node).ns;
        run(Command::new("ip").arg("-n").arg(ns).args(args))
    }

    /// Runs a command in a node (`ip netns exec`) to completion; returns stdout, fails with
    /// stderr when the command fails.
    pub fn exec<S: AsRef<std::ffi::OsStr>>(
        &self,
        node: &str,
        program: S,
        args: &[&str],
    ) -> Result<String> {
        let ns = &self.node(node).ns;
        run(Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args))
    }

    /// Starts a long-running process in a node; stdout and stderr go to
    /// `<dir>/<node>-<label>.log` (appended, so a restart keeps the earlier run).
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(
        &self,
        node: &str,
        label: &str,
        program: S,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Proc> {
        let ns = self.node(node).ns.clone();
        let log = self.dir.join(format!("{node}-{label}.log"));
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns])
            .arg(program.as_ref())
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Own process group: kill -9 takes the process and any children it forked
            // (keepalived's VRRP child) at once.
            .process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {:?} in {node}", program.as_ref()))?;
        let proc = Proc {
            pid: child.id(),
            node: node.to_string(),
            label: label.to_string(),
            log,
        };
        lock(&self.procs).push(Spawned {
            proc: proc.clone(),
            child,
            exited: None,
        });
        Ok(proc)
    }

    /// Sends a signal to the process group of `proc`.
    pub fn signal(&self, proc: &Proc, signal: Signal) -> Result<()> {
        if !self.is_running(proc) {
            bail!("{} on {} is not running", proc.label, proc.node);
        }
        killpg(Pid::from_raw(proc.pid as i32), signal)
            .with_context(|| format!("kill -{signal} {} on {}", proc.label, proc.node))
    }

    /// `kill -9` and reap.
    pub fn kill9(&self, proc: &Proc) -> Result<()> {
        self.signal(proc, Signal::SIGKILL)?;
        self.wait_exit(proc, Duration::from_secs(5))?;
        Ok(())
    }

    /// Waits for the process to exit; returns its status.
    pub fn wait_exit(&self, proc: &Proc, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait(proc)? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} on {} still running after {timeout:?}",
                    proc.label,
                    proc.node
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn try_wait(&self, proc: &Proc) -> Result<Option<ExitStatus>> {
        let mut procs = lock(&self.procs);
        let spawned = procs
            .iter_mut()
            .find(|s| s.proc.pid == proc.pid)
            .with_context(|| format!("unknown process {}", proc.pid))?;
        if spawned.exited.is_none() {
            spawned.exited = spawned.child.try_wait()?;
        }
        Ok(spawned.exited)
    }

    pub fn is_running(&self, proc: &Proc) -> bool {
        matches!(self.try_wait(proc), Ok(None))
    }

    /// `ip link set eth0 down` in the node.
    pub fn link_down(&self, node: &str) -> Result<()> {
        self.ip(node, &["link", "set", IFACE, "down"]).map(drop)
    }

    pub fn link_up(&self, node: &str) -> Result<()> {
        self.ip(node, &["link", "set", IFACE, "up"]).map(drop)
    }

    /// The addresses on the node's `eth0` (`ip -j addr`).
    pub fn addresses(&self, node: &str) -> Result<Vec<IpAddr>> {
        let json = self.ip(node, &["-j", "addr", "show", "dev", IFACE])?;
        let links: serde_json::Value = serde_json::from_str(&json).context("parsing ip -j addr")?;
        let mut out = Vec::new();
        for link in links.as_array().into_iter().flatten() {
            for info in link["addr_info"].as_array().into_iter().flatten() {
                if let Some(addr) = info["local"].as_str().and_then(|a| a.parse().ok()) {
                    out.push(addr);
                }
            }
        }
        Ok(out)
    }

    pub fn holds(&self, node: &str, addr: IpAddr) -> Result<bool> {
        Ok(self.addresses(node)?.contains(&addr))
    }

    /// Which of `nodes` hold `addr` right now.
    pub fn holders(&self, nodes: &[&str], addr: IpAddr) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for node in nodes {
            if self.holds(node, addr)? {
                out.push(node.to_string());
            }
        }
        Ok(out)
    }

    /// The node's neighbour entry for `addr` (`ip -j neigh`), if any.
    pub fn neighbour(&self, node: &str, addr: IpAddr) -> Result<Option<Neighbour>> {
        let a = addr.to_string();
        let json = self.ip(node, &["-j", "neigh", "show", &a, "dev", IFACE])?;
        let entries: serde_json::Value = if json.trim().is_empty() {
            serde_json::Value::Array(Vec::new())
        } else {
            serde_json::from_str(&json).context("parsing ip -j neigh")?
        };
        Ok(entries
            .as_array()
            .and_then(|e| e.first())
            .map(|e| Neighbour {
                mac: e["lladdr"].as_str().map(str::to_string),
                state: e["state"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect(),
            }))
    }

    /// The MAC of the node's `eth0`, as the kernel reports it.
    pub fn mac(&self, node: &str) -> Result<String> {
        let json = self.ip(node, &["-j", "link", "show", IFACE])?;
        let links: serde_json::Value = serde_json::from_str(&json).context("parsing ip -j link")?;
        links[0]["address"]
            .as_str()
            .map(str::to_string)
            .context("no address in ip -j link")
    }

    /// Runs `f` on a thread inside the node's network namespace (sockets it opens live
    /// there).
    pub fn in_netns<T, F>(&self, node: &str, f: F) -> Result<thread::JoinHandle<Result<T>>>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        let path = format!("/run/netns/{}", self.node(node).ns);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        Ok(thread::Builder::new()
            .name(format!("netns-{node}"))
            .spawn(move || {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
                f()
            })?)
    }

    /// The tail of every log, for a failure report.
    pub fn dump_logs(&self) {
        let procs = lock(&self.procs);
        let logs: BTreeSet<&PathBuf> = procs.iter().map(|s| &s.proc.log).collect();
        eprintln!(
            "==== lab {} failed; files kept in {} ====",
            self.id,
            self.dir.display()
        );
        for log in logs {
            eprintln!("---- {} (last 150 lines) ----", log.display());
            eprintln!("{}", tail(log, 150));
        }
        eprintln!("==== end of lab {} logs ====", self.id);
    }

    fn teardown(&self) {
        let mut procs = lock(&self.procs);
        for s in procs.iter_mut() {
            if s.exited.is_none() && matches!(s.child.try_wait(), Ok(None)) {
                let _ = killpg(Pid::from_raw(s.proc.pid as i32), Signal::SIGKILL);
                let _ = s.child.wait();
            }
        }
        drop(procs);
        let namespaces = lock(&self.namespaces).clone();
        for ns in namespaces.iter().rev() {
            delete_ns(ns);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let failed = self.failed.load(Ordering::SeqCst) || thread::panicking();
        if failed {
            self.dump_logs();
        }
        self.teardown();
        if !failed && !self.keep {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The bridge of the lab subnet, and that of the second link, in the switch namespace.
const BRIDGE: &str = "br0";
const BRIDGE2: &str = "br1";

/// The name of the switch port that `node`'s `iface` plugs into: the node's name for
/// `eth0` (as the bridge's port list reads best), `<node>-eth1` for the second link.
fn switch_port(node: &str, iface: &str) -> String {
    if iface == IFACE {
        node.to_string()
    } else {
        format!("{node}-{iface}")
    }
}

/// Kills whatever still runs in the namespace, then deletes it.
fn delete_ns(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(Stdio::null())
        .status();
}

/// Deletes namespaces left by earlier runs whose process is gone (a run that was killed
/// before its labs were dropped). Runs once per process.
pub fn sweep_stale() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let Ok(entries) = fs::read_dir("/run/netns") else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(rest) = name.strip_prefix(NS_PREFIX) else {
                continue;
            };
            let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let Ok(pid) = pid.parse::<u32>() else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                delete_ns(&name);
            }
        }
    });
}

/// Runs a command to completion; stdout on success, an error with stderr otherwise.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        let stdout = String::from_utf8_lossy(&out.stdout);
        bail!(
            "{cmd:?} failed ({}): {}{}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            if stdout.trim().is_empty() {
                ""
            } else {
                " | stdout: "
            },
            stdout.trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The last `lines` lines of a file (reads at most the last 64 KiB).
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(cannot open {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs one lab test: skips (saying so) when not root, builds the lab with `build`, runs
/// `body`; when `body` fails, prints the lab's logs, keeps its files and panics with the
/// whole error chain.
pub fn test(
    name: &str,
    build: impl FnOnce() -> Result<Lab>,
    body: impl FnOnce(&Lab) -> Result<()>,
) {
    if !is_root_or_skip(name) {
        return;
    }
    let lab = match build() {
        Ok(lab) => lab,
        Err(e) => panic!("{name}: building the lab: {e:#}"),
    };
    let started = Instant::now();
    if let Err(e) = body(&lab) {
        lab.mark_failed();
        drop(lab);
        panic!("{name}: {e:#}");
    }
    eprintln!("{name}: passed in {:.1}s", started.elapsed().as_secs_f64());
}
