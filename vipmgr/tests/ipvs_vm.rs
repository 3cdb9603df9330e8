//! `vipmgr::ipvs` against a kernel that really has IPVS: the Debian kernel that
//! `tests/vm/ipvs-vm.sh` boots under qemu (this machine's own kernel may have none).
//!
//! `ipvs_in_vm` runs on the host with plain `cargo test`: it boots the VM once
//! and runs this same test binary inside it with `--ignored vm_`. The `vm_*`
//! tests are therefore `#[ignore]`d on the host and run in the VM, each in a
//! network namespace of its own (IPVS is per namespace), where they program
//! the table through `vipmgr::ipvs` and check it against `ipvsadm` and the
//! kernel's own dump.

mod common;

use std::{
    collections::BTreeSet,
    io,
    net::{SocketAddr, UdpSocket},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use common::{DIRECTOR_IF, PEER_IF, in_netns, ip};
use vipmgr::{
    Error,
    ipvs::{
        Change, Destination, Family, Forward, Ipvs, Persistence, Scheduler, SchedulerFlags,
        Service, ServiceKey, SyncDaemon, SyncRole, Timeouts, Tunnel, TunnelChecksum, TunnelType,
        VirtualService,
    },
};

#[test]
fn ipvs_in_vm() {
    directord_tests::vm::run_tests_inside("ipvs_in_vm", "vm_", 2, Duration::from_secs(600));
}

// ---------------------------------------------------------------------------
// Inside the VM
// ---------------------------------------------------------------------------

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("socket address")
}

/// Runs `ipvsadm ARGS` in the calling thread's namespace and returns its stdout.
fn ipvsadm(args: &[&str]) -> String {
    let out = Command::new("ipvsadm")
        .args(args)
        .output()
        .expect("run ipvsadm");
    assert!(
        out.status.success(),
        "ipvsadm {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The table as `ipvsadm -Sn` saves it, one rule a line, sorted.
fn saved() -> BTreeSet<String> {
    ipvsadm(&["-Sn"]).lines().map(str::to_owned).collect()
}

fn lines(expected: &[&str]) -> BTreeSet<String> {
    expected.iter().map(|l| (*l).to_owned()).collect()
}

/// The errno under a vipmgr error.
fn errno(err: &Error) -> Option<i32> {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            return io.raw_os_error();
        }
        source = cause.source();
    }
    None
}

fn persistent(timeout_secs: u32, prefix_len: u8) -> Option<Persistence> {
    Some(Persistence {
        timeout_secs,
        prefix_len,
    })
}

fn sample_services() -> Vec<Service> {
    let mut web = Service::new(
        ServiceKey::tcp(addr("192.0.2.100:80")),
        Scheduler::WeightedLeastConnection,
    );
    web.persistence = persistent(300, 24);
    let mut dns6 = Service::new(
        ServiceKey::udp(addr("[2001:db8::100]:53")),
        Scheduler::MaglevHash,
    );
    dns6.scheduler_flags = SchedulerFlags::MH_FALLBACK | SchedulerFlags::MH_PORT;
    dns6.persistence = persistent(600, 64);
    let mut diameter = Service::new(
        ServiceKey::sctp(addr("192.0.2.100:3868")),
        Scheduler::SourceHash,
    );
    diameter.scheduler_flags = SchedulerFlags::SH_PORT;
    let mut marked = Service::new(
        ServiceKey::fwmark(Family::Ipv4, 7),
        Scheduler::WeightedRoundRobin,
    );
    marked.persistence = persistent(300, 32);
    let marked6 = Service::new(
        ServiceKey::fwmark(Family::Ipv6, 8),
        Scheduler::LeastConnection,
    );
    let mut dns = Service::new(
        ServiceKey::udp(addr("192.0.2.100:53")),
        Scheduler::RoundRobin,
    );
    dns.one_packet = true;
    vec![web, dns6, diameter, marked, marked6, dns]
}

