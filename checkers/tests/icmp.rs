//! The ping check against the kernel's own echo replies, and in a pair of network
//! namespaces: one checks, the other answers, drops (blackhole) or refuses
//! (unreachable routes, which make it send ICMP errors). Needs root; prints why it
//! skipped otherwise.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use checkers::spec::Protocol;
use checkers::{Error, Probe, Verdict};
use support::check::check;
use support::daemon::is_root;

const TIMEOUT: Duration = Duration::from_millis(300);

fn skip_reason(needs_ip: bool) -> Option<&'static str> {
    if !is_root() {
        return Some("skipped: needs root (raw ICMP sockets, network namespaces)");
    }
    if needs_ip
        && !Command::new("ip")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    {
        return Some("skipped: needs the `ip` command (iproute2)");
    }
    None
}

fn probe(bind: Option<IpAddr>) -> Probe {
    let mut check = check(Protocol::Ping, TIMEOUT);
    check.connect.bind = bind;
    Probe::new(check).expect("prepare")
}

async fn ping(ip: &str) -> Result<Verdict, Error> {
    let ip: IpAddr = ip.parse().expect("ip");
    probe(None).run(SocketAddr::new(ip, 0)).await
}

#[tokio::test]
async fn loopback_answers_v4_and_v6() {
    if let Some(why) = skip_reason(false) {
        println!("{why}");
        return;
    }
    assert_eq!(ping("127.0.0.1").await.expect("ping"), Verdict::Up);
    assert_eq!(ping("::1").await.expect("ping"), Verdict::Up);
    // The real server's port plays no part.
    let p = probe(None);
    assert_eq!(
        p.run("127.0.0.1:80".parse().expect("addr"))
            .await
            .expect("ping"),
        Verdict::Up
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pings_at_once_each_get_their_own_reply() {
    if let Some(why) = skip_reason(false) {
        println!("{why}");
        return;
    }
    let p = std::sync::Arc::new(probe(None));
    let mut tasks = Vec::new();
    for i in 0..300u32 {
        let p = std::sync::Arc::clone(&p);
        let ip: IpAddr = if i % 2 == 0 {
            [127, 0, 0, 1 + (i % 200) as u8].into()
        } else {
            "::1".parse().expect("ip")
        };
        tasks.push(tokio::spawn(
            async move { p.run(SocketAddr::new(ip, 0)).await },
        ));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task").expect("ping"), Verdict::Up);
    }
}

#[tokio::test]
async fn the_bind_address_is_used_and_must_be_ours() {
    if let Some(why) = skip_reason(false) {
        println!("{why}");
        return;
    }
    let real: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let bound = probe(Some([127, 0, 0, 1].into()));
    assert_eq!(bound.run(real).await.expect("ping"), Verdict::Up);
    let bound = probe(Some("::1".parse().expect("ip")));
    assert_eq!(
        bound
            .run("[::1]:0".parse().expect("addr"))
            .await
            .expect("ping"),
        Verdict::Up
    );
    match probe(Some([192, 0, 2, 77].into())).run(real).await {
        Err(Error::Socket { target, source }) => {
            assert_eq!(target, real);
            assert_eq!(source.raw_os_error(), Some(libc::EADDRNOTAVAIL));
        }
        other => panic!("expected a socket error, got {other:?}"),
    }
}

/// Namespaces `a` (the checker) and `b` (the network), joined by a veth pair:
/// a 10.99.0.1 / fd99::1, b 10.99.0.2 / fd99::2. Through b, 203.0.113.0/24 and
/// 2001:db8:99::/64 are unreachable (b answers with ICMP errors) and
/// 198.51.100.0/24 and 2001:db8:98::/64 are blackholed (silence).
struct Lab {
    ns: [String; 2],
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lab {
    fn new() -> Lab {
        let id = format!("ck{}", std::process::id());
        let lab = Lab {
            ns: [format!("{id}a"), format!("{id}b")],
        };
        let [a, b] = &lab.ns;
        for ns in &lab.ns {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            // No duplicate address detection: addresses usable at once.
            let sysctl = Command::new("ip")
                .args(["netns", "exec", ns, "sysctl", "-qw"])
                .args([
                    "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0",
                ])
                .status()
                .expect("sysctl");
            assert!(sysctl.success());
        }
        ip(&[
            "link", "add", a, "netns", a, "type", "veth", "peer", "name", b, "netns", b,
        ]);
        for (ns, v4, v6) in [
            (a, "10.99.0.1/24", "fd99::1/64"),
            (b, "10.99.0.2/24", "fd99::2/64"),
        ] {
            ip(&["-n", ns, "addr", "add", v4, "dev", ns]);
            ip(&["-n", ns, "addr", "add", v6, "dev", ns, "nodad"]);
            ip(&["-n", ns, "link", "set", ns, "up"]);
        }
        let sysctl = Command::new("ip")
            .args(["netns", "exec", b, "sysctl", "-qw"])
            .args([
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
                "net.ipv4.icmp_ratelimit=0",
                "net.ipv6.icmp.ratelimit=0",
            ])
            .status()
            .expect("sysctl");
        assert!(sysctl.success());
        ip(&["-n", b, "route", "add", "unreachable", "203.0.113.0/24"]);
        ip(&["-n", b, "route", "add", "blackhole", "198.51.100.0/24"]);
        ip(&[
            "-n",
            b,
            "-6",
            "route",
            "add",
            "unreachable",
            "2001:db8:99::/64",
        ]);
        ip(&[
            "-n",
            b,
            "-6",
            "route",
            "add",
            "blackhole",
            "2001:db8:98::/64",
        ]);
        for net in ["203.0.113.0/24", "198.51.100.0/24"] {
            ip(&["-n", a, "route", "add", net, "via", "10.99.0.2"]);
        }
        for net in ["2001:db8:99::/64", "2001:db8:98::/64"] {
            ip(&["-n", a, "-6", "route", "add", net, "via", "fd99::2"]);
        }
        lab
    }

    /// Pings each address from namespace `a`, all at once.
    fn ping_from_a(&self, targets: &[&str]) -> Vec<(Result<Verdict, Error>, Duration)> {
        let ns = format!("/run/netns/{}", self.ns[0]);
        let targets: Vec<IpAddr> = targets.iter().map(|t| t.parse().expect("ip")).collect();
        std::thread::spawn(move || {
            let file = std::fs::File::open(ns).expect("netns file");
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let p = probe(None);
                let runs = targets.iter().map(|ip| async {
                    let start = Instant::now();
                    let r = p.run(SocketAddr::new(*ip, 0)).await;
                    (r, start.elapsed())
                });
                let mut out = Vec::new();
                // Sequentially would take n × timeout; join them.
                for r in join_all(runs.collect()).await {
                    out.push(r);
                }
                out
            })
        })
        .join()
        .expect("lab thread")
    }
}

/// Runs futures concurrently (no futures crate here).
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futures.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
fn a_peer_answers_a_blackhole_is_silent_an_unreachable_route_says_so() {
    if let Some(why) = skip_reason(true) {
        println!("{why}");
        return;
    }
    let lab = Lab::new();
    // A fresh link loses the first IPv6 neighbour solicitation (the next is 1 s
    // later): the lab is ready once the peer answers both families.
    let start = Instant::now();
    while !lab
        .ping_from_a(&["10.99.0.2", "fd99::2"])
        .iter()
        .all(|(r, _)| matches!(r, Ok(Verdict::Up)))
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the lab's peer does not answer"
        );
    }
    let results = lab.ping_from_a(&[
        "10.99.0.2",
        "fd99::2",
        "198.51.100.5",
        "2001:db8:98::5",
        "203.0.113.5",
        "2001:db8:99::5",
    ]);
    let verdicts: Vec<_> = results
        .iter()
        .map(|(r, _)| r.as_ref().expect("no checker error").clone())
        .collect();
    assert_eq!(
        verdicts,
        [
            Verdict::Up,
            Verdict::Up,
            Verdict::Down("no echo reply from 198.51.100.5 within 300 ms".into()),
            Verdict::Down("no echo reply from 2001:db8:98::5 within 300 ms".into()),
            Verdict::Down(
                "destination unreachable (code 1, host unreachable) from 10.99.0.2".into()
            ),
            Verdict::Down(
                "destination unreachable (code 0, no route to destination) from fd99::2".into()
            ),
        ]
    );
    // Silence takes the whole timeout; an error comes back at once.
    assert!(results[2].1 >= TIMEOUT);
    assert!(results[4].1 < TIMEOUT);
}

/// As root, runs itself again as `nobody` (through setpriv), where the check must
/// say that it cannot open its socket rather than call the real server down.
#[test]
fn without_root_the_checker_cannot_open_its_socket_and_says_so() {
    const INNER: &str = "CHECKERS_TEST_UNPRIVILEGED";
    let name = "without_root_the_checker_cannot_open_its_socket_and_says_so";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if std::env::var_os(INNER).is_some() || !is_root() {
        match rt.block_on(ping("127.0.0.1")) {
            Err(Error::Socket { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied);
            }
            other => panic!("expected a socket error, got {other:?}"),
        }
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = match Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args(["--exact", name, "--nocapture"])
        .env(INNER, "1")
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            println!("skipped: needs setpriv (util-linux): {e}");
            return;
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("failed to execute") {
        println!("skipped: nobody cannot run {}: {stderr}", exe.display());
        return;
    }
    assert!(
        out.status.success(),
        "unprivileged run failed: {}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
}
