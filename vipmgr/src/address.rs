//! VIP addresses on interfaces, over rtnetlink (neli).
//!
//! [`AddressManager`] adds, removes and checks single VIPs idempotently, and
//! [`AddressManager::reconcile`] brings the kernel to a desired set: it reads what
//! the kernel holds (an address dump), diffs, and applies only the difference.
//! It only ever touches VIPs it was told it manages, never other addresses.
//!
//! All calls block (one netlink round trip each, a few for `reconcile`): call them
//! from a dedicated thread or through `tokio::task::spawn_blocking`. The netlink
//! socket belongs to the network namespace of the thread that called
//! [`AddressManager::new`], whichever thread uses it later.

use std::{
    collections::{HashMap, HashSet},
    fmt, io,
    net::IpAddr,
};

use neli::{
    consts::{
        nl::NlmF,
        rtnl::{Ifa, IfaF, RtAddrFamily, RtScope, Rtm},
    },
    rtnl::{Ifaddrmsg, IfaddrmsgBuilder, RtattrBuilder},
    types::{Buffer, RtBuffer},
};
use serde::Serialize;

use crate::{
    error::{Error, Result},
    netlink::{LinkInfo, MAX_IFNAME_LEN, Rtnl},
};

/// A virtual IP address as it sits on an interface, like
/// `ip addr add 192.0.2.100/24 dev eth0 label eth0:vip`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Vip {
    pub address: IpAddr,
    pub prefix_len: u8,
    pub interface: String,
    /// IPv4 only: the address label (`ip addr ... label`), which must start with
    /// the interface name. The kernel has no labels for IPv6 addresses.
    pub label: Option<String>,
}

impl Vip {
    /// A VIP without a label.
    pub fn new(address: IpAddr, prefix_len: u8, interface: impl Into<String>) -> Self {
        Vip {
            address,
            prefix_len,
            interface: interface.into(),
            label: None,
        }
    }

    /// Checks that the kernel can hold this VIP as given: a unicast address, a
    /// prefix length within the family's width, a valid interface name and, if
    /// any, an IPv4 label that starts with the interface name.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason| {
            Err(Error::InvalidVip {
                vip: self.clone(),
                reason,
            })
        };
        let max_prefix = match self.address {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if self.prefix_len > max_prefix {
            return invalid("prefix length is longer than the address");
        }
        if self.address.is_unspecified() || self.address.is_multicast() {
            return invalid("address is not a unicast address");
        }
        if let IpAddr::V4(v4) = self.address
            && v4.is_broadcast()
        {
            return invalid("address is not a unicast address");
        }
        if !valid_ifname(&self.interface) {
            return invalid("interface name is not a valid Linux interface name");
        }
        if let Some(label) = &self.label {
            if self.address.is_ipv6() {
                return invalid("IPv6 addresses cannot carry a label");
            }
            if label.len() > MAX_IFNAME_LEN || label.contains('\0') {
                return invalid("label is longer than 15 bytes");
            }
            if !label.starts_with(self.interface.as_str()) {
                return invalid("label must start with the interface name");
            }
        }
        Ok(())
    }

    /// What identifies the address in the kernel: address, prefix, interface
    /// (the label is a property of the address, not part of its identity).
    fn key(&self) -> (IpAddr, u8, &str) {
        (self.address, self.prefix_len, self.interface.as_str())
    }
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} dev {}",
            self.address, self.prefix_len, self.interface
        )?;
        if let Some(label) = &self.label {
            write!(f, " label {label}")?;
        }
        Ok(())
    }
}

/// Interface names as the kernel's `dev_valid_name` accepts them.
pub(crate) fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME_LEN
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
}

/// What one [`AddressManager::reconcile`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    pub added: Vec<Vip>,
    pub removed: Vec<Vip>,
}

impl Changes {
    /// True when nothing was changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// Adds, removes and lists VIP addresses through one route netlink socket.
#[derive(Debug)]
pub struct AddressManager {
    rtnl: Rtnl,
}

impl AddressManager {
    /// Opens the netlink socket, in the calling thread's network namespace.
    pub fn new() -> Result<Self> {
        let rtnl = Rtnl::open().map_err(|source| Error::OpenNetlink { source })?;
        Ok(AddressManager { rtnl })
    }

