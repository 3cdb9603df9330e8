//! The VRRP setup a pair shares, whichever daemon runs on each side.

use std::net::IpAddr;
use std::time::Duration;

use crate::lab::{PREFIX4, PREFIX6, VIP4, VIP6};

/// What both members of a pair agree on.
#[derive(Debug, Clone)]
pub struct Setup {
    /// 3 (RFC 5798) or 2 (RFC 3768).
    pub version: u8,
    pub advert: Duration,
    pub router_id: u8,
    /// Unicast to the peer instead of multicast to 224.0.0.18 / ff02::12.
    pub unicast: bool,
    /// IPv6 VIP, VRRP over IPv6.
    pub ipv6: bool,
    pub preempt: bool,
}

impl Setup {
    /// VRRPv3 over IPv4, multicast, preempt.
    pub fn v3(advert: Duration) -> Setup {
        Setup {
            version: 3,
            advert,
            router_id: 51,
            unicast: false,
            ipv6: false,
            preempt: true,
        }
    }

    /// VRRPv2 at 1 s adverts.
    pub fn v2() -> Setup {
        Setup {
            version: 2,
            advert: Duration::from_secs(1),
            ..Setup::v3(Duration::from_secs(1))
        }
    }

    pub fn unicast(mut self) -> Setup {
        self.unicast = true;
        self
    }

    pub fn ipv6(mut self) -> Setup {
        self.ipv6 = true;
        self
    }

    pub fn vip(&self) -> IpAddr {
        if self.ipv6 { VIP6.into() } else { VIP4.into() }
    }

    /// The VIP with its prefix, as configs write it.
    pub fn vip_cidr(&self) -> String {
        if self.ipv6 {
            format!("{VIP6}/{PREFIX6}")
        } else {
            format!("{VIP4}/{PREFIX4}")
        }
    }

    /// RFC 5798 Master_Down_Interval for a backup of `priority`: 3 adverts plus skew.
    pub fn master_down(&self, priority: u8) -> Duration {
        let skew = self
            .advert
            .mul_f64(f64::from(256 - u32::from(priority)) / 256.0);
        self.advert * 3 + skew
    }

    /// A duration as a config file writes it: "100ms", "1s".
    pub fn advert_str(&self) -> String {
        duration_str(self.advert)
    }

    /// A generous deadline for one failover: what the protocol needs, plus slack for a
    /// busy 2-core CI machine.
    pub fn failover_deadline(&self) -> Duration {
        self.master_down(1) * 2 + Duration::from_secs(5)
    }
}

pub fn duration_str(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
