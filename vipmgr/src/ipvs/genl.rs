//! A small synchronous generic netlink client on neli's `NlSocket`: family
//! resolution through the `nlctrl` family, one request with its replies (a
//! change, a get or a dump), and a pipelined batch of changes.
//!
//! As in [`crate::netlink`], replies are matched on the sequence number and a
//! kernel error comes back as its errno in an `io::Error`.

use std::{fmt, io, io::Cursor, time::Duration};

use neli::{
    FromBytes, ToBytes,
    consts::{
        nl::{GenlId, NlmF, Nlmsg},
        socket::{Msg, NlFamily},
    },
    nl::{NlPayload, Nlmsghdr, NlmsghdrBuilder},
    socket::NlSocket,
    types::Buffer,
    utils::Groups,
};

use super::nla::{self, Writer};
use crate::sys;

/// The longest a request waits for the kernel's next reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Receive buffer for one `recv`: the kernel fills dump datagrams up to 32 KiB.
const RECV_BUF_LEN: usize = 64 * 1024;

/// Requests per datagram in a batch. Their acknowledgements must all fit in the
/// socket's receive buffer (each takes about 1 KiB of it; the default buffer is
/// 208 KiB), or the kernel drops some and the outcome of those is unknown.
const BATCH_LEN: usize = 64;

/// `CTRL_CMD_GETFAMILY`, `CTRL_ATTR_FAMILY_ID`, `CTRL_ATTR_FAMILY_NAME`.
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_VERSION: u8 = 2;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;

/// One generic netlink socket, in the network namespace of the thread that
/// opened it.
pub(crate) struct GenlSocket {
    socket: NlSocket,
    seq: u32,
    recv_buf: Vec<u8>,
}

impl fmt::Debug for GenlSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenlSocket")
            .field("pid", &self.socket.pid().ok())
            .field("seq", &self.seq)
            .finish()
    }
}

impl GenlSocket {
    pub(crate) fn open() -> io::Result<Self> {
        let socket = NlSocket::connect(NlFamily::Generic, None, Groups::empty())?;
        socket.block()?;
        sys::set_recv_timeout(&socket, REPLY_TIMEOUT)?;
        Ok(GenlSocket {
            socket,
            seq: 0,
            recv_buf: vec![0; RECV_BUF_LEN],
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// The id of the generic netlink family `name`; `ENOENT` when no such family
    /// is registered (for IPVS: the `ip_vs` module is not loaded).
    pub(crate) fn resolve_family(&mut self, name: &str) -> io::Result<u16> {
        let mut payload = vec![CTRL_CMD_GETFAMILY, CTRL_VERSION, 0, 0];
        Writer::new(&mut payload, false).string(CTRL_ATTR_FAMILY_NAME, name);
        let replies = self.transact(GenlId::Ctrl.into(), NlmF::empty(), &payload)?;
        replies
            .iter()
            .filter_map(|reply| reply.get(4..))
            .filter_map(|attrs| nla::parse(attrs, "nlctrl reply").ok())
            .flatten()
            .find(|attr| attr.kind == CTRL_ATTR_FAMILY_ID)
            .and_then(|attr| attr.u16("nlctrl reply").ok())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "nlctrl reply without a family id",
                )
            })
    }

    fn frame(
        &self,
        family: u16,
        flags: NlmF,
        seq: u32,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        let msg: Nlmsghdr<u16, Buffer> = NlmsghdrBuilder::default()
            .nl_type(family)
            .nl_flags(flags | NlmF::REQUEST)
            .nl_seq(seq)
            .nl_payload(NlPayload::Payload(Buffer::from(payload)))
            .build()
            .map_err(io::Error::other)?;
        let mut cursor = Cursor::new(Vec::new());
        msg.to_bytes(&mut cursor)
            .map_err(|e| io::Error::other(e.to_string()))?;
        out.extend_from_slice(cursor.get_ref());
        Ok(())
    }

    /// Reads one datagram and hands each netlink message in it to `each`.
    fn recv_each(
        &mut self,
        mut each: impl FnMut(Nlmsghdr<u16, Buffer>) -> io::Result<()>,
    ) -> io::Result<()> {
        let (len, _) = self.socket.recv(&mut self.recv_buf[..], Msg::empty())?;
        let mut cursor = Cursor::new(&self.recv_buf[..len]);
        while (cursor.position() as usize) < len {
            let message = Nlmsghdr::<u16, Buffer>::from_bytes(&mut cursor)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            each(message)?;
        }
        Ok(())
    }

