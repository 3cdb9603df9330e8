//! The crate's only `unsafe`: what a safe wrapper does not cover.

use std::io;

use socket2::Socket;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Registers a socket with the current tokio reactor for readiness on reads.
///
/// Must be called inside a tokio runtime.
pub(crate) fn register_readable(socket: Socket) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: `Socket` owns its file descriptor (an `OwnedFd`): `as_raw_fd` returns
    // the same open descriptor for the socket's whole life, and only dropping the
    // `Socket` closes it. The `AsyncFd` takes ownership of the `Socket`, so the
    // descriptor stays open and unchanged until the `AsyncFd` is dropped.
    let registered = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) };
    registered.map_err(io::Error::from)
}
