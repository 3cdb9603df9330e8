//! Interface state: whether a link is usable, and a watcher that follows it.
//!
//! "Up" means administratively up (`IFF_UP`) *and* with carrier
//! (`IFF_LOWER_UP`): a cable pulled out, or a veth whose peer is down, is Down.

use std::{io, thread, time::Duration};

use neli::{consts::rtnl::Rtm, nl::Nlmsghdr, rtnl::Ifinfomsg, types::Buffer, utils::Groups};
use serde::Serialize;
use tokio::sync::watch;

use crate::{
    address::valid_ifname,
    error::{Error, Result},
    netlink::{LinkInfo, Rtnl, from_socket_error},
    sys,
};

/// How long the watcher thread blocks in `recv` before it checks whether anyone
/// still listens; bounds how long it outlives its last receiver.
const WATCH_POLL: Duration = Duration::from_millis(500);

/// What a link watcher reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum LinkState {
    /// Administratively up and with carrier.
    Up,
    /// Exists, but down or without carrier.
    Down,
    /// No interface of that name.
    Missing,
}

impl LinkState {
    fn of(link: Option<&LinkInfo>) -> Self {
        match link {
            Some(link) if link.is_up() => LinkState::Up,
            Some(_) => LinkState::Down,
            None => LinkState::Missing,
        }
    }
}

/// The state of interface `name`, read now (`RTM_GETLINK`) in the calling
/// thread's network namespace.
pub fn link_state(name: &str) -> Result<LinkState> {
    let lookup = |source| Error::LookupLink {
        interface: name.to_owned(),
        source,
    };
    let mut rtnl = Rtnl::open().map_err(|source| Error::OpenNetlink { source })?;
    let link = rtnl.link(name).map_err(lookup)?;
    Ok(LinkState::of(link.as_ref()))
}

/// Whether interface `name` is up with carrier; an error if it does not exist.
pub fn link_is_up(name: &str) -> Result<bool> {
    match link_state(name)? {
        LinkState::Up => Ok(true),
        LinkState::Down => Ok(false),
        LinkState::Missing => Err(Error::LinkNotFound {
            interface: name.to_owned(),
        }),
    }
}

/// Follows interface `name` and publishes its state whenever it changes.
///
/// The receiver starts with the current state. Both netlink sockets (the
/// `RTNLGRP_LINK` subscription and the one used to re-read the state after
/// a missed event) are opened here, in the calling thread's network
/// namespace, before the background thread starts; the thread keeps them.
/// It ends within half a second once every receiver is dropped.
pub fn watch_link(name: &str) -> Result<watch::Receiver<LinkState>> {
    let fail = |source| Error::WatchLink {
        interface: name.to_owned(),
        source,
    };
    if !valid_ifname(name) {
        return Err(fail(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a valid interface name",
        )));
    }
    // Subscribe before reading the current state, so that no change falls
    // between the two: it is queued on the subscription.
    let events = Rtnl::open_with_groups(Groups::new_groups(&[libc::RTNLGRP_LINK])).map_err(fail)?;
    sys::set_recv_timeout(events.socket(), WATCH_POLL).map_err(fail)?;
    let mut query = Rtnl::open().map_err(fail)?;
    let current = query.link(name).map_err(fail)?;

    let (tx, rx) = watch::channel(LinkState::of(current.as_ref()));
    let watcher = Watcher {
        name: name.to_owned(),
        index: current.map(|link| link.index),
        tx,
        query,
    };
    thread::Builder::new()
        .name(format!("link-watch-{name}"))
        .spawn(move || watcher.run(&events))
        .map_err(fail)?;
    Ok(rx)
}

/// The background side of [`watch_link`].
#[derive(Debug)]
struct Watcher {
    name: String,
    /// Index of the interface while it exists, to notice a rename away.
    index: Option<u32>,
    tx: watch::Sender<LinkState>,
    /// For re-reading the state after the kernel dropped events.
    query: Rtnl,
}

impl Watcher {
    /// Runs until every receiver is gone. `events` is the `RTNLGRP_LINK` subscription.
    fn run(mut self, events: &Rtnl) {
        while !self.tx.is_closed() {
            let received = events.socket().recv::<u16, Buffer>();
            let messages = match received {
                Ok((messages, _)) => messages,
                Err(e) => {
                    let e = from_socket_error(e);
                    match e.raw_os_error() {
                        Some(libc::EAGAIN | libc::EINTR) => {}
                        // The kernel dropped events (receive queue overrun).
                        Some(libc::ENOBUFS) => self.resync(),
                        _ => {
                            tracing::warn!(interface = %self.name, error = %e,
                                "link watch receive failed; re-reading the link state");
                            self.resync();
                            thread::sleep(WATCH_POLL);
                        }
                    }
                    continue;
                }
            };
            for message in messages {
                // A message neli cannot read ends this datagram, not the watch.
                let Ok(message) = message else { break };
                let ty = Rtm::from(*message.nl_type());
                if ty != Rtm::Newlink && ty != Rtm::Dellink {
                    continue;
                }
                let Ok(typed) = message.to_typed::<Rtm, Ifinfomsg>() else {
                    continue;
                };
                self.apply(ty, &typed);
            }
        }
    }

    fn apply(&mut self, ty: Rtm, message: &Nlmsghdr<Rtm, Ifinfomsg>) {
        let Some(link) = message.get_payload().and_then(LinkInfo::from_ifinfomsg) else {
            return;
        };
        let state = if link.name == self.name {
            if ty == Rtm::Dellink {
                self.index = None;
                LinkState::Missing
            } else {
                self.index = Some(link.index);
                LinkState::of(Some(&link))
            }
        } else if self.index == Some(link.index) {
            // Renamed away, or deleted under another name.
            self.index = None;
            LinkState::Missing
        } else {
            return;
        };
        self.publish(state);
    }

    fn resync(&mut self) {
        match self.query.link(&self.name) {
            Ok(link) => {
                self.index = link.as_ref().map(|link| link.index);
                self.publish(LinkState::of(link.as_ref()));
            }
            Err(e) => {
                tracing::warn!(interface = %self.name, error = %e, "cannot re-read link state");
            }
        }
    }

    fn publish(&self, state: LinkState) {
        self.tx.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        });
    }
}
