//! vipmgr crate.
