//! A small synchronous rtnetlink client on top of neli's `NlSocketHandle`.
//!
//! neli's `NlRouter` would also do, but it runs a hidden processing thread per
//! socket that wakes every 100 ms; vipmgr's callers are already on a blocking
//! thread, so one request, then read its replies, is all that is needed here.
//! Replies are matched on the sequence number: leftovers of an earlier request
//! that was abandoned half-way are skipped.

use std::{fmt, io, net::IpAddr, time::Duration};

use neli::{
    FromBytesWithInput, Size, ToBytes,
    consts::{
        nl::{NlmF, Nlmsg},
        rtnl::{Ifa, Iff, Ifla, RtAddrFamily, Rtm},
        socket::NlFamily,
    },
    err::{RouterError, SocketError},
    nl::{NlPayload, Nlmsghdr, NlmsghdrBuilder},
    rtnl::{Ifaddrmsg, Ifinfomsg, IfinfomsgBuilder, RtattrBuilder},
    socket::synchronous::NlSocketHandle,
    types::{Buffer, RtBuffer},
    utils::Groups,
};

use crate::sys;

/// Longest interface name the kernel accepts (`IFNAMSIZ` - 1).
pub(crate) const MAX_IFNAME_LEN: usize = 15;

/// The longest a request waits for the kernel's next reply before it fails,
/// so that a stuck netlink call cannot hold a failover up for ever.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// How many times a dump that the kernel flagged as interrupted
/// (`NLM_F_DUMP_INTR`: the table changed under it) is retried.
const DUMP_RETRIES: usize = 3;

/// What vipmgr needs to know about one network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkInfo {
    pub(crate) index: u32,
    pub(crate) name: String,
    pub(crate) flags: Iff,
    /// `IFLA_ADDRESS` when it is an Ethernet (6-byte) address.
    pub(crate) mac: Option<[u8; 6]>,
}

impl LinkInfo {
    /// Administratively up and the lower layer has carrier.
    pub(crate) fn is_up(&self) -> bool {
        self.flags.contains(Iff::UP) && self.flags.contains(Iff::LOWERUP)
    }

    /// Reads an `RTM_NEWLINK` payload.
    pub(crate) fn from_ifinfomsg(msg: &Ifinfomsg) -> Option<Self> {
        let index = u32::try_from(*msg.ifi_index()).ok()?;
        let mut name = None;
        let mut mac = None;
        for attr in msg.rtattrs().iter() {
            let payload: &[u8] = attr.rta_payload().as_ref();
            match attr.rta_type() {
                Ifla::Ifname => {
                    let raw = payload.split(|b| *b == 0).next().unwrap_or_default();
                    name = Some(String::from_utf8_lossy(raw).into_owned());
                }
                Ifla::Address => mac = <[u8; 6]>::try_from(payload).ok(),
                _ => {}
            }
        }
        Some(LinkInfo {
            index,
            name: name?,
            flags: *msg.ifi_flags(),
            mac,
        })
    }
}

/// One route netlink socket, in the network namespace of the thread that opened it.
pub(crate) struct Rtnl {
    socket: NlSocketHandle,
    seq: u32,
}

impl fmt::Debug for Rtnl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rtnl")
            .field("pid", &self.socket.pid())
            .field("seq", &self.seq)
            .finish()
    }
}

impl Rtnl {
    /// Opens a socket for requests, bound to no multicast group.
    pub(crate) fn open() -> io::Result<Self> {
        let rtnl = Self::open_with_groups(Groups::empty())?;
        sys::set_recv_timeout(&rtnl.socket, REPLY_TIMEOUT)?;
        Ok(rtnl)
    }

    /// Opens a socket subscribed to the given rtnetlink groups (`RTNLGRP_*` numbers).
    pub(crate) fn open_with_groups(groups: Groups) -> io::Result<Self> {
        let socket =
            NlSocketHandle::connect(NlFamily::Route, None, groups).map_err(from_socket_error)?;
        // Strict checking lets the kernel filter dumps by interface (Linux >= 4.20).
        // Without it the dump carries every interface and the filter below still
        // applies, so a refusal is not an error.
        let _ = socket.enable_strict_checking(true);
        Ok(Rtnl { socket, seq: 1 })
    }

