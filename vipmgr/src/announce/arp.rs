//! Gratuitous ARP: the Ethernet frame that tells a LAN "this IPv4 address is now
//! at this MAC".
//!
//! Like keepalived (and heartbeat's `send_arp`), vipmgr sends an ARP *request*,
//! broadcast, with sender and target protocol address both the VIP and the
//! sender hardware address the interface's MAC. Hosts and switches that hold the
//! VIP in their cache update it; nobody answers. The target hardware address is
//! the broadcast address, as `arping -U` sends it (RFC 5227 says it is ignored).

use std::net::Ipv4Addr;

use pnet_packet::{
    MutablePacket, Packet,
    arp::{ArpHardwareTypes, ArpOperations, ArpPacket, MutableArpPacket},
    ethernet::{EtherTypes, EthernetPacket, MutableEthernetPacket},
};

use super::MacAddr;
use crate::error::{Error, Result};

/// Ethernet header (14) + ARP for IPv4 over Ethernet (28).
const ARP_END: usize = 42;

/// The frame is padded to the Ethernet minimum (`ETH_ZLEN`, without FCS): a
/// software interface such as veth would otherwise send it short.
pub const FRAME_LEN: usize = 60;

/// A gratuitous ARP announcing `address` at `mac`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GratuitousArp {
    pub mac: MacAddr,
    pub address: Ipv4Addr,
}

impl GratuitousArp {
    /// Length of the frame [`emit`](Self::emit) writes.
    pub const fn buffer_len(&self) -> usize {
        FRAME_LEN
    }

