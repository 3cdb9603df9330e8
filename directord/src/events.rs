//! What happened, for whoever listens (alerts by mail and notify scripts): role
//! changes of this director and health changes of real servers. The supervisor
//! publishes on a broadcast channel; a slow listener loses old events (and is told
//! how many), it never slows the supervisor.

use std::net::SocketAddr;
use std::time::SystemTime;

use heartbeat::Role;
use serde::Serialize;
use tokio::sync::broadcast;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    /// This director's role changed.
    Role {
        node: String,
        role: Role,
        /// The protocol's own state name (VRRP `master`, heartbeat `active`, ...).
        state: String,
        reason: String,
        priority: u8,
        at: SystemTime,
    },
    /// A real server went up or down.
    Real {
        node: String,
        service: String,
        real: SocketAddr,
        health: checkers::Health,
        /// Why it is down (the check's reason); `None` when up.
        reason: Option<String>,
        at: SystemTime,
    },
}

/// The supervisor's side.
#[derive(Debug, Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
}

impl Events {
    pub fn new() -> Events {
        Events {
            tx: broadcast::channel(1024).0,
        }
    }

    pub fn publish(&self, event: Event) {
        // No listener is fine.
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}
