//! VRRP.