#[test]
#[ignore = "runs inside the IPVS VM, started by ipvs_in_vm"]
fn vm_services_add_edit_remove() {
    in_netns("vm_services_add_edit_remove", || {
        let mut ipvs = Ipvs::open().expect("IPVS family");
        let info = ipvs.info().expect("info");
        assert_eq!(info.version, (1, 2, 1));

        let services = sample_services();
        for service in &services {
            ipvs.add_service(service).expect("add service");
        }
        assert_eq!(
            saved(),
            lines(&[
                "-A -t 192.0.2.100:80 -s wlc -p 300 -M 255.255.255.0",
                "-A -u [2001:db8::100]:53 -s mh -p 600 -M 64 -b mh-fallback,mh-port",
                "-A --sctp-service 192.0.2.100:3868 -s sh -b sh-port",
                "-A -f 7 -s wrr -p 300",
                "-A -f 8 -6 -s lc",
                "-A -u 192.0.2.100:53 -s rr -o",
            ])
        );
        let listed = ipvsadm(&["-Ln"]);
        assert!(
            listed.contains(
                "UDP  [2001:db8::100]:53 mh (mh-fallback,mh-port) persistent 600 mask 64"
            ),
            "{listed}"
        );

        let mut dumped: Vec<Service> = ipvs
            .services()
            .expect("dump")
            .into_iter()
            .map(|e| e.service)
            .collect();
        dumped.sort_by_key(|s| s.key);
        let mut want = services.clone();
        want.sort_by_key(|s| s.key);
        assert_eq!(dumped, want);

        let got = ipvs
            .service(&services[1].key)
            .expect("get")
            .expect("exists");
        assert_eq!(got.service, services[1]);
        let missing = ServiceKey::tcp(addr("192.0.2.1:1"));
        assert_eq!(ipvs.service(&missing).expect("get missing"), None);

        // Edit: another scheduler, shorter persistence, per client.
        let mut edited = services[0].clone();
        edited.scheduler = Scheduler::RoundRobin;
        edited.persistence = persistent(60, 32);
        ipvs.edit_service(&edited).expect("edit");
        assert!(
            saved().contains("-A -t 192.0.2.100:80 -s rr -p 60"),
            "{:?}",
            saved()
        );
        // And back to no persistence at all.
        edited.persistence = None;
        ipvs.edit_service(&edited).expect("edit");
        assert!(
            saved().contains("-A -t 192.0.2.100:80 -s rr"),
            "{:?}",
            saved()
        );
        assert_eq!(
            ipvs.service(&edited.key)
                .expect("get")
                .expect("exists")
                .service,
            edited
        );

        // Refusals name the service and say what the errno means.
        let err = ipvs.add_service(&services[1]).expect_err("duplicate");
        assert!(matches!(err, Error::AddService { .. }), "{err:?}");
        assert_eq!(errno(&err), Some(libc::EEXIST));
        assert_eq!(
            err.to_string(),
            "cannot add IPVS service UDP [2001:db8::100]:53: the service already exists"
        );
        let err = ipvs.remove_service(&missing).expect_err("missing");
        assert_eq!(errno(&err), Some(libc::ESRCH));
        assert!(err.to_string().contains("TCP 192.0.2.1:1"), "{err}");

        ipvs.remove_service(&services[2].key).expect("remove");
        assert!(!saved().iter().any(|l| l.contains("3868")), "{:?}", saved());
        assert_eq!(ipvs.services().expect("dump").len(), services.len() - 1);
        ipvs.flush().expect("flush");
        assert!(saved().is_empty());
    });
}

