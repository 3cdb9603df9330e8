//! Whole-system tests of directord (DESIGN §7, layers 3 and 4): a network-namespace lab
//! with two directors, a client and real servers on one bridge; keepalived as a real VRRP
//! peer; the failover benchmark and the lab demo; the same lab inside the IPVS VM
//! ([`vm`]) with HTTP through IPVS to real servers ([`ipvs`], [`http`]).
//!
//! Everything here needs root (namespaces); callers check [`lab::is_root_or_skip`].

pub mod directord;
pub mod drill;
pub mod http;
pub mod ipvs;
pub mod keepalived;
pub mod lab;
pub mod pair;
pub mod probe;
pub mod vm;
pub mod vrrp;
pub mod wait;
