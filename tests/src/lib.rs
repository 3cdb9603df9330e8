//! Lab harness.