#[test]
#[ignore = "runs inside the IPVS VM, started by ipvs_in_vm"]
fn vm_every_scheduler() {
    in_netns("vm_every_scheduler", || {
        let mut ipvs = Ipvs::open().expect("IPVS family");
        let schedulers = [
            Scheduler::RoundRobin,
            Scheduler::WeightedRoundRobin,
            Scheduler::LeastConnection,
            Scheduler::WeightedLeastConnection,
            Scheduler::LocalityLeastConnection,
            Scheduler::LocalityLeastConnectionReplication,
            Scheduler::DestinationHash,
            Scheduler::SourceHash,
            Scheduler::ShortestExpectedDelay,
            Scheduler::NeverQueue,
            Scheduler::WeightedFailover,
            Scheduler::WeightedOverflow,
            Scheduler::MaglevHash,
        ];
        for (port, scheduler) in (1000..).zip(&schedulers) {
            let svc = Service::new(
                ServiceKey::tcp(SocketAddr::new("192.0.2.100".parse().unwrap(), port)),
                scheduler.clone(),
            );
            ipvs.add_service(&svc)
                .unwrap_or_else(|e| panic!("{scheduler}: {e}"));
        }
        let dumped: BTreeSet<String> = ipvs
            .services()
            .expect("dump")
            .iter()
            .map(|e| e.service.scheduler.to_string())
            .collect();
        let want: BTreeSet<String> = schedulers.iter().map(|s| s.to_string()).collect();
        assert_eq!(dumped, want);

        // twos came with Linux 6.3; on 6.1 it is a refusal that says so.
        let twos = Service::new(
            ServiceKey::tcp(addr("192.0.2.100:2000")),
            Scheduler::TwoChoices,
        );
        match ipvs.add_service(&twos) {
            Ok(()) => {}
            Err(err) => {
                assert_eq!(errno(&err), Some(libc::ENOENT), "{err:?}");
                assert_eq!(
                    err.to_string(),
                    "cannot add IPVS service TCP 192.0.2.100:2000: \
                     no such scheduler or persistence engine in this kernel"
                );
            }
        }
        let bogus = Service::new(
            ServiceKey::tcp(addr("192.0.2.100:2001")),
            Scheduler::Other("nosuch".into()),
        );
        let err = ipvs.add_service(&bogus).expect_err("no such scheduler");
        assert_eq!(errno(&err), Some(libc::ENOENT));
    });
}