    /// Sends one request and collects the generic netlink payloads of its
    /// replies: every part of a dump, the single reply of a get, or nothing for
    /// an acknowledged change.
    pub(crate) fn transact(
        &mut self,
        family: u16,
        flags: NlmF,
        payload: &[u8],
    ) -> io::Result<Vec<Vec<u8>>> {
        let seq = self.next_seq();
        let mut datagram = Vec::new();
        self.frame(family, flags, seq, payload, &mut datagram)?;
        self.socket.send(&datagram, Msg::empty())?;

        let dump = flags.contains(NlmF::DUMP);
        let ack = flags.contains(NlmF::ACK);
        let done = u16::from(Nlmsg::Done);
        let mut replies = Vec::new();
        let mut finished: Option<io::Result<()>> = None;
        while finished.is_none() {
            self.recv_each(|message| {
                if *message.nl_seq() != seq || finished.is_some() {
                    return Ok(());
                }
                match message.nl_payload() {
                    NlPayload::Err(err) => {
                        finished = Some(Err(io::Error::from_raw_os_error(-*err.error())));
                    }
                    NlPayload::Ack(_) => finished = Some(Ok(())),
                    NlPayload::DumpExtAck(ext) => {
                        finished = Some(if *ext.error() < 0 {
                            Err(io::Error::from_raw_os_error(-*ext.error()))
                        } else {
                            Ok(())
                        });
                    }
                    NlPayload::Empty => {
                        if *message.nl_type() == done {
                            finished = Some(Ok(()));
                        }
                    }
                    NlPayload::Payload(p) => {
                        if *message.nl_type() == done {
                            finished = Some(Ok(()));
                        } else {
                            replies.push(p.as_ref().to_vec());
                            let multi = message.nl_flags().contains(NlmF::MULTI);
                            if !multi && !dump && !ack {
                                finished = Some(Ok(()));
                            }
                        }
                    }
                }
                Ok(())
            })?;
        }
        finished.unwrap_or(Ok(())).map(|()| replies)
    }

    /// Sends every payload as an acknowledged request, [`BATCH_LEN`] to a
    /// datagram, and returns each one's outcome in order. A failed request does
    /// not stop the ones after it (the kernel processes each message of a
    /// datagram on its own).
    pub(crate) fn transact_many(
        &mut self,
        family: u16,
        payloads: &[Vec<u8>],
    ) -> Vec<io::Result<()>> {
        let mut results: Vec<io::Result<()>> = Vec::with_capacity(payloads.len());
        for chunk in payloads.chunks(BATCH_LEN) {
            match self.transact_chunk(family, chunk) {
                Ok(chunk_results) => results.extend(chunk_results),
                Err(e) => {
                    // The socket itself failed: the outcome of the whole chunk,
                    // and of the ones not sent, is unknown.
                    let errno = e.raw_os_error();
                    let remaining = payloads.len() - results.len();
                    results.extend((0..remaining).map(|_| match errno {
                        Some(n) => Err(io::Error::from_raw_os_error(n)),
                        None => Err(io::Error::new(e.kind(), e.to_string())),
                    }));
                    return results;
                }
            }
        }
        results
    }

    fn transact_chunk(
        &mut self,
        family: u16,
        chunk: &[Vec<u8>],
    ) -> io::Result<Vec<io::Result<()>>> {
        let mut datagram = Vec::new();
        let mut seqs = Vec::with_capacity(chunk.len());
        for payload in chunk {
            let seq = self.next_seq();
            seqs.push(seq);
            self.frame(family, NlmF::ACK, seq, payload, &mut datagram)?;
        }
        self.socket.send(&datagram, Msg::empty())?;

        let mut outcomes: Vec<Option<io::Result<()>>> = (0..chunk.len()).map(|_| None).collect();
        let mut pending = chunk.len();
        while pending > 0 {
            self.recv_each(|message| {
                // Sequence numbers wrap (skipping 0), so find the slot by search.
                let Some(index) = seqs.iter().position(|s| s == message.nl_seq()) else {
                    return Ok(());
                };
                let outcome = match message.nl_payload() {
                    NlPayload::Err(err) => Err(io::Error::from_raw_os_error(-*err.error())),
                    NlPayload::Ack(_) => Ok(()),
                    _ => return Ok(()),
                };
                if outcomes[index].is_none() {
                    outcomes[index] = Some(outcome);
                    pending -= 1;
                }
                Ok(())
            })?;
        }
        Ok(outcomes.into_iter().map(|o| o.unwrap_or(Ok(()))).collect())
    }
}
