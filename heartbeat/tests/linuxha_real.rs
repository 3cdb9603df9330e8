//! A directord heartbeat node ("dirtest") and a real Linux-HA heartbeat node
//! ("hbreal", Debian's `heartbeat` 3.0.6 package) form a pair over `ucast` with
//! sha1 keys, in two network namespaces.
//!
//! heartbeat reads its configuration from /etc/ha.d and keeps state in
//! /var/lib/heartbeat and /run/heartbeat, with no option to move them, so the test
//! starts it in a private mount namespace (`unshare -m`) where a temporary
//! directory is bind-mounted over /etc/ha.d and /var/lib/heartbeat and /run is a
//! fresh tmpfs; a private UTS namespace gives it the node name. `cl_status` runs in
//! the same namespaces (`nsenter`). The host's /etc/ha.d is never touched.
//!
//! Needs root and the package (`apt-get install heartbeat`); prints why it skipped
//! otherwise.

mod linuxha_lab;

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use heartbeat::linuxha::{AuthKeys, HbConfig, Medium, spawn};
use heartbeat::role::{FailoverHandle, Role};
use linuxha_lab::{ADDR, Lab, shutdown, skip_reason, wait_role, wait_status};

const HEARTBEAT: &str = "/usr/libexec/heartbeat/heartbeat";
const SECRET: &str = "interop-secret";
/// Both sides: keepalive 1 s, warntime 2 s, deadtime 4 s, initdead 8 s.
const DEADTIME: Duration = Duration::from_secs(4);
/// Timing slack on a loaded machine (heartbeat checks its timers every 100 ms or
/// so, and cl_status is polled).
const SLACK: Duration = Duration::from_millis(1500);

fn skip() -> bool {
    if let Some(why) = skip_reason() {
        println!("{why}");
        return true;
    }
    for tool in [
        HEARTBEAT,
        "/usr/bin/cl_status",
        "/usr/bin/unshare",
        "/usr/bin/nsenter",
    ] {
        if !Path::new(tool).exists() {
            println!("skipped: needs {tool} (apt-get install heartbeat util-linux)");
            return true;
        }
    }
    false
}

/// The real heartbeat, in namespace a of the lab, killed (-9, whole process group)
/// on drop.
struct RealHeartbeat {
    child: Child,
    dir: PathBuf,
    killed: bool,
}

