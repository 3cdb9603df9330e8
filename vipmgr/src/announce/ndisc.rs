//! Unsolicited Neighbour Advertisement (RFC 4861 §7.2.6): the IPv6 counterpart
//! of gratuitous ARP.
//!
//! The whole frame is built here and sent on the same AF_PACKET socket as ARP,
//! as keepalived does, so that the source address is the VIP itself whatever
//! the kernel's source address selection would pick: Ethernet to
//! 33:33:00:00:00:01, IPv6 from the VIP to ff02::1 with hop limit 255, ICMPv6
//! Neighbour Advertisement with Override set, Solicited clear, Router set when
//! the interface forwards, target the VIP, and a Target Link-Layer Address
//! option carrying the interface's MAC.

use std::net::Ipv6Addr;

use pnet_packet::{
    MutablePacket, Packet,
    ethernet::{EtherTypes, EthernetPacket, MutableEthernetPacket},
    icmpv6::{
        self, Icmpv6Code, Icmpv6Packet, Icmpv6Types,
        ndp::{MutableNeighborAdvertPacket, NdpOptionTypes, NeighborAdvertFlags},
    },
    ip::IpNextHeaderProtocols,
    ipv6::{Ipv6Packet, MutableIpv6Packet},
};

use super::MacAddr;
use crate::error::{Error, Result};

mod field {
    /// Ethernet header.
    pub const ETH_LEN: usize = 14;
    /// Fixed IPv6 header.
    pub const IPV6_LEN: usize = 40;
    /// ICMPv6 type, code, checksum, flags + reserved, target address.
    pub const NA_LEN: usize = 24;
    /// Target Link-Layer Address option for a 6-byte MAC: type, length (in
    /// units of 8 bytes), address.
    pub const TLLA_LEN: usize = 8;
    /// Where the ICMPv6 message starts in the frame.
    pub const ICMP: usize = ETH_LEN + IPV6_LEN;
}

/// Length of the frame [`UnsolicitedNa::emit`] writes.
pub const FRAME_LEN: usize = field::ICMP + field::NA_LEN + field::TLLA_LEN;

/// ICMPv6 payload length in the IPv6 header.
const PAYLOAD_LEN: u16 = (field::NA_LEN + field::TLLA_LEN) as u16;

/// All-nodes multicast, and the Ethernet address it maps to (RFC 2464 §7).
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES_MAC: MacAddr = MacAddr(0x33, 0x33, 0, 0, 0, 1);

/// Hop limit every Neighbour Discovery message must carry (RFC 4861 §7.1.2).
const ND_HOP_LIMIT: u8 = 255;

/// An unsolicited Neighbour Advertisement announcing `address` at `mac`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnsolicitedNa {
    pub mac: MacAddr,
    pub address: Ipv6Addr,
    /// The Router flag: set when the sending interface forwards IPv6, so that
    /// hosts using this director as their router keep it in their router list.
    pub router: bool,
}

impl UnsolicitedNa {
    /// Length of the frame [`emit`](Self::emit) writes.
    pub const fn buffer_len(&self) -> usize {
        FRAME_LEN
    }

