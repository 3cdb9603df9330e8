//! Raw IP protocol 112 sockets for VRRP, bound to one interface.
//!
//! One socket per virtual router sends and receives. The source address of each
//! advert is set per packet with `IP_PKTINFO` / `IPV6_PKTINFO` (the socket stays
//! unbound so that it still receives packets to the multicast group). Received
//! IPv4 datagrams carry their IP header; for IPv6 the hop limit and destination come
//! as control messages.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::ifaddrs::getifaddrs;
use nix::net::if_::{InterfaceFlags, if_nametoindex};
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, SockaddrIn6, recvfrom, recvmsg,
    sendmsg, setsockopt, sockopt,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;

use crate::error::{Error, PacketError};
use crate::vrrp::packet::{IP_PROTOCOL, MULTICAST_V4, MULTICAST_V6, Packet, Repr};
use crate::vrrp::{Family, VrrpConfig};

/// Largest datagram read; VRRP packets are at most 20 + 8 + 255 * 16 + 8 bytes.
const RECV_BUFFER: usize = 4200;

/// What one read from the socket gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Received {
    /// A valid advert.
    Advert { src: IpAddr, repr: Repr },
    /// Dropped, to be counted under this reason.
    Dropped(&'static str),
    /// Not for us (another protocol, our own packet): ignored without counting.
    Ignored,
}

/// The interface as the kernel shows it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InterfaceInfo {
    pub index: u32,
    pub up: bool,
    pub addresses: Vec<IpAddr>,
}

/// Looks the interface up: index, whether it is up and running, its addresses.
pub(crate) fn interface_info(name: &str) -> Result<InterfaceInfo, Error> {
    let index = if_nametoindex(name).map_err(|e| Error::FindInterface {
        interface: name.to_owned(),
        source: io::Error::from(e),
    })?;
    let mut up = false;
    let mut addresses = Vec::new();
    let ifaddrs = getifaddrs().map_err(|e| Error::FindInterface {
        interface: name.to_owned(),
        source: io::Error::from(e),
    })?;
    for ifa in ifaddrs.filter(|ifa| ifa.interface_name == name) {
        if ifa
            .flags
            .contains(InterfaceFlags::IFF_UP | InterfaceFlags::IFF_RUNNING)
        {
            up = true;
        }
        let Some(address) = ifa.address else { continue };
        if let Some(sin) = address.as_sockaddr_in() {
            addresses.push(IpAddr::V4(sin.ip()));
        } else if let Some(sin6) = address.as_sockaddr_in6() {
            addresses.push(IpAddr::V6(sin6.ip()));
        }
    }
    Ok(InterfaceInfo {
        index,
        up,
        addresses,
    })
}

/// The address adverts go out from: the configured one (which must be on this host),
/// else the interface's first IPv4 address that is not a virtual address, else its
/// IPv6 link-local address.
pub(crate) fn choose_source(
    config: &VrrpConfig,
    interface: &InterfaceInfo,
) -> Result<IpAddr, Error> {
    let missing = || Error::FindSourceAddress {
        interface: config.interface.clone(),
        family: config.family.name(),
    };
    if let Some(source) = config.source_address {
        if interface.addresses.contains(&source) || address_on_host(source) {
            return Ok(source);
        }
        return Err(missing());
    }
    interface
        .addresses
        .iter()
        .copied()
        .find(|a| {
            !config.addresses.contains(a)
                && match (config.family, a) {
                    (Family::V4, IpAddr::V4(_)) => true,
                    (Family::V6, IpAddr::V6(v6)) => is_link_local(v6),
                    _ => false,
                }
        })
        .ok_or_else(missing)
}

fn address_on_host(addr: IpAddr) -> bool {
    getifaddrs().is_ok_and(|mut all| {
        all.any(|ifa| {
            ifa.address.is_some_and(|a| {
                a.as_sockaddr_in().map(|s| IpAddr::V4(s.ip())) == Some(addr)
                    || a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())) == Some(addr)
            })
        })
    })
}

fn is_link_local(addr: &Ipv6Addr) -> bool {
    addr.segments()[0] & 0xffc0 == 0xfe80
}