    /// The kernel's index of the interface `name`.
    pub fn link_index(&mut self, name: &str) -> Result<u32> {
        Ok(self.link(name)?.index)
    }

    /// The addresses on `interface` with their prefix lengths, both families,
    /// VIPs and others alike.
    pub fn addresses(&mut self, interface: &str) -> Result<Vec<(IpAddr, u8)>> {
        let link = self.link(interface)?;
        self.rtnl
            .addresses(link.index)
            .map_err(|source| Error::ListAddresses {
                interface: interface.to_owned(),
                source,
            })
    }

    /// Whether `vip` (address and prefix length) is on its interface. A VIP on an
    /// interface that does not exist is not held.
    pub fn is_held(&mut self, vip: &Vip) -> Result<bool> {
        let check = |source| Error::CheckVip {
            vip: vip.clone(),
            source,
        };
        let Some(link) = self.rtnl.link(&vip.interface).map_err(check)? else {
            return Ok(false);
        };
        let held = self.rtnl.addresses(link.index).map_err(check)?;
        Ok(held.contains(&(vip.address, vip.prefix_len)))
    }

    /// Puts `vip` on its interface. Returns `true` if it was added, `false` if it
    /// was already there. IPv6 VIPs are added with `IFA_F_NODAD`, so they are
    /// usable at once instead of staying tentative during duplicate detection.
    pub fn add(&mut self, vip: &Vip) -> Result<bool> {
        vip.validate()?;
        let fail = |source| Error::AddVip {
            vip: vip.clone(),
            source,
        };
        let link = self
            .rtnl
            .link(&vip.interface)
            .map_err(fail)?
            .ok_or_else(|| fail(io::Error::from_raw_os_error(libc::ENODEV)))?;
        let request = ifaddrmsg(vip, &link, true).map_err(fail)?;
        match self
            .rtnl
            .request(Rtm::Newaddr, NlmF::CREATE | NlmF::EXCL | NlmF::ACK, request)
        {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                // IPv6 answers EEXIST for the same address with another prefix
                // length too: that is not "already held" and must not pass silently.
                let held = self.rtnl.addresses(link.index).map_err(fail)?;
                if held.contains(&(vip.address, vip.prefix_len)) {
                    Ok(false)
                } else {
                    Err(fail(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "the address is already on the interface with another prefix length",
                    )))
                }
            }
            Err(e) => Err(fail(e)),
        }
    }

    /// Takes `vip` off its interface. Returns `true` if it was removed, `false` if
    /// it was not there (or the interface does not exist).
    ///
    /// Removing a primary IPv4 address also removes the secondaries of its subnet
    /// unless `net.ipv4.conf.<if>.promote_secondaries` is set; a VIP in the subnet
    /// of the interface's own address is a secondary, so this matters only for a
    /// VIP that is alone in its subnet with other VIPs.
    pub fn remove(&mut self, vip: &Vip) -> Result<bool> {
        vip.validate()?;
        let fail = |source| Error::RemoveVip {
            vip: vip.clone(),
            source,
        };
        let Some(link) = self.rtnl.link(&vip.interface).map_err(fail)? else {
            return Ok(false);
        };
        let request = ifaddrmsg(vip, &link, false).map_err(fail)?;
        match self.rtnl.request(Rtm::Deladdr, NlmF::ACK, request) {
            Ok(_) => Ok(true),
            Err(e)
                if e.raw_os_error() == Some(libc::EADDRNOTAVAIL)
                    || e.raw_os_error() == Some(libc::ENODEV) =>
            {
                Ok(false)
            }
            Err(e) => Err(fail(e)),
        }
    }

    /// Brings the kernel to `desired`: adds every desired VIP that is missing and
    /// removes every `managed` VIP that is held but no longer desired. Addresses
    /// named in neither list are left alone. A second call with the same lists
    /// changes nothing. VIPs are compared by address, prefix length and
    /// interface: a label change alone is not applied.
    ///
    /// One failing VIP does not stop the others: everything that can be applied
    /// is, and the failures come back together in [`Error::Reconcile`] with what
    /// was applied.
    pub fn reconcile(&mut self, desired: &[Vip], managed: &[Vip]) -> Result<Changes> {
        let mut changes = Changes::default();
        let mut failed = Vec::new();
        let desired_keys: HashSet<_> = desired.iter().map(Vip::key).collect();
        let mut held = HeldCache::default();

        let mut seen = HashSet::new();
        for vip in managed {
            if desired_keys.contains(&vip.key()) || !seen.insert(vip.key()) {
                continue;
            }
            let step = vip
                .validate()
                .and_then(|()| held.contains(&mut self.rtnl, vip))
                .and_then(|is_held| if is_held { self.remove(vip) } else { Ok(false) });
            match step {
                Ok(true) => changes.removed.push(vip.clone()),
                Ok(false) => {}
                Err(e) => failed.push(e),
            }
        }

        // Removing a primary IPv4 address can take secondaries with it: read again.
        if !changes.removed.is_empty() {
            held = HeldCache::default();
        }

        let mut seen = HashSet::new();
        for vip in desired {
            if !seen.insert(vip.key()) {
                continue;
            }
            let step = vip
                .validate()
                .and_then(|()| held.contains(&mut self.rtnl, vip))
                .and_then(|is_held| if is_held { Ok(false) } else { self.add(vip) });
            match step {
                Ok(true) => changes.added.push(vip.clone()),
                Ok(false) => {}
                Err(e) => failed.push(e),
            }
        }

        if failed.is_empty() {
            Ok(changes)
        } else {
            Err(Error::Reconcile {
                applied: changes,
                failed,
            })
        }
    }

    fn link(&mut self, name: &str) -> Result<LinkInfo> {
        self.rtnl
            .link(name)
            .map_err(|source| Error::LookupLink {
                interface: name.to_owned(),
                source,
            })?
            .ok_or_else(|| Error::LinkNotFound {
                interface: name.to_owned(),
            })
    }
}

