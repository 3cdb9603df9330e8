//! VRRP v3 (RFC 5798) and v2 (RFC 3768), wire-compatible with keepalived.
//!
//! - [`packet`]: the advertisement wire format.
//! - [`machine`]: the sans-IO state machine.
//! - the driver (private): raw sockets and timers on a thread of its own, started by
//!   [`spawn`].

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;
use crate::role::{Counters, FailoverHandle, Override, Role, Status};

mod driver;
pub mod machine;
pub mod packet;
mod socket;

pub use machine::{Action, Event, Machine, State};
pub use packet::Version;

/// Address family of a virtual router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// Whether `addr` is of this family.
    pub fn contains(self, addr: &IpAddr) -> bool {
        match self {
            Family::V4 => addr.is_ipv4(),
            Family::V6 => addr.is_ipv6(),
        }
    }

    /// "IPv4" or "IPv6".
    pub const fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// One VRRP virtual router on one interface.
#[derive(Debug, Clone)]
pub struct VrrpConfig {
    /// Interface the adverts go out on and come in from.
    pub interface: String,
    pub version: Version,
    /// Virtual router ID, 1..=255 (keepalived's `virtual_router_id`).
    pub vrid: u8,
    /// 1..=255; 255 means address owner (goes master at once).
    pub priority: u8,
    /// Whether a higher-priority backup takes over from a lower-priority master.
    pub preempt: bool,
    /// keepalived's `preempt_delay`: how long a backup keeps accepting a
    /// lower-priority master before it preempts.
    pub preempt_delay: Duration,
    /// v3: a multiple of 10 ms from 10 ms to 40.95 s. v2: whole seconds, 1..=255.
    pub advert_interval: Duration,
    /// Send to these addresses instead of the multicast group, and accept adverts
    /// only from them. Empty: multicast.
    pub unicast_peers: Vec<IpAddr>,
    /// Source of the adverts. None: the interface's primary IPv4 address, or its
    /// IPv6 link-local address.
    pub source_address: Option<IpAddr>,
    /// The virtual addresses listed in the advert, all of `family`. keepalived drops
    /// adverts whose count differs from its own `virtual_ipaddress` list, so list
    /// the same addresses on both nodes.
    pub addresses: Vec<IpAddr>,
    pub family: Family,
    /// Network namespace (e.g. `/run/netns/lab1`) the protocol thread enters before
    /// opening sockets. None: the namespace of the calling thread.
    pub netns: Option<PathBuf>,
    /// Start as master at once: this process replaces one that was master a moment
    /// ago (an in-place restart), so the peer must not see a gap in the adverts.
    pub resume_master: bool,
    /// Start with the health checks settled (see [`crate::role::Command::Ready`]).
    /// False: start holding, as if `preempt` were off and without the address
    /// owner's immediate start, until `Ready(true)`; the master-down timer still
    /// makes the node master when no master is heard. True: no hold.
    pub ready: bool,
}

impl VrrpConfig {
    /// Checks everything that can be checked without touching the system.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |reason: String| Err(Error::InvalidConfig { reason });
        if self.interface.is_empty() {
            return invalid("interface is empty".into());
        }
        if self.vrid == 0 {
            return invalid("vrid must be 1..=255".into());
        }
        if self.priority == 0 {
            return invalid("priority must be 1..=255 (0 is reserved for stopping)".into());
        }
        match self.version {
            Version::V3 => {
                let ms = self.advert_interval.as_millis();
                let whole_ms = self
                    .advert_interval
                    .subsec_nanos()
                    .is_multiple_of(1_000_000);
                if !(10..=40_950).contains(&ms) || !ms.is_multiple_of(10) || !whole_ms {
                    return invalid(format!(
                        "VRRPv3 advert_interval must be a multiple of 10ms from 10ms to 40.95s, \
                         not {:?}",
                        self.advert_interval
                    ));
                }
            }
            Version::V2 => {
                if self.family == Family::V6 {
                    return invalid("VRRPv2 carries IPv4 only; use version 3 for IPv6".into());
                }
                let s = self.advert_interval.as_secs();
                if self.advert_interval.subsec_nanos() != 0 || !(1..=255).contains(&s) {
                    return invalid(format!(
                        "VRRPv2 advert_interval must be whole seconds from 1s to 255s, not {:?}",
                        self.advert_interval
                    ));
                }
            }
        }
        if self.addresses.len() > 255 {
            return invalid("at most 255 addresses fit in one advert".into());
        }
        let family = self.family;
        for (what, addr) in self
            .addresses
            .iter()
            .map(|a| ("address", a))
            .chain(self.unicast_peers.iter().map(|a| ("unicast peer", a)))
            .chain(self.source_address.iter().map(|a| ("source address", a)))
        {
            if !family.contains(addr) {
                return invalid(format!(
                    "{what} {addr} is not {} like the virtual router",
                    family.name()
                ));
            }
        }
        Ok(())
    }
}