impl RealHeartbeat {
    fn start(lab: &Lab) -> RealHeartbeat {
        let dir = lab.dir.join("ha");
        let etc = dir.join("etc");
        let lib = dir.join("lib");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&etc).expect("etc");
        fs::create_dir_all(&lib).expect("lib");
        // The package's scripts (harc, rc.d, resource.d, shellfuncs), then our files.
        linuxha_lab::run(&["cp", "-a", "/etc/ha.d/.", &etc.display().to_string()]);
        linuxha_lab::run(&[
            "cp",
            "-a",
            "/var/lib/heartbeat/.",
            &lib.display().to_string(),
        ]);
        fs::write(
            etc.join("ha.cf"),
            format!(
                "logfile {log}\ndebugfile {debug}\nuse_logd no\nrealtime off\ncoredumps false\n\
                 udpport 694\nkeepalive 1\nwarntime 2\ndeadtime 4\ninitdead 8\n\
                 ucast {iface} {peer}\nauto_failback on\nnode hbreal\nnode dirtest\ncrm no\n",
                log = dir.join("ha-log").display(),
                debug = dir.join("ha-debug").display(),
                iface = lab.ifname[0][0],
                peer = ADDR[0][1],
            ),
        )
        .expect("ha.cf");
        let authkeys = etc.join("authkeys");
        fs::write(&authkeys, format!("auth 1\n1 sha1 {SECRET}\n")).expect("authkeys");
        fs::set_permissions(&authkeys, fs::Permissions::from_mode(0o600)).expect("chmod");
        fs::write(etc.join("haresources"), "hbreal Delay::1::0\n").expect("haresources");
        let script = format!(
            "set -e\n\
             hostname hbreal\n\
             mount --bind {etc} /etc/ha.d\n\
             mount --bind {lib} /var/lib/heartbeat\n\
             mount -t tmpfs tmpfs /run\n\
             mkdir -p /run/heartbeat/ccm /run/heartbeat/crm /run/heartbeat/dopd /run/crm\n\
             chown -R hacluster:haclient /run/heartbeat /run/crm\n\
             chmod -R 750 /run/heartbeat /run/crm\n\
             exec {HEARTBEAT} -f\n",
            etc = etc.display(),
            lib = lib.display(),
        );
        let out = fs::File::create(dir.join("stdout")).expect("stdout");
        let err = out.try_clone().expect("stderr");
        let child = Process::new("nsenter")
            .arg(format!("--net={}", lab.netns_path(0).display()))
            .args([
                "unshare",
                "-m",
                "-u",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
            ])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .expect("start heartbeat");
        RealHeartbeat {
            child,
            dir,
            killed: false,
        }
    }

    /// `cl_status ARGS` in heartbeat's namespaces: (exit code, output).
    fn cl_status(&self, args: &[&str]) -> (i32, String) {
        let out = Process::new("nsenter")
            .args([
                "-t",
                &self.child.id().to_string(),
                "-m",
                "-u",
                "-n",
                "cl_status",
            ])
            .args(args)
            .output()
            .expect("cl_status");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        )
    }

    /// Polls `cl_status nodestatus dirtest` until it says `want`.
    async fn wait_node_status(&self, want: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let (_, status) = self.cl_status(&["nodestatus", "dirtest"]);
            if status == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "heartbeat still says dirtest is {status:?}, not {want:?}, after {timeout:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("ha-log")).unwrap_or_default()
            + &fs::read_to_string(self.dir.join("stdout")).unwrap_or_default()
    }

    /// kill -9 of every heartbeat process: the master control process, its
    /// children (readers, writers) and whatever resource scripts it started (some
    /// leave its process group), found by heartbeat's private mount namespace.
    fn kill(&mut self) {
        if self.killed {
            return;
        }
        self.killed = true;
        let ns = |pid: &str| fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
        // Never our own mount namespace (if heartbeat failed to make its own).
        let ours = ns(&self.child.id().to_string()).filter(|n| Some(n) != ns("self").as_ref());
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let (Some(ours), Ok(procs)) = (ours, fs::read_dir("/proc")) {
            for entry in procs.flatten() {
                let name = entry.file_name();
                let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
                    continue;
                };
                if ns(&pid.to_string()).as_ref() == Some(&ours) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = self.child.wait();
    }
}

