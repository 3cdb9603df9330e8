//! The crate's only `unsafe`: two socket details that neither socket2 nor nix
//! wrap safely.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
    time::Duration,
};

use socket2::{SockAddr, SockAddrStorage, SockRef, socklen_t};

/// The link-layer address (`sockaddr_ll`) that sends a frame out of interface
/// `ifindex`: `protocol` is the EtherType in host order, `destination` the MAC.
pub(crate) fn packet_address(ifindex: u32, protocol: u16, destination: [u8; 6]) -> SockAddr {
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: `sockaddr_ll` is one of this platform's `sockaddr_*` types, which is
    // what `view_as` requires; the storage is zeroed, a valid `sockaddr_ll`.
    let sll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
    sll.sll_family = libc::AF_PACKET as libc::sa_family_t;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = i32::try_from(ifindex).unwrap_or(0);
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&destination);
    let len = size_of::<libc::sockaddr_ll>() as socklen_t;
    // SAFETY: the storage holds an initialised `sockaddr_ll` of exactly `len` bytes,
    // with its family field set to match.
    unsafe { SockAddr::new(storage, len) }
}

/// Sets `SO_RCVTIMEO` on a socket that only exposes its raw descriptor
/// (neli's `NlSocketHandle`), so a blocking `recv` returns `EAGAIN` after `timeout`.
pub(crate) fn set_recv_timeout(socket: &impl AsRawFd, timeout: Duration) -> io::Result<()> {
    // SAFETY: `socket` owns the descriptor and is borrowed for this whole call, so
    // the descriptor stays open while the `BorrowedFd` exists; it is not closed here.
    let fd = unsafe { BorrowedFd::borrow_raw(socket.as_raw_fd()) };
    SockRef::from(&fd).set_read_timeout(Some(timeout))
}