    /// Writes the frame, Ethernet header included and ICMPv6 checksum computed,
    /// into the first [`FRAME_LEN`] bytes of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        let too_short = || Error::EmitFrame {
            protocol: "NA",
            reason: "buffer shorter than the frame",
        };
        let frame = buf.get_mut(..FRAME_LEN).ok_or_else(too_short)?;
        frame.fill(0);
        let mut eth = MutableEthernetPacket::new(frame).ok_or_else(too_short)?;
        eth.set_destination(ALL_NODES_MAC);
        eth.set_source(self.mac);
        eth.set_ethertype(EtherTypes::Ipv6);

        let mut ip = MutableIpv6Packet::new(eth.payload_mut()).ok_or_else(too_short)?;
        ip.set_version(6);
        ip.set_payload_length(PAYLOAD_LEN);
        ip.set_next_header(IpNextHeaderProtocols::Icmpv6);
        ip.set_hop_limit(ND_HOP_LIMIT);
        ip.set_source(self.address);
        ip.set_destination(ALL_NODES);

        let icmp = ip.payload_mut();
        {
            let mut na = MutableNeighborAdvertPacket::new(icmp).ok_or_else(too_short)?;
            na.set_icmpv6_type(Icmpv6Types::NeighborAdvert);
            na.set_icmpv6_code(Icmpv6Code(0));
            let mut flags = NeighborAdvertFlags::Override;
            if self.router {
                flags |= NeighborAdvertFlags::Router;
            }
            na.set_flags(flags);
            na.set_target_addr(self.address);
        }
        let option = icmp
            .get_mut(field::NA_LEN..field::NA_LEN + field::TLLA_LEN)
            .ok_or_else(too_short)?;
        option[0] = NdpOptionTypes::TargetLLAddr.0;
        option[1] = (field::TLLA_LEN / 8) as u8;
        option[2..].copy_from_slice(&self.mac.octets());

        let checksum = icmpv6::checksum(
            &Icmpv6Packet::new(icmp).ok_or_else(too_short)?,
            &self.address,
            &ALL_NODES,
        );
        icmp[2..4].copy_from_slice(&checksum.to_be_bytes());
        Ok(())
    }

    /// The frame as bytes.
    pub fn to_frame(&self) -> Vec<u8> {
        let mut frame = vec![0; FRAME_LEN];
        // The buffer is exactly FRAME_LEN long, so emit cannot fail.
        let _ = self.emit(&mut frame);
        frame
    }

    /// Reads a captured frame back, accepting only an unsolicited NA as
    /// [`emit`](Self::emit) builds it: to ff02::1 (and its MAC) with hop limit
    /// 255, a valid checksum, Solicited clear and Override set, source = target,
    /// and a Target Link-Layer Address option equal to the Ethernet source.
    pub fn parse(frame: &[u8]) -> Result<Self> {
        let bad = |reason| Error::ParseFrame {
            protocol: "NA",
            reason,
        };
        let eth = EthernetPacket::new(frame).ok_or(bad("frame shorter than Ethernet"))?;
        if eth.get_ethertype() != EtherTypes::Ipv6 {
            return Err(bad("EtherType is not IPv6"));
        }
        if eth.get_destination() != ALL_NODES_MAC {
            return Err(bad("not sent to the all-nodes MAC"));
        }
        let ip = Ipv6Packet::new(eth.payload()).ok_or(bad("IPv6 header truncated"))?;
        if ip.get_version() != 6 {
            return Err(bad("IP version is not 6"));
        }
        if ip.get_next_header() != IpNextHeaderProtocols::Icmpv6 {
            return Err(bad("next header is not ICMPv6"));
        }
        if ip.get_hop_limit() != ND_HOP_LIMIT {
            return Err(bad("hop limit is not 255"));
        }
        if ip.get_destination() != ALL_NODES {
            return Err(bad("not sent to ff02::1"));
        }
        let source = ip.get_source();
        let icmp_len = usize::from(ip.get_payload_length());
        let icmp = eth
            .payload()
            .get(field::IPV6_LEN..field::IPV6_LEN + icmp_len)
            .ok_or(bad("IPv6 payload length exceeds the frame"))?;
        if icmp.len() < field::NA_LEN {
            return Err(bad("ICMPv6 message shorter than an NA"));
        }
        let header = Icmpv6Packet::new(icmp).ok_or(bad("ICMPv6 header truncated"))?;
        if header.get_icmpv6_type() != Icmpv6Types::NeighborAdvert
            || header.get_icmpv6_code() != Icmpv6Code(0)
        {
            return Err(bad("not a Neighbour Advertisement"));
        }
        if icmpv6::checksum(&header, &source, &ALL_NODES) != header.get_checksum() {
            return Err(bad("bad ICMPv6 checksum"));
        }
        let flags = icmp[4];
        if flags & NeighborAdvertFlags::Solicited != 0 {
            return Err(bad("Solicited flag set: not unsolicited"));
        }
        if flags & NeighborAdvertFlags::Override == 0 {
            return Err(bad("Override flag clear"));
        }
        let target: [u8; 16] = icmp[8..field::NA_LEN]
            .try_into()
            .map_err(|_| bad("target address truncated"))?;
        let address = Ipv6Addr::from(target);
        if address != source {
            return Err(bad("target differs from the source address"));
        }
        let mac = target_link_layer_address(&icmp[field::NA_LEN..])
            .ok_or(bad("no Target Link-Layer Address option"))?;
        if mac != eth.get_source() {
            return Err(bad(
                "Target Link-Layer Address differs from the Ethernet source",
            ));
        }
        Ok(UnsolicitedNa {
            mac,
            address,
            router: flags & NeighborAdvertFlags::Router != 0,
        })
    }
}

