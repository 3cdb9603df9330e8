//! IPVS in the lab (inside the IPVS VM, see [`crate::vm`]): real servers set up for
//! LVS-NAT, LVS-DR or LVS-TUN with `labhttp` answering on them, `ipvsadm` on a director,
//! and the table, counters and connections as `ipvsadm` lists them.
//!
//! Addresses: the lab's 192.0.2.0/24 is the client side. For LVS-NAT the real servers
//! leave it for 10.0.1.0/24 ([`nat_ip`]) on the same bridge, with the director's
//! 10.0.1.1 ([`NAT_GATEWAY`]) as their default route, so the client cannot reach them
//! but through the director and their answers must go back through it.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::lab::{IFACE, Lab, PREFIX4, Proc, VIP4, find_bin};
use crate::wait;

/// How IPVS forwards to a real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// LVS-NAT (masquerading): the director rewrites the destination, answers come back
    /// through it.
    Nat,
    /// LVS-DR (direct routing): the director only changes the MAC; the real server holds
    /// the VIP on `lo` and answers the client directly.
    Dr,
    /// LVS-TUN: the director wraps the packet in IP-in-IP; the real server holds the VIP
    /// on `tunl0` and answers the client directly.
    Tun,
}

impl Forward {
    /// The `ipvsadm -a` option.
    pub fn flag(self) -> &'static str {
        match self {
            Forward::Nat => "-m",
            Forward::Dr => "-g",
            Forward::Tun => "-i",
        }
    }

    /// The word directord's config uses (`forward = "dr"`).
    pub fn config(self) -> &'static str {
        match self {
            Forward::Nat => "nat",
            Forward::Dr => "dr",
            Forward::Tun => "tun",
        }
    }

    /// The word `ipvsadm -Ln` shows.
    pub fn listed(self) -> &'static str {
        match self {
            Forward::Nat => "Masq",
            Forward::Dr => "Route",
            Forward::Tun => "Tunnel",
        }
    }
}

/// The director's address on the real servers' side of an LVS-NAT lab.
pub const NAT_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);

/// A real server's address in an LVS-NAT lab: 10.0.1.h for the lab's 192.0.2.h.
pub fn nat_ip(lab: &Lab, node: &str) -> Ipv4Addr {
    let [_, _, _, h] = lab.node(node).ipv4.octets();
    Ipv4Addr::new(10, 0, 1, h)
}

/// The address the director forwards to: the node's lab address, or its NAT address.
pub fn real_ip(lab: &Lab, node: &str, forward: Forward) -> Ipv4Addr {
    match forward {
        Forward::Nat => nat_ip(lab, node),
        Forward::Dr | Forward::Tun => lab.node(node).ipv4,
    }
}

/// `sysctl -w` of several keys in one go.
pub fn sysctl(lab: &Lab, node: &str, settings: &[(&str, &str)]) -> Result<()> {
    let args: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut argv = vec!["-q", "-w"];
    argv.extend(args.iter().map(String::as_str));
    lab.exec(node, "sysctl", &argv).map(drop)
}

/// Makes `node` a director for LVS-NAT: forwarding on, no ICMP redirects (its real
/// servers share the client's wire), and the real servers' gateway address.
pub fn nat_director(lab: &Lab, node: &str) -> Result<()> {
    sysctl(
        lab,
        node,
        &[
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.send_redirects", "0"),
            ("net.ipv4.conf.eth0.send_redirects", "0"),
        ],
    )?;
    lab.ip(
        node,
        &["addr", "add", &format!("{NAT_GATEWAY}/24"), "dev", IFACE],
    )
    .map(drop)
}

/// Sets up `node` as a real server for `forward` with `vip`:
/// - NAT: moves it to 10.0.1.h/24 with the director as its default route;
/// - DR: the VIP on `lo`, ARP for it suppressed (`arp_ignore=1`, `arp_announce=2`);
/// - TUN: the VIP on `tunl0` (IP-in-IP), ARP suppressed as for DR, `rp_filter` off (the
///   decapsulated packet arrives on `tunl0`, from a client routed via `eth0`).
pub fn real_server(lab: &Lab, node: &str, forward: Forward, vip: Ipv4Addr) -> Result<()> {
    let no_arp = [
        ("net.ipv4.conf.all.arp_ignore", "1"),
        ("net.ipv4.conf.all.arp_announce", "2"),
        ("net.ipv4.conf.eth0.arp_ignore", "1"),
        ("net.ipv4.conf.eth0.arp_announce", "2"),
    ];
    let vip32 = format!("{vip}/32");
    match forward {
        Forward::Nat => {
            let own = format!("{}/{PREFIX4}", lab.node(node).ipv4);
            lab.ip(node, &["addr", "del", &own, "dev", IFACE])?;
            let nat = format!("{}/24", nat_ip(lab, node));
            lab.ip(node, &["addr", "add", &nat, "dev", IFACE])?;
            lab.ip(
                node,
                &["route", "add", "default", "via", &NAT_GATEWAY.to_string()],
            )?;
        }
        Forward::Dr => {
            sysctl(lab, node, &no_arp)?;
            lab.ip(node, &["addr", "add", &vip32, "dev", "lo"])?;
        }
        Forward::Tun => {
            let mut settings = no_arp.to_vec();
            settings.extend([
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
                ("net.ipv4.conf.eth0.rp_filter", "0"),
                ("net.ipv4.conf.tunl0.rp_filter", "0"),
            ]);
            sysctl(lab, node, &settings)?;
            lab.ip(node, &["link", "set", "tunl0", "up"])?;
            lab.ip(node, &["addr", "add", &vip32, "dev", "tunl0"])?;
        }
    }
    Ok(())
}