/// The open socket of one virtual router.
#[derive(Debug)]
pub(crate) struct VrrpSocket {
    fd: AsyncFd<Socket>,
    interface: String,
    ifindex: u32,
    family: Family,
    /// Source of our adverts.
    pub local: IpAddr,
    /// The multicast group, or the unicast peers.
    destinations: Vec<IpAddr>,
    /// Unicast mode: no TTL/hop-limit check (keepalived does not check it either,
    /// and sends IPv6 unicast with the default hop limit).
    unicast: bool,
}

impl VrrpSocket {
    /// Opens and sets up the socket. Must run inside a tokio runtime.
    pub(crate) fn open(config: &VrrpConfig) -> Result<VrrpSocket, Error> {
        let info = interface_info(&config.interface)?;
        if !info.up {
            return Err(Error::InterfaceDown {
                interface: config.interface.clone(),
            });
        }
        let local = choose_source(config, &info)?;
        let step = |step: &'static str| {
            let interface = config.interface.clone();
            move |source: io::Error| Error::OpenSocket {
                interface,
                step,
                source,
            }
        };
        let domain = match config.family {
            Family::V4 => Domain::IPV4,
            Family::V6 => Domain::IPV6,
        };
        let socket = Socket::new(
            domain,
            Type::RAW.cloexec(),
            Some(Protocol::from(i32::from(IP_PROTOCOL))),
        )
        .map_err(step("socket(SOCK_RAW, 112)"))?;
        socket
            .bind_device(Some(config.interface.as_bytes()))
            .map_err(step("SO_BINDTODEVICE"))?;
        let unicast = !config.unicast_peers.is_empty();
        match (config.family, local) {
            (Family::V4, IpAddr::V4(local4)) => {
                socket.set_ttl_v4(255).map_err(step("IP_TTL"))?;
                socket
                    .set_multicast_ttl_v4(255)
                    .map_err(step("IP_MULTICAST_TTL"))?;
                socket
                    .set_multicast_loop_v4(false)
                    .map_err(step("IP_MULTICAST_LOOP"))?;
                socket
                    .set_multicast_if_v4(&local4)
                    .map_err(step("IP_MULTICAST_IF"))?;
                socket
                    .set_multicast_all_v4(false)
                    .map_err(step("IP_MULTICAST_ALL"))?;
                if !unicast {
                    socket
                        .join_multicast_v4_n(
                            &MULTICAST_V4,
                            &socket2::InterfaceIndexOrAddress::Index(info.index),
                        )
                        .map_err(step("IP_ADD_MEMBERSHIP 224.0.0.18"))?;
                }
            }
            (Family::V6, IpAddr::V6(_)) => {
                socket
                    .set_multicast_hops_v6(255)
                    .map_err(step("IPV6_MULTICAST_HOPS"))?;
                socket
                    .set_unicast_hops_v6(255)
                    .map_err(step("IPV6_UNICAST_HOPS"))?;
                socket
                    .set_multicast_loop_v6(false)
                    .map_err(step("IPV6_MULTICAST_LOOP"))?;
                socket
                    .set_multicast_if_v6(info.index)
                    .map_err(step("IPV6_MULTICAST_IF"))?;
                socket
                    .set_multicast_all_v6(false)
                    .map_err(step("IPV6_MULTICAST_ALL"))?;
                socket
                    .set_recv_hoplimit_v6(true)
                    .map_err(step("IPV6_RECVHOPLIMIT"))?;
                setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true)
                    .map_err(|e| step("IPV6_RECVPKTINFO")(io::Error::from(e)))?;
                if !unicast {
                    socket
                        .join_multicast_v6(&MULTICAST_V6, info.index)
                        .map_err(step("IPV6_JOIN_GROUP ff02::12"))?;
                }
            }
            _ => {
                return Err(Error::FindSourceAddress {
                    interface: config.interface.clone(),
                    family: config.family.name(),
                });
            }
        }
        socket.set_nonblocking(true).map_err(step("O_NONBLOCK"))?;
        let fd =
            crate::sys::register_readable(socket).map_err(step("register with the runtime"))?;
        let destinations = if unicast {
            config.unicast_peers.clone()
        } else {
            match config.family {
                Family::V4 => vec![IpAddr::V4(MULTICAST_V4)],
                Family::V6 => vec![IpAddr::V6(MULTICAST_V6)],
            }
        };
        Ok(VrrpSocket {
            fd,
            interface: config.interface.clone(),
            ifindex: info.index,
            family: config.family,
            local,
            destinations,
            unicast,
        })
    }

    /// Interface index the socket was opened on.
    pub(crate) fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Sends the advert to the group or to every unicast peer. Returns the first
    /// error, after trying every destination.
    pub(crate) fn send(&self, repr: &Repr) -> Result<(), Error> {
        let mut first_error = None;
        for &destination in &self.destinations {
            let bytes = repr.to_bytes(self.local, destination);
            if let Err(source) = self.send_to(&bytes, destination) {
                first_error.get_or_insert(Error::SendAdvert {
                    destination,
                    source,
                });
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn send_to(&self, bytes: &[u8], destination: IpAddr) -> io::Result<()> {
        let fd = self.fd.get_ref().as_raw_fd();
        let iov = [IoSlice::new(bytes)];
        let sent = match (self.local, destination) {
            (IpAddr::V4(local), IpAddr::V4(dst)) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: i32::try_from(self.ifindex).unwrap_or(0),
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from_ne_bytes(local.octets()),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                let to = SockaddrIn::from(SocketAddrV4::new(dst, 0));
                sendmsg(
                    fd,
                    &iov,
                    &[ControlMessage::Ipv4PacketInfo(&info)],
                    MsgFlags::empty(),
                    Some(&to),
                )
            }
            (IpAddr::V6(local), IpAddr::V6(dst)) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: local.octets(),
                    },
                    ipi6_ifindex: self.ifindex,
                };
                let scope = if is_link_local(&dst) || dst.is_multicast() {
                    self.ifindex
                } else {
                    0
                };
                let to = SockaddrIn6::from(SocketAddrV6::new(dst, 0, 0, scope));
                sendmsg(
                    fd,
                    &iov,
                    &[ControlMessage::Ipv6PacketInfo(&info)],
                    MsgFlags::empty(),
                    Some(&to),
                )
            }
            _ => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
        };
        match sent {
            Ok(n) if n == bytes.len() => Ok(()),
            Ok(_) => Err(io::Error::new(io::ErrorKind::WriteZero, "short send")),
            Err(e) => Err(io::Error::from(e)),
        }
    }

    /// Waits for the next datagram and judges it.
    pub(crate) async fn recv(&self) -> Result<Received, Error> {
        loop {
            let mut guard = self.fd.readable().await.map_err(|source| Error::Receive {
                interface: self.interface.clone(),
                source,
            })?;
            match guard.try_io(|fd| self.recv_now(fd.get_ref().as_raw_fd())) {
                Ok(result) => {
                    return result.map_err(|source| Error::Receive {
                        interface: self.interface.clone(),
                        source,
                    });
                }
                Err(_would_block) => continue,
            }
        }
    }

    fn recv_now(&self, fd: i32) -> io::Result<Received> {
        let mut buf = [0u8; RECV_BUFFER];
        match self.family {
            Family::V4 => {
                let (n, _) = recvfrom::<SockaddrIn>(fd, &mut buf).map_err(io::Error::from)?;
                Ok(judge_ipv4(&buf[..n], self.local, self.unicast))
            }
            Family::V6 => {
                let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo, libc::c_int);
                let mut iov = [IoSliceMut::new(&mut buf)];
                let msg = recvmsg::<SockaddrIn6>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())
                    .map_err(io::Error::from)?;
                let Some(src) = msg.address.map(|a| a.ip()) else {
                    return Ok(Received::Ignored);
                };
                let mut hop_limit = None;
                let mut dst = None;
                for c in msg.cmsgs().map_err(io::Error::from)? {
                    match c {
                        ControlMessageOwned::Ipv6HopLimit(h) => hop_limit = Some(h),
                        ControlMessageOwned::Ipv6PacketInfo(info) => {
                            dst = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
                        }
                        _ => {}
                    }
                }
                let n = msg.bytes;
                let dst = dst.unwrap_or(MULTICAST_V6);
                Ok(judge_ipv6(
                    &buf[..n],
                    src,
                    dst,
                    hop_limit,
                    self.local,
                    self.unicast,
                ))
            }
        }
    }
}

