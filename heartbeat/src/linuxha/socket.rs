//! One UDP socket per heartbeat medium, bound to the medium's interface
//! (`SO_BINDTODEVICE`), as heartbeat's ucast, mcast and bcast plugins do.
//!
//! - unicast: bound to the wildcard address and the port, sends to the peer;
//! - multicast: bound to the group and the port, group joined on the interface,
//!   TTL (hop limit) as configured, loopback off;
//! - broadcast: bound to the wildcard address and the port, `SO_BROADCAST`, sends
//!   to the interface's broadcast address.
//!
//! Every socket sets `SO_REUSEADDR`, so media on different interfaces share the
//! port.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use nix::ifaddrs::getifaddrs;
use nix::net::if_::{InterfaceFlags, if_nametoindex};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::net::UdpSocket;

use crate::error::Error;
use crate::linuxha::Medium;

/// heartbeat's `IPTOS_LOWDELAY` on its sockets.
const TOS_LOW_DELAY: u32 = 0x10;

/// The interface as the kernel shows it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InterfaceInfo {
    pub index: u32,
    pub up: bool,
    pub ipv4: Option<Ipv4Addr>,
    pub broadcast: Option<Ipv4Addr>,
}

/// Looks the interface up.
pub(crate) fn interface_info(name: &str) -> Result<InterfaceInfo, Error> {
    let err = |e: nix::Error| Error::FindInterface {
        interface: name.to_owned(),
        source: io::Error::from(e),
    };
    let index = if_nametoindex(name).map_err(err)?;
    let mut info = InterfaceInfo {
        index,
        up: false,
        ipv4: None,
        broadcast: None,
    };
    for ifa in getifaddrs()
        .map_err(err)?
        .filter(|ifa| ifa.interface_name == name)
    {
        if ifa.flags.contains(InterfaceFlags::IFF_UP) {
            info.up = true;
        }
        if let Some(sin) = ifa.address.as_ref().and_then(|a| a.as_sockaddr_in()) {
            info.ipv4.get_or_insert(sin.ip());
            // An address given without `brd` shows itself (or 0.0.0.0) as its
            // broadcast address: then there is none, and 255.255.255.255 is used.
            if let Some(b) = ifa.broadcast.as_ref().and_then(|b| b.as_sockaddr_in())
                && !b.ip().is_unspecified()
                && b.ip() != sin.ip()
            {
                info.broadcast.get_or_insert(b.ip());
            }
        }
    }
    Ok(info)
}

/// An open medium.
#[derive(Debug)]
pub(crate) struct MediumSocket {
    pub socket: UdpSocket,
    pub destination: SocketAddr,
    pub ifindex: u32,
}