/// Starts `labhttp` on `node`, listening on 0.0.0.0 at each of `ports`, and waits until
/// it accepts connections.
pub fn start_http(lab: &Lab, node: &str, ports: &[u16]) -> Result<Proc> {
    let mut args = vec!["--name".to_string(), node.to_string()];
    for port in ports {
        args.push("--listen".to_string());
        args.push(format!("0.0.0.0:{port}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let proc = lab.spawn(node, "labhttp", find_bin("labhttp")?, &args, &[])?;
    let port = ports.first().copied().context("no port to listen on")?;
    wait::until(
        Duration::from_secs(20),
        &format!("labhttp on {node} to listen"),
        || {
            if !lab.is_running(&proc) {
                bail!(
                    "labhttp on {node} exited: {}",
                    crate::lab::tail(&proc.log, 5)
                );
            }
            let local = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            lab.in_netns(node, move || Ok(TcpStream::connect(local).is_ok()))?
                .join()
                .map_err(|_| anyhow::anyhow!("probe thread panicked"))?
        },
    )?;
    Ok(proc)
}

/// Puts the VIP on the director's `eth0`.
pub fn add_vip(lab: &Lab, node: &str) -> Result<()> {
    let vip = format!("{VIP4}/{PREFIX4}");
    lab.ip(node, &["addr", "add", &vip, "dev", IFACE]).map(drop)
}

/// A `[[service]]` of directord's config with its `[[service.real]]`s.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub name: String,
    /// `address = "192.0.2.100:80"` or `fwmark = 1`.
    pub target: Target,
    pub scheduler: String,
    pub forward: Forward,
    /// Persistence in seconds.
    pub persistence: Option<u32>,
    /// Address (`ip:port`, or a bare IP for a fwmark service) and weight.
    pub reals: Vec<(String, u32)>,
}

/// What a virtual service listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Tcp(SocketAddr),
    Fwmark(u32),
}

impl ServiceConfig {
    /// The TOML text, to append to a director's config.
    pub fn toml(&self) -> String {
        self.toml_with(&[])
    }

    /// As [`ServiceConfig::toml`], with more `key = value` lines of the `[[service]]`
    /// table (`on_failure = "remove"`, `check = { ... }`), written before its reals.
    pub fn toml_with(&self, options: &[&str]) -> String {
        let target = match self.target {
            Target::Tcp(a) => format!("address = \"{a}\"\nprotocol = \"tcp\""),
            Target::Fwmark(m) => format!("fwmark = {m}"),
        };
        let mut out = format!(
            "\n[[service]]\nname = \"{}\"\n{target}\nscheduler = \"{}\"\nforward = \"{}\"\n",
            self.name,
            self.scheduler,
            self.forward.config()
        );
        if let Some(p) = self.persistence {
            out.push_str(&format!("persistence = \"{p}s\"\n"));
        }
        for option in options {
            out.push_str(option);
            out.push('\n');
        }
        for (address, weight) in &self.reals {
            out.push_str(&format!(
                "\n[[service.real]]\naddress = \"{address}\"\nweight = {weight}\n"
            ));
        }
        out
    }
}

/// `ipvsadm ARGS` on `node`, stdout.
pub fn ipvsadm(lab: &Lab, node: &str, args: &[&str]) -> Result<String> {
    lab.exec(node, "ipvsadm", args)
}

/// Collapses runs of blanks: `ipvsadm` pads its columns.
fn words(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A virtual service as `ipvsadm -Ln` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The service line with single blanks: `TCP 192.0.2.100:80 rr persistent 60`.
    pub service: String,
    pub reals: Vec<ListedReal>,
}

/// A real server line of `ipvsadm -Ln`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedReal {
    pub address: String,
    pub forward: String,
    pub weight: u32,
    pub active: u64,
    pub inactive: u64,
}

/// `ipvsadm -Ln` on `node`, parsed.
pub fn table(lab: &Lab, node: &str) -> Result<Vec<Listed>> {
    let text = ipvsadm(lab, node, &["-Ln"])?;
    parse_table(&text).with_context(|| format!("parsing ipvsadm -Ln on {node}:\n{text}"))
}

