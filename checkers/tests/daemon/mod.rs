//! Real daemons from Debian packages, started by a test and stopped when it ends.

#![allow(dead_code)] // each test target uses its own part

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use checkers::spec::{Check, Connect, Health, Protocol};

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

/// A check with the protocol's options and a timeout; no retries.
pub fn check(protocol: Protocol, timeout: Duration) -> Check {
    Check {
        interval: Duration::from_secs(1),
        timeout,
        rise: 1,
        fall: 1,
        retry: 0,
        retry_delay: Duration::ZERO,
        initial: Health::Down,
        connect: Connect::default(),
        protocol,
    }
}

pub fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}