    pub(crate) fn socket(&self) -> &NlSocketHandle {
        &self.socket
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Sends one request and collects the payloads of its replies: every part of a
    /// dump, the single reply of a get, or nothing for an acknowledged change.
    /// A netlink error comes back as the kernel's errno.
    pub(crate) fn request<P>(&mut self, ty: Rtm, flags: NlmF, payload: P) -> io::Result<Vec<P>>
    where
        P: Size + ToBytes + FromBytesWithInput<Input = usize> + Clone,
    {
        let dump = flags.contains(NlmF::DUMP);
        for _ in 0..DUMP_RETRIES {
            let (replies, interrupted) = self.request_once(ty, flags, payload.clone())?;
            if !(dump && interrupted) {
                return Ok(replies);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "netlink dump kept being interrupted by concurrent changes",
        ))
    }

    fn request_once<P>(&mut self, ty: Rtm, flags: NlmF, payload: P) -> io::Result<(Vec<P>, bool)>
    where
        P: Size + ToBytes + FromBytesWithInput<Input = usize> + Clone,
    {
        let seq = self.next_seq();
        let msg = NlmsghdrBuilder::default()
            .nl_type(ty)
            .nl_flags(flags | NlmF::REQUEST)
            .nl_seq(seq)
            .nl_payload(NlPayload::Payload(payload))
            .build()
            .map_err(io::Error::other)?;
        self.socket.send(&msg).map_err(from_socket_error)?;

        let multipart_expected = flags.contains(NlmF::DUMP);
        let ack_expected = flags.contains(NlmF::ACK);
        let done = u16::from(Nlmsg::Done);
        let mut replies = Vec::new();
        let mut interrupted = false;
        loop {
            let (messages, _) = self
                .socket
                .recv::<u16, Buffer>()
                .map_err(from_socket_error)?;
            for message in messages {
                let message = message.map_err(from_socket_error)?;
                if *message.nl_seq() != seq {
                    continue;
                }
                interrupted |= message.nl_flags().contains(NlmF::DUMP_INTR);
                match message.nl_payload() {
                    NlPayload::Err(err) => {
                        return Err(io::Error::from_raw_os_error(-*err.error()));
                    }
                    NlPayload::Ack(_) => return Ok((replies, interrupted)),
                    NlPayload::DumpExtAck(ack) => {
                        if *ack.error() < 0 {
                            return Err(io::Error::from_raw_os_error(-*ack.error()));
                        }
                        return Ok((replies, interrupted));
                    }
                    NlPayload::Empty => {
                        if *message.nl_type() == done {
                            return Ok((replies, interrupted));
                        }
                    }
                    NlPayload::Payload(_) => {
                        if *message.nl_type() == done {
                            return Ok((replies, interrupted));
                        }
                        let typed: Nlmsghdr<Rtm, P> =
                            message.to_typed().map_err(from_router_error)?;
                        if let Some(p) = typed.get_payload() {
                            replies.push(p.clone());
                        }
                        let multipart = typed.nl_flags().contains(NlmF::MULTI);
                        if !multipart && !multipart_expected && !ack_expected {
                            return Ok((replies, interrupted));
                        }
                    }
                }
            }
        }
    }

    /// Looks an interface up by name; `None` when there is no such interface.
    pub(crate) fn link(&mut self, name: &str) -> io::Result<Option<LinkInfo>> {
        if name.is_empty() || name.len() > MAX_IFNAME_LEN {
            return Ok(None);
        }
        let mut attrs = RtBuffer::new();
        attrs.push(
            RtattrBuilder::default()
                .rta_type(Ifla::Ifname)
                .rta_payload(name)
                .build()
                .map_err(io::Error::other)?,
        );
        let request = IfinfomsgBuilder::default()
            .ifi_family(RtAddrFamily::Unspecified)
            .rtattrs(attrs)
            .build()
            .map_err(io::Error::other)?;
        match self.request(Rtm::Getlink, NlmF::empty(), request) {
            Ok(replies) => Ok(replies.iter().find_map(LinkInfo::from_ifinfomsg)),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Dumps the addresses of one interface (both families).
    pub(crate) fn addresses(&mut self, index: u32) -> io::Result<Vec<(IpAddr, u8)>> {
        let request = neli::rtnl::IfaddrmsgBuilder::default()
            .ifa_family(RtAddrFamily::Unspecified)
            .ifa_prefixlen(0)
            .ifa_scope(neli::consts::rtnl::RtScope::Universe)
            .ifa_index(index)
            .build()
            .map_err(io::Error::other)?;
        let replies = self.request(Rtm::Getaddr, NlmF::DUMP, request)?;
        Ok(replies
            .iter()
            .filter(|msg| *msg.ifa_index() == index)
            .filter_map(address_of)
            .collect())
    }
}

/// The address an `RTM_NEWADDR` carries: `IFA_LOCAL` when present (the local end
/// of a point-to-point address), else `IFA_ADDRESS`.
pub(crate) fn address_of(msg: &Ifaddrmsg) -> Option<(IpAddr, u8)> {
    let mut local = None;
    let mut address = None;
    for attr in msg.rtattrs().iter() {
        let payload: &[u8] = attr.rta_payload().as_ref();
        match attr.rta_type() {
            Ifa::Local => local = ip_from_bytes(payload),
            Ifa::Address => address = ip_from_bytes(payload),
            _ => {}
        }
    }
    Some((local.or(address)?, *msg.ifa_prefixlen()))
}

pub(crate) fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(octets) = <[u8; 4]>::try_from(bytes) {
        Some(IpAddr::from(octets))
    } else if let Ok(octets) = <[u8; 16]>::try_from(bytes) {
        Some(IpAddr::from(octets))
    } else {
        None
    }
}

/// Keeps the errno of a socket error when there is one.
pub(crate) fn from_socket_error(e: SocketError) -> io::Error {
    match e {
        SocketError::Io(io) => match io.raw_os_error() {
            Some(errno) => io::Error::from_raw_os_error(errno),
            None => io::Error::new(io.kind(), io.to_string()),
        },
        other => io::Error::other(other.to_string()),
    }
}

fn from_router_error<T, P>(e: RouterError<T, P>) -> io::Error
where
    T: fmt::Debug,
    P: fmt::Debug,
{
    match e {
        RouterError::Nlmsgerr(err) => io::Error::from_raw_os_error(-*err.error()),
        RouterError::Socket(err) => from_socket_error(err),
        other => io::Error::other(other.to_string()),
    }
}
