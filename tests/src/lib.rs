//! Whole-system tests of directord (DESIGN §7, layer 3): a network-namespace lab with two
//! directors, a client and real servers on one bridge; keepalived as a real VRRP peer; the
//! failover benchmark and the lab demo.
//!
//! Everything here needs root (namespaces); callers check [`lab::is_root_or_skip`].

pub mod directord;
pub mod drill;
pub mod keepalived;
pub mod lab;
pub mod pair;
pub mod probe;
pub mod vrrp;
pub mod wait;
