//! Real daemons from Debian packages, started by a test and stopped when it ends:
//! the program, the system user it runs as, a loopback port for it, readiness
//! probes, and the child process itself.

use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The program, or a failure naming the Debian package that provides it.
pub fn program(path: &str, package: &str) -> PathBuf {
    let path = PathBuf::from(path);
    assert!(
        path.exists(),
        "{} is missing: install the Debian package `{package}` (apt-get install {package})",
        path.display()
    );
    path
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// True, after saying why, when the test cannot run without root: `why` names what
/// needs it.
pub fn skip_unless_root(why: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("skipped: needs root ({why})");
    true
}

/// Runs a set-up tool (say, one that creates the daemon's database) to completion;
/// unless it succeeds, fails with what it printed and `context` (say, the
/// daemon's log).
pub fn run_tool(cmd: &mut Command, context: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}{context}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The uid and gid of the system user `name`, or a failure naming the Debian
/// package that creates it.
pub fn user(name: &str, package: &str) -> (u32, u32) {
    let user = nix::unistd::User::from_name(name)
        .unwrap_or_else(|e| panic!("look up the {name} user: {e}"))
        .unwrap_or_else(|| panic!("no {name} user: install the Debian package `{package}`"));
    (user.uid.as_raw(), user.gid.as_raw())
}

pub fn chown(path: &Path, (uid, gid): (u32, u32)) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A loopback port free for both TCP and UDP at the time of the call.
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a TCP port");
        let port = tcp.local_addr().expect("local address").port();
        if UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

pub fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Whether `addr` accepts a TCP connection (readiness probe).
pub fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect(addr).is_ok()
}

/// Whether `addr` accepts and its first bytes are `prefix` (readiness probe).
pub fn greets(addr: SocketAddr, prefix: &[u8]) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = vec![0u8; prefix.len()];
    stream.read_exact(&mut buf).is_ok() && buf == prefix
}

/// A daemon running in the foreground as our child, in its own process group; the
/// group gets SIGTERM (then SIGKILL) on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `cmd` with stdout and stderr to `log`.
    pub fn start(mut cmd: Command, log: &Path) -> Daemon {
        let out = File::create(log).expect("create the daemon log");
        let err = out.try_clone().expect("clone the log handle");
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Daemon {
            child,
            log: log.to_owned(),
        }
    }

    /// Polls `ready` until it holds; fails with the daemon's log if the daemon exits
    /// or 10 s pass.
    pub fn wait_until(&mut self, what: &str, mut ready: impl FnMut() -> bool) {
        let start = Instant::now();
        while !ready() {
            if let Some(status) = self.child.try_wait().expect("wait for the daemon") {
                panic!(
                    "{what} exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{what} not ready after 10 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let group = -(self.child.id() as i32);
        // SAFETY: kill has no memory-safety preconditions; the group is our child's.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}
