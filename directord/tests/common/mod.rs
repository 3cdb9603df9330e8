//! The harness the namespace tests share: a network namespace with a veth pair
//! running one directord, and the small helpers around it. Each test binary uses
//! a subset.
#![allow(dead_code, unused_macros, unused_imports)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Returns from the test, saying so, unless it runs as root.
macro_rules! need_root {
    () => {
        if !$crate::common::is_root() {
            eprintln!("skipped: needs root (network namespaces, raw sockets)");
            return;
        }
    };
}
pub(crate) use need_root;

pub fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd).args(args).output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn wait(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One director alone on its link; `SOCKET` stands for the control socket.
pub const CONFIG: &str = r#"[node]
name = "solo"

[failover]
protocol = "vrrp"
interface = "eth0"
priority = 100

[failover.vrrp]
router_id = 7
advert_interval = "50ms"

[announce]
count = 2
spacing = "10ms"

[control]
socket = "SOCKET"

[[vip]]
address = "198.51.100.10/24"
"#;

/// A namespace with a veth pair (`eth0`, 198.51.100.1/24, and its peer `peer0`)
/// and a tempdir for directord's config, socket and log; on drop directord is
/// killed (its log printed if the test failed) and the namespace removed.
pub struct Node {
    pub ns: String,
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
}

impl Node {
    /// The namespace `{prefix}{pid}{tag}` and the tempdir; directord not started.
    pub fn new(prefix: &str, tag: &str) -> Node {
        let ns = format!("{prefix}{}{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        run("ip", &["netns", "add", &ns]);
        let exec = |args: &[&str]| {
            let mut a = vec!["netns", "exec", &ns];
            a.extend_from_slice(args);
            run("ip", &a);
        };
        exec(&["ip", "link", "set", "lo", "up"]);
        exec(&[
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
        ]);
        exec(&["ip", "addr", "add", "198.51.100.1/24", "dev", "eth0"]);
        exec(&["ip", "link", "set", "eth0", "up"]);
        exec(&["ip", "link", "set", "peer0", "up"]);
        let dir = tempfile::tempdir().expect("tempdir");
        Node {
            ns,
            dir,
            child: None,
        }
    }

    /// `new`, then CONFIG with `extra` appended, then `start("debug")`.
    pub fn solo(prefix: &str, tag: &str, extra: &str) -> Node {
        let mut node = Node::new(prefix, tag);
        std::fs::write(node.config(), node.solo_config() + extra).expect("write config");
        node.start("debug");
        node
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("directord.toml")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("ctl.sock")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("directord.log")
    }

    /// CONFIG with this node's control socket.
    pub fn solo_config(&self) -> String {
        CONFIG.replace("SOCKET", &self.socket().display().to_string())
    }

    /// The config file as it is now.
    pub fn config_text(&self) -> String {
        std::fs::read_to_string(self.config()).expect("read config")
    }

    /// directord in the namespace with `RUST_LOG=rust_log`, stderr to a fresh log
    /// file; `ip netns exec` execs directord, so the child's pid is directord's.
    pub fn command(&self, rust_log: &str) -> Command {
        let log = std::fs::File::create(self.log_path()).expect("log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, env!("CARGO_BIN_EXE_directord")])
            .arg("--config")
            .arg(self.config())
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(log);
        cmd
    }

    pub fn spawn(&mut self, mut cmd: Command) {
        self.child = Some(cmd.spawn().expect("start directord"));
    }

    /// Spawns `command(rust_log)` and waits for the control socket.
    pub fn start(&mut self, rust_log: &str) {
        self.spawn(self.command(rust_log));
        wait(Duration::from_secs(10), "control socket", || {
            UnixStream::connect(self.socket()).is_ok()
        });
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills directord, if running.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn ip_addrs(&self) -> String {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.ns, "ip", "-o", "addr", "show", "dev", "eth0",
            ])
            .output()
            .expect("ip addr");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn holds(&self, addr: &str) -> bool {
        self.ip_addrs().contains(&format!(" {addr}/"))
    }

    pub fn call_raw(&self, line: &[u8]) -> Value {
        let mut s = UnixStream::connect(self.socket()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(line).expect("write");
        let mut answer = String::new();
        BufReader::new(s).read_line(&mut answer).expect("read");
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("not JSON ({e}): {answer:?}"))
    }

    pub fn status(&self) -> Value {
        let r = self.call_raw(b"{\"command\":\"status\"}\n");
        assert_eq!(r["ok"], true, "{r}");
        r["status"].clone()
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_directorctl"))
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .expect("directorctl")
    }

    pub fn wait_role(&self, role: &str) {
        wait(Duration::from_secs(10), role, || {
            self.status()["role"] == role
        });
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- directord log ---\n{}", self.log());
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}
