//! A throw-away network namespace with a veth pair, for vipmgr's privileged tests.
//!
//! `unshare(CLONE_NEWNET)` moves only the calling thread, so each test runs its
//! body on a thread of its own, which it puts in a fresh namespace; `ip`
//! commands spawned from that thread inherit it. The namespace disappears with
//! its last socket and thread. Tests can therefore run in parallel.

#![allow(dead_code)] // each test binary uses a different part

use std::{
    os::fd::{AsRawFd, OwnedFd},
    panic,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use nix::{
    sched::{CloneFlags, unshare},
    sys::socket::{AddressFamily, LinkAddr, SockFlag, SockProtocol, SockType, recvfrom, socket},
    unistd::Uid,
};

/// The two ends of the veth pair, and their MACs.
pub const DIRECTOR_IF: &str = "va";
pub const DIRECTOR_MAC: &str = "02:00:5e:00:53:01";
pub const PEER_IF: &str = "vb";
pub const PEER_MAC: &str = "02:00:5e:00:53:02";

/// Runs `body` on a new thread inside a new network namespace that holds `lo`
/// and the veth pair `va` <-> `vb`, all up. Returns `None`, after saying so,
/// when the test cannot run here (not root); a panic in `body` fails the test.
pub fn in_netns<T, F>(test: &str, body: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    if !Uid::effective().is_root() {
        eprintln!("{test}: skipped: needs root (network namespaces, raw sockets)");
        return None;
    }
    let handle = thread::Builder::new()
        .name(format!("netns-{test}"))
        .spawn(move || {
            unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET) as root");
            ip(&["link", "set", "lo", "up"]);
            ip(&[
                "link",
                "add",
                DIRECTOR_IF,
                "address",
                DIRECTOR_MAC,
                "type",
                "veth",
                "peer",
                "name",
                PEER_IF,
                "address",
                PEER_MAC,
            ]);
            // No DAD on the link-local addresses, no router solicitations: less noise.
            for ifname in [DIRECTOR_IF, PEER_IF] {
                sysctl(&format!("net.ipv6.conf.{ifname}.accept_dad"), "0");
                sysctl(&format!("net.ipv6.conf.{ifname}.router_solicitations"), "0");
                ip(&["link", "set", ifname, "up"]);
            }
            body()
        })
        .expect("spawn the namespace thread");
    match handle.join() {
        Ok(value) => Some(value),
        Err(panic) => panic::resume_unwind(panic),
    }
}

/// Runs `ip ARGS` (in the calling thread's namespace) and returns its stdout;
/// panics with its stderr if it fails.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn sysctl(key: &str, value: &str) {
    let out = Command::new("sysctl")
        .args(["-qw", &format!("{key}={value}")])
        .output()
        .expect("run sysctl");
    assert!(
        out.status.success(),
        "sysctl {key}={value}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An AF_PACKET socket that sees every frame arriving on one interface.
#[derive(Debug)]
pub struct Capture {
    fd: OwnedFd,
    ifindex: usize,
}

impl Capture {
    /// Starts capturing on `ifname` (frames received there, not sent).
    pub fn start(ifname: &str) -> Self {
        let ifindex = nix::net::if_::if_nametoindex(ifname).expect("capture interface index");
        let fd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::EthAll,
        )
        .expect("AF_PACKET socket");
        socket2::SockRef::from(&fd)
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("SO_RCVTIMEO");
        Capture {
            fd,
            ifindex: ifindex as usize,
        }
    }

    /// Frames that arrived on the interface and that `keep` accepts, until
    /// `want` of them are in or `deadline` passes.
    pub fn frames<T>(
        &self,
        want: usize,
        deadline: Duration,
        mut keep: impl FnMut(&[u8]) -> Option<T>,
    ) -> Vec<T> {
        let end = Instant::now() + deadline;
        let mut kept = Vec::new();
        let mut buf = [0u8; 2048];
        while kept.len() < want && Instant::now() < end {
            let Ok((len, Some(from))) = recvfrom::<LinkAddr>(self.fd.as_raw_fd(), &mut buf) else {
                continue;
            };
            if from.ifindex() != self.ifindex || from.pkttype() == libc::PACKET_OUTGOING {
                continue;
            }
            if let Some(frame) = keep(&buf[..len]) {
                kept.push(frame);
            }
        }
        kept
    }
}