/// The addresses of each interface, dumped once per reconcile.
#[derive(Debug, Default)]
struct HeldCache {
    /// `None`: the interface does not exist.
    by_interface: HashMap<String, Option<Vec<(IpAddr, u8)>>>,
}

impl HeldCache {
    fn contains(&mut self, rtnl: &mut Rtnl, vip: &Vip) -> Result<bool> {
        if !self.by_interface.contains_key(&vip.interface) {
            let check = |source| Error::CheckVip {
                vip: vip.clone(),
                source,
            };
            let addresses = match rtnl.link(&vip.interface).map_err(check)? {
                Some(link) => Some(rtnl.addresses(link.index).map_err(check)?),
                None => None,
            };
            self.by_interface.insert(vip.interface.clone(), addresses);
        }
        Ok(self
            .by_interface
            .get(&vip.interface)
            .and_then(Option::as_ref)
            .is_some_and(|held| held.contains(&(vip.address, vip.prefix_len))))
    }
}

/// The `RTM_NEWADDR` / `RTM_DELADDR` body for `vip`, as `ip addr add/del` sends it:
/// `IFA_LOCAL` and `IFA_ADDRESS` both the VIP, universe scope.
fn ifaddrmsg(vip: &Vip, link: &LinkInfo, adding: bool) -> io::Result<Ifaddrmsg> {
    let (family, octets): (_, Vec<u8>) = match vip.address {
        IpAddr::V4(a) => (RtAddrFamily::Inet, a.octets().to_vec()),
        IpAddr::V6(a) => (RtAddrFamily::Inet6, a.octets().to_vec()),
    };
    let mut attrs = RtBuffer::new();
    for ty in [Ifa::Local, Ifa::Address] {
        attrs.push(
            RtattrBuilder::default()
                .rta_type(ty)
                .rta_payload(Buffer::from(octets.as_slice()))
                .build()
                .map_err(io::Error::other)?,
        );
    }
    if adding && let (IpAddr::V4(_), Some(label)) = (vip.address, &vip.label) {
        attrs.push(
            RtattrBuilder::default()
                .rta_type(Ifa::Label)
                .rta_payload(label.as_str())
                .build()
                .map_err(io::Error::other)?,
        );
    }
    let flags = if adding && vip.address.is_ipv6() {
        IfaF::NODAD
    } else {
        IfaF::empty()
    };
    IfaddrmsgBuilder::default()
        .ifa_family(family)
        .ifa_prefixlen(vip.prefix_len)
        .ifa_flags(flags)
        .ifa_scope(RtScope::Universe)
        .ifa_index(link.index)
        .rtattrs(attrs)
        .build()
        .map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(s: &str, prefix_len: u8, interface: &str) -> Vip {
        Vip::new(s.parse().expect("test address"), prefix_len, interface)
    }

    #[test]
    fn display_reads_like_ip_addr() {
        assert_eq!(
            vip("192.0.2.100", 24, "eth0").to_string(),
            "192.0.2.100/24 dev eth0"
        );
        let mut labelled = vip("192.0.2.100", 24, "eth0");
        labelled.label = Some("eth0:vip".into());
        assert_eq!(
            labelled.to_string(),
            "192.0.2.100/24 dev eth0 label eth0:vip"
        );
        assert_eq!(
            vip("2001:db8::100", 64, "eth1").to_string(),
            "2001:db8::100/64 dev eth1"
        );
    }

    #[test]
    fn serializes_address_as_text() {
        let json = serde_json::to_value(vip("192.0.2.100", 24, "eth0")).expect("serialize");
        assert_eq!(
            json,
            serde_json::json!({
                "address": "192.0.2.100",
                "prefix_len": 24,
                "interface": "eth0",
                "label": null
            })
        );
    }

    #[test]
    fn validate_accepts_ordinary_vips() {
        vip("192.0.2.100", 24, "eth0").validate().expect("v4");
        vip("192.0.2.100", 32, "bond0.100")
            .validate()
            .expect("v4/32");
        vip("2001:db8::1", 128, "eth0").validate().expect("v6");
        let mut labelled = vip("192.0.2.100", 24, "eth0");
        labelled.label = Some("eth0:web".into());
        labelled.validate().expect("label");
    }

    #[test]
    fn validate_rejects_what_the_kernel_would() {
        let reason = |v: Vip| match v.validate() {
            Err(Error::InvalidVip { reason, .. }) => reason,
            other => panic!("expected InvalidVip, got {other:?}"),
        };
        assert!(reason(vip("192.0.2.100", 33, "eth0")).contains("prefix"));
        assert!(reason(vip("2001:db8::1", 129, "eth0")).contains("prefix"));
        assert!(reason(vip("0.0.0.0", 24, "eth0")).contains("unicast"));
        assert!(reason(vip("224.0.0.18", 32, "eth0")).contains("unicast"));
        assert!(reason(vip("255.255.255.255", 32, "eth0")).contains("unicast"));
        assert!(reason(vip("ff02::1", 128, "eth0")).contains("unicast"));
        assert!(reason(vip("192.0.2.1", 24, "")).contains("interface"));
        assert!(reason(vip("192.0.2.1", 24, "a-very-long-ifname")).contains("interface"));
        assert!(reason(vip("192.0.2.1", 24, "eth0:1")).contains("interface"));
        let mut v6 = vip("2001:db8::1", 64, "eth0");
        v6.label = Some("eth0:x".into());
        assert!(reason(v6).contains("IPv6"));
        let mut wrong = vip("192.0.2.1", 24, "eth0");
        wrong.label = Some("eth1:x".into());
        assert!(reason(wrong).contains("start with"));
    }

    #[test]
    fn error_names_vip_and_interface() {
        let err = Error::AddVip {
            vip: vip("192.0.2.100", 24, "eth0"),
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        assert_eq!(err.to_string(), "cannot add VIP 192.0.2.100/24 dev eth0");
    }

    #[test]
    fn newaddr_body_carries_nodad_for_ipv6_only() {
        let link = LinkInfo {
            index: 7,
            name: "eth0".into(),
            flags: neli::consts::rtnl::Iff::UP,
            mac: None,
        };
        let v6 = ifaddrmsg(&vip("2001:db8::1", 64, "eth0"), &link, true).expect("v6");
        assert!(v6.ifa_flags().contains(IfaF::NODAD));
        assert_eq!(*v6.ifa_index(), 7);
        assert_eq!(*v6.ifa_prefixlen(), 64);
        let del = ifaddrmsg(&vip("2001:db8::1", 64, "eth0"), &link, false).expect("del");
        assert!(!del.ifa_flags().contains(IfaF::NODAD));
        let v4 = ifaddrmsg(&vip("192.0.2.1", 24, "eth0"), &link, true).expect("v4");
        assert!(!v4.ifa_flags().contains(IfaF::NODAD));
        assert_eq!(
            crate::netlink::address_of(&v4),
            Some(("192.0.2.1".parse().expect("addr"), 24))
        );
    }
}