/// The fields of an IPv4 header the driver needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ipv4Header {
    ttl: u8,
    protocol: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    header_len: usize,
    total_len: usize,
}

fn parse_ipv4_header(buf: &[u8]) -> Option<Ipv4Header> {
    let first = *buf.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(first & 0x0f) * 4;
    if header_len < 20 || buf.len() < header_len {
        return None;
    }
    let total_len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if total_len < header_len || total_len > buf.len() {
        return None;
    }
    // A fragment of a VRRP packet (more fragments, or an offset) is not one.
    let frag = u16::from_be_bytes([buf[6], buf[7]]);
    if frag & 0x3fff != 0 {
        return None;
    }
    Some(Ipv4Header {
        ttl: buf[8],
        protocol: buf[9],
        src: Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]),
        dst: Ipv4Addr::new(buf[16], buf[17], buf[18], buf[19]),
        header_len,
        total_len,
    })
}

/// Judges a received IPv4 datagram (IP header included).
fn judge_ipv4(datagram: &[u8], local: IpAddr, unicast: bool) -> Received {
    let Some(ip) = parse_ipv4_header(datagram) else {
        return Received::Dropped("length");
    };
    if ip.protocol != IP_PROTOCOL {
        return Received::Ignored;
    }
    let src = IpAddr::V4(ip.src);
    if src == local {
        return Received::Ignored;
    }
    if !unicast && ip.ttl != 255 {
        return Received::Dropped("ttl");
    }
    let payload = &datagram[ip.header_len..ip.total_len];
    let packet = match Packet::new_checked(payload) {
        Ok(p) => p,
        Err(e) => return Received::Dropped(e.reason()),
    };
    match Repr::parse(&packet, src, IpAddr::V4(ip.dst)) {
        Ok(repr) => Received::Advert { src, repr },
        // keepalived before 2.2 (and with `old_unicast_checksum`) puts the group
        // address in the v3 pseudo-header of unicast adverts too.
        Err(PacketError::Checksum(_)) if ip.dst != MULTICAST_V4 => {
            match Repr::parse(&packet, src, IpAddr::V4(MULTICAST_V4)) {
                Ok(repr) => Received::Advert { src, repr },
                Err(e) => Received::Dropped(e.reason()),
            }
        }
        Err(e) => Received::Dropped(e.reason()),
    }
}