#[test]
#[ignore = "runs inside the IPVS VM, started by ipvs_in_vm"]
fn vm_destinations_nat_dr_tun() {
    in_netns("vm_destinations_nat_dr_tun", || {
        let mut ipvs = Ipvs::open().expect("IPVS family");
        let web = ServiceKey::tcp(addr("192.0.2.100:80"));
        ipvs.add_service(&Service::new(web, Scheduler::WeightedRoundRobin))
            .expect("add service");
        let tunnel = |kind, port, checksum| {
            Forward::Tunnel(Tunnel {
                kind,
                port,
                checksum,
            })
        };
        let dests = [
            Destination {
                upper_threshold: 1000,
                lower_threshold: 10,
                ..Destination::new(addr("10.0.1.11:8080"), Forward::Masquerade, 100)
            },
            Destination::new(addr("10.0.1.12:80"), Forward::Route, 0),
            Destination::new(addr("10.0.1.13:80"), Forward::Tunnel(Tunnel::IPIP), 2),
            Destination::new(
                addr("10.0.1.14:80"),
                tunnel(TunnelType::Gue, 6080, TunnelChecksum::Checksum),
                3,
            ),
            Destination::new(
                addr("10.0.1.15:80"),
                tunnel(TunnelType::Gre, 0, TunnelChecksum::None),
                4,
            ),
        ];
        for dest in &dests {
            ipvs.add_destination(&web, dest)
                .unwrap_or_else(|e| panic!("{}: {e}", dest.address));
        }
        assert_eq!(
            saved(),
            lines(&[
                "-A -t 192.0.2.100:80 -s wrr",
                "-a -t 192.0.2.100:80 -r 10.0.1.11:8080 -m -w 100",
                "-a -t 192.0.2.100:80 -r 10.0.1.12:80 -g -w 0",
                "-a -t 192.0.2.100:80 -r 10.0.1.13:80 -i -w 2 --tun-type ipip",
                "-a -t 192.0.2.100:80 -r 10.0.1.14:80 -i -w 3 --tun-type gue --tun-port 6080 --tun-csum",
                "-a -t 192.0.2.100:80 -r 10.0.1.15:80 -i -w 4 --tun-type gre --tun-nocsum",
            ])
        );
        let thresholds = ipvsadm(&["-Ln", "--thresholds"]);
        assert!(
            thresholds
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()
                    == ["->", "10.0.1.11:8080", "1000", "10", "0", "0"]),
            "{thresholds}"
        );

        let mut dumped: Vec<Destination> = ipvs
            .destinations(&web)
            .expect("dump")
            .into_iter()
            .map(|e| e.destination)
            .collect();
        dumped.sort_by_key(|d| d.address);
        assert_eq!(dumped, dests);

        // Drain a real server: weight 0, nothing else changes.
        let drained = Destination {
            weight: 0,
            ..dests[0]
        };
        ipvs.edit_destination(&web, &drained).expect("edit");
        assert!(
            saved().contains("-a -t 192.0.2.100:80 -r 10.0.1.11:8080 -m -w 0"),
            "{:?}",
            saved()
        );

        // Refusals.
        let err = ipvs
            .add_destination(&web, &dests[1])
            .expect_err("duplicate");
        assert_eq!(errno(&err), Some(libc::EEXIST));
        assert_eq!(
            err.to_string(),
            "cannot add real server 10.0.1.12:80 to IPVS service TCP 192.0.2.100:80: \
             the real server already exists"
        );
        let nowhere = ServiceKey::tcp(addr("192.0.2.100:81"));
        let err = ipvs
            .add_destination(&nowhere, &dests[1])
            .expect_err("no service");
        assert_eq!(errno(&err), Some(libc::ESRCH));
        let err = ipvs
            .edit_destination(
                &web,
                &Destination::new(addr("10.9.9.9:80"), Forward::Route, 1),
            )
            .expect_err("no such real server");
        assert_eq!(errno(&err), Some(libc::ENOENT));
        let upside_down = Destination {
            upper_threshold: 5,
            lower_threshold: 10,
            ..dests[1]
        };
        let err = ipvs
            .edit_destination(&web, &upside_down)
            .expect_err("invalid");
        assert!(
            matches!(
                err,
                Error::InvalidDestination {
                    field: "lower_threshold",
                    ..
                }
            ),
            "{err:?}"
        );

        ipvs.remove_destination(&web, dests[2].address)
            .expect("remove");
        assert!(!saved().iter().any(|l| l.contains("10.0.1.13")));
        assert_eq!(
            ipvs.destinations(&web).expect("dump").len(),
            dests.len() - 1
        );

        // IPv6 service, IPv6 masqueraded real server.
        let dns6 = ServiceKey::udp(addr("[2001:db8::100]:53"));
        ipvs.add_service(&Service::new(dns6, Scheduler::RoundRobin))
            .expect("add v6");
        let real6 = Destination::new(addr("[2001:db8::21]:53"), Forward::Masquerade, 5);
        ipvs.add_destination(&dns6, &real6).expect("add v6 real");
        assert!(
            saved().contains("-a -u [2001:db8::100]:53 -r [2001:db8::21]:53 -m -w 5"),
            "{:?}",
            saved()
        );
        let dumped = ipvs.destinations(&dns6).expect("dump v6");
        assert_eq!(dumped[0].destination, real6);
    });
}

