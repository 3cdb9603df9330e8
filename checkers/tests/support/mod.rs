//! Test support shared by the checkers integration test binaries, each of which
//! includes it with `mod support;`: the check under test and its verdicts, real
//! daemons as child processes, a test PKI, and servers that misbehave on purpose.
//! The set-up of one daemon stays with its tests (`dovecot/`, `nginx/`, or the test
//! file itself).

#![allow(dead_code)] // each test binary uses its own part

pub mod check;
pub mod daemon;
pub mod hostile;
pub mod pki;