/// The status before the protocol thread has done anything.
fn initial_status(config: &VrrpConfig) -> Status {
    Status {
        protocol: "vrrp".into(),
        role: Role::Standby,
        state: State::Initialize.name().into(),
        priority: config.priority,
        effective_priority: config.priority,
        r#override: Override::None,
        ready: config.ready,
        peer: None,
        counters: Counters::default(),
        last_transition: None,
        links: Vec::new(),
    }
}

/// Starts the VRRP protocol on a thread of its own (with a current-thread tokio
/// runtime, so failover timing never waits on the daemon's runtime).
///
/// Returns once the thread runs (and has entered `config.netns`). Socket problems
/// after that (interface missing, no address yet) are not errors: the protocol
/// reports Fault with the reason and retries every second.
pub fn spawn(config: VrrpConfig) -> Result<FailoverHandle, Error> {
    config.validate()?;
    // Linux keeps 15 bytes of a thread name.
    let name = format!("vrrp{}-{}", config.vrid, config.interface);
    let for_prepare = config.clone();
    crate::thread::spawn(
        name,
        initial_status(&config),
        move || driver::prepare(&for_prepare),
        move |runtime, ends| {
            runtime.block_on(driver::run(
                config,
                ends.commands,
                ends.transitions,
                ends.status,
            ));
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn base() -> VrrpConfig {
        VrrpConfig {
            interface: "eth0".into(),
            version: Version::V3,
            vrid: 51,
            priority: 100,
            preempt: true,
            preempt_delay: Duration::ZERO,
            advert_interval: Duration::from_millis(100),
            unicast_peers: vec![],
            source_address: None,
            addresses: vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100))],
            family: Family::V4,
            netns: None,
            resume_master: false,
            ready: true,
        }
    }

    fn reason(c: &VrrpConfig) -> String {
        match c.validate() {
            Err(Error::InvalidConfig { reason }) => reason,
            other => panic!("expected invalid config, got {other:?}"),
        }
    }

    #[test]
    fn validates_config() {
        assert!(base().validate().is_ok());

        let mut c = base();
        c.vrid = 0;
        assert!(reason(&c).contains("vrid"));

        let mut c = base();
        c.priority = 0;
        assert!(reason(&c).contains("priority"));

        let mut c = base();
        c.advert_interval = Duration::from_millis(15);
        assert!(reason(&c).contains("multiple of 10ms"));
        c.advert_interval = Duration::from_secs(41);
        assert!(reason(&c).contains("multiple of 10ms"));
        c.advert_interval = Duration::from_millis(30);
        assert!(c.validate().is_ok());

        let mut c = base();
        c.version = Version::V2;
        assert!(reason(&c).contains("whole seconds"));
        c.advert_interval = Duration::from_secs(1);
        assert!(c.validate().is_ok());
        c.family = Family::V6;
        c.addresses = vec![IpAddr::V6(Ipv6Addr::LOCALHOST)];
        assert!(reason(&c).contains("IPv4 only"));

        let mut c = base();
        c.unicast_peers = vec![IpAddr::V6(Ipv6Addr::LOCALHOST)];
        assert!(reason(&c).contains("unicast peer ::1 is not IPv4"));

        let mut c = base();
        c.family = Family::V6;
        assert!(reason(&c).contains("address 192.0.2.100 is not IPv6"));
    }

    #[test]
    fn spawn_rejects_invalid_config() {
        let mut c = base();
        c.vrid = 0;
        assert!(matches!(spawn(c), Err(Error::InvalidConfig { .. })));
    }

    #[test]
    fn spawn_reports_missing_netns() {
        let mut c = base();
        c.netns = Some(PathBuf::from("/nonexistent/netns/directord-test"));
        match spawn(c) {
            Err(Error::EnterNetns { path, .. }) => {
                assert_eq!(path, PathBuf::from("/nonexistent/netns/directord-test"));
            }
            other => panic!("expected EnterNetns, got {other:?}"),
        }
    }

    #[test]
    fn missing_interface_is_fault_not_error() {
        let mut c = base();
        c.interface = "nosuchif0".into();
        let mut handle = spawn(c).expect("spawn");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let t = handle.transitions.recv().await.expect("transition");
            assert_eq!(t.role, Role::Fault);
            assert_eq!(t.state, "fault");
            assert!(t.reason.contains("nosuchif0"), "{}", t.reason);
            let status = handle.status.borrow().clone();
            assert_eq!(status.role, Role::Fault);
            handle
                .commands
                .send(crate::role::Command::Shutdown)
                .expect("send");
            let t = handle.transitions.recv().await.expect("transition");
            assert_eq!((t.role, t.state.as_str()), (Role::Standby, "initialize"));
            assert_eq!(t.reason, "shutdown");
        });
        if let Some(thread) = handle.thread.take() {
            thread.join().expect("thread");
        }
    }
}
