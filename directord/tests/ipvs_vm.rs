//! directord programming a real IPVS: the Debian kernel that
//! `tests/vm/ipvs-vm.sh` boots under qemu (this machine's kernel may have none).
//!
//! `directord_ipvs_in_vm` runs on the host with plain `cargo test`: it boots the
//! VM once and runs this same test binary inside it with `--ignored vm_`. Each
//! `vm_*` test builds a small lab of network namespaces in there — a director
//! running directord, a client, real servers behind the director — and checks
//! the kernel's table with `ipvsadm` as the operator would: the table equals the
//! config, a reload changes exactly what changed, a refused reload nothing, a
//! drain waits for the real server's connections, a restart keeps the table
//! (and its connections), another tool's service is left alone, and a change
//! the kernel refuses is reported naming the service and the field.

use std::collections::BTreeSet;
use std::env;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use serde_json::Value;

mod common;

use common::run;

#[test]
fn directord_ipvs_in_vm() {
    directord_tests::vm::run_tests_inside(
        "directord_ipvs_in_vm",
        "vm_",
        2,
        Duration::from_secs(600),
    );
}

// ---------------------------------------------------------------------------
// Inside the VM
// ---------------------------------------------------------------------------

/// Everything under emulation is slow: generous limits, short polls.
const LIMIT: Duration = Duration::from_secs(30);