    /// Writes the frame (Ethernet header included) into the first
    /// [`FRAME_LEN`] bytes of `buf`, zero padding included.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        let too_short = || Error::EmitFrame {
            protocol: "ARP",
            reason: "buffer shorter than the frame",
        };
        let frame = buf.get_mut(..FRAME_LEN).ok_or_else(too_short)?;
        frame.fill(0);
        let mut eth = MutableEthernetPacket::new(frame).ok_or_else(too_short)?;
        eth.set_destination(MacAddr::broadcast());
        eth.set_source(self.mac);
        eth.set_ethertype(EtherTypes::Arp);
        let mut arp = MutableArpPacket::new(eth.payload_mut()).ok_or_else(too_short)?;
        arp.set_hardware_type(ArpHardwareTypes::Ethernet);
        arp.set_protocol_type(EtherTypes::Ipv4);
        arp.set_hw_addr_len(6);
        arp.set_proto_addr_len(4);
        arp.set_operation(ArpOperations::Request);
        arp.set_sender_hw_addr(self.mac);
        arp.set_sender_proto_addr(self.address);
        arp.set_target_hw_addr(MacAddr::broadcast());
        arp.set_target_proto_addr(self.address);
        Ok(())
    }

    /// The frame as bytes.
    pub fn to_frame(&self) -> Vec<u8> {
        let mut frame = vec![0; FRAME_LEN];
        // The buffer is exactly FRAME_LEN long, so emit cannot fail.
        let _ = self.emit(&mut frame);
        frame
    }

    /// Reads a captured frame back, accepting only a gratuitous ARP request as
    /// [`emit`](Self::emit) builds it: broadcast, Ethernet/IPv4 ARP request,
    /// sender IP = target IP, sender MAC = Ethernet source. Padding may be any
    /// length (including none).
    pub fn parse(frame: &[u8]) -> Result<Self> {
        let bad = |reason| Error::ParseFrame {
            protocol: "ARP",
            reason,
        };
        if frame.len() < ARP_END {
            return Err(bad("frame shorter than Ethernet + ARP"));
        }
        let eth = EthernetPacket::new(frame).ok_or(bad("frame shorter than Ethernet"))?;
        if eth.get_ethertype() != EtherTypes::Arp {
            return Err(bad("EtherType is not ARP"));
        }
        if eth.get_destination() != MacAddr::broadcast() {
            return Err(bad("not sent to the broadcast address"));
        }
        let arp = ArpPacket::new(eth.payload()).ok_or(bad("ARP header truncated"))?;
        if arp.get_hardware_type() != ArpHardwareTypes::Ethernet
            || arp.get_protocol_type() != EtherTypes::Ipv4
            || arp.get_hw_addr_len() != 6
            || arp.get_proto_addr_len() != 4
        {
            return Err(bad("not ARP for IPv4 over Ethernet"));
        }
        if arp.get_operation() != ArpOperations::Request {
            return Err(bad("not an ARP request"));
        }
        let address = arp.get_sender_proto_addr();
        if arp.get_target_proto_addr() != address {
            return Err(bad("sender and target IP differ: not gratuitous"));
        }
        let mac = arp.get_sender_hw_addr();
        if eth.get_source() != mac {
            return Err(bad("Ethernet source differs from the ARP sender MAC"));
        }
        Ok(GratuitousArp { mac, address })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Captured with `tcpdump -w` on the peer of a veth pair in a network
    /// namespace while `arping -U -c1 -I va 192.0.2.100` (iputils 20221126,
    /// Debian 12) ran on `va`, MAC 02:00:5e:00:53:01. It went out 42 bytes long,
    /// without padding.
    const ARPING_U: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x5e, 0x00, 0x53, 0x01, 0x08, 0x06, //
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, //
        0x02, 0x00, 0x5e, 0x00, 0x53, 0x01, 0xc0, 0x00, 0x02, 0x64, //
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc0, 0x00, 0x02, 0x64,
    ];

    fn sample() -> GratuitousArp {
        GratuitousArp {
            mac: MacAddr::new(0x02, 0x00, 0x5e, 0x00, 0x53, 0x01),
            address: Ipv4Addr::new(192, 0, 2, 100),
        }
    }

    #[test]
    fn parses_arping_capture() {
        assert_eq!(GratuitousArp::parse(&ARPING_U).expect("parse"), sample());
    }

    #[test]
    fn emits_the_same_bytes_as_arping_plus_padding() {
        let frame = sample().to_frame();
        assert_eq!(frame.len(), FRAME_LEN);
        assert_eq!(&frame[..ARP_END], &ARPING_U[..]);
        assert!(frame[ARP_END..].iter().all(|b| *b == 0));
    }

    #[test]
    fn fields_read_back_with_pnet() {
        let frame = sample().to_frame();
        let eth = EthernetPacket::new(&frame).expect("eth");
        assert_eq!(eth.get_destination(), MacAddr::broadcast());
        assert_eq!(eth.get_source(), sample().mac);
        assert_eq!(eth.get_ethertype(), EtherTypes::Arp);
        let arp = ArpPacket::new(eth.payload()).expect("arp");
        assert_eq!(arp.get_operation(), ArpOperations::Request);
        assert_eq!(arp.get_sender_hw_addr(), sample().mac);
        assert_eq!(arp.get_sender_proto_addr(), sample().address);
        assert_eq!(arp.get_target_proto_addr(), sample().address);
    }

    #[test]
    fn rejects_a_reply_and_a_non_gratuitous_request() {
        let mut reply = ARPING_U;
        reply[21] = 2;
        assert!(GratuitousArp::parse(&reply).is_err());
        let mut who_has = ARPING_U;
        who_has[41] = 1;
        assert!(GratuitousArp::parse(&who_has).is_err());
        assert!(GratuitousArp::parse(&ARPING_U[..41]).is_err());
    }

    #[test]
    fn emit_into_a_short_buffer_is_an_error() {
        let mut buf = [0u8; FRAME_LEN - 1];
        assert!(matches!(
            sample().emit(&mut buf),
            Err(Error::EmitFrame { .. })
        ));
    }

    proptest! {
        #[test]
        fn round_trip(mac in any::<[u8; 6]>(), ip in any::<u32>()) {
            let garp = GratuitousArp {
                mac: MacAddr::new(mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]),
                address: Ipv4Addr::from(ip),
            };
            prop_assert_eq!(GratuitousArp::parse(&garp.to_frame()).expect("parse"), garp);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = GratuitousArp::parse(&bytes);
        }
    }
}