#[test]
#[ignore = "runs inside the IPVS VM, started by ipvs_in_vm"]
fn vm_timeouts_and_sync_daemons() {
    in_netns("vm_timeouts_and_sync_daemons", || {
        let mut ipvs = Ipvs::open().expect("IPVS family");
        let defaults = ipvs.timeouts().expect("timeouts");
        assert_eq!(
            defaults,
            Timeouts {
                tcp: 900,
                tcp_fin: 120,
                udp: 300
            }
        );
        ipvs.set_timeouts(&Timeouts {
            tcp: 600,
            tcp_fin: 0, // unchanged
            udp: 200,
        })
        .expect("set timeouts");
        assert_eq!(
            ipvsadm(&["-L", "--timeout"]).trim(),
            "Timeout (tcp tcpfin udp): 600 120 200"
        );

        let master = SyncDaemon::new(SyncRole::Master, DIRECTOR_IF, 7);
        ipvs.start_sync_daemon(&master).expect("start master");
        let backup = SyncDaemon {
            group: Some("239.1.2.3".parse().unwrap()),
            port: Some(8850),
            ttl: Some(2),
            max_length: Some(1400),
            ..SyncDaemon::new(SyncRole::Backup, PEER_IF, 7)
        };
        ipvs.start_sync_daemon(&backup).expect("start backup");
        let listed = ipvsadm(&["-L", "--daemon"]);
        assert!(
            listed.contains("master sync daemon (mcast=va, syncid=7, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)"),
            "{listed}"
        );
        assert!(
            listed.contains("backup sync daemon (mcast=vb, syncid=7, maxlen=1400, group=239.1.2.3, port=8850, ttl=2)"),
            "{listed}"
        );
        let mut daemons = ipvs.sync_daemons().expect("list");
        daemons.sort_by_key(|d| d.role);
        assert_eq!(
            daemons,
            [
                SyncDaemon {
                    group: Some("224.0.0.81".parse().unwrap()),
                    port: Some(8848),
                    ttl: Some(1),
                    max_length: Some(1472),
                    ..master.clone()
                },
                backup.clone()
            ]
        );

        let err = ipvs
            .start_sync_daemon(&master)
            .expect_err("already running");
        assert_eq!(errno(&err), Some(libc::EEXIST), "{err:?}");
        let err = ipvs
            .start_sync_daemon(&SyncDaemon::new(SyncRole::Master, "nosuch0", 1))
            .expect_err("no such interface");
        assert!(err.to_string().contains("nosuch0"), "{err}");

        ipvs.stop_sync_daemon(SyncRole::Master)
            .expect("stop master");
        assert_eq!(ipvs.sync_daemons().expect("list"), [backup]);
        let err = ipvs
            .stop_sync_daemon(SyncRole::Master)
            .expect_err("not running");
        assert_eq!(errno(&err), Some(libc::ESRCH), "{err:?}");
        ipvs.stop_sync_daemon(SyncRole::Backup)
            .expect("stop backup");
        assert!(ipvs.sync_daemons().expect("list").is_empty());
    });
}