fn wait(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < LIMIT, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `f` on a thread inside the named network namespace; what it returns
/// (a socket, say) stays in that namespace.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = File::open(format!("/run/netns/{ns}")).expect("netns file");
    thread::spawn(move || {
        setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("namespace thread")
}

const CONFIG: &str = r#"[node]
name = "vm"

[failover]
protocol = "vrrp"
interface = "eth0"
priority = 100

[failover.vrrp]
router_id = 7
advert_interval = "50ms"

[announce]
count = 1
spacing = "10ms"

[control]
socket = "SOCKET"

[[vip]]
address = "198.51.100.10/24"

[[service]]
name = "www"
address = "198.51.100.10:80"
scheduler = "wrr"
forward = "nat"

[[service.real]]
address = "10.0.1.11:8080"
weight = 100

[[service.real]]
address = "10.0.1.12:8080"
weight = 50

[[service]]
name = "sip"
fwmark = 7
scheduler = "mh"
scheduler_flags = ["mh-fallback", "mh-port"]
forward = "dr"
persistence = "300s"
persistence_netmask = 24

[[service.real]]
address = "10.0.1.21"

[[service.real]]
address = "10.0.1.22"
weight = 2
"#;

/// `ipvsadm -Sn` of CONFIG.
const TABLE: [&str; 6] = [
    "-A -t 198.51.100.10:80 -s wrr",
    "-a -t 198.51.100.10:80 -r 10.0.1.11:8080 -m -w 100",
    "-a -t 198.51.100.10:80 -r 10.0.1.12:8080 -m -w 50",
    "-A -f 7 -s mh -p 300 -M 255.255.255.0 -b mh-fallback,mh-port",
    "-a -f 7 -r 10.0.1.21:0 -g -w 1",
    "-a -f 7 -r 10.0.1.22:0 -g -w 2",
];

/// Another tool's service, which directord must leave alone.
const FOREIGN: [&str; 2] = [
    "-A -u 198.51.100.50:53 -s rr",
    "-a -u 198.51.100.50:53 -r 10.0.1.31:53 -g -w 1",
];

fn lines(expected: &[&str]) -> BTreeSet<String> {
    expected.iter().map(|l| (*l).to_owned()).collect()
}

/// Three namespaces: the director (`eth0` towards the client, `eth1` towards
/// the real servers, IP forwarding on), the client, and the real servers
/// (10.0.1.11 and .12, routing back through the director, as LVS-NAT needs),
/// with a TCP echo server on port 8080. And one directord.
struct Lab {
    director: String,
    client: String,
    reals: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let id = std::process::id();
        let lab = Lab {
            director: format!("d{tag}{id}"),
            client: format!("c{tag}{id}"),
            reals: format!("r{tag}{id}"),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        let (d, c, r) = (&lab.director, &lab.client, &lab.reals);
        let script = format!(
            "set -e
            for n in {d} {c} {r}; do ip netns add $n; ip -n $n link set lo up; done
            ip -n {d} link add eth0 type veth peer name c0 netns {c}
            ip -n {d} link add eth1 type veth peer name r0 netns {r}
            ip -n {d} addr add 198.51.100.1/24 dev eth0
            ip -n {d} addr add 10.0.1.1/24 dev eth1
            ip -n {d} link set eth0 up
            ip -n {d} link set eth1 up
            ip netns exec {d} sysctl -qw net.ipv4.ip_forward=1
            ip -n {c} addr add 198.51.100.2/24 dev c0
            ip -n {c} link set c0 up
            ip -n {r} addr add 10.0.1.11/24 dev r0
            ip -n {r} addr add 10.0.1.12/24 dev r0
            ip -n {r} link set r0 up
            ip -n {r} route add default via 10.0.1.1
            ip netns exec {d} ipvsadm -A -u 198.51.100.50:53 -s rr
            ip netns exec {d} ipvsadm -a -u 198.51.100.50:53 -r 10.0.1.31:53 -g"
        );
        run("sh", &["-c", &script]);
        let listener = in_ns(r, || TcpListener::bind("0.0.0.0:8080").expect("bind 8080"));
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                thread::spawn(move || echo(stream));
            }
        });
        lab
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("directord.toml")
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("ctl.sock")
    }

    fn write_config(&self, text: &str) {
        let text = text.replace("SOCKET", &self.socket().display().to_string());
        std::fs::write(self.config(), text).expect("write config");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("directord.log")).unwrap_or_default()
    }

    /// Starts directord and waits until it is active and has applied its table.
    fn start(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("directord.log"))
            .expect("log");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.director,
                env!("CARGO_BIN_EXE_directord"),
            ])
            .arg("--config")
            .arg(self.config())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start directord");
        self.child = Some(child);
        wait("control socket", || {
            UnixStream::connect(self.socket()).is_ok()
        });
        wait("active with the table applied", || {
            let s = self.status();
            s["role"] == "active" && !s["ipvs"]["last_apply"].is_null()
        });
    }

    /// SIGTERM, and wait for the exit.
    fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        let status = child.wait().expect("exits");
        assert!(status.success(), "exit {status:?}\n{}", self.log());
    }

    fn status(&self) -> Value {
        let mut s = UnixStream::connect(self.socket()).expect("connect");
        s.set_read_timeout(Some(LIMIT)).expect("timeout");
        s.write_all(b"{\"command\":\"status\"}\n").expect("write");
        let mut answer = String::new();
        BufReader::new(s).read_line(&mut answer).expect("read");
        let r: Value = serde_json::from_str(&answer).expect("JSON");
        assert_eq!(r["ok"], true, "{r}");
        r["status"].clone()
    }

    fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_command(args).output().expect("directorctl")
    }

    fn ctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_directorctl"));
        cmd.arg("--socket").arg(self.socket()).args(args);
        cmd
    }

    /// `directorctl ARGS`, which must succeed; its stdout.
    fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "directorctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ipvsadm(&self, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", &self.director, "ipvsadm"];
        all.extend_from_slice(args);
        String::from_utf8_lossy(&run("ip", &all).stdout).into_owned()
    }

    /// The director's table as `ipvsadm -Sn` saves it, one rule a line.
    fn saved(&self) -> BTreeSet<String> {
        self.ipvsadm(&["-Sn"]).lines().map(str::to_owned).collect()
    }

    /// A TCP connection from the client to the VIP, echo checked.
    fn connect(&self) -> TcpStream {
        let mut stream = in_ns(&self.client, || {
            TcpStream::connect_timeout(&"198.51.100.10:80".parse().expect("addr"), LIMIT)
                .expect("connect to the VIP")
        });
        stream.set_read_timeout(Some(LIMIT)).expect("timeout");
        round_trip(&mut stream, b"hello\n");
        stream
    }

    /// The status entry of a real server.
    fn real(&self, service: &str, address: &str) -> Value {
        let s = self.status();
        s["ipvs"]["services"]
            .as_array()
            .and_then(|v| v.iter().find(|x| x["name"] == service))
            .and_then(|x| x["reals"].as_array())
            .and_then(|v| v.iter().find(|x| x["address"] == address))
            .cloned()
            .unwrap_or_else(|| panic!("no {service} {address} in {s}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if thread::panicking() {
            eprintln!("--- directord log ---\n{}", self.log());
        }
        for ns in [&self.director, &self.client, &self.reals] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn echo(mut stream: TcpStream) {
    let mut buf = [0; 256];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 || stream.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

fn round_trip(stream: &mut TcpStream, data: &[u8]) {
    stream.write_all(data).expect("send");
    let mut back = vec![0; data.len()];
    stream.read_exact(&mut back).expect("echo");
    assert_eq!(back, data);
}

/// One line removed, one added: what changed between two saved tables.
fn diff(before: &BTreeSet<String>, after: &BTreeSet<String>) -> (Vec<String>, Vec<String>) {
    (
        before.difference(after).cloned().collect(),
        after.difference(before).cloned().collect(),
    )
}

#[test]
#[ignore = "runs inside the IPVS VM, started by directord_ipvs_in_vm"]
fn vm_table_reload_drain_restart() {
    let mut lab = Lab::new("a");
    lab.write_config(CONFIG);
    lab.start();
    let mut want = lines(&TABLE);
    want.extend(lines(&FOREIGN));
    assert_eq!(
        lab.saved(),
        want,
        "the table is the config (plus the foreign service)"
    );
    let listed = lab.ipvsadm(&["-Ln"]);
    assert!(
        listed.contains("FWM  7 mh (mh-fallback,mh-port) persistent 300 mask 255.255.255.0"),
        "{listed}"
    );
    let s = lab.status();
    assert_eq!(s["ipvs"]["state"], "ok", "{s}");
    assert_eq!(s["ipvs"]["failures"], Value::Array(vec![]), "{s}");
    // Active: the sync daemon runs as master, with the VRRP router id.
    wait("master sync daemon", || {
        lab.ipvsadm(&["-L", "--daemon"])
            .contains("master sync daemon (mcast=eth0, syncid=7")
    });
    let table = lab.ctl_ok(&["status"]);
    assert!(
        table.contains("service     www TCP 198.51.100.10:80 wrr")
            && table.contains("-> 10.0.1.12:8080 nat weight 50/50"),
        "{table}"
    );

    // A changed weight: one kernel change, one line of the table.
    let before = lab.saved();
    lab.write_config(&CONFIG.replace("weight = 50", "weight = 60"));
    let out = lab.ctl_ok(&["reload"]);
    assert!(out.contains("IPVS: 1 change"), "{out}");
    assert_eq!(
        diff(&before, &lab.saved()),
        (
            vec!["-a -t 198.51.100.10:80 -r 10.0.1.12:8080 -m -w 50".to_string()],
            vec!["-a -t 198.51.100.10:80 -r 10.0.1.12:8080 -m -w 60".to_string()]
        )
    );
    // The same file again: nothing to do.
    let out = lab.ctl_ok(&["reload"]);
    assert!(out.contains("IPVS table unchanged"), "{out}");

    // An invalid file changes nothing, and says where it is wrong.
    let before = lab.saved();
    lab.write_config(&CONFIG.replace("weight = 50", "weight = 70\nwieght = 1"));
    let out = lab.ctl(&["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:", lab.config().display())) && err.contains("wieght"),
        "{err}"
    );
    assert_eq!(lab.saved(), before);
    lab.write_config(&CONFIG.replace("weight = 50", "weight = 60"));

    // Drain the real server that holds a live connection: weight 0, and the
    // waiting directorctl returns once the connection ends.
    let mut conn = lab.connect();
    let busy = ["10.0.1.11:8080", "10.0.1.12:8080"]
        .into_iter()
        .find(|r| lab.real("www", r)["active_connections"] == 1)
        .expect("one real server has the connection");
    let out = lab.ctl_ok(&["drain", "www", busy, "--no-wait"]);
    assert!(
        out.contains(&format!("www {busy}: drained, weight 0"))
            && out.contains("1 active connection(s)"),
        "{out}"
    );
    assert!(
        lab.saved()
            .iter()
            .any(|l| l.ends_with(&format!("-r {busy} -m -w 0"))),
        "{:?}",
        lab.saved()
    );
    let mut waiting = lab
        .ctl_command(&["drain", "www", busy])
        .stdout(Stdio::piped())
        .spawn()
        .expect("directorctl drain");
    thread::sleep(Duration::from_secs(1));
    assert!(
        waiting.try_wait().expect("poll").is_none(),
        "drain must wait while a connection is active"
    );
    round_trip(&mut conn, b"still served while draining\n");
    drop(conn);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = waiting.try_wait().expect("poll") {
            break status;
        }
        assert!(start.elapsed() < LIMIT, "drain did not finish");
        thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    waiting
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    assert!(status.success(), "{out}");
    assert!(out.contains("no active connection"), "{out}");

    // The drain survives a reload (here one that changes another weight).
    lab.write_config(&CONFIG.replace("weight = 2", "weight = 3"));
    let out = lab.ctl_ok(&["reload"]);
    // Weights 60→50 (unless that real server is the drained one) and 2→3.
    let changes = if busy == "10.0.1.12:8080" {
        "IPVS: 1 change"
    } else {
        "IPVS: 2 changes"
    };
    assert!(out.contains(changes), "{out}");
    let real = lab.real("www", busy);
    assert_eq!(
        (real["drained"].clone(), real["weight"].clone()),
        (Value::Bool(true), 0.into())
    );
    lab.write_config(CONFIG);
    assert!(lab.ctl_ok(&["reload"]).contains("IPVS: 1 change"));

    // Enable: the configured weight again, and the table is the config again.
    let out = lab.ctl_ok(&["enable", "www", busy]);
    assert!(out.contains("enabled"), "{out}");
    assert_eq!(lab.saved(), want);

    // A restart keeps the table and its connections: no flush at stop, none at
    // start, no change at all when the table is already right.
    let mut conn = lab.connect();
    wait("the service's counters", || {
        lab.status()["ipvs"]["services"][0]["stats"]["connections"]
            .as_u64()
            .is_some_and(|n| n >= 2)
    });
    let connections = lab.status()["ipvs"]["services"][0]["stats"]["connections"].clone();
    lab.stop();
    assert_eq!(lab.saved(), want, "stopping directord leaves the table");
    assert!(
        lab.ipvsadm(&["-L", "--daemon"])
            .contains("backup sync daemon"),
        "a stopped director is no longer active: backup"
    );
    lab.start();
    assert_eq!(lab.saved(), want, "restarting directord keeps the table");
    let s = lab.status();
    assert_eq!(s["ipvs"]["last_apply"]["changes"], 0, "{s}");
    assert!(
        s["ipvs"]["services"][0]["stats"]["connections"].as_u64() >= connections.as_u64(),
        "the service was not re-created: {connections} before, {s}"
    );
    round_trip(&mut conn, b"the connection outlived the restart\n");
    drop(conn);

    // A service taken out of the config leaves the kernel; the foreign stays.
    let www_only = CONFIG
        .split("\n[[service]]\nname = \"sip\"")
        .next()
        .expect("split")
        .to_string();
    lab.write_config(&www_only);
    let out = lab.ctl_ok(&["reload"]);
    assert!(out.contains("IPVS: 1 change"), "one removal: {out}");
    let mut want = lines(&TABLE[..3]);
    want.extend(lines(&FOREIGN));
    assert_eq!(lab.saved(), want);
    lab.stop();
    assert_eq!(lab.saved(), want);
}

#[test]
#[ignore = "runs inside the IPVS VM, started by directord_ipvs_in_vm"]
fn vm_kernel_refusal_and_sync_daemon_roles() {
    let mut lab = Lab::new("b");
    // Adverts every second: alone, a node put on standby takes over again when
    // its master-down timer fires (about 3 s), time enough to see its backup
    // sync daemon.
    let config = CONFIG.replace("advert_interval = \"50ms\"", "advert_interval = \"1s\"");
    // Linux 6.1 has no `twos` scheduler (it came with 6.3).
    let tls = "\n[[service]]\nname = \"tls\"\naddress = \"198.51.100.10:443\"\nscheduler = \"twos\"\nforward = \"nat\"\n\n[[service.real]]\naddress = \"10.0.1.11:8443\"\n";
    lab.write_config(&format!("{config}{tls}"));
    lab.start();
    let s = lab.status();
    let failures = s["ipvs"]["failures"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(failures.len(), 1, "{s}");
    assert_eq!(failures[0]["service"], "tls");
    assert_eq!(failures[0]["field"], "scheduler");
    assert!(
        failures[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("no such scheduler")),
        "{s}"
    );
    // The other services applied.
    let mut want = lines(&TABLE);
    want.extend(lines(&FOREIGN));
    assert_eq!(lab.saved(), want);
    let table = lab.ctl_ok(&["status"]);
    assert!(
        table.contains("tls TCP 198.51.100.10:443 twos (NOT IN THE KERNEL)")
            && table.contains("refused     tls: scheduler: cannot add IPVS service"),
        "{table}"
    );

    // A reload that changes a weight and still asks for twos: the weight is
    // applied, the refusal reported (and the exit status says so).
    lab.write_config(&format!(
        "{}{tls}",
        config.replace("weight = 50", "weight = 40")
    ));
    let out = lab.ctl(&["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("IPVS: 1 change; 1 refused by the kernel (the rest applied)")
            && err
                .contains("service tls: scheduler: cannot add IPVS service TCP 198.51.100.10:443"),
        "{err}"
    );
    assert!(
        lab.saved()
            .contains("-a -t 198.51.100.10:80 -r 10.0.1.12:8080 -m -w 40")
    );

    // With a scheduler the kernel has, it applies and the refusal clears.
    lab.write_config(&format!("{config}{}", tls.replace("twos", "rr")));
    let out = lab.ctl_ok(&["reload"]);
    assert!(
        out.contains("IPVS: 3 changes"),
        "weight back, service, real: {out}"
    );
    assert_eq!(lab.status()["ipvs"]["failures"], Value::Array(vec![]));
    assert!(lab.saved().contains("-A -t 198.51.100.10:443 -s rr"));

    // The sync daemon follows the role: backup on the standby, master again
    // after a takeover.
    lab.ctl_ok(&["standby"]);
    wait("backup sync daemon only", || {
        let d = lab.ipvsadm(&["-L", "--daemon"]);
        d.contains("backup sync daemon (mcast=eth0, syncid=7") && !d.contains("master")
    });
    // A standby keeps the whole table.
    assert!(lab.saved().contains("-A -t 198.51.100.10:80 -s wrr"));
    lab.ctl_ok(&["takeover"]);
    wait("master sync daemon only", || {
        let d = lab.ipvsadm(&["-L", "--daemon"]);
        d.contains("master sync daemon (mcast=eth0, syncid=7") && !d.contains("backup")
    });
    let s = lab.status();
    assert_eq!(s["ipvs"]["sync"]["role"], "master", "{s}");
    assert_eq!(
        s["ipvs"]["sync"]["running"],
        serde_json::json!(["master"]),
        "{s}"
    );
}