/// Opens the socket of `medium`.
pub(crate) fn open(medium: &Medium, port: u16) -> Result<MediumSocket, Error> {
    let name = medium.describe();
    let step = |step: &'static str| {
        let name = name.clone();
        move |source: io::Error| Error::OpenMedium {
            medium: name,
            step,
            source,
        }
    };
    let info = interface_info(medium.interface())?;
    let interface = medium.interface().as_bytes();
    let (socket, bind, destination) = match medium {
        Medium::Unicast { peer, .. } => {
            let socket = udp_socket(*peer).map_err(step("socket"))?;
            let destination = match peer {
                IpAddr::V6(v6) if is_link_local(v6) => {
                    SocketAddr::V6(SocketAddrV6::new(*v6, port, 0, info.index))
                }
                _ => SocketAddr::new(*peer, port),
            };
            let wildcard = match peer {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            };
            (socket, SocketAddr::new(wildcard, port), destination)
        }
        Medium::Multicast { group, ttl, .. } => {
            let socket = udp_socket(*group).map_err(step("socket"))?;
            let destination = match group {
                IpAddr::V4(g) => {
                    socket
                        .join_multicast_v4_n(g, &InterfaceIndexOrAddress::Index(info.index))
                        .map_err(step("IP_ADD_MEMBERSHIP"))?;
                    if let Some(local) = info.ipv4 {
                        socket
                            .set_multicast_if_v4(&local)
                            .map_err(step("IP_MULTICAST_IF"))?;
                    }
                    socket
                        .set_multicast_ttl_v4(u32::from(*ttl))
                        .map_err(step("IP_MULTICAST_TTL"))?;
                    socket
                        .set_multicast_loop_v4(false)
                        .map_err(step("IP_MULTICAST_LOOP"))?;
                    SocketAddr::new(*group, port)
                }
                IpAddr::V6(g) => {
                    socket
                        .join_multicast_v6(g, info.index)
                        .map_err(step("IPV6_ADD_MEMBERSHIP"))?;
                    socket
                        .set_multicast_if_v6(info.index)
                        .map_err(step("IPV6_MULTICAST_IF"))?;
                    socket
                        .set_multicast_hops_v6(u32::from(*ttl))
                        .map_err(step("IPV6_MULTICAST_HOPS"))?;
                    socket
                        .set_multicast_loop_v6(false)
                        .map_err(step("IPV6_MULTICAST_LOOP"))?;
                    SocketAddr::V6(SocketAddrV6::new(*g, port, 0, info.index))
                }
            };
            // A link-local group needs the interface as scope to bind to.
            let bind = match destination {
                SocketAddr::V6(v6) => SocketAddr::V6(v6),
                SocketAddr::V4(_) => SocketAddr::new(*group, port),
            };
            (socket, bind, destination)
        }
        Medium::Broadcast { .. } => {
            let wildcard = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
            let socket = udp_socket(wildcard).map_err(step("socket"))?;
            socket.set_broadcast(true).map_err(step("SO_BROADCAST"))?;
            let broadcast = info.broadcast.unwrap_or(Ipv4Addr::BROADCAST);
            (
                socket,
                SocketAddr::new(wildcard, port),
                SocketAddr::new(IpAddr::V4(broadcast), port),
            )
        }
    };
    socket
        .bind_device(Some(interface))
        .map_err(step("SO_BINDTODEVICE"))?;
    socket.bind(&SockAddr::from(bind)).map_err(step("bind"))?;
    socket.set_nonblocking(true).map_err(step("O_NONBLOCK"))?;
    let socket = UdpSocket::from_std(socket.into()).map_err(step("register with the runtime"))?;
    Ok(MediumSocket {
        socket,
        destination,
        ifindex: info.index,
    })
}

fn udp_socket(family_of: IpAddr) -> io::Result<Socket> {
    let domain = match family_of {
        IpAddr::V4(_) => Domain::IPV4,
        IpAddr::V6(_) => Domain::IPV6,
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    match family_of {
        IpAddr::V4(_) => {
            // Best effort, as heartbeat: a lower priority is no reason to stop.
            let _ = socket.set_tos_v4(TOS_LOW_DELAY);
        }
        IpAddr::V6(_) => socket.set_only_v6(true)?,
    }
    Ok(socket)
}

fn is_link_local(v6: &Ipv6Addr) -> bool {
    v6.segments()[0] & 0xffc0 == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_interface() {
        let info = interface_info("lo").expect("lo");
        assert!(info.index > 0);
        assert_eq!(info.ipv4, Some(Ipv4Addr::LOCALHOST));
        assert!(matches!(
            interface_info("nosuchif0"),
            Err(Error::FindInterface { .. })
        ));
    }

    #[test]
    fn missing_interface_is_an_error_naming_it() {
        let medium = Medium::Broadcast {
            interface: "nosuchif0".into(),
        };
        match open(&medium, 6940) {
            Err(e) => assert!(e.to_string().contains("nosuchif0"), "{e}"),
            Ok(_) => panic!("opened a socket on a missing interface"),
        }
    }
}
