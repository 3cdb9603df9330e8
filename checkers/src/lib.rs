//! Health checkers for real servers.
//!
//! The protocol checkers and their runner arrive with the health-checker issue; the
//! crate exists now so the workspace has its final shape and the supervisor's
//! dependency graph (`directord → {heartbeat, checkers, vipmgr}`) is fixed from day one.