#[test]
#[ignore = "runs inside the IPVS VM, started by ipvs_in_vm"]
fn vm_counters_and_zero() {
    in_netns("vm_counters_and_zero", || {
        ip(&["addr", "add", "10.0.0.1/24", "dev", DIRECTOR_IF]);
        let mut ipvs = Ipvs::open().expect("IPVS family");
        let dns = ServiceKey::udp(addr("10.0.0.1:53"));
        ipvs.add_service(&Service::new(dns, Scheduler::RoundRobin))
            .expect("add");
        ipvs.add_destination(
            &dns,
            &Destination::new(addr("10.0.0.2:53"), Forward::Masquerade, 1),
        )
        .expect("add real");
        // Five datagrams from five sockets: five connections through IPVS
        // (locally sent packets go through its LOCAL_OUT hook).
        for i in 0..5 {
            let socket = UdpSocket::bind("10.0.0.1:0").expect("bind");
            socket
                .send_to(format!("query {i}").as_bytes(), "10.0.0.1:53")
                .expect("send");
        }
        // The kernel folds its per-CPU counters into what it reports every 2 s
        // (the rate estimator's tick), so the counts show up within that.
        let deadline = Instant::now() + Duration::from_secs(10);
        let entry = loop {
            let entry = ipvs.service(&dns).expect("get").expect("exists");
            if entry.stats.connections >= 5 || Instant::now() > deadline {
                break entry;
            }
            thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(entry.stats.connections, 5, "{:?}", entry.stats);
        assert_eq!(entry.stats.in_packets, 5);
        let dests = ipvs.destinations(&dns).expect("dests");
        assert_eq!(dests[0].stats.connections, 5);
        assert_eq!(dests[0].inactive_connections, 5);
        let stats = ipvsadm(&["-Ln", "--stats", "--exact"]);
        let row = stats
            .lines()
            .find(|l| l.starts_with("UDP  10.0.0.1:53"))
            .expect("service row");
        let fields: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            fields[2..5],
            ["5", "5", "0"],
            "conns, inpkts, outpkts: {row}"
        );
        assert_eq!(fields[5], entry.stats.in_bytes.to_string(), "{row}");

        ipvs.zero(Some(&dns)).expect("zero");
        let entry = ipvs.service(&dns).expect("get").expect("exists");
        assert_eq!(entry.stats.connections, 0);
        assert_eq!(entry.stats.in_bytes, 0);
        ipvs.zero(None).expect("zero all");
    });
}

#[test]
#[ignore = "runs inside the IPVS VM, started by ipvs_in_vm"]
fn vm_apply_a_batch() {
    in_netns("vm_apply_a_batch", || {
        let mut ipvs = Ipvs::open().expect("IPVS family");
        let mut changes = Vec::new();
        let mut keys = Vec::new();
        for n in 0..40u16 {
            let key = ServiceKey::tcp(SocketAddr::new(
                format!("10.1.{}.{}", n / 200, n % 200 + 1).parse().unwrap(),
                80,
            ));
            keys.push(key);
            changes.push(Change::AddService(Service::new(
                key,
                Scheduler::WeightedRoundRobin,
            )));
            for r in 0..5u16 {
                changes.push(Change::AddDestination {
                    service: key,
                    destination: Destination::new(
                        SocketAddr::new(format!("10.2.{n}.{}", r + 1).parse().unwrap(), 8080),
                        Forward::Masquerade,
                        u32::from(r) + 1,
                    ),
                });
            }
        }
        // Three bad changes in the middle: the others still apply.
        let missing = ServiceKey::tcp(addr("10.9.9.9:80"));
        let bad_at = [7, 100, 180];
        changes.insert(
            bad_at[0],
            Change::AddDestination {
                service: missing,
                destination: Destination::new(addr("10.3.0.1:80"), Forward::Route, 1),
            },
        );
        changes.insert(
            bad_at[1],
            Change::AddService(Service::new(keys[0], Scheduler::RoundRobin)),
        );
        changes.insert(
            bad_at[2],
            Change::AddService(Service::new(
                keys[1],
                Scheduler::Other("a-scheduler-name-too-long".into()),
            )),
        );
        let outcomes = ipvs.apply(&changes);
        assert_eq!(outcomes.len(), changes.len());
        for (i, outcome) in outcomes.iter().enumerate() {
            match (i, outcome) {
                (7, Err(e)) => assert_eq!(errno(e), Some(libc::ESRCH), "{e}"),
                (100, Err(e)) => assert_eq!(errno(e), Some(libc::EEXIST), "{e}"),
                (180, Err(e)) => assert!(
                    matches!(
                        e,
                        Error::InvalidService {
                            field: "scheduler",
                            ..
                        }
                    ),
                    "{e:?}"
                ),
                (_, Ok(())) if !bad_at.contains(&i) => {}
                (i, other) => panic!("change {i}: {other:?}"),
            }
        }
        assert_eq!(ipvs.services().expect("dump").len(), 40);
        for key in &keys {
            assert_eq!(ipvs.destinations(key).expect("dests").len(), 5, "{key}");
        }
        assert_eq!(saved().len(), 40 + 40 * 5);

        // Applying the removals in one go empties the table again.
        let removals: Vec<Change> = keys.iter().map(|k| Change::RemoveService(*k)).collect();
        assert!(ipvs.apply(&removals).iter().all(Result::is_ok));
        assert!(saved().is_empty());
    });
}