/// Walks the NDP options (type, length in units of 8 bytes, data) and returns
/// the first Target Link-Layer Address of Ethernet size. An option of length 0
/// makes the whole message invalid (RFC 4861 §4.6).
fn target_link_layer_address(mut options: &[u8]) -> Option<MacAddr> {
    while let [kind, units, ..] = *options {
        let len = usize::from(units) * 8;
        if len == 0 || len > options.len() {
            return None;
        }
        if kind == NdpOptionTypes::TargetLLAddr.0 && len == field::TLLA_LEN {
            let m = &options[2..8];
            return Some(MacAddr::new(m[0], m[1], m[2], m[3], m[4], m[5]));
        }
        options = &options[len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Sent by the Linux 6.18 kernel itself (`net.ipv6.conf.va.ndisc_notify=1`,
    /// then a MAC change on `va`) for 2001:db8::100 on a veth whose new MAC is
    /// 02:00:5e:00:53:03; captured with `tcpdump -w` on the veth peer.
    const KERNEL_NA: [u8; 86] = [
        0x33, 0x33, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x5e, 0x00, 0x53, 0x03, 0x86, 0xdd, //
        0x60, 0x00, 0x00, 0x00, 0x00, 0x20, 0x3a, 0xff, //
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x00, //
        0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x01, //
        0x88, 0x00, 0x46, 0x2a, 0x20, 0x00, 0x00, 0x00, //
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x00, //
        0x02, 0x01, 0x02, 0x00, 0x5e, 0x00, 0x53, 0x03,
    ];

    fn sample() -> UnsolicitedNa {
        UnsolicitedNa {
            mac: MacAddr::new(0x02, 0x00, 0x5e, 0x00, 0x53, 0x03),
            address: "2001:db8::100".parse().expect("address"),
            router: false,
        }
    }

    #[test]
    fn parses_the_kernels_own_na() {
        assert_eq!(UnsolicitedNa::parse(&KERNEL_NA).expect("parse"), sample());
    }

    #[test]
    fn emits_the_same_bytes_as_the_kernel() {
        assert_eq!(sample().to_frame(), KERNEL_NA.to_vec());
    }

    #[test]
    fn fields_read_back_with_pnet() {
        let na = UnsolicitedNa {
            router: true,
            ..sample()
        };
        let frame = na.to_frame();
        let eth = EthernetPacket::new(&frame).expect("eth");
        assert_eq!(eth.get_destination(), ALL_NODES_MAC);
        assert_eq!(eth.get_source(), na.mac);
        let ip = Ipv6Packet::new(eth.payload()).expect("ipv6");
        assert_eq!(ip.get_hop_limit(), 255);
        assert_eq!(ip.get_source(), na.address);
        assert_eq!(ip.get_destination(), ALL_NODES);
        let advert = pnet_packet::icmpv6::ndp::NeighborAdvertPacket::new(ip.payload()).expect("na");
        assert_eq!(
            advert.get_flags(),
            NeighborAdvertFlags::Override | NeighborAdvertFlags::Router
        );
        assert_eq!(advert.get_target_addr(), na.address);
        let options = advert.get_options();
        assert_eq!(options.len(), 1);
        assert_eq!(options[0].option_type, NdpOptionTypes::TargetLLAddr);
        assert_eq!(options[0].data, na.mac.octets().to_vec());
        assert_eq!(UnsolicitedNa::parse(&frame).expect("parse"), na);
    }

    #[test]
    fn rejects_bad_checksum_hop_limit_and_solicited() {
        let mut sum = KERNEL_NA;
        sum[57] ^= 1;
        assert!(UnsolicitedNa::parse(&sum).is_err());
        let mut hops = KERNEL_NA;
        hops[21] = 64;
        assert!(UnsolicitedNa::parse(&hops).is_err());
        let mut solicited = sample().to_frame();
        solicited[field::ICMP + 4] |= NeighborAdvertFlags::Solicited;
        assert!(UnsolicitedNa::parse(&solicited).is_err());
        assert!(UnsolicitedNa::parse(&KERNEL_NA[..80]).is_err());
    }

    #[test]
    fn zero_length_option_is_invalid() {
        assert_eq!(target_link_layer_address(&[2, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(
            target_link_layer_address(&[1, 1, 9, 9, 9, 9, 9, 9, 2, 1, 1, 2, 3, 4, 5, 6]),
            Some(MacAddr::new(1, 2, 3, 4, 5, 6))
        );
    }

    proptest! {
        #[test]
        fn round_trip(mac in any::<[u8; 6]>(), ip in any::<u128>(), router in any::<bool>()) {
            let na = UnsolicitedNa {
                mac: MacAddr::new(mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]),
                address: Ipv6Addr::from(ip),
                router,
            };
            prop_assert_eq!(UnsolicitedNa::parse(&na.to_frame()).expect("parse"), na);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..160)) {
            let _ = UnsolicitedNa::parse(&bytes);
        }

        #[test]
        fn mutated_frames_never_panic(index in 0..FRAME_LEN, value in any::<u8>()) {
            let mut frame = KERNEL_NA;
            frame[index] = value;
            let _ = UnsolicitedNa::parse(&frame);
        }
    }
}