fn parse_table(text: &str) -> Result<Vec<Listed>> {
    let mut out: Vec<Listed> = Vec::new();
    // Three header lines: version, and the two column legends.
    for line in text.lines().skip(3) {
        if let Some(real) = line.trim_start().strip_prefix("->") {
            let f: Vec<&str> = real.split_whitespace().collect();
            let [address, forward, weight, active, inactive] = f[..] else {
                bail!("real server line {line:?}");
            };
            out.last_mut()
                .context("real server before any service")?
                .reals
                .push(ListedReal {
                    address: address.to_string(),
                    forward: forward.to_string(),
                    weight: weight.parse()?,
                    active: active.parse()?,
                    inactive: inactive.parse()?,
                });
        } else if !line.trim().is_empty() {
            out.push(Listed {
                service: words(line),
                reals: Vec::new(),
            });
        }
    }
    Ok(out)
}

/// The service of `table` whose line starts with `key` (`TCP 192.0.2.100:80`, `FWM 1`).
pub fn service<'t>(table: &'t [Listed], key: &str) -> Result<&'t Listed> {
    table
        .iter()
        .find(|s| s.service == key || s.service.starts_with(&format!("{key} ")))
        .with_context(|| format!("no service {key} in {table:#?}"))
}

/// Connections per real server of service `key` (`ipvsadm -Ln --stats --exact`).
pub fn conns(lab: &Lab, node: &str, key: &str) -> Result<BTreeMap<String, u64>> {
    let text = ipvsadm(lab, node, &["-Ln", "--stats", "--exact"])?;
    let mut out = BTreeMap::new();
    let mut in_service = false;
    for line in text.lines().skip(3) {
        if let Some(real) = line.trim_start().strip_prefix("->") {
            if in_service {
                let mut f = real.split_whitespace();
                let (Some(addr), Some(n)) = (f.next(), f.next()) else {
                    bail!("stats line {line:?}");
                };
                out.insert(addr.to_string(), n.parse()?);
            }
        } else {
            let w = words(line);
            in_service = w.starts_with(&format!("{key} "));
        }
    }
    Ok(out)
}

/// Waits until the connection counters of service `key` are `want` (the kernel folds its
/// per-CPU counters every 2 s, so they lag the traffic).
pub fn wait_conns(lab: &Lab, node: &str, key: &str, want: &BTreeMap<String, u64>) -> Result<()> {
    let mut last = BTreeMap::new();
    wait::until(
        Duration::from_secs(10),
        &format!("{key} counters on {node} to be {want:?}"),
        || {
            last = conns(lab, node, key)?;
            Ok(&last == want)
        },
    )
    .with_context(|| format!("last seen {last:?}"))
}

/// An entry of the connection table (`ipvsadm -Lnc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conn {
    pub protocol: String,
    pub state: String,
    pub source: String,
    pub virtual_address: String,
    pub destination: String,
}

/// `ipvsadm -Lnc` on `node`, parsed.
pub fn connections(lab: &Lab, node: &str) -> Result<Vec<Conn>> {
    let text = ipvsadm(lab, node, &["-Lnc"])?;
    // Two header lines: "IPVS connection entries" and the column legend.
    text.lines()
        .skip(2)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [
                protocol,
                _expire,
                state,
                source,
                virtual_address,
                destination,
            ] = f[..]
            else {
                bail!("connection line {line:?} in\n{text}");
            };
            Ok(Conn {
                protocol: protocol.to_string(),
                state: state.to_string(),
                source: source.to_string(),
                virtual_address: virtual_address.to_string(),
                destination: destination.to_string(),
            })
        })
        .collect()
}

/// The sync daemons on `node` as `ipvsadm -L --daemon` lists them, one line each:
/// `master sync daemon (mcast=eth0, syncid=1, ...)`.
pub fn daemons(lab: &Lab, node: &str) -> Result<Vec<String>> {
    Ok(ipvsadm(lab, node, &["-L", "--daemon"])?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(words)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_ipvsadm_lists() {
        let text = "IP Virtual Server version 1.2.1 (size=4096)\n\
            Prot LocalAddress:Port Scheduler Flags\n  \
            -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
            TCP  192.0.2.100:80 wrr persistent 60\n  \
            -> 192.0.2.21:80                Route   3      0          12\n  \
            -> 192.0.2.22:80                Route   1      1          0\n\
            FWM  1 rr\n";
        let table = parse_table(text).expect("parses");
        assert_eq!(table.len(), 2);
        assert_eq!(table[0].service, "TCP 192.0.2.100:80 wrr persistent 60");
        assert_eq!(
            table[0].reals[1],
            ListedReal {
                address: "192.0.2.22:80".into(),
                forward: "Route".into(),
                weight: 1,
                active: 1,
                inactive: 0,
            }
        );
        assert_eq!(
            service(&table, "FWM 1").expect("listed").service,
            "FWM 1 rr"
        );
        assert!(service(&table, "TCP 192.0.2.100:8").is_err());
    }
}
