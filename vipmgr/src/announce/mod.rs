//! Announcing a VIP after taking it over: gratuitous ARP for IPv4, unsolicited
//! Neighbour Advertisement for IPv6, so that switches and neighbours send the
//! VIP's traffic to this director's MAC at once instead of when their caches
//! expire.
//!
//! Frames are sent raw on an AF_PACKET socket (which receives nothing) opened in
//! the calling thread's network namespace. [`announce`] sends a burst;
//! the periodic refresh ([`AnnounceConfig::refresh`]) is the caller's loop
//! around [`announce_once`] or [`announce`].

use std::{fs, io, net::IpAddr, time::Duration};

use socket2::{Domain, Socket, Type};

use crate::{
    address::Vip,
    error::{Error, Result},
    netlink::{LinkInfo, Rtnl},
    sys,
};

pub mod arp;
pub mod ndisc;

pub use arp::GratuitousArp;
pub use ndisc::UnsolicitedNa;
pub use pnet_base::MacAddr;

/// How many announcements to send and how far apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceConfig {
    /// Announcements per burst; the first goes out at once.
    pub count: u32,
    /// Time between two announcements of a burst.
    pub spacing: Duration,
    /// If set, the supervisor repeats the burst this often while it holds the VIP.
    pub refresh: Option<Duration>,
}

impl Default for AnnounceConfig {
    /// Five announcements 200 ms apart, no refresh.
    fn default() -> Self {
        AnnounceConfig {
            count: 5,
            spacing: Duration::from_millis(200),
            refresh: None,
        }
    }
}

/// Sends `cfg.count` announcements of `vip`, `cfg.spacing` apart, the first at
/// once, and returns how many were sent. Frames are built once, from the
/// interface's MAC and index read when the call starts.
pub async fn announce(vip: &Vip, cfg: &AnnounceConfig) -> Result<u32> {
    if cfg.count == 0 {
        return Ok(0);
    }
    let announcer = Announcer::new(vip)?;
    let mut sent = 0;
    for i in 0..cfg.count {
        if i > 0 {
            tokio::time::sleep(cfg.spacing).await;
        }
        announcer.send()?;
        sent += 1;
    }
    Ok(sent)
}

/// Sends one announcement of `vip` now (blocking, but only for a netlink
/// lookup and one `sendto`).
pub fn announce_once(vip: &Vip) -> Result<()> {
    Announcer::new(vip)?.send()
}

/// A ready-to-send announcement frame and the socket to send it on.
#[derive(Debug)]
struct Announcer {
    vip: Vip,
    socket: Socket,
    destination: socket2::SockAddr,
    frame: Vec<u8>,
}

impl Announcer {
    fn new(vip: &Vip) -> Result<Self> {
        vip.validate()?;
        let fail = |source| Error::AnnounceVip {
            vip: vip.clone(),
            source,
        };
        let link = Rtnl::open()
            .and_then(|mut rtnl| rtnl.link(&vip.interface))
            .map_err(fail)?
            .ok_or_else(|| fail(io::Error::from_raw_os_error(libc::ENODEV)))?;
        let mac = ethernet_address(&link).map_err(fail)?;
        let (frame, ethertype, destination) = match vip.address {
            IpAddr::V4(address) => (
                GratuitousArp { mac, address }.to_frame(),
                libc::ETH_P_ARP,
                MacAddr::broadcast(),
            ),
            IpAddr::V6(address) => {
                let router = ipv6_forwarding(&vip.interface);
                (
                    UnsolicitedNa {
                        mac,
                        address,
                        router,
                    }
                    .to_frame(),
                    libc::ETH_P_IPV6,
                    MacAddr(0x33, 0x33, 0, 0, 0, 1),
                )
            }
        };
        // Protocol 0: the socket is for sending only and gets no copy of
        // incoming traffic. The destination address names the interface.
        let socket = Socket::new(Domain::PACKET, Type::RAW, None).map_err(fail)?;
        let destination = sys::packet_address(
            link.index,
            u16::try_from(ethertype).unwrap_or_default(),
            destination.octets(),
        );
        Ok(Announcer {
            vip: vip.clone(),
            socket,
            destination,
            frame,
        })
    }

    fn send(&self) -> Result<()> {
        let fail = |source| Error::AnnounceVip {
            vip: self.vip.clone(),
            source,
        };
        let sent = self
            .socket
            .send_to(&self.frame, &self.destination)
            .map_err(fail)?;
        if sent != self.frame.len() {
            return Err(fail(io::Error::new(
                io::ErrorKind::WriteZero,
                "the announcement frame went out truncated",
            )));
        }
        Ok(())
    }
}

/// The interface's own MAC; an interface without one (a tunnel, `lo`) cannot
/// announce anything.
fn ethernet_address(link: &LinkInfo) -> io::Result<MacAddr> {
    match link.mac {
        Some(m) if m != [0; 6] => Ok(MacAddr::new(m[0], m[1], m[2], m[3], m[4], m[5])),
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the interface has no Ethernet address",
        )),
    }
}

/// Whether IPv6 forwarding is on for `interface` (decides the NA Router flag,
/// as keepalived does). Read in the calling thread's network namespace;
/// unreadable counts as off.
fn ipv6_forwarding(interface: &str) -> bool {
    fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{interface}/forwarding"))
        .is_ok_and(|value| value.trim() == "1")
}