fn web_desired(weights: [u32; 2]) -> VirtualService {
    VirtualService::new(
        Service::new(
            ServiceKey::tcp(addr("192.0.2.100:80")),
            Scheduler::WeightedRoundRobin,
        ),
        vec![
            Destination::new(addr("10.0.1.11:80"), Forward::Masquerade, weights[0]),
            Destination::new(addr("10.0.1.12:80"), Forward::Masquerade, weights[1]),
        ],
    )
}

fn marked_desired() -> VirtualService {
    let mut svc = Service::new(ServiceKey::fwmark(Family::Ipv4, 7), Scheduler::MaglevHash);
    svc.scheduler_flags = SchedulerFlags::MH_FALLBACK | SchedulerFlags::MH_PORT;
    svc.persistence = persistent(300, 24);
    VirtualService::new(
        svc,
        vec![
            Destination::new(addr("10.0.2.1:0"), Forward::Route, 1),
            Destination::new(addr("10.0.2.2:0"), Forward::Tunnel(Tunnel::IPIP), 2),
        ],
    )
}

fn keys_of(desired: &[VirtualService]) -> BTreeSet<ServiceKey> {
    desired.iter().map(VirtualService::key).collect()
}

#[test]
#[ignore = "runs inside the IPVS VM, started by ipvs_in_vm"]
fn vm_reconcile() {
    in_netns("vm_reconcile", || {
        // Another tool's service, which no reconcile may touch.
        ipvsadm(&["-A", "-u", "192.0.2.200:53", "-s", "rr"]);
        ipvsadm(&["-a", "-u", "192.0.2.200:53", "-r", "10.0.9.9:53", "-g"]);
        let foreign = lines(&[
            "-A -u 192.0.2.200:53 -s rr",
            "-a -u 192.0.2.200:53 -r 10.0.9.9:53 -g -w 1",
        ]);

        let mut ipvs = Ipvs::open().expect("IPVS family");
        let desired = vec![web_desired([100, 50]), marked_desired()];
        let report = ipvs
            .reconcile(&desired, &keys_of(&desired))
            .expect("reconcile");
        assert!(report.is_clean(), "{:?}", report.failures);
        assert_eq!(report.applied.len(), 2 + 4);
        let mut want = foreign.clone();
        want.extend(lines(&[
            "-A -t 192.0.2.100:80 -s wrr",
            "-a -t 192.0.2.100:80 -r 10.0.1.11:80 -m -w 100",
            "-a -t 192.0.2.100:80 -r 10.0.1.12:80 -m -w 50",
            "-A -f 7 -s mh -p 300 -M 255.255.255.0 -b mh-fallback,mh-port",
            "-a -f 7 -r 10.0.2.1:0 -g -w 1",
            "-a -f 7 -r 10.0.2.2:0 -i -w 2 --tun-type ipip",
        ]));
        assert_eq!(saved(), want);
        // What the kernel holds reads back equal to what was asked for.
        let mut table = ipvs.table(&keys_of(&desired)).expect("table");
        table.sort_by_key(VirtualService::key);
        let mut sorted = desired.clone();
        sorted.sort_by_key(VirtualService::key);
        assert_eq!(table, sorted);

        // The same state again: no change request at all.
        let report = ipvs
            .reconcile(&desired, &keys_of(&desired))
            .expect("reconcile");
        assert!(report.applied.is_empty() && report.is_clean(), "{report:?}");

        // One weight: one edit, one line of the table.
        let desired = vec![web_desired([100, 60]), marked_desired()];
        let report = ipvs
            .reconcile(&desired, &keys_of(&desired))
            .expect("reconcile");
        assert_eq!(
            report.applied,
            [Change::EditDestination {
                service: desired[0].key(),
                destination: desired[0].destinations[1],
            }]
        );
        let now = saved();
        assert_eq!(
            want.difference(&now).collect::<Vec<_>>(),
            ["-a -t 192.0.2.100:80 -r 10.0.1.12:80 -m -w 50"]
        );
        assert_eq!(
            now.difference(&want).collect::<Vec<_>>(),
            ["-a -t 192.0.2.100:80 -r 10.0.1.12:80 -m -w 60"]
        );

        // Refusals: a scheduler this kernel lacks, a real server at a multicast
        // address. Each names its service and field; the rest still applies.
        let mut twos = VirtualService::new(
            Service::new(
                ServiceKey::tcp(addr("192.0.2.100:443")),
                Scheduler::TwoChoices,
            ),
            vec![Destination::new(
                addr("10.0.1.11:443"),
                Forward::Masquerade,
                1,
            )],
        );
        let mut web = web_desired([100, 70]);
        web.destinations.push(Destination::new(
            addr("224.0.0.1:80"),
            Forward::Masquerade,
            1,
        ));
        let desired = vec![web, marked_desired(), twos.clone()];
        let report = ipvs
            .reconcile(&desired, &keys_of(&desired))
            .expect("reconcile");
        let kernel_has_twos = report.failures.len() == 1;
        let failures: Vec<(String, Option<SocketAddr>, &str)> = report
            .failures
            .iter()
            .map(|f| (f.service.to_string(), f.destination, f.field))
            .collect();
        if kernel_has_twos {
            assert_eq!(report.applied.len(), 3);
        } else {
            assert_eq!(
                failures,
                [
                    ("TCP 192.0.2.100:443".into(), None, "scheduler"),
                    (
                        "TCP 192.0.2.100:80".into(),
                        Some(addr("224.0.0.1:80")),
                        "address"
                    ),
                ]
            );
            assert!(
                report.failures[0]
                    .to_string()
                    .contains("no such scheduler or persistence engine in this kernel"),
                "{}",
                report.failures[0]
            );
            // The twos service's real server was not tried; the weight was applied.
            assert_eq!(report.skipped, 1);
            assert_eq!(report.applied.len(), 1, "{:?}", report.applied);
        }
        assert!(
            saved().contains("-a -t 192.0.2.100:80 -r 10.0.1.12:80 -m -w 70"),
            "{:?}",
            saved()
        );

        // A managed service left out of the desired state goes, with its real
        // servers; the 443 service, now with a scheduler the kernel has, is added.
        twos.service.scheduler = Scheduler::RoundRobin;
        let desired = vec![web_desired([100, 70]), twos];
        let mut managed = keys_of(&desired);
        managed.insert(marked_desired().key());
        let report = ipvs.reconcile(&desired, &managed).expect("reconcile");
        assert!(report.is_clean(), "{:?}", report.failures);
        let mut want = foreign.clone();
        want.extend(lines(&[
            "-A -t 192.0.2.100:80 -s wrr",
            "-a -t 192.0.2.100:80 -r 10.0.1.11:80 -m -w 100",
            "-a -t 192.0.2.100:80 -r 10.0.1.12:80 -m -w 70",
            "-A -t 192.0.2.100:443 -s rr",
            "-a -t 192.0.2.100:443 -r 10.0.1.11:443 -m -w 1",
        ]));
        assert_eq!(saved(), want);

        // Managing nothing desires nothing: the foreign service stays.
        let report = ipvs.reconcile(&[], &keys_of(&desired)).expect("reconcile");
        assert_eq!(report.applied.len(), 2);
        assert_eq!(saved(), foreign);
    });
}