/// Judges a received IPv6 VRRP payload.
fn judge_ipv6(
    payload: &[u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: Option<i32>,
    local: IpAddr,
    unicast: bool,
) -> Received {
    let src_ip = IpAddr::V6(src);
    if src_ip == local {
        return Received::Ignored;
    }
    if !unicast && hop_limit != Some(255) {
        return Received::Dropped("ttl");
    }
    let packet = match Packet::new_checked(payload) {
        Ok(p) => p,
        Err(e) => return Received::Dropped(e.reason()),
    };
    match Repr::parse(&packet, src_ip, IpAddr::V6(dst)) {
        Ok(repr) => Received::Advert { src: src_ip, repr },
        Err(e) => Received::Dropped(e.reason()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vrrp::packet::Version;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex"))
            .collect()
    }

    /// keepalived v2.2.7, `vrrp_version 3`, multicast from 192.0.2.1 (captured with
    /// tcpdump on a veth pair; the IPv4 header as received on a raw socket).
    const KA_V3_DATAGRAM: &str =
        "45c0002400010000ff701895c0000201e00000123133960200641107c0000264c0000265";
    /// Same, unicast to 192.0.2.2.
    const KA_V3_UNICAST_DATAGRAM: &str =
        "45c0002400010000ff7036a5c0000201c00002023133960200642f17c0000264c0000265";

    const OURS: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn judges_keepalived_datagram() {
        let d = hex(KA_V3_DATAGRAM);
        let Received::Advert { src, repr } = judge_ipv4(&d, OURS, false) else {
            panic!("expected an advert");
        };
        assert_eq!(src, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!((repr.vrid, repr.priority), (51, 150));
        // Our own packet.
        assert_eq!(judge_ipv4(&d, src, false), Received::Ignored);
        let u = hex(KA_V3_UNICAST_DATAGRAM);
        assert!(matches!(
            judge_ipv4(&u, OURS, true),
            Received::Advert { .. }
        ));
    }

    #[test]
    fn ttl_checked_only_for_multicast() {
        let mut d = hex(KA_V3_DATAGRAM);
        d[8] = 64;
        assert_eq!(judge_ipv4(&d, OURS, false), Received::Dropped("ttl"));
        assert!(matches!(
            judge_ipv4(&d, OURS, true),
            Received::Advert { .. }
        ));
        let src = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
        let repr = Repr {
            version: Version::V3,
            vrid: 1,
            priority: 100,
            max_advert_interval: 100,
            addresses: vec![],
        };
        let bytes = repr.to_bytes(IpAddr::V6(src), IpAddr::V6(MULTICAST_V6));
        let judge = |hops, unicast| judge_ipv6(&bytes, src, MULTICAST_V6, hops, OURS, unicast);
        assert_eq!(judge(Some(64), false), Received::Dropped("ttl"));
        assert_eq!(judge(None, false), Received::Dropped("ttl"));
        assert!(matches!(judge(Some(255), false), Received::Advert { .. }));
        assert!(matches!(judge(Some(64), true), Received::Advert { .. }));
    }

    #[test]
    fn old_keepalived_unicast_checksum_accepted() {
        // v3 unicast advert whose pseudo-header used 224.0.0.18.
        let repr = Repr {
            version: Version::V3,
            vrid: 51,
            priority: 150,
            max_advert_interval: 100,
            addresses: vec![],
        };
        let src = Ipv4Addr::new(192, 0, 2, 1);
        let vrrp = repr.to_bytes(IpAddr::V4(src), IpAddr::V4(MULTICAST_V4));
        let mut d = hex("45c0001c00010000ff700000c0000201c0000202");
        d[3] = u8::try_from(20 + vrrp.len()).expect("len");
        d.extend_from_slice(&vrrp);
        assert!(matches!(
            judge_ipv4(&d, OURS, true),
            Received::Advert { .. }
        ));
        // A really broken one still counts as checksum.
        let last = d.len() - 1;
        d[last] ^= 0xff;
        d[last - 1] ^= 0x01;
        assert_eq!(judge_ipv4(&d, OURS, true), Received::Dropped("checksum"));
    }

    #[test]
    fn malformed_ip_headers() {
        assert_eq!(judge_ipv4(&[], OURS, false), Received::Dropped("length"));
        assert_eq!(
            judge_ipv4(&[0x45; 10], OURS, false),
            Received::Dropped("length")
        );
        let mut d = hex(KA_V3_DATAGRAM);
        d[3] = 0xff; // total length beyond the datagram
        assert_eq!(judge_ipv4(&d, OURS, false), Received::Dropped("length"));
        let mut d = hex(KA_V3_DATAGRAM);
        d[9] = 17;
        assert_eq!(judge_ipv4(&d, OURS, false), Received::Ignored);
        let mut d = hex(KA_V3_DATAGRAM);
        d[6] = 0x20; // more fragments
        assert_eq!(judge_ipv4(&d, OURS, false), Received::Dropped("length"));
        let d = hex(KA_V3_DATAGRAM);
        assert_eq!(
            judge_ipv4(&d[..30], OURS, false),
            Received::Dropped("length")
        );
    }

    #[test]
    fn source_selection() {
        let config = VrrpConfig {
            interface: "eth0".into(),
            version: Version::V3,
            vrid: 1,
            priority: 100,
            preempt: true,
            preempt_delay: std::time::Duration::ZERO,
            advert_interval: std::time::Duration::from_secs(1),
            unicast_peers: vec![],
            source_address: None,
            addresses: vec![IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9))],
            family: Family::V4,
            netns: None,
            resume_master: false,
            ready: true,
        };
        let info = InterfaceInfo {
            index: 2,
            up: true,
            addresses: vec![
                "fe80::1".parse().expect("addr"),
                IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)),
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                "2001:db8::1".parse().expect("addr"),
            ],
        };
        // The VIP is skipped even if listed first.
        assert_eq!(
            choose_source(&config, &info).expect("v4"),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
        );
        let mut v6 = config.clone();
        v6.family = Family::V6;
        v6.addresses = vec![];
        assert_eq!(
            choose_source(&v6, &info).expect("v6"),
            "fe80::1".parse::<IpAddr>().expect("addr")
        );
        let empty = InterfaceInfo {
            addresses: vec![],
            ..info
        };
        assert!(matches!(
            choose_source(&config, &empty),
            Err(Error::FindSourceAddress { .. })
        ));
    }
}