impl Drop for RealHeartbeat {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the directord node needs, as one string (for a helper process).
fn spec(lab: &Lab) -> String {
    let key_file = lab.dir.join("authkeys-sha1");
    if !key_file.exists() {
        fs::write(&key_file, format!("auth 1\n1 sha1 {SECRET}\n")).expect("authkeys");
        fs::set_permissions(&key_file, fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    [
        lab.netns_path(1).display().to_string(),
        lab.ifname[0][1].clone(),
        lab.state_dir(1).display().to_string(),
        key_file.display().to_string(),
    ]
    .join("|")
}

fn config_from_spec(spec: &str) -> HbConfig {
    let parts: Vec<&str> = spec.split('|').collect();
    let [netns, iface, state_dir, key_file] = parts[..] else {
        panic!("bad spec {spec:?}");
    };
    let mut c = HbConfig::new(
        "dirtest",
        "hbreal",
        vec![Medium::Unicast {
            peer: IpAddr::V4(ADDR[0][0]),
            interface: iface.to_owned(),
        }],
        AuthKeys::load(Path::new(key_file)).expect("authkeys"),
    );
    // heartbeat's haresources names hbreal first: it should hold the VIPs.
    c.preferred = Some("hbreal".into());
    c.auto_failback = true;
    c.keepalive = Duration::from_secs(1);
    c.warntime = Duration::from_secs(2);
    c.deadtime = DEADTIME;
    c.initdead = Duration::from_secs(8);
    c.state_dir = PathBuf::from(state_dir);
    c.netns = Some(PathBuf::from(netns));
    c
}

/// Waits until directord hears heartbeat (link up, heard recently).
async fn wait_hears_hbreal(node: &FailoverHandle) {
    wait_status(node, "dirtest hears hbreal", Duration::from_secs(10), |s| {
        s.links[0].up
            && s.peer
                .as_ref()
                .is_some_and(|p| p.address == IpAddr::V4(ADDR[0][0]))
    })
    .await;
}

/// Each side sees the other alive; each notices the other's death within its dead
/// time: directord killed -9 (heartbeat marks it dead), directord stopped cleanly
/// (heartbeat marks it dead at once), heartbeat killed -9 (directord takes over).
#[tokio::test]
async fn pair_with_linux_ha_heartbeat() {
    if skip() {
        return;
    }
    let lab = Lab::new();
    let mut hb = RealHeartbeat::start(&lab);

    // 1. directord in a process of its own, seen alive by both.
    let mut helper = start_helper(&spec(&lab));
    hb.wait_node_status("active", Duration::from_secs(15)).await;
    let (rc, hbstatus) = hb.cl_status(&["hbstatus"]);
    assert_eq!(rc, 0, "{hbstatus}");
    let (_, nodes) = hb.cl_status(&["listnodes"]);
    assert!(nodes.lines().any(|l| l == "dirtest"), "{nodes}");
    let (_, link) = hb.cl_status(&["hblinkstatus", "dirtest", &lab.ifname[0][0]]);
    assert_eq!(link, "up");

    // 2. kill -9 of directord: heartbeat notices within its dead time.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed = Instant::now();
    helper.kill();
    hb.wait_node_status("dead", DEADTIME + SLACK * 2).await;
    let took = killed.elapsed();
    assert!(took <= DEADTIME + SLACK, "heartbeat noticed after {took:?}");

    // 3. directord again (a new generation): alive on both sides; standby, since
    // hbreal is the preferred node.
    let mut node = spawn(config_from_spec(&spec(&lab))).expect("spawn");
    wait_hears_hbreal(&node).await;
    hb.wait_node_status("active", Duration::from_secs(10)).await;
    let s = wait_role(&node, Role::Standby, Duration::from_secs(5)).await;
    assert!(s.counters.invalid.is_empty(), "{:?}", s.counters);
    assert!(s.counters.adverts_received >= 1);
    let peer = s.peer.expect("peer");
    assert_eq!(peer.address, IpAddr::V4(ADDR[0][0]));

    // 4. Clean stop: heartbeat takes the shutdown notice at once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stopped = Instant::now();
    shutdown(&mut node);
    let took = hb.wait_node_status("dead", DEADTIME + SLACK).await;
    assert!(
        took <= SLACK,
        "heartbeat noticed the clean stop after {took:?}:\n{}",
        hb.log()
    );
    assert!(stopped.elapsed() < DEADTIME);
    assert!(
        hb.log().contains("Received shutdown notice from 'dirtest'"),
        "{}",
        hb.log()
    );

    // 5. directord once more; then kill -9 of heartbeat: directord takes over
    // within its dead time.
    let mut node = spawn(config_from_spec(&spec(&lab))).expect("spawn");
    wait_hears_hbreal(&node).await;
    hb.wait_node_status("active", Duration::from_secs(10)).await;
    wait_role(&node, Role::Standby, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let last_heard = Instant::now();
    hb.kill();
    let s = wait_role(&node, Role::Active, DEADTIME + SLACK * 2).await;
    let took = last_heard.elapsed();
    assert!(took <= DEADTIME + SLACK, "directord noticed after {took:?}");
    let reason = s.last_transition.expect("transition").reason;
    assert!(reason.starts_with("peer hbreal dead"), "{reason}");
    assert!(s.counters.invalid.is_empty(), "{:?}", s.counters);

    // heartbeat never complained about our messages.
    let log = hb.log();
    for complaint in [
        "failed authentication",
        "Bad/invalid auth",
        "bad node",
        "NV failure",
    ] {
        assert!(
            !log.contains(complaint),
            "heartbeat said {complaint:?}:\n{log}"
        );
    }
    shutdown(&mut node);
}

/// directord in a process of its own, killed (-9) on drop.
struct Helper(Child);

impl Helper {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.kill();
    }
}

fn start_helper(spec: &str) -> Helper {
    let child = Process::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "helper_dirtest_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, spec)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start helper");
    Helper(child)
}

const HELPER_ENV: &str = "LINUXHA_HELPER_DIRTEST";

/// Not a test of its own: the directord node `pair_with_linux_ha_heartbeat` runs
/// in a process of its own, to kill it -9. Without it, it returns at once.
#[test]
fn helper_dirtest_process() {
    let Ok(spec) = std::env::var(HELPER_ENV) else {
        return;
    };
    let _handle = spawn(config_from_spec(&spec)).expect("spawn helper node");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}
